"""What the end-to-end tests share: ``img2img`` invoked in-process (typer's ``CliRunner``, stderr
kept apart) and an image's pixels as signed integers, for max-difference checks (1/255 = 1)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app

runner = CliRunner()


def invoke(*args):
    """``img2img ARGS...`` in this process; each argument is passed as ``str``. Returns click's
    ``Result`` (``exit_code``, ``stdout``, ``stderr``)."""
    return runner.invoke(app, [str(a) for a in args])


def pixels(path_or_image) -> np.ndarray:
    """An image file or ``PIL.Image`` as an ``(H, W, 3)`` int16 RGB array, values 0-255."""
    im = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(im.convert("RGB"), dtype=np.int16)

"""Shared fixtures. Tests never touch the network and never need a GPU unless marked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# Pixels are compared on the CPU in fp32 whatever torch build is installed: with a CUDA torch,
# --device auto would pick CUDA in fp16. IMG2IMG_DEVICE is --device's variable; the tests
# marked gpu pass --device cuda themselves.
os.environ["IMG2IMG_DEVICE"] = "cpu"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TINY = ROOT / "img2img_cli" / "models" / "tiny"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    have_gpu = False
    if any("gpu" in item.keywords for item in items):
        try:
            import torch

            have_gpu = torch.cuda.is_available()
        except Exception:
            have_gpu = False
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: pass --runslow"))
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def tiny_pipe():
    """The built-in tiny model as diffusers' own StableDiffusionImg2ImgPipeline, on the CPU in fp32."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with copies of the bundled photos (chelsea.png, coffee.png, rocket.jpg, camera.png)."""
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "camera.png"):
        shutil.copy(EXAMPLES / name, d / name)
    return d


def cat_face(path: Path) -> Path:
    """The cat's face from ``examples/chelsea.png`` as a 64x64 RGB PNG at ``path`` (the tiny
    model's native size: a real photo, small enough for fast end-to-end tests)."""
    with Image.open(EXAMPLES / "chelsea.png") as im:
        im.convert("RGB").crop((150, 40, 278, 168)).resize((64, 64), Image.Resampling.LANCZOS).save(path)
    return path


@pytest.fixture(scope="session")
def x4(tmp_path_factory):
    """The tiny x4 upscaler (``tests/helpers/tiny_x4.py``), a diffusers folder."""
    from .helpers.tiny_x4 import build_tiny_x4

    return build_tiny_x4(tmp_path_factory.mktemp("x4") / "tiny-x4")


@pytest.fixture(scope="session")
def x4_pipe(x4):
    """``StableDiffusionUpscalePipeline`` loaded from :func:`x4`, progress bar off."""
    from diffusers import StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline.from_pretrained(str(x4), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe

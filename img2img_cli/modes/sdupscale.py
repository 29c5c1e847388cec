"""SD upscale (``--upscale FACTOR``): AUTOMATIC1111's ``scripts/sd_upscale.py``, image-to-image
over tiles of an enlarged picture.

For each input (A1111's order of work):

1. enlarge it by FACTOR with ``--upscaler``: ``lanczos`` (A1111's "Lanczos" upscaler: a Lanczos
   resize to ``int(w * FACTOR)``, then to the size rounded down to a multiple of 8, as
   ``modules/upscaler.py: Upscaler.upscale`` does) or an ESRGAN-family network file; once per
   input, in the reader thread, not once per tile;
2. cut it into tiles of the model's native size (``--tile-size``; A1111 takes the img2img
   width and height) overlapping by ``--tile-overlap`` (64, A1111's default;
   :func:`img2img_cli.tiles.split_grid`);
3. run each tile through the model's img2img pipeline at ``--strength`` like any image: tiles
   of one or several inputs share batches, and tile ``k`` uses the image's seed ``+ k`` (what
   A1111 does at batch size 1, so a tile never depends on the batch size);
4. blend the tiles back (:func:`img2img_cli.tiles.combine`, A1111's linear ramps) in the
   writer; the output is written only once every tile is made.

The infotext is A1111's: ``Size`` is the tile size, ``SD upscale overlap`` and
``SD upscale upscaler``; we add ``SD upscale factor`` (A1111 writes none), so a result can be
made again from its infotext. The default ``--strength`` (0.75) repaints a lot: A1111's users
take 0.2 to 0.4 for SD upscale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import MAX_SIDE, option
from ..errors import InputError, UsageError
from ..upscalers import LANCZOS, check_upscaler
from .img2img import Img2Img

#: A1111's SD upscale tile overlap default (its slider: 0-256, 64).
DEFAULT_OVERLAP = 64
#: The largest ``--upscale`` factor (A1111's slider goes to 4).
MAX_FACTOR = 8.0


@dataclass(frozen=True)
class SDUpscaleOptions:
    """SD upscale's options (A1111's "SD upscale" script); the tiles are :class:`~img2img_cli.config.TileOptions`."""

    upscale: Optional[float] = option(
        None, "--upscale", show_default=False,
        help="SD upscale: enlarge by this factor (1-8, e.g. 2), then img2img in overlapping tiles (try --strength 0.3).",
    )
    upscaler: str = option(LANCZOS, "--upscaler", help="With --upscale: how to enlarge first: lanczos, or an ESRGAN-family network file.")


def enlarged_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """A1111's SD upscale output size: each side times ``factor``, rounded down to a multiple of
    8 (``modules/upscaler.py``: ``int((w * scale) // 8 * 8)``)."""
    return int(size[0] * factor // 8 * 8), int(size[1] * factor // 8 * 8)


def lanczos(image, size: tuple[int, int], factor: float):
    """A1111's Lanczos upscaler: ``int(w * factor)`` by ``int(h * factor)``, then (when that is not
    ``size``) ``size``, both with Pillow's LANCZOS."""
    from PIL import Image

    first = (int(image.width * factor), int(image.height * factor))
    if first != image.size:
        image = image.resize(first, Image.LANCZOS)
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def load_network(path: str, device: str, dtype: str):
    """Load an ESRGAN-family network file for ``--upscaler``
    (:func:`img2img_cli.upscalers.load_upscaler`, spandrel).

    Raises:
        ModelError: naming the file, when it cannot be loaded.
    """
    from ..upscalers import load_upscaler

    return load_upscaler(path, device=device, dtype=dtype)


def network_enlarge(network, image, size: tuple[int, int]):
    """``image`` enlarged to ``size`` by ``network`` (:func:`load_network`), passes as A1111's
    ``Upscaler.upscale``, then Lanczos to the exact size; no network pass when ``image``
    already covers ``size`` (``--upscale 1``), as A1111's ``Upscaler.upscale`` loop stops."""
    from PIL import Image

    from ..upscalers import upscale_image

    if image.width >= size[0] and image.height >= size[1]:  # A1111 runs no network pass then (factor 1)
        return image if image.size == size else image.resize(size, Image.LANCZOS)
    out = upscale_image(network, image, size[0] / image.width)
    return out if out.size == size else out.resize(size, Image.LANCZOS)


class SDUpscale(Img2Img):
    """``--upscale``: img2img over the tiles of the enlarged input (the img2img pipelines)."""

    name = "sdupscale"
    options = SDUpscaleOptions
    trigger = "upscale"
    tiled = True

    def __init__(self):
        self.network = None

    def validate(self, config) -> None:
        """Raises :class:`UsageError`: a factor outside ``[1, 8]``, an ``--upscaler`` file that is
        not there, ``--width``/``--height``/``--size`` or a ``size`` plot axis (the output is the
        input times the factor; ``--tile-size`` is the tile). Add-ons work per tile (:meth:`~img2img_cli.modes.Mode.tile_extras`: ControlNet crops its maps)."""
        o = config.options_of(self.name)
        if not 1 <= o.upscale <= MAX_FACTOR:
            raise UsageError(f"--upscale must be in [1, {MAX_FACTOR:g}], got {o.upscale:g}")
        check_upscaler(o.upscaler)
        if config.job.width or config.job.height or config.size:  # (--size is folded into the job after this check)
            raise UsageError("--upscale makes the input times FACTOR: --width/--height/--size do not apply (--tile-size sets the tile)")
        flag = next((f for f, axis in zip(("--x", "--y", "--z"), config.axes) if axis.name == "size"), None)
        if flag is not None:
            raise UsageError(f"{flag} size: --upscale makes the input times FACTOR, so a size axis does not apply (--tile-size sets the tile)")
        tile = config.tiling.tile()
        overlap = config.tiling.tile_overlap if config.tiling.tile_overlap is not None else DEFAULT_OVERLAP
        if tile is not None and overlap >= min(tile):
            raise UsageError(
                f"--tile-overlap {overlap} must be smaller than the tile ({tile[0]}x{tile[1]}); pass a smaller --tile-overlap or a larger --tile-size"
            )

    def upscaler_name(self, config) -> str:
        """A1111's ``SD upscale upscaler`` value: ``Lanczos``, or the network file's stem."""
        value = config.options_of(self.name).upscaler
        return "Lanczos" if value.lower() == LANCZOS else Path(value).stem

    def attach(self, pipe, config):
        """Loads the ``--upscaler`` network, once, on the pipeline's device."""
        value = config.options_of(self.name).upscaler
        if value.lower() != LANCZOS and self.network is None:
            self.network = load_network(value, str(pipe.device), config.job.dtype)
        return pipe

    def output_size(self, item, canvas, native, multiple, config):
        """The input's size times ``--upscale``, rounded down to multiples of 8 (A1111).

        Raises:
            InputError: naming the file, when a side would be under 8 or over 8192 pixels.
        """
        from ..io import display

        factor = config.options_of(self.name).upscale
        size = enlarged_size(canvas, factor)
        if min(size) < 8 or max(size) > MAX_SIDE:
            raise InputError(
                f"{display(item.input.path)}: {canvas[0]}x{canvas[1]} times {factor:g} is {size[0]}x{size[1]}; "
                f"each side must be in [8, {MAX_SIDE}]"
            )
        return size

    def tiles(self, item, native, config):
        """The enlarged picture's tiles: ``--tile-size`` or ``native`` square (clamped to the
        picture), ``--tile-overlap`` or 64."""
        from ..tiles import split_grid

        tile = config.tiling.tile() or (native, native)
        overlap = config.tiling.tile_overlap if config.tiling.tile_overlap is not None else DEFAULT_OVERLAP
        try:
            return split_grid(item.size, tile, overlap)
        except ValueError:
            raise UsageError(
                f"--tile-overlap {overlap} must be smaller than the tile ({tile[0]}x{tile[1]}); pass a smaller --tile-overlap or a larger --tile-size"
            ) from None

    def prepare(self, item, source, size, config):
        """The source enlarged to ``size`` (Lanczos or the network), the picture the tiles are cut from."""
        from . import Prepared

        factor = config.options_of(self.name).upscale
        if self.network is not None:
            return Prepared(network_enlarge(self.network, source, size))
        return Prepared(lanczos(source, size, factor))

    def infotext(self, item, config):
        """A1111's fields (``Size`` is the tile's) and our ``SD upscale factor``."""
        from ..work import format_number

        tw, th = item.grid.tile
        return {
            "Size": f"{tw}x{th}",
            "SD upscale overlap": item.grid.overlap,
            "SD upscale upscaler": self.upscaler_name(config),
            "SD upscale factor": format_number(config.options_of(self.name).upscale),
        }

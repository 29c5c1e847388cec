"""Images in: reading (EXIF orientation, modes, pixel limit), sizing, A1111's resize modes,
and output file names. Writing them is :mod:`img2img_cli.writing`. No model code here.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from .errors import InputError

#: File name extensions treated as images when walking a folder (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
)
#: Output format -> file extension.
FORMAT_EXTENSIONS = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
#: File extension -> output format, for ``-o FILE``.
EXTENSION_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}

#: Default pixel limit: 2.5x Pillow's own decompression-bomb limit (89,478,485 px, about
#: a 9459x9459 image) would still be ~850 MB as RGB; we refuse inputs above 100 MP.
DEFAULT_MAX_PIXELS = 100_000_000


def display(path: os.PathLike | str) -> str:
    """``path`` as printable text, even when its bytes are not valid UTF-8 (escaped)."""
    text = os.fspath(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(text, str) else repr(text)


def _open(path: Path, max_pixels: int):
    """``Image.open`` (header only). Pillow's own decompression-bomb check (a warning above
    ``Image.MAX_IMAGE_PIXELS``, an error above twice that) is replaced by the callers' check
    against ``max_pixels``, made right after this and before any pixel is decoded, so that
    ``--max-pixels`` is the one limit and its message names the flag."""
    from PIL import Image

    if os.path.getsize(path) == 0:
        raise InputError(f"{display(path)}: empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = None  # process-wide (thread-safe): our check replaces Pillow's
    return Image.open(path)


def load_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background=(255, 255, 255),
    target: tuple[int, int] | None = None,
):
    """Read an image file as an 8-bit RGB ``PIL.Image``.

    Anything Pillow reads (PNG, JPEG, WebP, TIFF, BMP, GIF...); the first frame of an
    animated or multi-page file; EXIF orientation applied (``ImageOps.exif_transpose``);
    16-bit images scaled to 8 bits; CMYK converted by Pillow (Adobe-inverted JPEGs included);
    an alpha channel composited onto ``background`` (an ``(R, G, B)`` tuple of 0-255 ints).

    The header is checked against ``max_pixels`` (width x height) before any pixel is decoded.
    With ``target`` (the output ``(width, height)``), a large JPEG is decoded at a reduced
    scale (Pillow's ``draft``: 1/2, 1/4 or 1/8, never below the target), so a 24 MP photo
    never costs 24 MP of RGB.

    Raises:
        InputError: one line naming the file: missing, unreadable, not an image, truncated,
            too many pixels.
    """
    from PIL import ImageOps

    name = display(path)
    try:
        with _open(path, max_pixels) as im:
            w, h = _checked_size(im, name, max_pixels)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            if target is not None and im.format == "JPEG":
                tw, th = target
                if _exif_orientation(im) in (5, 6, 7, 8):
                    tw, th = th, tw
                # draft keeps the scale at or above the requested size in both sides
                scale = max(tw / w, th / h)
                im.draft(None, (int(w * scale) + 1, int(h * scale) + 1))
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im, background)
    except Exception as e:
        raise _input_error(name, e) from None


def probe_size(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (EXIF orientation applied), from its header
    only: no pixel is decoded.

    Raises:
        InputError: as :func:`load_image`, for what the header alone shows.
    """
    name = display(path)
    try:
        with _open(path, max_pixels) as im:
            w, h = _checked_size(im, name, max_pixels)
            return (h, w) if _exif_orientation(im) in (5, 6, 7, 8) else (w, h)
    except Exception as e:
        raise _input_error(name, e) from None


def _checked_size(im, name: str, max_pixels: int) -> tuple[int, int]:
    """``im.size`` from the header, refused above ``max_pixels`` (width x height).

    Raises:
        InputError: naming the file, its size and ``--max-pixels``.
    """
    w, h = im.size
    if w * h > max_pixels:
        raise InputError(f"{name}: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} (--max-pixels)")
    return w, h


def _input_error(name: str, e: BaseException) -> InputError:
    """The one-line :class:`InputError` for what reading image ``name`` raised."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, InputError):
        return e
    if isinstance(e, FileNotFoundError):
        return InputError(f"{name}: no such file")
    if isinstance(e, PermissionError):
        return InputError(f"{name}: permission denied")
    if isinstance(e, IsADirectoryError):
        return InputError(f"{name}: is a directory")
    if isinstance(e, UnidentifiedImageError):
        return InputError(f"{name}: not an image Pillow can read")
    if isinstance(e, Image.DecompressionBombError):
        return InputError(f"{name}: refused as a decompression bomb ({e})")
    if isinstance(e, MemoryError):
        return InputError(f"{name}: not enough memory to decode it (lower --max-pixels)")
    if isinstance(e, OSError) and e.errno is not None:
        if e.errno == errno.ELOOP:
            return InputError(f"{name}: symbolic link loop")
        if e.errno in (errno.EACCES, errno.EPERM):
            return InputError(f"{name}: permission denied")
        return InputError(f"{name}: cannot read ({e.strerror or one_line(e)})")
    return InputError(f"{name}: cannot decode image ({one_line(e)})")


def _exif_orientation(im) -> int:
    """EXIF orientation (1-8) without decoding pixels: for PNG only an eXIf chunk already
    read with the header counts (``getexif()`` on a PNG would decode the whole image)."""
    from PIL import Image

    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())


def _to_rgb(im, background):
    """Convert any Pillow mode to RGB (8 bit), compositing alpha onto ``background``."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    elif im.mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def round8(x: float, multiple: int = 8) -> int:
    """``x`` rounded down to a multiple of ``multiple`` (8 by default), at least ``multiple``."""
    return max(multiple, int(x) // multiple * multiple)


def target_size(
    src_size: tuple[int, int],
    native: int,
    width: int | None = None,
    height: int | None = None,
    multiple: int = 8,
) -> tuple[int, int]:
    """Output ``(width, height)`` in pixels, multiples of 8.

    ``multiple`` (64 with ``--compile``) is what a derived side is rounded down to: fewer
    distinct sizes in a folder, so fewer compiled graphs.

    - both ``width`` and ``height`` given: used as they are;
    - one given: the other follows the source aspect ratio, rounded down to a multiple of 8;
    - none: the source aspect ratio with the longer side at ``native`` (the model's native
      resolution: 512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL), the other side rounded down
      to a multiple of 8.
    """
    sw, sh = src_size
    if width and height:
        return width, height
    if width:
        return width, round8(width * sh / sw, multiple)
    if height:
        return round8(height * sw / sh, multiple), height
    if sw >= sh:
        return round8(native), round8(native * sh / sw, multiple)
    return round8(native * sw / sh, multiple), round8(native)


#: ``--resize-mode`` (A1111's names) -> diffusers' ``VaeImageProcessor.resize(resize_mode=...)``.
RESIZE_MODES = {"just": "default", "crop": "crop", "fill": "fill"}


@functools.lru_cache(maxsize=1)
def image_processor():
    """diffusers' ``VaeImageProcessor`` with LANCZOS resampling and no ``reducing_gap`` (its
    defaults, set here explicitly so a change of defaults cannot change our pixels). Imported
    lazily: diffusers imports torch, which ``img2img --help`` must not pay for."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(resample="lanczos", reducing_gap=None)


def resize_image(im, width: int, height: int, mode: str = "crop"):
    """Fit ``im`` to ``width x height`` with one of A1111's resize modes.

    Done by diffusers' ``VaeImageProcessor.resize`` (LANCZOS resampling), whose
    ``_resize_and_crop``/``_resize_and_fill`` are AUTOMATIC1111's ``modules/images.py:
    resize_image``:

    - ``just`` ("Just resize", diffusers ``"default"``): stretch to the size, aspect ratio
      not kept;
    - ``crop`` ("Crop and resize"): scale to cover the size, centre-crop the excess;
    - ``fill`` ("Resize and fill"): scale to fit inside, fill the bands with the image's
      stretched edge rows or columns.

    An image already at the size is returned unchanged.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}")
    if im.size == (width, height):
        return im
    return image_processor().resize(im, height, width, resize_mode=RESIZE_MODES[mode])


def output_name(rel: Path, fmt: str, k: int | None = None) -> Path:
    """Relative output path for input ``rel`` (its path relative to the input folder).

    ``photos/cat.jpg`` -> ``photos/cat.png``; with ``k`` (image ``k`` of ``--num-images``)
    ``photos/cat-<k>.png``.
    """
    stem = rel.stem if k is None else f"{rel.stem}-{k}"
    return rel.with_name(stem + FORMAT_EXTENSIONS[fmt])

"""Masks for inpainting and outpainting: reading and pairing them with inputs, A1111's mask
blur, filling the masked area, the "only masked" crop region and the outpainting canvas.

A mask is an 8-bit greyscale ``PIL.Image`` (mode ``"L"``): 255 = repaint, 0 = keep.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError
from .io import IMAGE_EXTENSIONS, display, probe_size


def load_mask(path: Path, *, max_pixels: int):
    """Read a mask file as mode ``"L"``: its alpha channel when it has one that is not fully
    opaque (a mask painted on a transparent layer), else the image converted to greyscale
    (Pillow's ITU-R 601-2 luma). EXIF orientation is applied.

    Raises:
        InputError: naming the file (missing, unreadable, not an image, over ``max_pixels``).
    """
    from PIL import Image, ImageOps

    probe_size(path, max_pixels=max_pixels)  # the same checks and messages as a source image
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
                alpha = im.convert("RGBA").getchannel("A")
                if alpha.getextrema()[0] < 255:
                    return alpha
            return im.convert("L")
    except OSError as e:
        raise InputError(f"{display(path)}: cannot read mask ({' '.join(str(e).split())})") from None


def _masks_in(folder: str, cache: dict) -> dict[str, str]:
    """Image files of a mask folder by stem (first in sorted order wins), listed once per run
    (``cache``: folder -> listing, owned by the caller)."""
    if folder in cache:
        return cache[folder]
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        cache[folder] = found
        return found
    for name in names:
        stem, ext = os.path.splitext(name)
        if not name.startswith(".") and ext.lower() in IMAGE_EXTENSIONS:
            found.setdefault(stem, os.path.join(folder, name))
    cache[folder] = found
    return found


def find_mask(mask: Path, input_path: Path, rel: Path, cache: dict, what: str = "mask") -> Path:
    """The mask of one input: ``mask`` itself when it is a file; in a folder, the image with
    the input's stem (any image extension, as A1111's batch tab pairs them), looked for first
    in the subfolder matching the input's relative path, or the folder's only image. ``cache``
    keeps each folder's listing for the run (a dict the caller owns), so a folder of thousands
    of masks is listed once. ``what`` names the kind of file in the error (``"style image"``
    for IP-Adapter's ``--style-image``, paired the same way).

    Raises:
        InputError: no mask (``what``: "control image" for ControlNet maps) for this input,
            naming it and the folder.
    """
    if not mask.is_dir():
        return mask
    for folder in ([mask / rel.parent] if rel.parent != Path(".") else []) + [mask]:
        found = _masks_in(str(folder), cache).get(input_path.stem)
        if found:
            return Path(found)
    every = _masks_in(str(mask), cache)
    if len(every) == 1:
        return Path(next(iter(every.values())))
    raise InputError(f"{display(input_path)}: no {what} for it in {display(mask)} (expected an image named {input_path.stem}.*)")


def blur(mask, sigma: int):
    """A1111's mask blur: a Gaussian of standard deviation ``sigma`` pixels over a kernel of
    ``2 * int(2.5 * sigma + 0.5) + 1`` taps in each direction (``modules/processing.py``,
    ``StableDiffusionProcessingImg2Img.init``, which calls OpenCV's ``GaussianBlur`` with that
    kernel), mirrored at the borders; computed with ``scipy.ndimage.gaussian_filter``. ``sigma``
    0 returns the mask unchanged.
    """
    if sigma <= 0:
        return mask
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    radius = int(2.5 * sigma + 0.5)
    out = gaussian_filter(np.asarray(mask, dtype=np.float32), sigma=sigma, truncate=radius / sigma, mode="mirror")
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def fill(image, mask):
    """``image`` (RGB) with its masked area (``mask`` > 0) filled with the colours around it,
    for ``--masked-content fill``: A1111's idea (``modules/masking.py``: the kept pixels
    blurred at falling radii and layered), done here as normalised convolution: at each
    Gaussian sigma (256, 64, 16, 4, 2 px) the blur of the kept pixels divided by the blur of
    the keep-weights, finer estimates replacing coarser ones where they have support. Kept
    pixels are unchanged; a fully masked image becomes mid grey.
    """
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep = 1.0 - np.asarray(mask, dtype=np.float32) / 255.0
    if keep.max() <= 0:
        return Image.new("RGB", image.size, (128, 128, 128))
    estimate = np.empty_like(rgb)
    estimate[:] = (rgb * keep[..., None]).sum(axis=(0, 1)) / keep.sum()
    for sigma in (256, 64, 16, 4, 2):
        weight = gaussian_filter(keep, sigma, mode="nearest")
        blurred = np.stack([gaussian_filter(rgb[..., c] * keep, sigma, mode="nearest") for c in range(3)], axis=-1)
        support = np.clip(weight * 4.0, 0.0, 1.0)[..., None]
        estimate = estimate * (1 - support) + blurred / np.maximum(weight, 1e-6)[..., None] * support
    out = rgb * keep[..., None] + estimate * (1 - keep[..., None])
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def crop_region(mask, width: int, height: int, padding: int) -> tuple[int, int, int, int] | None:
    """The region ``(x1, y1, x2, y2)`` that "only masked" inpaints: the masked area's bounding
    box plus ``padding`` pixels, widened to the ``width:height`` aspect ratio (diffusers'
    ``VaeImageProcessor.get_crop_region``, itself A1111's ``masking.get_crop_region`` and
    ``expand_crop_region``); ``None`` for a blank mask."""
    from diffusers.image_processor import VaeImageProcessor

    if mask.getextrema()[1] == 0:
        return None
    return VaeImageProcessor.get_crop_region(mask, width, height, pad=padding)


def parse_margins(text: str) -> tuple[int, int, int, int]:
    """``--outpaint``: ``"64"`` (every side) or ``"L,T,R,B"`` in pixels, each ``>= 0``, some ``> 0``.

    Raises:
        ValueError: naming what is wrong (the caller names the flag).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) not in (1, 4) or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected N or LEFT,TOP,RIGHT,BOTTOM in pixels, got {text!r}")
    values = [int(p) for p in parts] * (4 if len(parts) == 1 else 1)
    if not any(values):
        raise ValueError(f"at least one side must grow, got {text!r}")
    return tuple(values)


def outpaint_canvas(source, margins: tuple[int, int, int, int], overlap: int):
    """The grown canvas and its mask for outpainting.

    Returns:
        ``(canvas, mask)``: ``canvas`` (RGB) is ``source`` pasted at ``(left, top)`` on a larger
        image whose new area is filled from the source's edge (:func:`fill`); ``mask`` is 255
        on the new area and on a band of ``overlap`` pixels inside the old edge (so the seam is
        repainted), 0 elsewhere.
    """
    from PIL import Image

    left, top, right, bottom = margins
    w, h = source.size
    canvas = Image.new("RGB", (w + left + right, h + top + bottom))
    canvas.paste(source, (left, top))
    mask = Image.new("L", canvas.size, 255)
    keep = (left + (overlap if left else 0), top + (overlap if top else 0),
            left + w - (overlap if right else 0), top + h - (overlap if bottom else 0))
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    hard = Image.new("L", canvas.size, 255)
    hard.paste(0, (left, top, left + w, top + h))
    return fill(canvas, hard), mask

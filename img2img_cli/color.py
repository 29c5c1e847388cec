"""Colour post-processing of img2img results: colour correction and colourisation.

Two pure functions on Pillow images; no torch, no model:

* :func:`color_correct` -- AUTOMATIC1111's "Apply color correction to img2img results to match
  original colors": the generated image takes the source photo's colour distribution (histogram
  matching in CIELAB) but keeps its own luminosity.
* :func:`colorize` -- for black-and-white or faded photos: the source photo's lightness with the
  generated image's colour (CIELAB L* from the source, a* and b* from the result).

Both take the generated ``image`` and the ``source`` (the photo img2img started from), of the same
size, in any Pillow mode that converts to RGB (``"RGB"``, ``"L"``, ``"RGBA"``, ``"P"`` ...: each is
converted with ``Image.convert("RGB")``, which drops an alpha channel), and return a new ``"RGB"``
image of that size. Colour conversions are scikit-image's (``skimage.color.rgb2lab`` /
``lab2rgb``: sRGB, D65 illuminant, 2 degree observer, float L* in [0, 100], a* and b* roughly in
[-128, 127]), histogram matching is ``skimage.exposure.match_histograms``.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image
from skimage.color import lab2rgb, rgb2lab
from skimage.exposure import match_histograms

__all__ = ["color_correct", "colorize"]

# Luminosity weights of the "luminosity" blend mode as the blendmodes package computes it
# (blendmodes/blend.py: _lum; ITU-R BT.601 luma, the same weights as Pillow's convert("L")).
# The W3C spec's Lum() rounds them to 0.3, 0.59, 0.11.
_LUM_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _pair(image: Image.Image, source: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Both images as uint8 RGB arrays (H, W, 3), after checking their types and sizes."""
    for name, im in (("image", image), ("source", source)):
        if not isinstance(im, Image.Image):
            raise TypeError(f"{name} must be a PIL.Image.Image, not {type(im).__name__}")
    if image.size != source.size:
        raise ValueError(
            f"image and source must be the same size: image is {image.size[0]}x{image.size[1]}, "
            f"source is {source.size[0]}x{source.size[1]}"
        )
    return np.asarray(image.convert("RGB")), np.asarray(source.convert("RGB"))


def _float(rgb8: np.ndarray) -> np.ndarray:
    """uint8 RGB to float32 in [0, 1]; skimage's colour conversions keep float32 (half the
    memory traffic of float64, plenty for 8-bit output)."""
    return rgb8.astype(np.float32) / np.float32(255)


def _lab2rgb(lab: np.ndarray) -> np.ndarray:
    """``skimage.color.lab2rgb``, float sRGB in [0, 1] (skimage clips), without its warning.

    skimage warns when a colour maps to a negative CIE Z (a very yellow b*) and clips Z to 0; the
    result is clipped to the sRGB gamut anyway, which is what both callers want.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Conversion from CIE-LAB", category=UserWarning)
        return lab2rgb(lab)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUM_WEIGHTS.astype(rgb.dtype)


def _set_lum(colour: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """W3C Compositing and Blending Level 1, section 10.2 (non-separable blend modes): SetLum(C, l).

    ``colour``: float RGB in [0, 1], shape (H, W, 3); ``lum``: shape (H, W). Shifts every channel by
    ``lum - Lum(colour)``, then ClipColor: a colour pushed out of [0, 1] is pulled towards its
    luminosity until it fits, which keeps the luminosity. The two clips run one after the other,
    both with the min and max of the shifted colour, as in the spec and in blendmodes 2022 (the
    version AUTOMATIC1111 pins). https://www.w3.org/TR/compositing-1/#blendingnonseparable
    """
    c = colour + (lum - _lum(colour))[..., None]
    low = c.min(axis=-1)
    high = c.max(axis=-1)
    clip = (low < 0) | (high > 1)  # usually a small part of the image: clip only those pixels
    if clip.any():
        sub, low, high = c[clip], low[clip, None], high[clip, None]
        lum = _lum(sub)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            sub = np.where(low < 0, lum + (sub - lum) * lum / (lum - low), sub)
            sub = np.where(high > 1, lum + (sub - lum) * (1 - lum) / (high - lum), sub)
        c[clip] = np.nan_to_num(sub)
    return c


# colorize keeps L* within this (CIELAB units) of the source's before 8-bit rounding; the rounding
# itself moves L* by up to ~0.25.
_LIGHTNESS_TOLERANCE = 0.05
# Bisection steps on the chroma scale: 2**-7, about the 8-bit output's resolution.
_CHROMA_STEPS = 7


def _lightness_drift(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lab2rgb(lab)`` and how far its (clipped) colour's L* is from ``lab``'s L*."""
    rgb = _lab2rgb(lab)
    return rgb, np.abs(rgb2lab(rgb)[..., 0] - lab[..., 0])


def _lab2rgb_keep_lightness(lab: np.ndarray) -> np.ndarray:
    """``lab2rgb`` that keeps L*: colours outside the sRGB gamut lose chroma, not lightness.

    ``lab2rgb`` clips each RGB channel to [0, 1], which changes a strong colour's lightness when it
    does not fit the sRGB gamut at that lightness (a saturated blue on a near-white pixel comes out
    darker, by up to ~10 L* on the bundled photos). Those pixels (L* moved by more than
    ``_LIGHTNESS_TOLERANCE``) keep L* and hue and scale a*, b* by the largest factor in [0, 1]
    whose clipped colour keeps L* within the tolerance, found by bisection (``_CHROMA_STEPS``
    steps; factor 0, a grey, always fits). Everything else is plain ``lab2rgb``.
    """
    rgb, drift = _lightness_drift(lab)
    moved = drift > _LIGHTNESS_TOLERANCE
    if moved.any():
        sub = lab[moved]  # (n, 3)
        lo = np.zeros(len(sub), dtype=sub.dtype)
        hi = np.ones(len(sub), dtype=sub.dtype)
        trial = sub.copy()
        for _ in range(_CHROMA_STEPS):
            mid = (lo + hi) / 2
            trial[:, 1:] = sub[:, 1:] * mid[:, None]
            fits = _lightness_drift(trial)[1] <= _LIGHTNESS_TOLERANCE
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        trial[:, 1:] = sub[:, 1:] * lo[:, None]
        rgb[moved] = _lab2rgb(trial)
    return rgb


def color_correct(image: Image.Image, source: Image.Image) -> Image.Image:
    """Match the generated ``image``'s colours to ``source``, keeping ``image``'s luminosity.

    AUTOMATIC1111's "Apply color correction to img2img results to match original colors"
    (stable-diffusion-webui ``modules/processing.py``: ``setup_color_correction`` and
    ``apply_color_correction``), step by step:

    1. Convert both to CIELAB. A1111: ``cv2.cvtColor(..., cv2.COLOR_RGB2LAB)`` on uint8, OpenCV's
       8-bit LAB (L* scaled to 0..255, a* and b* offset by 128, each quantised to an integer).
       Here: ``skimage.color.rgb2lab``, float LAB, unquantised, so the matched histograms are
       finer; otherwise the same colour space (sRGB, D65).
    2. ``skimage.exposure.match_histograms(result_lab, source_lab, channel_axis=-1)``: each of
       L*, a*, b* separately takes the source's distribution (A1111: the same call).
    3. Back to RGB and to 8 bits. A1111: ``cv2.COLOR_LAB2RGB`` then ``astype("uint8")``. Here:
       ``skimage.color.lab2rgb`` (clipped to the sRGB gamut), rounded to uint8.
    4. Blend mode "luminosity" with the matched image as the backdrop and the generated image as
       the source layer. A1111: ``blendLayers(image, original_image, BlendType.LUMINOSITY)``
       from the blendmodes package, whose ``luminosity(background, foreground)`` is
       ``_setLum(background, _lum(foreground))``: the matched image's hue and saturation with the
       generated image's luminosity, the W3C "luminosity" blend mode
       (https://www.w3.org/TR/compositing-1/#blendingluminosity) with blendmodes' weights
       0.299, 0.587, 0.114 (the W3C text rounds them to 0.3, 0.59, 0.11). Implemented here in
       numpy (``_set_lum``), blendmodes is not a dependency; both layers are opaque, so the
       alpha compositing around it is the identity. Rounded to uint8 as blendmodes 2023 and later
       do (``np.around``); blendmodes 2022, which A1111 pins, truncates (``astype(np.uint8)``), so
       A1111's output is up to 1 level darker. Checked against blendmodes 2022 and 2025 on the
       bundled photos: the same blend within 1 level (2025: 0.05 % of values differ by 1).

    So the output's luminosity (``0.299 R + 0.587 G + 0.114 B``, what ``convert("L")`` computes)
    is the generated image's, up to 8-bit rounding: ``convert("L")`` of the output is within
    1 of the generated image's (tests/test_color.py measures it on the bundled photos).

    Speed: about 0.45 s CPU for 1024x1024 (float32 throughout; the histogram matching sorts).

    Args:
        image: the generated (img2img) image, any mode that converts to RGB.
        source: the photo whose colours to match, same size.

    Returns:
        A new ``"RGB"`` image, ``image.size``, 8 bits per channel.

    Raises:
        ValueError: ``image`` and ``source`` differ in size.
        TypeError: either is not a ``PIL.Image.Image``.
    """
    result, src = _pair(image, source)
    result = _float(result)
    matched_lab = match_histograms(rgb2lab(result), rgb2lab(_float(src)), channel_axis=-1)
    matched = _float(_to_uint8(_lab2rgb(matched_lab)))
    blended = _set_lum(matched, _lum(result))
    return Image.fromarray(_to_uint8(blended), "RGB")


def colorize(image: Image.Image, source: Image.Image) -> Image.Image:
    """Colour ``source`` (black and white, or faded) with the generated ``image``'s colours.

    CIELAB (``skimage.color.rgb2lab``): L* (lightness) from ``source``, a* and b* (the colour) from
    ``image``; back with ``skimage.color.lab2rgb``, clipped to the sRGB gamut, rounded to uint8.
    The same idea as the "color" blend mode (hue and saturation of one layer, lightness of the
    other), but in CIELAB, whose L* is perceptual lightness.

    A colour that does not fit the sRGB gamut at the source's lightness (a saturated colour on a
    near-white or near-black pixel) would have its lightness changed by ``lab2rgb``'s clipping,
    by up to ~10 L*: such pixels keep L* and hue and lose chroma instead
    (``_lab2rgb_keep_lightness``). So, measured on the bundled photos (tests/test_color.py):

    * the output's L* is the source's within 0.28 (8-bit rounding; the tests assert 0.35);
    * desaturated in CIELAB (a* = b* = 0) and written as 8-bit grey, the output is the greyscale
      source within 1 level;
    * ``output.convert("L")`` is NOT the greyscale source: Pillow's luma (0.299 R + 0.587 G +
      0.114 B on gamma-encoded values) is not lightness, a coloured pixel with a grey pixel's L*
      has a different luma (up to 49 levels apart on the bundled photos);
    * a*, b* are the result's where they fit (median difference <= 0.2 at mid lightness), with
      the same hue and less chroma where they do not.

    Speed: about 0.3 to 0.9 s CPU for 1024x1024, the more pixels need the gamut fit the slower.

    Args:
        image: the generated image, the colour donor, any mode that converts to RGB.
        source: the photo whose lightness to keep, same size; a greyscale (``"L"``) photo is fine.

    Returns:
        A new ``"RGB"`` image, ``source.size``, 8 bits per channel.

    Raises:
        ValueError: ``image`` and ``source`` differ in size.
        TypeError: either is not a ``PIL.Image.Image``.
    """
    result, src = _pair(image, source)
    lab = rgb2lab(_float(result))
    lab[..., 0] = rgb2lab(_float(src))[..., 0]
    return Image.fromarray(_to_uint8(_lab2rgb_keep_lightness(lab)), "RGB")

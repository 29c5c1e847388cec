"""img2img_cli/color.py: colour correction (A1111's) and colourisation, on the bundled photos.

The "generated" images are synthetic: the photo with its hue rotated, the photo with a warm colour
cast, or a different photo resized to the same size. Bounds are in 8-bit levels (0..255) for
Pillow's ``convert("L")`` and in CIELAB units (skimage.color.rgb2lab: L* 0..100) otherwise; each
assertion names the bound it checks and the worst value measured on these photos.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from img2img_cli.color import _lum, _set_lum, color_correct, colorize
from tests.conftest import EXAMPLES

COLOUR_PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"]
ALL_PHOTOS = COLOUR_PHOTOS + ["camera.png"]  # camera.png is greyscale ("L")
KINDS = ["hue", "cast", "other"]


def _photo(name: str) -> Image.Image:
    with Image.open(EXAMPLES / name) as im:
        return im.convert("RGB")


def _hue_rotated(im: Image.Image, degrees: int = 120) -> Image.Image:
    h, s, v = im.convert("HSV").split()
    h = h.point(lambda x: (x + round(degrees * 256 / 360)) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _cast(im: Image.Image, gains=(1.25, 1.0, 0.7)) -> Image.Image:
    a = np.asarray(im.convert("RGB")).astype(float) * gains
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _generated(name: str, kind: str) -> tuple[Image.Image, Image.Image]:
    """(source, synthetic generated image) for a photo."""
    src = _photo(name)
    if kind == "hue":
        return src, _hue_rotated(src)
    if kind == "cast":
        return src, _cast(src)
    other = "coffee.png" if name != "coffee.png" else "chelsea.png"
    return src, _photo(other).resize(src.size, Image.Resampling.LANCZOS)


def _lab(im: Image.Image) -> np.ndarray:
    return rgb2lab(np.asarray(im.convert("RGB")))


def _ab_stats(im: Image.Image) -> np.ndarray:
    lab = _lab(im)
    return np.array([lab[..., 1].mean(), lab[..., 1].std(), lab[..., 2].mean(), lab[..., 2].std()])


def _grey_levels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L")).astype(int)


def _lightness_grey(im: Image.Image) -> np.ndarray:
    """The image desaturated in CIELAB (a* = b* = 0, L* kept), as 8-bit grey levels: the greyscale
    that colorize preserves. For a grey image it is the image itself (checked below)."""
    lab = _lab(im)
    lab[..., 1:] = 0
    return np.rint(lab2rgb(lab)[..., 0] * 255).astype(int)


# --- color_correct -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_color_correct_moves_colour_statistics_to_the_source(name, kind):
    src, gen = _generated(name, kind)
    if name == "camera.png" and kind == "hue":
        gen = _hue_rotated(_cast(src))  # rotating a grey photo's hue changes nothing
    out = color_correct(gen, src)
    assert out.mode == "RGB" and out.size == src.size

    s_src, s_gen, s_out = _ab_stats(src), _ab_stats(gen), _ab_stats(out)
    before = np.abs(s_gen - s_src)  # |mean a*|, std a*, mean b*, std b* differences
    after = np.abs(s_out - s_src)
    assert before.sum() > 10  # the synthetic result really is off-colour
    # All four together: at least 4x closer (worst measured: 0.18, coffee with chelsea's colours).
    assert after.sum() <= 0.25 * before.sum(), (before, after)
    # The mean colour (a*, b*) moves at least halfway, each channel (worst measured: 0.37).
    assert np.all(after[[0, 2]] <= 0.5 * before[[0, 2]] + 0.5), (before, after)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_color_correct_keeps_the_result_luminosity(name, kind):
    # The luminosity blend keeps the result's 0.299 R + 0.587 G + 0.114 B, which is exactly what
    # Pillow's convert("L") computes: equal up to 8-bit rounding (measured max: 1 level).
    src, gen = _generated(name, kind)
    out = color_correct(gen, src)
    assert np.abs(_grey_levels(out) - _grey_levels(gen)).max() <= 1


def test_color_correct_on_a_grey_source_gives_a_grey_image():
    src, gen = _generated("camera.png", "other")
    lab = _lab(color_correct(gen, src))
    # Within one 8-bit level of grey (measured max |a*|, |b*|: 0.70).
    assert np.abs(lab[..., 1:]).max() < 1.0


@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_color_correct_of_the_source_itself_is_the_source(name):
    src = _photo(name)
    assert np.array_equal(np.asarray(color_correct(src, src)), np.asarray(src))


def test_luminosity_blend_is_the_w3c_setlum():
    # W3C Compositing Level 1, SetLum(C, l) with ClipColor, worked by hand: pure red set to
    # luminosity 0.5 is shifted to (1.201, 0.201, 0.201), then pulled towards l until max is 1:
    # G = B = 0.5 - 0.299 * 0.5 / 0.701.
    red = np.array([[[1.0, 0.0, 0.0]]])
    out = _set_lum(red, np.array([[0.5]]))
    g = 0.5 - 0.299 * 0.5 / 0.701
    np.testing.assert_allclose(out, [[[1.0, g, g]]], atol=1e-12)
    np.testing.assert_allclose(_lum(out), [[0.5]], atol=1e-12)
    # Below 0: a dark blue raised to a luminosity its hue cannot reach without clipping at 0.
    navy = np.array([[[0.0, 0.0, 0.5]]])
    out = _set_lum(navy, np.array([[0.02]]))
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(_lum(out), [[0.02]], atol=1e-12)
    # In range: a plain shift.
    grey = np.array([[[0.4, 0.5, 0.6]]])
    np.testing.assert_allclose(_set_lum(grey, _lum(grey) + 0.1), grey + 0.1, atol=1e-12)


# --- colorize ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_lightness_grey_of_a_grey_image_is_itself(name):
    grey = _photo(name).convert("L")
    assert np.array_equal(_lightness_grey(grey), np.asarray(grey).astype(int))


@pytest.mark.parametrize("greyscale", [True, False], ids=["grey-source", "colour-source"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_colorize_keeps_the_source_lightness(name, kind, greyscale):
    src, gen = _generated(name, kind)
    if greyscale:
        src = src.convert("L")  # camera.png: the photo as it is
    if name == "camera.png" and kind == "hue":
        gen = _hue_rotated(_cast(gen))
    out = colorize(gen, src)
    assert out.mode == "RGB" and out.size == src.size
    # L*: the source's up to 8-bit rounding (and the 0.05 gamut-fit tolerance); measured max 0.28.
    assert np.abs(_lab(out)[..., 0] - _lab(src)[..., 0]).max() <= 0.35
    # Back to greyscale by lightness: the (greyscale) source within 1 level (measured max: 1).
    assert np.abs(_lightness_grey(out) - _lightness_grey(src)).max() <= 1
    if greyscale:
        assert np.abs(_lightness_grey(out) - np.asarray(src).astype(int)).max() <= 1
    # Not convert("L"): its luma weights gamma-encoded RGB, L* is perceptual lightness, so a
    # coloured pixel with the source's L* has a different luma (measured up to 49 levels; mean 0
    # to 20). Only bounded loosely here, to show it is not the property.
    assert np.abs(_grey_levels(out) - _grey_levels(src.convert("RGB"))).mean() < 25


@pytest.mark.parametrize("greyscale", [True, False], ids=["grey-source", "colour-source"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ALL_PHOTOS)
def test_colorize_takes_the_colour_from_the_result(name, kind, greyscale):
    src, gen = _generated(name, kind)
    if name == "camera.png":
        gen = _cast(gen if kind != "hue" else _hue_rotated(_cast(src)))
    if greyscale:
        src = src.convert("L")
    out = colorize(gen, src)
    lab_src, lab_gen, lab_out = _lab(src), _lab(gen), _lab(out)
    mid = (lab_src[..., 0] > 25) & (lab_src[..., 0] < 75)  # mid-range source lightness
    assert mid.mean() > 0.3
    a_gen, b_gen = lab_gen[..., 1][mid], lab_gen[..., 2][mid]
    a_out, b_out = lab_out[..., 1][mid], lab_out[..., 2][mid]
    d = np.abs(np.stack([a_out - a_gen, b_out - b_gen]))
    # Mostly the result's a*, b* up to rounding (medians measured <= 0.2) ...
    if kind != "hue" or name != "coffee.png":
        assert np.median(d) <= 0.5, np.median(d)
    # ... and where the result's colour does not fit the sRGB gamut at the source's lightness
    # (coffee's red cup turned green), the same hue with less chroma, never more.
    # Measured: chroma at most 0.76 above the result's (rounding), hue within 3.9 degrees where
    # the result's chroma is over 10; coffee hue-rotated: median |difference| 4.9.
    chroma_gen, chroma_out = np.hypot(a_gen, b_gen), np.hypot(a_out, b_out)
    assert np.all(chroma_out <= chroma_gen + 1.0)
    coloured = chroma_gen > 10
    hue_diff = np.angle(np.exp(1j * (np.arctan2(b_out, a_out) - np.arctan2(b_gen, a_gen))))
    assert np.abs(np.degrees(hue_diff[coloured])).max() <= 5


def test_colorize_of_the_source_itself_is_the_source():
    for name in ALL_PHOTOS:
        src = _photo(name)
        assert np.array_equal(np.asarray(colorize(src, src)), np.asarray(src)), name


# --- both ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [color_correct, colorize])
def test_size_mismatch_raises(fn):
    src = _photo("chelsea.png")
    gen = src.resize((src.width // 2, src.height // 2))
    with pytest.raises(ValueError, match="same size"):
        fn(gen, src)
    with pytest.raises(ValueError, match="same size"):
        fn(src, gen)


@pytest.mark.parametrize("fn", [color_correct, colorize])
def test_not_an_image_raises(fn):
    src = _photo("chelsea.png")
    with pytest.raises(TypeError):
        fn(np.asarray(src), src)


@pytest.mark.parametrize("fn", [color_correct, colorize])
def test_inputs_untouched_and_other_modes_accepted(fn):
    src, gen = _generated("chelsea.png", "other")
    before = (np.asarray(src).copy(), np.asarray(gen).copy())
    out = fn(gen.convert("RGBA"), src.convert("P"))
    assert out.mode == "RGB" and out.size == src.size
    assert np.array_equal(np.asarray(src), before[0]) and np.array_equal(np.asarray(gen), before[1])

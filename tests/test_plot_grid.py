"""img2img_cli.plot.grid: labelled X/Y grids, Z stacks and contact sheets (Pillow only, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, features

from img2img_cli.plot.grid import (
    MIN_LABEL_PX,
    contact_sheet,
    draw_grid,
    font,
    font_source,
    grid_margins,
    grid_shape,
    label_size,
    make_thumbnail,
    stack_z,
)

WHITE = np.array([255, 255, 255], dtype=np.uint8)


def noise(w: int, h: int, seed: int) -> Image.Image:
    """A w x h RGB image of random pixels: any misplaced or altered pixel shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def cells_of(rows: int, cols: int, w: int, h: int) -> list[list[Image.Image]]:
    return [[noise(w, h, 100 * r + c) for c in range(cols)] for r in range(rows)]


def pasted(cells, w: int, h: int) -> np.ndarray:
    """The cells pasted edge to edge, no labels, as an (H, W, 3) array."""
    return np.concatenate([np.concatenate([np.asarray(c) for c in row], axis=1) for row in cells], axis=0)


def ink(a: np.ndarray) -> np.ndarray:
    """Mask of the pixels that are not background white."""
    return (a != WHITE).any(axis=-1)


def ink_bbox(a: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the non-white pixels of ``a``, right/bottom exclusive."""
    ys, xs = np.nonzero(ink(a))
    assert len(xs), "no text drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------------------------- sizes


def test_1x1_without_labels_is_the_cell():
    cell = noise(64, 48, 1)
    out = draw_grid([[cell]], [], [])
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.array_equal(np.asarray(out), np.asarray(cell))
    m = grid_margins((64, 48), [], [])
    assert (m.left, m.top) == (0, 0)


@pytest.mark.parametrize(
    ("x_labels", "y_labels", "has_left", "has_top"),
    [
        ([], [], False, False),
        (["", "", ""], ["", ""], False, False),  # all blank: no margins either
        (["cfg 5", "cfg 7", "cfg 9"], [], False, True),
        ([], ["20 steps", "40 steps"], True, False),
        (["cfg 5", "cfg 7", "cfg 9"], ["20 steps", "40 steps"], True, True),
    ],
)
def test_3x2_size_is_cells_plus_margins(x_labels, y_labels, has_left, has_top):
    w, h = 64, 80
    cells = cells_of(2, 3, w, h)  # 2 rows, 3 columns
    out = draw_grid(cells, x_labels, y_labels)
    m = grid_margins((w, h), x_labels, y_labels)
    assert out.mode == "RGB"
    assert out.size == (m.left + 3 * w, m.top + 2 * h)
    assert (m.left > 0) == has_left and (m.top > 0) == has_top


def test_1x1_with_labels_size():
    w, h = 128, 128
    out = draw_grid([[noise(w, h, 3)]], ["strength 0.5"], ["seed 42"])
    m = grid_margins((w, h), ["strength 0.5"], ["seed 42"])
    assert m.left >= w * 3 // 4  # A1111's left margin
    assert out.size == (m.left + w, m.top + h)


# -------------------------------------------------------------------- cells vs margins


def test_labels_change_only_the_margins():
    w, h = 96, 64
    cells = cells_of(2, 3, w, h)
    xs, ys = ["Euler a", "DPM++ 2M Karras", "DDIM"], ["strength 0.3", "strength 0.75"]
    plain = np.asarray(draw_grid(cells, [], []))
    assert np.array_equal(plain, pasted(cells, w, h))

    out = np.asarray(draw_grid(cells, xs, ys))
    m = grid_margins((w, h), xs, ys)
    assert np.array_equal(out[m.top :, m.left :], plain)  # every cell pixel untouched

    top_band, left_band = out[: m.top, m.left :], out[m.top :, : m.left]
    assert ink(top_band).any() and not ink(top_band).all()  # text drawn, on white
    assert ink(left_band).any() and not ink(left_band).all()
    assert not ink(out[: m.top, : m.left]).any()  # the corner stays blank
    # one label per slot: ink above every column and beside every row
    for c in range(3):
        assert ink(top_band[:, c * w : (c + 1) * w]).any()
    for r in range(2):
        assert ink(left_band[r * h : (r + 1) * h]).any()


def test_background_colour_fills_the_margins():
    out = np.asarray(draw_grid([[noise(64, 64, 5)]], ["x"], [], background=(10, 20, 30)))
    m = grid_margins((64, 64), ["x"], [])
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[m.top - 1, 63]) == (10, 20, 30)


# ---------------------------------------------------------------------------- font size


def test_label_size_rule():
    assert label_size(64) == MIN_LABEL_PX >= 10
    assert label_size(512) == 2 * 512 // 25 == 40  # A1111: (512 + 512) // 25
    assert label_size(1024) == 81
    sizes = [label_size(w) for w in (64, 128, 256, 512, 1024, 2048)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_font_grows_with_cell_size():
    small = np.asarray(draw_grid([[noise(64, 64, 1)]], ["Hg"], []))
    big = np.asarray(draw_grid([[noise(1024, 1024, 1)]], ["Hg"], []))
    m_small, m_big = grid_margins((64, 64), ["Hg"], []), grid_margins((1024, 1024), ["Hg"], [])
    assert m_small.font_size < m_big.font_size and m_small.top < m_big.top
    l0, t0, r0, b0 = ink_bbox(small[: m_small.top])
    l1, t1, r1, b1 = ink_bbox(big[: m_big.top])
    assert b0 - t0 >= 8  # legible at 64 px cells
    if features.check("freetype2"):  # the bitmap fallback has one size only
        assert (b1 - t1) > 4 * (b0 - t0) and (r1 - l1) > 4 * (r0 - l0)


@pytest.mark.skipif(not features.check("freetype2"), reason="Pillow without FreeType: one bitmap size")
def test_font_is_scalable():
    assert font_source() != "pillow-bitmap-default"
    assert font(40).getbbox("M")[3] > 2 * font(12).getbbox("M")[3]
    assert font(20) is font(20)  # cached


def test_font_rejects_zero():
    with pytest.raises(ValueError, match="font size"):
        font(0)


# -------------------------------------------------------------------------------- wrapping


def test_long_labels_wrap_and_stay_in_their_column():
    w, h = 64, 64
    cells = cells_of(1, 3, w, h)
    short = ["a", "", ""]
    long = ["a fairly long prompt about a lighthouse at dusk, oil painting", "", ""]
    m_short, m_long = grid_margins((w, h), short, []), grid_margins((w, h), long, [])
    assert m_long.top > 3 * m_short.top  # several lines: the margin grew
    out = draw_grid(cells, long, [])
    assert out.size == (3 * w, m_long.top + h)  # no wider than the cells
    l, t, r, b = ink_bbox(np.asarray(out)[: m_long.top])
    assert 0 <= l and r <= w and b <= m_long.top  # inside column 0's slot


def test_a_word_wider_than_the_cell_is_broken():
    w = 64
    word = "supercalifragilisticexpialidocious_checkpoint_v3.safetensors"
    m = grid_margins((w, w), [word], [])
    assert m.top > 3 * grid_margins((w, w), ["x"], []).top
    out = np.asarray(draw_grid([[noise(w, w, 9)]], [word], []))
    assert out.shape[1] == w
    assert ink(out[: m.top]).any()


def test_long_row_labels_widen_the_left_margin_and_stay_in_their_row():
    w, h = 64, 64
    cells = cells_of(3, 1, w, h)
    long = "masterpiece, best quality, a photo of an old harbour, golden hour, 35 mm film grain"
    ys = ["", long, ""]
    m = grid_margins((w, h), [], ys)  # row labels only
    assert m.left > w * 3 // 4
    out = np.asarray(draw_grid(cells, [], ys))
    assert out.shape[:2] == (3 * h, m.left + w)
    l, t, r, b = ink_bbox(out[:, : m.left])
    assert h <= t and b <= 2 * h and r <= m.left  # only in row 1's slot


# ------------------------------------------------------------------------------ None cells


def test_none_cells_are_blank():
    w, h = 48, 32
    cells = cells_of(2, 2, w, h)
    cells[0][1] = None
    out = np.asarray(draw_grid(cells, ["a", "b"], ["c", "d"], background="white"))
    m = grid_margins((w, h), ["a", "b"], ["c", "d"])
    hole = out[m.top : m.top + h, m.left + w : m.left + 2 * w]
    assert (hole == 255).all()
    assert np.array_equal(out[m.top + h : m.top + 2 * h, m.left + w :], np.asarray(cells[1][1]))


def test_all_none_cells_need_cell_size():
    with pytest.raises(ValueError, match="cell_size"):
        draw_grid([[None, None]], [], [])
    out = draw_grid([[None, None]], [], [], cell_size=(30, 20), background="black")
    assert out.size == (60, 20) and not np.asarray(out).any()


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cells", "xs", "ys", "match"),
    [
        ([], [], [], "at least one row"),
        ([[noise(8, 8, 0)], [noise(8, 8, 1), noise(8, 8, 2)]], [], [], "row 1 has 2"),
        ([[noise(8, 8, 0), noise(9, 8, 1)]], [], [], r"cell \(0, 1\) is 9x8"),
        ([[noise(8, 8, 0), noise(8, 8, 1)]], ["only one"], [], "x_labels: 1 labels for 2 columns"),
        ([[noise(8, 8, 0)]], [], ["a", "b"], "y_labels: 2 labels for 1 rows"),
    ],
)
def test_bad_grids_fail_loudly(cells, xs, ys, match):
    with pytest.raises(ValueError, match=match):
        draw_grid(cells, xs, ys)


# ------------------------------------------------------------------------------------- Z


def test_stack_z_three_grids_side_by_side_under_titles():
    grids = [noise(200, 150, 1), noise(180, 150, 2), noise(200, 170, 3)]
    titles = ["model A", "model B", "model C"]
    out = stack_z(grids, titles)
    slot_w, slot_h = 200, 170
    m = grid_margins((slot_w, slot_h), titles, [])
    assert m.left == 0 and m.top > 0
    assert out.mode == "RGB" and out.size == (3 * slot_w, m.top + slot_h)
    a = np.asarray(out)
    for i, g in enumerate(grids):
        x0 = i * slot_w
        assert np.array_equal(a[m.top : m.top + g.height, x0 : x0 + g.width], np.asarray(g))
        assert ink(a[: m.top, x0 : x0 + slot_w]).any()  # its title
    # the padding of the smaller grids is background
    assert (a[m.top :, slot_w + 180 : 2 * slot_w] == 255).all()
    assert (a[m.top + 150 :, 0:200] == 255).all()


def test_stack_z_without_titles_and_bad_counts():
    grids = [noise(50, 40, 1), noise(50, 40, 2)]
    out = stack_z(grids, [])
    assert out.size == (100, 40)
    assert np.array_equal(np.asarray(out), np.concatenate([np.asarray(g) for g in grids], axis=1))
    with pytest.raises(ValueError, match="z_labels"):
        stack_z(grids, ["one"])
    with pytest.raises(ValueError, match="grids"):
        stack_z([], [])


# --------------------------------------------------------------------------- contact sheet


@pytest.mark.parametrize(
    ("n", "columns", "shape"),
    [(1, None, (1, 1)), (2, None, (1, 2)), (4, None, (2, 2)), (5, None, (1, 5)), (6, None, (2, 3)),
     (8, None, (2, 4)), (9, None, (3, 3)), (12, None, (3, 4)), (5, 3, (2, 3)), (5, 9, (1, 5))],
)
def test_grid_shape_follows_a1111(n, columns, shape):
    assert grid_shape(n, columns) == shape


@pytest.mark.parametrize(("n", "columns"), [(4, None), (5, None), (5, 3)])
def test_contact_sheet_places_thumbnails_and_captions(n, columns):
    size = 96
    images = [noise(size, size, i) for i in range(n)]
    captions = [f"photo_{i:04d}.png\nseed {1234 + i}" for i in range(n)]
    out = contact_sheet(images, captions, columns=columns, thumb=128)  # no resize: 96 <= 128
    rows, cols = grid_shape(n, columns)
    assert out.mode == "RGB" and out.width == cols * size
    band = out.height // rows - size
    assert out.height == rows * (size + band) and band > 0
    a = np.asarray(out)
    for i, im in enumerate(images):
        x0, y0 = (i % cols) * size, (i // cols) * (size + band)
        assert np.array_equal(a[y0 : y0 + size, x0 : x0 + size], np.asarray(im))
        caption = a[y0 + size : y0 + size + band, x0 : x0 + size]
        assert ink(caption).any() and not ink(caption).all()
    for i in range(n, rows * cols):  # an empty spot stays white
        x0, y0 = (i % cols) * size, (i // cols) * (size + band)
        assert (a[y0 : y0 + size + band, x0 : x0 + size] == 255).all()


def test_contact_sheet_shrinks_keeping_aspect():
    wide, tall = noise(600, 300, 1), noise(200, 400, 2)
    out = contact_sheet([wide, tall], ["wide.png seed 1", "tall.png seed 2"], thumb=128)
    t_wide, t_tall = make_thumbnail(wide, 128), make_thumbnail(tall, 128)
    assert t_wide.size == (128, 64) and t_tall.size == (64, 128)
    slot_w, slot_h = 128, 128
    band = out.height - slot_h
    assert out.size == (2 * slot_w, slot_h + band) and band > 0
    a = np.asarray(out)
    y = (slot_h - 64) // 2  # centred in its slot
    assert np.array_equal(a[y : y + 64, 0:128], np.asarray(t_wide))
    x = slot_w + (slot_w - 64) // 2
    assert np.array_equal(a[0:128, x : x + 64], np.asarray(t_tall))
    assert (a[0:y, 0:128] == 255).all()


def test_contact_sheet_without_captions_and_errors():
    images = [noise(32, 32, i) for i in range(4)]
    out = contact_sheet(images, [], thumb=64)
    assert out.size == (64, 64)
    assert np.array_equal(np.asarray(out), pasted([images[:2], images[2:]], 32, 32))
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(images, ["a"])
    with pytest.raises(ValueError, match="at least one image"):
        contact_sheet([], [])
    with pytest.raises(ValueError, match="thumb"):
        contact_sheet(images, [], thumb=0)


# ------------------------------------------------------------------------- font fallbacks


@pytest.fixture
def fresh_font_cache():
    from img2img_cli.plot import grid

    grid._resolve_font.cache_clear()
    yield grid
    grid._resolve_font.cache_clear()


def _layout_holds(x_labels, y_labels):
    w, h = 64, 64
    cells = cells_of(2, 2, w, h)
    out = np.asarray(draw_grid(cells, x_labels, y_labels))
    m = grid_margins((w, h), x_labels, y_labels)
    assert out.shape[:2] == (m.top + 2 * h, m.left + 2 * w)
    assert np.array_equal(out[m.top :, m.left :], pasted(cells, w, h))
    assert ink(out[: m.top]).any() and ink(out[:, : m.left]).any()


def test_without_freetype_the_bitmap_font_still_lays_out(monkeypatch, fresh_font_cache):
    monkeypatch.setattr(fresh_font_cache.features, "check", lambda name: False)
    assert font_source() == "pillow-bitmap-default"
    _layout_holds(["Euler a", "a long label that has to wrap"], ["seed 1", "seed 2"])


@pytest.mark.skipif(not features.check("freetype2"), reason="Pillow without FreeType")
def test_old_pillow_falls_back_to_an_os_truetype_font(monkeypatch, fresh_font_cache):
    from PIL import ImageFont

    real = ImageFont.load_default

    def old_load_default(*args, **kwargs):  # Pillow < 10.1: no size argument
        if args or kwargs:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return real()

    monkeypatch.setattr(fresh_font_cache.ImageFont, "load_default", old_load_default)
    source = font_source()
    assert source.startswith("truetype:") or source == "pillow-bitmap-default"
    _layout_holds(["Euler a", "a long label that has to wrap"], ["seed 1", "seed 2"])

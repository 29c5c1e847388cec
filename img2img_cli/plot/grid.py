"""Labelled image grids: X/Y plots, Z stacks of X/Y plots, and contact sheets. Pillow only.

The layouts follow AUTOMATIC1111's stable-diffusion-webui (read, not copied):

* ``modules/images.py`` ``draw_grid_annotations``: the label font is ``(cell_w + cell_h) // 25``
  px, lines are ``font_px // 2`` px apart, column labels sit above their column in a top margin
  of ``tallest label + 2 * line spacing`` px, row labels sit in a left margin ``cell_w * 3 // 4``
  px wide, labels are word-wrapped to the width they have, and a side whose labels are all empty
  gets no margin at all. Black text on white.
* ``scripts/xyz_grid.py`` ``draw_xyz_grid``: each Z value's X/Y grid is drawn with its own
  labels, then the Z grids are put side by side in one row (``image_grid(..., rows=1)``), each in
  a slot as large as the largest of them, with the Z value as a title above each (a
  ``draw_grid_annotations`` call with the Z labels as column labels and no row labels).
* ``modules/images.py`` ``image_grid`` with ``grid_prevent_empty_spots`` (the "Prevent empty
  spots in grid" setting, also the rule the batch grids use when ``n_rows`` is -1): the number
  of rows starts at ``floor(sqrt(n))`` and goes down until it divides ``n``; the columns are
  ``ceil(n / rows)``.

Where we differ from A1111, on purpose:

* The font size has a floor, :data:`MIN_LABEL_PX` (12 px): A1111's rule gives 5 px text on
  64 px cells.
* A word wider than its space is broken between characters (A1111 lets it run over the next
  label or off the image), and each label is drawn into its own slot, so text never spills onto
  a cell, a neighbouring label or past the image edge.
* The left margin is at least ``4 * font_px`` wide and widens (up to ``4 * cell_w``) until every
  wrapped row label fits the row's height (A1111's is fixed at ``cell_w * 3 // 4``).

All sizes are in pixels. Every function returns a new ``"RGB"`` image; input images in other
modes are converted with ``Image.convert("RGB")`` (an alpha channel is dropped). Bad arguments
(ragged rows, cells of different sizes, a label count that does not match) raise ``ValueError``
naming the argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, features

__all__ = [
    "MIN_LABEL_PX",
    "GridMargins",
    "contact_sheet",
    "draw_grid",
    "font",
    "font_source",
    "grid_margins",
    "grid_shape",
    "label_size",
    "make_thumbnail",
    "stack_z",
]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Smallest label font size in px: text at 64 px cells stays readable.
MIN_LABEL_PX = 12

#: Label text colour: A1111's ``grid_text_active_color`` default (#000000).
TEXT_COLOR = (0, 0, 0)

# TrueType fonts tried, by file name, when Pillow has FreeType but is older than 10.1 (no scalable
# built-in font). ImageFont.truetype looks a bare file name up in the OS font folders
# (XDG_DATA_DIRS/fonts on Linux, %WINDIR%/fonts, /Library/Fonts ...).
_TRUETYPE_CANDIDATES = (
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "Arial.ttf",
    "arial.ttf",
    "Helvetica.ttc",
)


# --------------------------------------------------------------------------------------- fonts


@functools.lru_cache(maxsize=128)
def _resolve_font(size_px: int) -> tuple[Font, str]:
    if features.check("freetype2"):
        try:
            # Pillow >= 10.1 with FreeType: its built-in scalable font (Aileron Regular).
            return ImageFont.load_default(size=size_px), "pillow-freetype-default"
        except TypeError:  # Pillow < 10.1: load_default() takes no size
            pass
        for name in _TRUETYPE_CANDIDATES:
            try:
                f = ImageFont.truetype(name, size_px)
            except OSError:
                continue
            return f, f"truetype:{getattr(f, 'path', name)}"
    # No FreeType: Pillow's bitmap font, one size only (about 11 px high).
    return ImageFont.load_default(), "pillow-bitmap-default"


def font(size_px: int) -> Font:
    """A font for grid labels, ``size_px`` px (em size) where the font can scale.

    The source, first that works:

    1. Pillow's own scalable font, ``ImageFont.load_default(size=size_px)``: Pillow >= 10.1
       embeds Aileron Regular and returns it as a FreeType font when Pillow was built with
       FreeType (``PIL.features.check("freetype2")``). Same glyphs on every machine.
    2. With FreeType but an older Pillow: the first of DejaVuSans, Liberation Sans, Arial,
       Helvetica found in the OS font folders (``ImageFont.truetype`` by file name).
    3. Without FreeType: Pillow's bitmap default font, which has one size (about 11 px), so
       ``size_px`` is ignored. Layouts measure the text they draw, so they stay correct.

    :func:`font_source` says which one this machine uses. Fonts are cached by size.

    Raises:
        ValueError: ``size_px`` < 1.
    """
    if size_px < 1:
        raise ValueError(f"font size must be >= 1 px, got {size_px}")
    return _resolve_font(int(size_px))[0]


def font_source() -> str:
    """Which font :func:`font` uses here: ``"pillow-freetype-default"``,
    ``"truetype:<path>"`` or ``"pillow-bitmap-default"``."""
    return _resolve_font(MIN_LABEL_PX)[1]


def label_size(cell_w: int) -> int:
    """Label font size in px for cells ``cell_w`` px wide: ``max(12, 2 * cell_w // 25)``.

    For a square cell this is A1111's ``fontsize = (width + height) // 25``
    (``modules/images.py`` ``draw_grid_annotations``): 20 px at 256 px cells, 40 px at 512,
    81 px at 1024. :func:`draw_grid` passes the mean of the cell's width and height, which gives
    A1111's size for non-square cells too (to within 1 px). The floor, :data:`MIN_LABEL_PX`, is
    ours: A1111's rule gives 5 px at 64 px cells.
    """
    return max(MIN_LABEL_PX, 2 * int(cell_w) // 25)


def _line_height(f: Font) -> int:
    """Height in px of one line of text: ascent + descent."""
    getmetrics = getattr(f, "getmetrics", None)
    if getmetrics is not None:
        ascent, descent = getmetrics()
        return ascent + descent
    return f.getbbox("Ag|")[3]


# ------------------------------------------------------------------------------------ wrapping


def _wrap(text: str, f: Font, max_w: int) -> list[str]:
    """``text`` as lines no wider than ``max_w`` px.

    Words are packed greedily (A1111's ``wrap`` in ``draw_grid_annotations``); a word wider than
    ``max_w`` is cut between characters (at least one character a line); "\\n" starts a new
    line. Blank text gives no lines.
    """
    if not text.strip():
        return []
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if f.getlength(candidate) <= max_w:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:
                if line and f.getlength(line + ch) > max_w:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines


def _block_height(n_lines: int, line_h: int, spacing: int) -> int:
    """Height in px of ``n_lines`` lines ``spacing`` px apart (0 for no lines)."""
    return 0 if n_lines == 0 else n_lines * line_h + (n_lines - 1) * spacing


def _draw_block(
    canvas: Image.Image, box: tuple[int, int, int, int], lines: Sequence[str], f: Font, spacing: int
) -> None:
    """Draw ``lines`` centred in ``box`` (left, top, right, bottom, px) of ``canvas``, clipped to
    the box: the text is drawn on a crop of the box and pasted back."""
    if not lines:
        return
    left, top, right, bottom = box
    slot = canvas.crop(box)
    draw = ImageDraw.Draw(slot)
    line_h = _line_height(f)
    y = (slot.height - _block_height(len(lines), line_h, spacing)) / 2
    for line in lines:
        x = (slot.width - f.getlength(line)) / 2
        draw.text((x, y), line, font=f, fill=TEXT_COLOR)
        y += line_h + spacing
    canvas.paste(slot, (left, top))


# --------------------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class GridMargins:
    """Label margins of a grid drawn by :func:`draw_grid`, in px.

    ``left``: width of the row-label column (0 without row labels); ``top``: height of the
    column-label band (0 without column labels); ``font_size``: label font size; ``spacing``:
    the gap between wrapped lines (``font_size // 2``, A1111's ``line_spacing``).
    The grid image is ``(left + cols * cell_w, top + rows * cell_h)``.
    """

    left: int
    top: int
    font_size: int
    spacing: int


@dataclass(frozen=True)
class _Layout:
    margins: GridMargins
    x_lines: list[list[str]]
    y_lines: list[list[str]]


def _layout(cell_size: tuple[int, int], x_labels: Sequence[str], y_labels: Sequence[str]) -> _Layout:
    w, h = cell_size
    size = label_size((w + h) // 2)
    f = font(size)
    spacing = size // 2
    inset = max(2, size // 4)  # px kept clear on each side of a label
    line_h = _line_height(f)

    x_lines = [_wrap(t, f, max(1, w - 2 * inset)) for t in x_labels]
    top = 0
    if any(x_lines):
        top = max(_block_height(len(ls), line_h, spacing) for ls in x_lines) + 2 * spacing

    y_lines: list[list[str]] = [[] for _ in y_labels]
    left = 0
    if any(t.strip() for t in y_labels):
        left = max(w * 3 // 4, 4 * size)  # A1111: width * 3 // 4
        while True:
            y_lines = [_wrap(t, f, max(1, left - 2 * inset)) for t in y_labels]
            tallest = max(_block_height(len(ls), line_h, spacing) for ls in y_lines)
            if tallest <= h or left >= 4 * w:
                break
            left += size
    return _Layout(GridMargins(left=left, top=top, font_size=size, spacing=spacing), x_lines, y_lines)


def _check_labels(name: str, labels: Sequence[str], n: int, what: str) -> None:
    if labels and len(labels) != n:
        raise ValueError(f"{name}: {len(labels)} labels for {n} {what}; give one per {what[:-1]} or none")


def grid_margins(
    cell_size: tuple[int, int], x_labels: Sequence[str], y_labels: Sequence[str]
) -> GridMargins:
    """The margins :func:`draw_grid` adds around cells of ``cell_size`` = (w, h) px.

    ``x_labels`` (one per column) and ``y_labels`` (one per row) as given to :func:`draw_grid`;
    an empty list, or labels that are all blank, means no margin on that side. Rules in the
    module docstring (A1111 ``draw_grid_annotations``).
    """
    return _layout(cell_size, list(x_labels), list(y_labels)).margins


def draw_grid(
    cells: Sequence[Sequence[Image.Image | None]],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    background: str | tuple[int, int, int] = "white",
    cell_size: tuple[int, int] | None = None,
) -> Image.Image:
    """An X/Y grid: ``cells[row][col]`` with column labels on top and row labels on the left.

    Args:
        cells: rows of cells, every row as long, every cell the same size (w, h) px; ``None``
            is an empty cell, filled with ``background``.
        x_labels: one label per column, or ``[]`` (or all blank) for no top margin.
        y_labels: one label per row, or ``[]`` (or all blank) for no left margin.
        background: colour of the margins and the empty cells (A1111's
            ``grid_background_color`` default is white).
        cell_size: (w, h) px; only needed when every cell is ``None``.

    Returns:
        An ``"RGB"`` image of ``(m.left + cols * w, m.top + rows * h)`` px, where
        ``m = grid_margins((w, h), x_labels, y_labels)``; cell (r, c) is pasted unchanged at
        ``(m.left + c * w, m.top + r * h)``. Labels are wrapped to the space they have and
        centred in it (A1111 ``draw_grid_annotations``).

    Raises:
        ValueError: no rows, ragged rows, cells of different sizes, a label count that is
            neither 0 nor the number of columns (rows), or only ``None`` cells and no
            ``cell_size``.
    """
    rows = len(cells)
    if rows == 0 or len(cells[0]) == 0:
        raise ValueError("cells: a grid needs at least one row and one column")
    cols = len(cells[0])
    for r, row in enumerate(cells):
        if len(row) != cols:
            raise ValueError(f"cells: row {r} has {len(row)} cells, row 0 has {cols}")
    sizes = {(r, c): im.size for r, row in enumerate(cells) for c, im in enumerate(row) if im is not None}
    if sizes:
        (r0, c0), first = next(iter(sizes.items()))
        for (r, c), s in sizes.items():
            if s != first:
                raise ValueError(
                    f"cells: cell ({r}, {c}) is {s[0]}x{s[1]} px, cell ({r0}, {c0}) is {first[0]}x{first[1]}"
                )
        if cell_size is not None and tuple(cell_size) != first:
            raise ValueError(f"cell_size: {cell_size} but the cells are {first[0]}x{first[1]} px")
        w, h = first
    elif cell_size is not None:
        w, h = cell_size
    else:
        raise ValueError("cells: every cell is None; pass cell_size=(w, h)")
    _check_labels("x_labels", x_labels, cols, "columns")
    _check_labels("y_labels", y_labels, rows, "rows")

    lay = _layout((w, h), list(x_labels), list(y_labels))
    m = lay.margins
    out = Image.new("RGB", (m.left + cols * w, m.top + rows * h), background)
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            if im is not None:
                out.paste(im if im.mode == "RGB" else im.convert("RGB"), (m.left + c * w, m.top + r * h))

    f = font(m.font_size)
    for c, lines in enumerate(lay.x_lines):
        x0 = m.left + c * w
        _draw_block(out, (x0, 0, x0 + w, m.top), lines, f, m.spacing)
    for r, lines in enumerate(lay.y_lines):
        y0 = m.top + r * h
        _draw_block(out, (0, y0, m.left, y0 + h), lines, f, m.spacing)
    return out


def stack_z(
    grids: Sequence[Image.Image],
    z_labels: Sequence[str],
    *,
    background: str | tuple[int, int, int] = "white",
) -> Image.Image:
    """One sheet of Z grids side by side, left to right, each under its title.

    As A1111's ``scripts/xyz_grid.py`` does: every grid gets a slot as large as the largest grid
    (max width x max height, px), pasted at the slot's top-left corner, the rest ``background``;
    the slots form one row, and ``z_labels`` are drawn above them as column labels of
    :func:`draw_grid` (font ``label_size((slot_w + slot_h) // 2)``, A1111's
    ``(max_w + max_h) // 25``). ``z_labels`` ``[]`` or all blank: no title band.

    Returns:
        An ``"RGB"`` image of ``(len(grids) * slot_w, m.top + slot_h)`` px with
        ``m = grid_margins((slot_w, slot_h), z_labels, [])``; grid i at ``(i * slot_w, m.top)``.

    Raises:
        ValueError: no grids, or a label count that is neither 0 nor ``len(grids)``.
    """
    if not grids:
        raise ValueError("grids: nothing to stack")
    _check_labels("z_labels", z_labels, len(grids), "grids")
    slot_w = max(g.width for g in grids)
    slot_h = max(g.height for g in grids)
    slots = []
    for g in grids:
        g = g if g.mode == "RGB" else g.convert("RGB")
        if g.size != (slot_w, slot_h):
            padded = Image.new("RGB", (slot_w, slot_h), background)
            padded.paste(g, (0, 0))
            g = padded
        slots.append(g)
    return draw_grid([slots], list(z_labels), [], background=background)


# ------------------------------------------------------------------------------ contact sheets


def grid_shape(n: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, cols) for ``n`` images.

    ``columns`` given: ``cols = min(columns, n)``, ``rows = ceil(n / cols)``. Otherwise A1111's
    ``image_grid`` with "Prevent empty spots in grid" (``modules/images.py``):
    ``rows = floor(sqrt(n))``, lowered until it divides ``n``, ``cols = ceil(n / rows)``, so the
    sheet has no empty spot: 4 -> 2x2, 6 -> 2x3, 12 -> 3x4, but 5 -> 1x5 and any prime n -> one
    row (pass ``columns`` for those).

    Raises:
        ValueError: ``n`` < 1 or ``columns`` < 1.
    """
    if n < 1:
        raise ValueError(f"n: need at least one image, got {n}")
    if columns is not None:
        if columns < 1:
            raise ValueError(f"columns: must be >= 1, got {columns}")
        cols = min(columns, n)
        return math.ceil(n / cols), cols
    rows = math.isqrt(n)
    while n % rows:
        rows -= 1
    return rows, math.ceil(n / rows)


def make_thumbnail(image: Image.Image, thumb: int) -> Image.Image:
    """``image`` as ``"RGB"``, shrunk (Lanczos, aspect ratio kept) so its longer side is at most
    ``thumb`` px; a smaller image is returned at its own size, never enlarged
    (``Image.thumbnail``). Raises ``ValueError`` if ``thumb`` < 1."""
    if thumb < 1:
        raise ValueError(f"thumb: must be >= 1 px, got {thumb}")
    t = image.convert("RGB") if image.mode != "RGB" else image.copy()
    t.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
    return t


def contact_sheet(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    *,
    columns: int | None = None,
    thumb: int = 256,
) -> Image.Image:
    """Thumbnails in rows, each with its caption (say file name and seed) in a band under it.

    Args:
        images: the pictures, any size and mode.
        captions: one per image (``"\\n"`` starts a new line; long ones wrap to the thumbnail
            width), or ``[]`` / all blank for no caption band.
        columns: thumbnails per row; default :func:`grid_shape`'s A1111 rule.
        thumb: longest side of a thumbnail, px (:func:`make_thumbnail`).

    Layout: every thumbnail sits centred in a slot of (slot_w, slot_h) = the largest thumbnail's
    width and height; under each row of slots a caption band ``band_h`` px high (the tallest
    wrapped caption + ``2 * spacing``, as :func:`grid_margins` sizes a top margin, font
    ``label_size(slot_w)``). Image i is at row ``i // cols``, column ``i % cols``; its slot's
    top-left corner is ``(col * slot_w, row * (slot_h + band_h))``. White background, black text.

    Returns:
        An ``"RGB"`` image of ``(cols * slot_w, rows * (slot_h + band_h))`` px.

    Raises:
        ValueError: no images, a caption count that is neither 0 nor ``len(images)``, or a bad
            ``columns`` / ``thumb``.
    """
    n = len(images)
    rows, cols = grid_shape(n, columns)
    _check_labels("captions", captions, n, "images")
    thumbs = [make_thumbnail(im, thumb) for im in images]
    slot_w = max(t.width for t in thumbs)
    slot_h = max(t.height for t in thumbs)

    size = label_size(slot_w)
    f = font(size)
    spacing = size // 2
    inset = max(2, size // 4)
    lines = [_wrap(c, f, max(1, slot_w - 2 * inset)) for c in captions] or [[] for _ in thumbs]
    line_h = _line_height(f)
    band_h = 0
    if any(lines):
        band_h = max(_block_height(len(ls), line_h, spacing) for ls in lines) + 2 * spacing

    pitch = slot_h + band_h
    out = Image.new("RGB", (cols * slot_w, rows * pitch), "white")
    for i, (t, ls) in enumerate(zip(thumbs, lines)):
        x0, y0 = (i % cols) * slot_w, (i // cols) * pitch
        out.paste(t, (x0 + (slot_w - t.width) // 2, y0 + (slot_h - t.height) // 2))
        _draw_block(out, (x0, y0 + slot_h, x0 + slot_w, y0 + pitch), ls, f, spacing)
    return out

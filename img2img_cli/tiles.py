"""Tiles: one picture cut into overlapping tiles of one size, each made on its own, and the
results blended back into one picture (SD upscale, large inputs of an x4 upscaler model).

The layout and the blend are AUTOMATIC1111's (``modules/images.py``: ``split_grid``,
``combine_grid``, used by ``scripts/sd_upscale.py``):

- ``cols = ceil((W - overlap) / (tile_w - overlap))`` columns (rows alike), spread evenly:
  column ``i`` starts at ``int(i * (W - tile_w) / (cols - 1))``, the last one flush with the
  right edge, so neighbours overlap by *at least* ``overlap`` pixels;
- each row is assembled left to right: a tile's first ``overlap`` columns are blended over what
  is there with a linear ramp (weight ``i / overlap`` for the new tile at column ``i`` of the
  band, ``1 - i / overlap`` for the old), the rest of the tile is pasted; then the rows are
  assembled top to bottom the same way. Every pixel's weights sum to 1.

A1111 blends 8-bit images through an 8-bit mask (``uint8(i * 255 / overlap)``); here the ramp is
exact (float32) and each row is kept in float32 until it is blended into the 8-bit result, which
differs from A1111's by at most a rounding step where tiles overlap. Only one row of tiles is held
in float32 at a time (``tile_h x W x 3 x 4`` bytes), never the whole picture.

The grid is in the coordinates of the pipeline's input; ``scale`` (4 for an x4 upscaler) maps it
to the output, where the tiles come back ``scale`` times larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Grid:
    """Where the tiles of one picture are.

    Attributes:
        size: the whole picture ``(width, height)`` in pixels (input coordinates).
        tile: every tile's ``(width, height)``, at most :attr:`size`.
        overlap: the blend band between neighbours in pixels, ``>= 0``.
        rows: ``((y, (x0, x1, ...)), ...)``: each row's top and its tiles' left edges.
        scale: output pixels per input pixel (1: tiles come back at their own size).
    """

    size: tuple[int, int]
    tile: tuple[int, int]
    overlap: int
    rows: tuple
    scale: int = 1

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Each tile's ``(left, top, right, bottom)`` in reading order (row by row, left to
        right): tile ``k`` of an image is made with the image's seed ``+ k``."""
        tw, th = self.tile
        return [(x, y, x + tw, y + th) for y, xs in self.rows for x in xs]

    def __len__(self) -> int:
        return sum(len(xs) for _, xs in self.rows)


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """A1111's ``split_grid`` positions along one side (see the module docstring)."""
    count = math.ceil((length - overlap) / (tile - overlap)) if length > tile else 1
    step = (length - tile) / (count - 1) if count > 1 else 0
    return tuple(min(int(i * step), length - tile) for i in range(count))


def split_grid(size: tuple[int, int], tile: tuple[int, int], overlap: int, scale: int = 1) -> Grid:
    """The tiles of a picture of ``size``: ``tile`` (clamped to ``size``) overlapping by at
    least ``overlap`` pixels.

    Raises:
        ValueError: ``overlap`` negative, or not smaller than the tile along a side that needs
            more than one tile (the tiles would not advance).
    """
    w, h = size
    tw, th = min(tile[0], w), min(tile[1], h)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if (w > tw and overlap >= tw) or (h > th and overlap >= th):
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tw}x{th}")
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    return Grid((w, h), (tw, th), overlap, tuple((y, xs) for y in ys), scale)


def combine(grid: Grid, tiles: list):
    """Blend ``tiles`` (one per :attr:`Grid.boxes`, in that order: RGB ``PIL.Image`` s or
    ``(h, w, 3)`` arrays, each ``grid.scale`` times the grid's tile) into one picture of
    ``grid.scale`` times the grid's size.

    Returns:
        an RGB ``PIL.Image`` for 8-bit tiles; for float tiles, the float32 ``(H, W, 3)`` array
        (what the tests use to check that the weights sum to 1).

    Raises:
        ValueError: the number or the size of the tiles does not match the grid.
    """
    import numpy as np
    from PIL import Image

    s = grid.scale
    tw, th, ov = grid.tile[0] * s, grid.tile[1] * s, grid.overlap * s
    W, H = grid.size[0] * s, grid.size[1] * s
    arrays = [np.asarray(t) for t in tiles]
    if len(arrays) != len(grid):
        raise ValueError(f"{len(arrays)} tiles for a grid of {len(grid)}")
    if any(a.shape[:2] != (th, tw) for a in arrays):
        raise ValueError(f"tiles must be {tw}x{th}")
    floats = arrays[0].dtype.kind == "f"
    out = np.empty((H, W, 3), np.float32 if floats else np.uint8)
    ramp_x = (np.arange(ov, dtype=np.float32) / max(ov, 1))[None, :, None]
    ramp_y = (np.arange(ov, dtype=np.float32) / max(ov, 1))[:, None, None]
    done = 0  # rows of ``out`` finished; the band below them is the last row's float tail
    tail = None
    it = iter(arrays)
    for y, xs in grid.rows:
        y *= s
        row = np.empty((th, W, 3), np.float32)
        for j, x in enumerate(xs):
            x *= s
            t = next(it).astype(np.float32)
            if j == 0:
                row[:, x : x + tw] = t
                continue
            row[:, x : x + ov] = row[:, x : x + ov] * (1 - ramp_x) + t[:, :ov] * ramp_x
            row[:, x + ov : x + tw] = t[:, ov:]
        if tail is not None:  # blend the top band of this row over the last row's bottom
            prev_top, prev = tail
            band = prev[y - prev_top : y - prev_top + ov]
            row[:ov] = band * (1 - ramp_y) + row[:ov] * ramp_y
            _put(out, done, prev[: y - prev_top], floats)
            done = y
        tail = (y, row)
    prev_top, prev = tail
    _put(out, done, prev[done - prev_top :], floats)
    return out if floats else Image.fromarray(out)


def _put(out, top: int, rows, floats: bool) -> None:
    import numpy as np

    out[top : top + len(rows)] = rows if floats else np.clip(np.rint(rows), 0, 255).astype(np.uint8)

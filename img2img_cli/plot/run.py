"""The X/Y/Z plot and the contact sheet inside a run: each input's cells planned as ordinary
work items (so the batch runner batches the cells that share a batch key, and every cell is
a real, reproducible run), then composed into a labelled grid once they are written.

A1111's X/Y/Z plot (``scripts/xyz_grid.py``) is the model: cells in X-fastest order, the seed
fixed across cells unless an axis varies it, the grid's infotext that of the first cell plus
``X Type`` / ``X Values`` (and Y, Z). The grid goes where the input's output would go; the
cells, with ``--save-cells``, next to it as ``<stem>-x<i>-y<j>[-z<k>]``; without it they are
written to a hidden folder in the output folder and removed once the grid is written.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..io import display

log = logging.getLogger(__name__)


@dataclass
class Plot:
    """One input's plot: its grid path and its cells (work items), in :func:`cells` order."""

    source: object  # the input's WorkItem as planned without a plot
    dest: Path
    axes: list
    cells: list = field(default_factory=list)  # [(index tuple, WorkItem)]


def expand(work: list, axes: list, *, save_cells: bool, skip_existing: bool = False, mode=None) -> tuple[list, list[Plot], list[Path]]:
    """Replace each input's work item by one per cell. With ``skip_existing``, an input whose
    grid exists is left as it is (the run then reports it skipped).

    Returns:
        ``(cell work items, plots, hidden folders to remove after the run)``.

    Raises:
        UsageError: a Prompt S/R search text in neither prompt (A1111 refuses it), or a cell
            whose parameters together fail validation, naming it (``int(steps * strength) < 1``
            is left to the core: :attr:`~img2img_cli.work.WorkItem.steps_error`).
    """
    from ..config import NoDenoisingStep
    from ..work import WorkItem
    from .axes import cells, check_prompt_sr

    out, plots, hidden = [], [], []
    folders: dict[Path, Path] = {}
    for w in work:
        dest = w.outputs[0]
        if skip_existing and dest.exists():
            w.index = len(out)
            out.append(w)
            continue
        plot = Plot(w, dest, axes)
        for axis, flag in zip(axes, ("--x", "--y", "--z")):
            if axis.name in ("prompt-sr", "negative-prompt-sr"):
                check_prompt_sr(axis, w.prompt, w.negative_prompt, flag)
        if save_cells:
            folder = dest.parent
        else:
            parent = dest.parent
            if parent not in folders:
                parent.mkdir(parents=True, exist_ok=True)
                folders[parent] = Path(tempfile.mkdtemp(prefix=".img2img-cells-", dir=parent))
                hidden.append(folders[parent])
            folder = folders[parent]
        for idx in cells(axes):
            job, prompt, negative = w.job, w.prompt, w.negative_prompt
            for axis, i in zip(axes, idx):
                job, prompt, negative = axis.apply(job, prompt, negative, i)
            name = "-".join(f"{a}{i}" for a, i in zip("xyz", idx))
            steps_error = ""
            try:
                job.validate()
            except NoDenoisingStep as e:  # an error unless the model has no strength: the core decides
                steps_error = f"{display(w.input.path)}: plot cell {name}: {e}"
            except UsageError as e:
                raise UsageError(f"{display(w.input.path)}: plot cell {name}: {e}") from None
            cell = WorkItem(
                len(out), w.input, job, prompt, negative, [folder / f"{dest.stem}-{name}{dest.suffix}"],
                job.seed if job.seed is not None else w.base_seed, mask=w.mask, steps_error=steps_error,
            )
            if mode is not None:
                cell.mode_key = mode.batch_key(cell)
            out.append(cell)
            plot.cells.append((idx, cell))
        plots.append(plot)
    return out, plots, hidden


def _params_of(path: Path) -> tuple[str, str, dict]:
    from ..infotext import parse_infotext
    from ..metadata import read_infotext

    parsed = parse_infotext(read_infotext(path) or "")
    prompt, negative = parsed.pop("prompt", ""), parsed.pop("negative_prompt", "")
    derived = {f"{k}-1" for k in parsed} | {f"{k}-2" for k in parsed}
    return prompt, negative, {k: v for k, v in parsed.items() if k not in derived}


def compose(plot: Plot, *, overwrite: bool, xmp: bytes | None, quality: int = 95) -> Path | None:
    """Draw ``plot``'s grid from its written cells and write it (atomically) to its path.

    Cells that failed are drawn blank. Returns the path written, or ``None`` when no cell was
    written (nothing to show).
    """
    from PIL import Image

    from ..infotext import format_infotext
    from ..io import EXTENSION_FORMATS
    from ..writing import atomic_save
    from .grid import draw_grid, stack_z

    images: dict[tuple, object] = {}
    first = None
    for idx, cell in plot.cells:
        o = cell.outcome
        path = o.outputs[0] if o is not None and o.status in ("ok", "skipped") and o.outputs else None
        if path is None:
            images[idx] = None
            continue
        with Image.open(path) as im:
            images[idx] = im.convert("RGB")
        if first is None:
            first = path
    if first is None:
        return None
    axes = plot.axes
    sizes = {im.size for im in images.values() if im is not None}
    size = (max(w for w, _ in sizes), max(h for _, h in sizes))
    if len(sizes) > 1:  # a size axis: each cell centred, unscaled, on a white cell of the largest size
        images = {k: _centred(im, size) for k, im in images.items()}
    labels = [list(a.grid_labels) for a in axes]
    nx = len(axes[0].values)
    ny = len(axes[1].values) if len(axes) > 1 else 1
    nz = len(axes[2].values) if len(axes) > 2 else 1
    grids = []
    for k in range(nz):
        rows = []
        for j in range(ny):
            idx_of = lambda i: (i, j, k)[: len(axes)]  # noqa: E731
            rows.append([images[idx_of(i)] for i in range(nx)])
        grids.append(draw_grid(rows, labels[0], labels[1] if len(axes) > 1 else [], cell_size=size))
    grid = grids[0] if nz == 1 else stack_z(grids, labels[2])
    prompt, negative, params = _params_of(first)
    version = params.pop("Version", None)
    for axis, letter in zip(axes, "XYZ"):
        params.update(axis.infotext(letter))  # A1111's "X Type" / "X Values" (xyz_grid.py)
    if version:
        params["Version"] = version
    fmt = EXTENSION_FORMATS.get(plot.dest.suffix.lower(), "png")
    return atomic_save(grid, plot.dest, fmt, format_infotext(prompt, negative, params), quality=quality, overwrite=overwrite, xmp=xmp)


def _centred(image, size: tuple[int, int]):
    """``image`` (RGB) centred on a white ``size`` canvas, its pixels unscaled; ``None`` stays."""
    from PIL import Image

    if image is None or image.size == size:
        return image
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas


def remove_hidden(folders: list[Path]) -> None:
    """Remove the hidden cell folders of plots without ``--save-cells``."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def sheet(work: list, dest_folder: Path, *, overwrite: bool, xmp: bytes | None) -> Path | None:
    """Write one contact sheet of every image the run wrote (``--grid``): thumbnails captioned
    with file name and seed, to ``dest_folder/contact-sheet.png``; ``None`` when none was written."""
    from PIL import Image

    from ..infotext import format_infotext
    from ..writing import atomic_save
    from .grid import contact_sheet

    images, captions = [], []
    for w in work:
        o = w.outcome
        if o is None or o.status != "ok":
            continue
        for path, seed in zip(o.outputs, o.seeds or [None] * len(o.outputs)):
            try:
                with Image.open(path) as im:
                    images.append(im.convert("RGB"))
            except OSError:
                continue
            captions.append(f"{path.name}\nseed {seed}" if seed is not None else path.name)
    if not images:
        return None
    image = contact_sheet(images, captions, columns=math.ceil(math.sqrt(len(images))))  # no long single row for a prime count
    from .. import __version__

    params = {"Contact sheet": f"{len(images)} images", "Size": f"{image.width}x{image.height}", "Version": f"img2img-cli {__version__}"}
    text = format_infotext("", None, params)
    return atomic_save(image, dest_folder / "contact-sheet.png", "png", text, overwrite=overwrite, xmp=xmp)

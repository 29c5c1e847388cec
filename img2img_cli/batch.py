"""Walking inputs, planning outputs, grouping work into pipeline calls, per-file errors
and the run summary.

Flow (``STYLE.md``): options -> validated :class:`~img2img_cli.config.Job` -> inputs
(:func:`collect_inputs`) -> :func:`run` (plan names, skip existing, load the model once,
read/resize each image, generate, write atomically with infotext) -> :class:`Summary`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__
from .config import Job, random_seed
from .errors import Img2ImgError, InputError, OutputError, UsageError
from .io import (
    EXTENSION_FORMATS,
    IMAGE_EXTENSIONS,
    atomic_save,
    display,
    free_name,
    load_image,
    output_name,
    resize_image,
    target_size,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputItem:
    """One input image: its ``path`` and ``rel``, the relative path its outputs are named from
    (the file name for a file given directly; the path below the folder for a folder's files)."""

    path: Path
    rel: Path


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def collect_inputs(paths: list[Path], recursive: bool = False) -> list[InputItem]:
    """Expand files and folders into a list of images, in order.

    A folder contributes its image files (by extension, :data:`~img2img_cli.io.IMAGE_EXTENSIONS`),
    sorted by path; hidden files and other files are skipped; subfolders only with
    ``recursive`` (symlinked folders are not followed, so a symlink loop cannot recurse).
    A file given directly is used whatever its extension.

    Raises:
        UsageError: a path that does not exist, or no image at all.
    """
    items: list[InputItem] = []
    for p in paths:
        if p.is_dir():
            found = []
            if recursive:
                for root, dirs, files in os.walk(p, followlinks=False):
                    dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
                    for f in files:
                        if not _is_hidden(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                            found.append(Path(root) / f)
            else:
                for f in p.iterdir():
                    if not _is_hidden(f.name) and f.suffix.lower() in IMAGE_EXTENSIONS and not f.is_dir():
                        found.append(f)
            for f in sorted(found, key=lambda f: f.relative_to(p).parts):
                items.append(InputItem(f, f.relative_to(p)))
        elif p.exists() or p.is_symlink():
            items.append(InputItem(p, Path(p.name)))
        else:
            raise UsageError(f"{display(p)}: no such file or folder")
    if not items:
        raise UsageError(f"no input images found in {', '.join(display(p) for p in paths)}")
    return items


@dataclass
class Outcome:
    """What happened to one input: ``status`` is ``ok``, ``skipped`` or ``failed``."""

    input: Path
    status: str
    outputs: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Summary:
    """Counts of a run; ``exit_code`` is 0 when nothing failed, else 1."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.written} written, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s)"
        )


@dataclass(frozen=True)
class OutputPlan:
    """Where outputs go: ``file`` (``-o FILE``, one input, one image) or ``folder``."""

    folder: Path
    fmt: str
    file: Path | None = None

    @classmethod
    def make(cls, output: Path | None, fmt: str | None, n_outputs: int) -> "OutputPlan":
        """Decide between ``-o FILE`` and ``-o DIR``.

        ``-o`` with an image extension (``.png``, ``.jpg``, ``.jpeg``, ``.webp``) that is not an
        existing folder names a file, allowed only when the run writes exactly one image.

        Raises:
            UsageError: ``-o FILE`` with several outputs, or an extension contradicting ``--format``.
        """
        if output is not None and output.suffix.lower() in EXTENSION_FORMATS and not output.is_dir():
            ext_fmt = EXTENSION_FORMATS[output.suffix.lower()]
            if n_outputs != 1:
                raise UsageError(
                    f"-o {display(output)} names one file but this run writes {n_outputs} images; "
                    "pass a folder to -o"
                )
            if fmt is not None and fmt != ext_fmt:
                raise UsageError(f"--format {fmt} contradicts -o {display(output)}")
            return cls(folder=output.parent, fmt=ext_fmt, file=output)
        return cls(folder=output if output is not None else Path("outputs"), fmt=fmt or "png")

    def paths_for(self, item: InputItem, num_images: int) -> list[Path]:
        """The output path of each of ``item``'s images (before free-name resolution)."""
        if self.file is not None:
            return [self.file]
        if num_images == 1:
            return [self.folder / output_name(item.rel, self.fmt)]
        return [self.folder / output_name(item.rel, self.fmt, k) for k in range(num_images)]


def _plan_names(items: list[InputItem], plan: OutputPlan, num_images: int) -> dict[Path, list[Path]]:
    """Output paths per input; two inputs that would share a name (``cat.jpg`` and ``cat.png``)
    are told apart by their source extension (``cat.png``, ``cat-png.png``)."""
    names: dict[Path, list[Path]] = {}
    taken: set[Path] = set()
    for item in items:
        paths = plan.paths_for(item, num_images)
        if any(p in taken for p in paths):
            alt = InputItem(item.path, item.rel.with_name(f"{item.rel.stem}-{item.rel.suffix.lstrip('.').lower()}"))
            paths = plan.paths_for(alt, num_images)
        taken.update(paths)
        names[item.path] = paths
    return names


def format_number(x: float) -> str:
    """``7.0`` -> ``"7"``, ``7.5`` -> ``"7.5"`` (how A1111 infotext shows numbers)."""
    return format(x, "g")


def infotext_params(job: Job, *, seed: int, size: tuple[int, int], sampler: str, model_name: str) -> dict:
    """The A1111 parameter line for one image (``modules/processing.py: create_infotext``)."""
    return {
        "Steps": job.steps,
        "Sampler": sampler,
        "CFG scale": format_number(job.guidance_scale),
        "Seed": seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model": model_name,
        "Denoising strength": format_number(job.strength),
        "Version": f"img2img-cli {__version__}",
    }


@dataclass
class RunOptions:
    """How a run treats its outputs and reports (not generation parameters)."""

    output: Path | None = None
    overwrite: bool = False
    skip_existing: bool = False
    recursive: bool = False
    max_pixels: int = 100_000_000
    progress: bool = False


def run(
    job: Job,
    items: list[InputItem],
    opts: RunOptions,
    *,
    load_pipe: Callable[[], tuple[object, str, str, int]],
    emit: Callable[[Outcome, Path, int, float], None] = lambda *a: None,
) -> Summary:
    """Process ``items`` with ``job``: one model load, one outcome per input.

    Args:
        load_pipe: called once, only if there is work, returning ``(pipe, sampler_name,
            model_name, native_resolution)``; may raise :class:`~img2img_cli.errors.ModelError`.
        emit: called after each output is written with ``(outcome, path, seed, seconds)``.

    Returns:
        the :class:`Summary`; a failing input never stops the others.

    Raises:
        UsageError: bad ``-o``; ModelError: the model cannot be loaded.
    """
    from .pipeline import Request, generate

    start = time.perf_counter()
    summary = Summary()
    plan = OutputPlan.make(opts.output, job.fmt, len(items) * job.num_images)
    names = _plan_names(items, plan, job.num_images)
    input_files = {os.path.realpath(i.path) for i in items}

    todo: list[InputItem] = []
    for item in items:
        if opts.skip_existing and all(os.path.lexists(p) for p in names[item.path]):
            summary.skipped += 1
            summary.outcomes.append(Outcome(item.path, "skipped", outputs=names[item.path]))
            log.info("%s: skipped, output exists", display(item.path))
        else:
            todo.append(item)
    if not todo:
        summary.seconds = time.perf_counter() - start
        return summary

    pipe, sampler, model_name, native = load_pipe()
    bar = _progress_bar(len(todo) * job.num_images, opts.progress)
    try:
        for item in todo:
            t0 = time.perf_counter()
            outcome = Outcome(item.path, "ok")
            try:
                source = load_image(item.path, max_pixels=opts.max_pixels)
                size = target_size(source.size, native, job.width, job.height)
                image = resize_image(source, *size, job.resize_mode)
                base = job.seed if job.seed is not None else random_seed()
                for k, dest in enumerate(names[item.path]):
                    seed = base + k
                    req = Request(
                        image=image,
                        prompt=job.prompt,
                        negative_prompt=job.negative_prompt,
                        seed=seed,
                        strength=job.strength,
                        steps=job.steps,
                        guidance_scale=job.guidance_scale,
                    )
                    try:
                        (result,) = generate(pipe, [req])
                    except FloatingPointError as e:
                        raise InputError(f"{display(item.path)}: {e}") from None
                    params = infotext_params(job, seed=seed, size=size, sampler=sampler, model_name=model_name)
                    from .metadata import format_infotext

                    text = format_infotext(job.prompt, job.negative_prompt, params)
                    protect = os.path.realpath(dest) in input_files
                    written = atomic_save(
                        result,
                        dest,
                        plan.fmt,
                        text,
                        quality=job.quality,
                        overwrite=opts.overwrite and not protect,
                    )
                    outcome.outputs.append(written)
                    outcome.seeds.append(seed)
                    summary.written += 1
                    emit(outcome, written, seed, time.perf_counter() - t0)
                    if bar is not None:
                        bar.update(1)
            except (InputError, OutputError) as e:
                outcome.status = "failed"
                outcome.error = str(e)
                summary.failed += 1
                print(f"error: {e}", file=sys.stderr)
                if bar is not None:
                    bar.update(job.num_images - len(outcome.outputs))
            outcome.seconds = time.perf_counter() - t0
            summary.outcomes.append(outcome)
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="images", file=sys.stderr, dynamic_ncols=True)


__all__ = ["InputItem", "Outcome", "Summary", "OutputPlan", "RunOptions", "collect_inputs", "run", "free_name", "Img2ImgError"]

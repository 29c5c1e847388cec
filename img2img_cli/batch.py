"""Walking inputs, planning outputs, batching work on the device, per-file errors,
interrupts, the JSONL report and the run summary.

Flow (``STYLE.md``): options -> validated :class:`~img2img_cli.config.Job` -> inputs
(:func:`collect_inputs`) -> work (:func:`plan_work`: names, seeds, prompts) -> :func:`run`
(skip existing, split between processes, load the model once, group images of the same
size into batches, prefetch the next batch and write the previous one in background
threads while the denoiser runs) -> :class:`Summary`.

Reproducibility (``STYLE.md`` habit 7): each image gets its own CPU ``torch.Generator``
seeded with its own seed, so its pixels do not depend on the batch it was in, its position,
the batch size or the process that ran it.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Callable

from . import __version__
from .config import Job, random_seed
from .errors import InputError, OutputError, UsageError
from .io import (
    EXTENSION_FORMATS,
    FORMAT_EXTENSIONS,
    IMAGE_EXTENSIONS,
    atomic_save,
    display,
    load_image,
    output_name,
    probe_size,
    remove_stale_temp_files,
    resize_image,
    target_size,
)

log = logging.getLogger(__name__)


# --- inputs ---------------------------------------------------------------------------


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


# --- outputs --------------------------------------------------------------------------


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

    def paths_for(self, item: InputItem, num_images: int, name: PurePath | None = None) -> list[Path]:
        """The output path of each of ``item``'s images (before free-name resolution).

        ``name``: an explicit relative output name (from a jobs file); its extension, if an
        image one, is kept, else the format's is added.
        """
        if self.file is not None:
            return [self.file]
        if name is not None:
            ext = name.suffix if name.suffix.lower() in EXTENSION_FORMATS else FORMAT_EXTENSIONS[self.fmt]
            stem = name.name[: -len(name.suffix)] if name.suffix.lower() in EXTENSION_FORMATS else name.name
            base = self.folder / name.parent
            if num_images == 1:
                return [base / f"{stem}{ext}"]
            return [base / f"{stem}-{k}{ext}" for k in range(num_images)]
        if num_images == 1:
            return [self.folder / output_name(item.rel, self.fmt)]
        return [self.folder / output_name(item.rel, self.fmt, k) for k in range(num_images)]


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


# --- work -----------------------------------------------------------------------------


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
class WorkItem:
    """One input with everything needed to make its images.

    Attributes:
        job: the job for this input (jobs-file overrides applied), validated.
        prompt, negative_prompt: final text (sidecar / jobs row / style applied).
        outputs: planned output paths, one per image (``job.num_images``).
        base_seed: image ``k`` uses ``base_seed + k``.
    """

    index: int
    input: InputItem
    job: Job
    prompt: str
    negative_prompt: str
    outputs: list[Path]
    base_seed: int
    size: tuple[int, int] | None = None
    outcome: Outcome | None = None
    pending: int = 0


@dataclass(frozen=True)
class Unit:
    """One image to make: image ``k`` of ``item``."""

    item: WorkItem
    k: int

    @property
    def seed(self) -> int:
        return self.item.base_seed + self.k

    @property
    def dest(self) -> Path:
        return self.item.outputs[self.k]

    def key(self) -> tuple:
        j = self.item.job
        return (self.item.size, j.strength, j.steps, j.guidance_scale)


def plan_work(
    job: Job,
    inputs: list[InputItem],
    plan: OutputPlan,
    *,
    rows=None,
    style=None,
    prompt_from_sidecar: bool = False,
) -> list[WorkItem]:
    """Turn inputs (or jobs-file rows) into :class:`WorkItem` s: per-input job, final prompts,
    seeds (drawn now when ``--seed`` is not given, so they can be recorded) and output names.

    Two inputs that would share an output name (``cat.jpg`` and ``cat.png``) are told apart by
    their source extension (``cat.png``, ``cat-png.png``).

    Args:
        rows: :class:`~img2img_cli.jobs.JobRow` list, one per input, or ``None``.
        style: a :class:`~img2img_cli.styles.Style` wrapping every prompt, or ``None``.
        prompt_from_sidecar: use ``<stem>.txt`` next to an image as its prompt when present.
    """
    work: list[WorkItem] = []
    taken: set[Path] = set()
    for i, item in enumerate(inputs):
        row = rows[i] if rows is not None else None
        item_job = job.replace(**row.overrides) if row is not None else job
        prompt, negative = item_job.prompt, item_job.negative_prompt
        if prompt_from_sidecar and not (row is not None and "prompt" in row.overrides):
            sidecar = item.path.with_suffix(".txt")
            try:
                prompt = sidecar.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                log.info("%s: no sidecar prompt, using --prompt", display(item.path))
            except (OSError, UnicodeDecodeError) as e:
                log.warning("%s: cannot read sidecar prompt (%s), using --prompt", display(sidecar), e)
        if style is not None:
            prompt, negative = style.apply(prompt, negative)
        n = item_job.num_images
        paths = plan.paths_for(item, n, row.output if row is not None else None)
        if any(p in taken for p in paths):
            alt = InputItem(item.path, item.rel.with_name(f"{item.rel.stem}-{item.rel.suffix.lstrip('.').lower()}"))
            paths = plan.paths_for(alt, n, None)
            k = 2
            while any(p in taken for p in paths):
                alt = InputItem(item.path, item.rel.with_name(f"{item.rel.stem}-{k}"))
                paths = plan.paths_for(alt, n, None)
                k += 1
        taken.update(paths)
        base = item_job.seed if item_job.seed is not None else random_seed()
        work.append(WorkItem(i, item, item_job, prompt, negative, paths, base))
    return work


# --- run ------------------------------------------------------------------------------


@dataclass
class Summary:
    """Counts of a run (over all processes); ``exit_code`` is 0 when nothing failed, 1 when
    something failed, 130/143 when interrupted by SIGINT/SIGTERM."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: int = 0
    remaining: int = 0
    fatal: str | None = None
    is_main: bool = True
    outcomes: list[Outcome] = field(default_factory=list)
    # where the time went (this process; None when nothing was generated):
    load_seconds: float | None = None  # model load and set-up, from the start of the run
    first_batch_seconds: float | None = None  # first pipeline call: compile and warm-up happen here
    first_batch_images: int = 0
    steady_rate: float | None = None  # images/s after the first batch (needs 2 or more batches)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return self.interrupted
        return 1 if self.failed else 0

    def line(self) -> str:
        """The one summary line, e.g. ``32 written, 0 skipped, 1 failed in 25.7 s (1.24
        images/s; model load 5.4 s, first batch of 8 6.1 s, then 1.40 images/s)``: where the
        time went is in the brackets when something was generated (the first batch holds
        ``--compile``'s compiling and any warm-up; the rate after it is the steady state)."""
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        timings = self.timings()
        text = (
            f"{self.written} written, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s{'; ' + timings if timings else ''})"
        )
        if self.interrupted:
            sig = "SIGINT" if self.interrupted == 130 else "SIGTERM"
            text += f"; interrupted by {sig}, {self.remaining} inputs left: rerun with --skip-existing to finish"
        elif self.fatal:
            text += f"; stopped: {self.fatal}; {self.remaining} inputs left: free space and rerun with --skip-existing"
        return text

    def timings(self) -> str | None:
        """``model load 3.1 s, first batch of 8 12.0 s, then 5.20 images/s``; ``None`` when
        nothing was generated (this process's figures)."""
        if self.load_seconds is None or self.first_batch_seconds is None:
            return None
        text = f"model load {self.load_seconds:.1f} s, first batch of {self.first_batch_images} {self.first_batch_seconds:.1f} s"
        if self.steady_rate is not None:
            text += f", then {self.steady_rate:.2f} images/s"
        return text


@dataclass
class RunOptions:
    """How a run treats its outputs and reports (not generation parameters)."""

    output: Path | None = None
    overwrite: bool = False
    skip_existing: bool = False
    max_pixels: int = 100_000_000
    progress: bool = False
    batch_size: int | None = None  # None: auto
    report: Path | None = None
    device: str = "cpu"
    background: tuple[int, int, int] = (255, 255, 255)
    static_shapes: bool = False  # --compile: pad batches to a fixed size, bucket sizes to 64 px


#: Output errors that stop the whole run (every later write would fail the same way).
_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class Interrupted(BaseException):
    """Raised in the main thread by the SIGTERM handler (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def auto_batch_size(device: str, native: int) -> int:
    """Default ``--batch-size``.

    Measured (``make bench``): on this CPU the tiny model (64 px) makes 1.38 images/s one at a
    time and 2.28 at 8, where per-call overhead dominates; SD-size models on a CPU are
    compute-bound and gain nothing, so 1. On CUDA: 8 up to 512 px, 4 at 768, 2 at 1024 (SDXL),
    so the activations of a batch stay within a consumer GPU's memory in fp16.
    """
    if device.startswith("cuda"):
        return 8 if native <= 512 else 4 if native <= 768 else 2
    if device.startswith("cpu"):
        return 8 if native <= 128 else 1
    return 1


def _sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a time taken after it is true."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class _Report:
    """``--report FILE.jsonl``: one JSON line per input, appended (``O_APPEND``) and flushed
    as each input completes, so the file survives a crash; several processes may share it."""

    def __init__(self, path: Path | None):
        self.fd = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise UsageError(f"--report {display(path)}: cannot open ({e.strerror or e})") from None

    def write(self, record: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _record(w: WorkItem, sampler: str | None, model_name: str | None) -> dict:
    o = w.outcome
    j = w.job
    return {
        "input": display(w.input.path),
        "outputs": [display(p) for p in o.outputs],
        "seed": w.base_seed,
        "seeds": o.seeds,
        "parameters": {
            "prompt": w.prompt,
            "negative_prompt": w.negative_prompt,
            "strength": j.strength,
            "steps": j.steps,
            "guidance_scale": j.guidance_scale,
            "scheduler": sampler,
            "size": f"{w.size[0]}x{w.size[1]}" if w.size else None,
            "model": model_name,
            "num_images": j.num_images,
        },
        "status": o.status,
        "error": o.error,
        "seconds": round(o.seconds, 3),
    }


def run(
    work: list[WorkItem],
    opts: RunOptions,
    *,
    load_pipe: Callable[[str], tuple[object, str, str, int]],
    emit: Callable[[Outcome, Path, int, float], None] = lambda *a: None,
) -> Summary:
    """Process ``work``: one model load, batched generation, one outcome per input.

    Args:
        load_pipe: ``load_pipe(device)`` is called once, only if there is work, and returns
            ``(pipe, sampler_name, model_name, native_resolution)``; may raise
            :class:`~img2img_cli.errors.ModelError`.
        emit: called in the writer thread after each output is written, with
            ``(outcome, path, seed, seconds)``.

    Under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1) the work is split between
    processes with accelerate's ``PartialState.split_between_processes`` (contiguous, in
    order, the same on every process); names were planned before the split, so no two
    processes write the same file; counts are gathered so the main process reports them all.

    Returns:
        the :class:`Summary`; a failing input never stops the others.
    """
    start = time.perf_counter()
    summary = Summary()
    report = _Report(opts.report)
    # every input of the run, not just this process's share: none may be written over
    inputs = frozenset(os.path.realpath(w.input.path) for w in work)
    state = None
    device = opts.device
    if _world_size() > 1:
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        summary.is_main = state.is_main_process
        if device != "cpu":
            device = str(state.device)
        else:
            import torch

            local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
        with state.split_between_processes(work) as mine:
            work = list(mine)
    try:
        todo: list[WorkItem] = []
        for w in work:
            w.outcome = Outcome(w.input.path, "ok")
            if opts.skip_existing and all(os.path.lexists(p) for p in w.outputs):
                w.outcome.status = "skipped"
                w.outcome.outputs = list(w.outputs)
                summary.skipped += 1
                report.write(_record(w, None, None))
                log.info("%s: skipped, output exists", display(w.input.path))
            else:
                todo.append(w)
        if todo:
            _Runner(todo, opts, report, summary, emit, inputs).go(load_pipe, device, start)
        summary.outcomes = [w.outcome for w in work]
    finally:
        report.close()
    summary.seconds = time.perf_counter() - start
    if state is not None:
        from accelerate.utils import gather_object

        counts = gather_object(
            [(summary.written, summary.skipped, summary.failed, summary.interrupted, summary.remaining, summary.fatal)]
        )
        summary.written = sum(c[0] for c in counts)
        summary.skipped = sum(c[1] for c in counts)
        summary.failed = sum(c[2] for c in counts)
        summary.interrupted = max(c[3] for c in counts)
        summary.remaining = sum(c[4] for c in counts)
        summary.fatal = next((c[5] for c in counts if c[5]), None)
        summary.seconds = time.perf_counter() - start
    return summary


class _Runner:
    """The batched loop of one process: prefetch thread -> device (main thread) -> writer thread."""

    def __init__(self, todo, opts: RunOptions, report: _Report, summary: Summary, emit, inputs: frozenset):
        self.todo = todo
        self.inputs = inputs
        self.opts = opts
        self.report = report
        self.summary = summary
        self.emit = emit
        self.lock = threading.Lock()
        self.sampler = None
        self.model_name = None
        self.bar = None
        self.fatal: str | None = None
        self.batch_size = 1
        self.tiled = False
        self.pin = False  # pinned host memory for image tensors (CUDA)
        self._kept: dict[int, object] = {}  # prepared images of items with units in later batches
        self._unread: dict[int, int] = {}  # item index -> its units in batches not yet prepared

    # -- bookkeeping (called in the writer thread, or the main thread after it is drained)

    def _unit_done(self, unit: Unit, path: Path | None, error: str | None, seconds: float) -> None:
        w = unit.item
        o = w.outcome
        o.seconds += seconds
        if path is not None:
            o.outputs.append(path)
            o.seeds.append(unit.seed)
            with self.lock:
                self.summary.written += 1
            self.emit(o, path, unit.seed, seconds)
        elif o.error is None:
            o.status = "failed"
            o.error = error
            print(f"img2img: error: {error}", file=sys.stderr, flush=True)
        w.pending -= 1
        if self.bar is not None:
            self.bar.update(1)
        if w.pending == 0:
            if o.status == "failed":
                with self.lock:
                    self.summary.failed += 1
            self.report.write(_record(w, self.sampler, self.model_name))

    def _fail_item(self, w: WorkItem, error: str) -> None:
        for k in range(w.pending):
            self._unit_done(Unit(w, k), None, error, 0.0)

    # -- stages

    def _batches(self, batch_size: int) -> list[list[Unit]]:
        """Units grouped by (size, strength, steps, guidance), in order of first appearance,
        cut into batches of at most ``batch_size``."""
        groups: dict[tuple, list[Unit]] = {}
        for w in self.todo:
            if w.size is None:
                continue
            for k in range(w.job.num_images):
                u = Unit(w, k)
                groups.setdefault(u.key(), []).append(u)
        batches = []
        for units in groups.values():
            for i in range(0, len(units), batch_size):
                batches.append(units[i : i + batch_size])
        self._unread = collections.Counter(u.item.index for b in batches for u in b)
        return batches

    def _prepare(self, batch: list[Unit]) -> dict[int, object]:
        """Read, resize and convert to tensors the images of ``batch`` (prefetch thread).

        Returns item index -> float32 tensor ``(3, H, W)`` in ``[0, 1]`` (pinned when the
        device is CUDA, so its upload does not block) or the :class:`InputError` it raised. An
        item whose ``-N`` images span several batches is read once: it is kept until the batch
        that holds its last image.
        """
        from .pipeline import to_tensor

        out: dict[int, object] = {}
        for u in batch:
            w = u.item
            if w.index in out:
                continue
            cached = self._kept.pop(w.index, None)
            if cached is None:
                try:
                    src = load_image(w.input.path, max_pixels=self.opts.max_pixels, background=self.opts.background, target=w.size)
                    cached = to_tensor(resize_image(src, *w.size, w.job.resize_mode), pin=self.pin)
                except InputError as e:
                    cached = e
                except Exception as e:  # a Pillow plugin bug must not stop the folder
                    cached = InputError(f"{display(w.input.path)}: cannot decode image ({_short(e)})")
            out[w.index] = cached
        for u in batch:
            self._unread[u.item.index] -= 1
        for index in out:
            if self._unread[index] > 0:
                self._kept[index] = out[index]
        return out

    def _save(self, unit: Unit, image, seconds: float) -> None:
        """Write one result (writer thread)."""
        from .metadata import format_infotext

        w = unit.item
        t0 = time.perf_counter()
        try:
            params = infotext_params(w.job, seed=unit.seed, size=w.size, sampler=self.sampler, model_name=self.model_name)
            text = format_infotext(w.prompt, w.negative_prompt, params)
            protect = os.path.realpath(unit.dest) in self.inputs
            path = atomic_save(
                image,
                unit.dest,
                self.fmt_for(unit.dest),
                text,
                quality=w.job.quality,
                overwrite=self.opts.overwrite and not protect,
            )
        except OutputError as e:
            if e.errno in _FATAL_ERRNOS and self.fatal is None:
                self.fatal = str(e)
            self._unit_done(unit, None, str(e), seconds + time.perf_counter() - t0)
            return
        self._unit_done(unit, path, None, seconds + time.perf_counter() - t0)

    @staticmethod
    def fmt_for(path: Path) -> str:
        return EXTENSION_FORMATS.get(path.suffix.lower(), "png")

    def _generate(self, pipe, batch: list[Unit], images: dict[int, object]):
        """Run the denoiser on ``batch``; returns ``[(unit, PIL image | exception)]``.

        Out of device memory: the batch is split in halves (and later batches use the smaller
        size), then a single image is retried with VAE tiling, with a warning each time; an
        image that still fails is reported failed and the run goes on. Any other error in a
        batch is retried image by image, so one bad image does not fail its neighbours.
        """
        from .pipeline import Request, generate

        def request(u: Unit) -> Request:
            w = u.item
            return Request(images[w.index], w.prompt, w.negative_prompt, u.seed, w.job.strength, w.job.steps, w.job.guidance_scale)

        try:
            return list(zip(batch, generate(pipe, [request(u) for u in batch])))
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as e:
            oom = _is_oom(e)
            if oom:
                _free_device_memory()
            if len(batch) > 1:
                if oom:
                    half = (len(batch) + 1) // 2
                    self.batch_size = min(self.batch_size, half)
                    log.warning("out of memory with a batch of %d; retrying in batches of %d", len(batch), half)
                    return self._generate(pipe, batch[:half], images) + self._generate(pipe, batch[half:], images)
                log.warning("a batch of %d failed (%s); retrying its images one by one", len(batch), _short(e))
                out = []
                for u in batch:
                    out.extend(self._generate(pipe, [u], images))
                return out
            if oom and not self.tiled and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
                log.warning("out of memory with a single image; retrying with VAE tiling")
                pipe.vae.enable_tiling()
                self.tiled = True
                return self._generate(pipe, batch, images)
            return [(batch[0], e)]

    def go(self, load_pipe, device: str, start: float) -> None:
        opts = self.opts
        pipe, self.sampler, self.model_name, native = load_pipe(device)
        _sync(device)
        self.summary.load_seconds = time.perf_counter() - start
        first_end = last_end = None
        later_images = 0
        batch_size = opts.batch_size or auto_batch_size(device, native)
        self.batch_size = batch_size
        self.pin = device.startswith("cuda")
        log.info("batch size %d on %s", batch_size, device)
        for folder in {w.outputs[0].parent for w in self.todo}:
            n = remove_stale_temp_files(folder)
            if n:
                log.info("%s: removed %d temporary file(s) left by a killed run", display(folder), n)

        for w in self.todo:
            w.pending = w.job.num_images
        # header scan: output sizes, without decoding pixels
        for w in self.todo:
            try:
                src = probe_size(w.input.path, max_pixels=opts.max_pixels)
                w.size = target_size(src, native, w.job.width, w.job.height, multiple=64 if opts.static_shapes else 8)
            except InputError as e:
                self._fail_item(w, str(e))
        batches = self._batches(batch_size)
        total = sum(len(b) for b in batches)
        if opts.progress and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="images", file=sys.stderr, dynamic_ncols=True)

        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-read")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-write")
        pending_reads: list[Future] = []
        done_units = 0
        old_term = None
        if threading.current_thread() is threading.main_thread():

            def on_term(signum, frame):
                raise Interrupted(143)

            old_term = signal.signal(signal.SIGTERM, on_term)
        try:
            lookahead = 2
            for i in range(min(lookahead, len(batches))):
                pending_reads.append(reader.submit(self._prepare, batches[i]))
            for i, batch in enumerate(batches):
                if self.fatal is not None:
                    break
                images = pending_reads.pop(0).result()
                if i + lookahead < len(batches):
                    pending_reads.append(reader.submit(self._prepare, batches[i + lookahead]))
                ready = []
                for u in batch:
                    img = images[u.item.index]
                    if isinstance(img, InputError):
                        writer.submit(self._unit_done, u, None, str(img), 0.0)
                    else:
                        ready.append(u)
                if not ready:
                    done_units += len(batch)
                    continue
                t0 = time.perf_counter()
                results = []
                for j in range(0, len(ready), self.batch_size):  # smaller after an out-of-memory
                    chunk = ready[j : j + self.batch_size]
                    if opts.static_shapes and len(chunk) < self.batch_size:
                        # pad with repeats so a compiled graph sees one batch shape; extra results dropped
                        padded = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
                        results += self._generate(pipe, padded, images)[: len(chunk)]
                    else:
                        results += self._generate(pipe, chunk, images)
                now = time.perf_counter()
                per = (now - t0) / len(ready)
                if first_end is None:
                    first_end = now
                    self.summary.first_batch_seconds = now - t0
                    self.summary.first_batch_images = len(ready)
                else:
                    later_images += len(ready)
                    last_end = now
                for u, result in results:
                    if isinstance(result, BaseException):
                        msg = f"{display(u.item.input.path)}: generation failed ({type(result).__name__}: {' '.join(str(result).split())})"
                        writer.submit(self._unit_done, u, None, msg, per)
                    else:
                        writer.submit(self._save, u, result, per)
                done_units += len(batch)
        except KeyboardInterrupt:
            self.summary.interrupted = 130
        except Interrupted as e:
            self.summary.interrupted = e.code
        finally:
            for f in pending_reads:
                f.cancel()
            reader.shutdown(wait=True, cancel_futures=True)
            # finished images still queued are written (atomically); nothing half-made is
            writer.shutdown(wait=True)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if self.bar is not None:
                self.bar.close()
        if last_end is not None and last_end > first_end:
            self.summary.steady_rate = later_images / (last_end - first_end)
        if self.fatal is not None:
            self.summary.fatal = self.fatal
        if self.summary.interrupted or self.fatal is not None:
            self.summary.remaining = sum(1 for w in self.todo if w.pending > 0)


def _is_oom(e: BaseException) -> bool:
    """Device out-of-memory (CUDA or MPS), whatever torch version raised it."""
    try:
        import torch

        if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
            return True
    except ImportError:
        pass
    return "out of memory" in str(e).lower() and isinstance(e, RuntimeError)


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"

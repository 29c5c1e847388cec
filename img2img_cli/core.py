"""The core of ``img2img run``: a validated :class:`~img2img_cli.config.RunConfig` in, a
:class:`~img2img_cli.report.Summary` out.

Flow: config -> style and jobs file -> inputs (:mod:`.inputs`) -> output plan
(:mod:`.outputs`) -> work (:mod:`.work`: names, seeds, prompts) -> model resolved (nothing
loaded yet; every check above runs before any weight is read) -> skip existing -> split between
processes (:mod:`.distributed`) -> :class:`~img2img_cli.runner.Runner` (one model load, batched
generation) -> summary. The core raises :class:`~img2img_cli.errors.Img2ImgError` s and prints
nothing: results go to ``emit``, per-file errors and warnings to the ``img2img_cli`` logger.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .errors import UsageError
from .io import display
from .report import ReportFile, Summary, record
from .work import Outcome, WorkItem

log = logging.getLogger(__name__)


def plan(config: RunConfig, mode) -> list[WorkItem]:
    """Every input of the run with its job, prompts, seeds and output paths; no model loaded.

    Raises:
        UsageError: a bad style, jobs file, input path or output name.
    """
    from .inputs import InputItem, collect_inputs
    from .jobs import load_jobs
    from .outputs import OutputPlan
    from .work import plan_work

    style = None
    if config.style or config.prompt_file:
        from .styles import load_prompt_file, load_style

        style = load_style(config.style, config.styles_file) if config.style else load_prompt_file(config.prompt_file)
    rows = None
    if config.jobs is not None:
        rows = load_jobs(config.jobs, config.job)
        items = [InputItem(r.input, Path(r.input.name)) for r in rows]
    else:
        items = collect_inputs(config.inputs, recursive=config.recursive)
    if rows and getattr(mode, "base", mode).name != "inpaint":
        row = next((r for r in rows if r.mask is not None), None)
        if row is not None:
            raise UsageError(f"--jobs {display(config.jobs)} line {row.line}: a mask needs inpainting: pass --mask too (a mask or a folder for rows without one)")
    outputs = OutputPlan.make(config.output, config.job.fmt, len(items) * config.job.num_images)
    return plan_work(
        config.job, items, outputs, rows=rows, style=style, prompt_from_sidecar=config.prompt_from_sidecar, mode=mode,
    )


def plan_networks(config: RunConfig, work: list[WorkItem]):
    """Each item's prompts as the encoder sees them and its LoRA set; the run's LoRA files and
    embeddings (:func:`img2img_cli.text.networks.plan_text`). No model loads.

    Raises:
        UsageError: a LoRA or embedding not found or not loadable, or ``--compile`` with inputs
            that use different LoRA sets (compiled LoRAs are fused and cannot switch).
    """
    from .text.networks import plan_text

    networks = plan_text(work, config.text)
    if config.speed.compile and len(networks.sets) > 1:
        raise UsageError(
            "--compile fuses the LoRAs into the weights before compiling, so one run takes one LoRA set; "
            f"these inputs use {len(networks.sets)} (run each set separately, or drop --compile)"
        )
    if config.speed.fuse_qkv and networks.loras:
        raise UsageError("--fuse-qkv and LoRAs: fused projections would drop the LoRA's Q, K, V updates; pass one")
    return networks


def run(
    config: RunConfig,
    *,
    emit: Callable[[Outcome, Path, int, float], None] = lambda *a: None,
    progress: bool = False,
) -> Summary:
    """Run ``config``: one model load, batched generation, one outcome per input.

    Args:
        emit: called in the writer thread after each output is written, with
            ``(outcome, path, seed, seconds)``.
        progress: show progress bars on stderr.

    Under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its
    share (:func:`img2img_cli.distributed.split`) and the counts are gathered.

    Returns:
        the :class:`Summary` (a failing input never stops the others).

    Raises:
        UsageError, ModelError: before any model loads (bad option, input or model), or when
            the model cannot be loaded.
    """
    from . import modes

    mode = modes.for_config(config)
    work = plan(config, mode)
    plots, hidden = [], []
    if config.axes or config.plot.grid:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--x and --grid run in one process (their grid needs every cell); run them without accelerate launch / torchrun")
    if config.axes:
        from .plot.run import expand

        work, plots, hidden = expand(work, list(config.axes), save_cells=config.plot.save_cells, skip_existing=config.skip_existing, mode=mode)
    try:
        return _run(config, mode, work, plots, emit, progress)
    finally:
        if hidden:
            from .plot.run import remove_hidden

            remove_hidden(hidden)


def _run(config: RunConfig, mode, work: list[WorkItem], plots: list, emit, progress: bool) -> Summary:
    from . import distributed
    from .models import resolve_device, resolve_model
    from .runner import Runner

    from . import modes

    networks = plan_networks(config, work)
    spec = resolve_model(config.job.model, config.model_config)
    mode = modes.for_model(mode, spec.index_class, config.job.model, config)
    if not mode.tiled and config.tiling != type(config.tiling)():
        raise UsageError("--tile-size and --tile-overlap need --upscale (SD upscale) or an x4 upscaler model")
    steps_error = config.steps_error or next((w.steps_error for w in work if w.steps_error), "")
    if mode.has_strength and steps_error:  # deferred NoDenoisingStep: the command line's, a jobs row's, a plot cell's
        raise UsageError(steps_error)
    if not mode.has_strength:  # instruction editing: every step runs, no strength to record
        for w in work:
            w.job = w.job.replace(strength=None)
    device = resolve_device(config.job.device)
    signing = None
    if config.c2pa_cert is not None:
        from .credentials import Signing

        signing = Signing.load(config.c2pa_cert, config.c2pa_key)  # raises UsageError before any model loads
    start = time.perf_counter()
    summary = Summary()
    report = ReportFile(config.report)
    protected = frozenset(os.path.realpath(w.input.path) for w in work)  # every process's inputs
    state, device, work = distributed.split(work, device)
    # cells in a hidden folder are not results: only their grids are (emitted by _grids)
    shown = (lambda *a: None) if plots and not config.plot.save_cells else emit
    try:
        todo = _skip_existing(work, config, summary, report)
        if todo:
            runner = Runner(todo, config, mode, report, summary, shown, protected, progress, signing)
            runner.go(_loader(config, spec, mode, progress, networks), device, start)
        summary.outcomes = [w.outcome for w in work]
        _grids(config, mode, work, plots, emit, summary)
    finally:
        report.close()
    distributed.gather(summary, state)
    summary.seconds = time.perf_counter() - start
    return summary


def _grids(config: RunConfig, mode, work: list[WorkItem], plots: list, emit, summary: Summary) -> None:
    """Compose each plot's grid from its written cells, and the ``--grid`` contact sheet;
    each written path goes to ``emit`` like an output. A grid that cannot be written is an
    error of its input, not of the run."""
    from .errors import OutputError
    from .provenance import xmp_packet

    xmp = None if config.no_provenance else xmp_packet(mode.source_type)
    if plots:
        from .plot.run import compose

        for p in plots:
            try:
                path = compose(p, overwrite=config.overwrite, xmp=xmp, quality=p.source.job.quality)
            except OutputError as e:
                log.error("%s", e)
                summary.failed += 1
                continue
            if path is not None:
                first = p.cells[0][1]
                emit(first.outcome, path, first.base_seed, 0.0)
    if config.plot.grid:
        from .plot.run import sheet

        folder = work[0].outputs[0].parent if work else None
        if folder is not None:
            try:
                path = sheet(work, folder, overwrite=config.overwrite, xmp=xmp)
            except OutputError as e:
                log.error("%s", e)
                return
            if path is not None:
                emit(work[0].outcome, path, work[0].base_seed, 0.0)


def _skip_existing(work: list[WorkItem], config: RunConfig, summary: Summary, report: ReportFile) -> list[WorkItem]:
    """Give each item its outcome; with ``--skip-existing``, items whose outputs all exist are
    reported skipped. Returns the items to make."""
    todo = []
    for w in work:
        w.outcome = Outcome(w.input.path, "ok")
        if config.skip_existing and all(os.path.lexists(p) for p in w.outputs):
            w.outcome.status = "skipped"
            w.outcome.outputs = list(w.outputs)
            summary.skipped += 1
            report.write(record(w, None, None, config.mode))
            log.info("%s: skipped, output exists", display(w.input.path))
        else:
            todo.append(w)
    return todo


def _loader(config: RunConfig, spec, mode, progress: bool, networks):
    """``load_pipe(device)`` for the runner: loads the mode's pipeline once, when there is work,
    with the run's embeddings and LoRAs (:func:`img2img_cli.text.adapt`)."""

    def load_pipe(device: str):
        from .models import load_pipeline, native_resolution, resolve_dtype
        from .runner import Loaded
        from .schedulers import display_name
        from .text import adapt

        text = {}
        pipe = load_pipeline(
            spec, mode=mode, device=device, dtype=resolve_dtype(config.job.dtype, device), dtype_option=config.job.dtype,
            scheduler=config.job.scheduler, progress=progress, speed=config.speed,
            attach=lambda p: mode.attach(p, config),
            adapt=lambda p: text.setdefault("conditioner", adapt(p, config.text, networks, fuse=config.speed.compile)),
        )
        return Loaded(pipe, display_name(pipe.scheduler), spec.name, native_resolution(pipe), text.get("conditioner"))

    return load_pipe

"""``img2img upscale``: super-resolution without diffusion (A1111's Extras tab), a folder at a time.

Flow, the same as ``run``'s without the diffusion parts: options (:class:`UpscaleConfig`,
validated, the ``--upscaler`` file checked) -> inputs (:mod:`.inputs`) -> output names
(:mod:`.outputs`) -> skip existing -> the upscaler loaded once (:mod:`.upscalers`) -> each
input read (:func:`img2img_cli.io.load_image`), upscaled, written atomically with its infotext
(:mod:`.writing`, :mod:`.metadata`) -> ``--report`` line and summary (:mod:`.report`). One bad
input fails alone (exit 1); a bad option or upscaler stops the run before any image is read
(exit 2).

Infotext: A1111's Extras keys ``Postprocess upscaler: <name>, Postprocess upscale by: <x>``
(``scripts/postprocessing_upscale.py``), appended to the input's own parameters when it has
some (:func:`img2img_cli.infotext.append_params`), else on their own with ``Version``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from .config import Job, RunConfig, option, option_like, parse_colour
from .errors import InputError, OutputError, UsageError
from .io import display
from .upscalers import DEFAULT_OVERLAP, DEFAULT_TILE, LANCZOS, check_upscaler

log = logging.getLogger(__name__)

#: ``-x`` range: A1111's Extras slider goes to 8; 16 leaves room for two passes of a 4x network.
MAX_FACTOR = 16.0
#: ``--tile-size`` range in input pixels (0: no tiling).
MIN_TILE_SIZE, MAX_TILE_SIZE = 32, 8192


@dataclass(frozen=True)
class UpscaleConfig:
    """One ``img2img upscale``: its options, declared once (the shared ones as
    :func:`~img2img_cli.config.option_like` copies of ``run``'s). Build it with
    :meth:`from_values`, which validates it.

    Attributes:
        upscaler: ``--upscaler``: a network file or ``lanczos``; ``None``: Lanczos if
            ``factor`` is given.
        factor: ``-x``: output size over input size, in ``(0, MAX_FACTOR]``; ``None``: the
            network's scale.
        tile_size, tile_overlap: input pixels; see :func:`img2img_cli.upscalers.run_tiled`.
    """

    inputs: list[Path] = option_like(RunConfig, "inputs")
    upscaler: Optional[str] = option(
        None, "--upscaler", "-u", show_default=False,
        help=f"Super-resolution network file (.safetensors, or .pth read with weights_only): Real-ESRGAN, ESRGAN, SwinIR, HAT, DAT... or {LANCZOS}. Default: {LANCZOS} when -x is given.",
    )
    factor: Optional[float] = option(
        None, "-x", "--scale", show_default=False,
        help="Output size over input size, e.g. 2 (Lanczos resize after the network). Default: the network's scale.",
    )
    tile_size: int = option(DEFAULT_TILE, "--tile-size", help="Tile side in input pixels for large images (0: whole image at once).")
    tile_overlap: int = option(DEFAULT_OVERLAP, "--tile-overlap", help="Pixels shared by neighbouring tiles, blended linearly.")
    output: Optional[Path] = option_like(RunConfig, "output", help="Output folder (default outputs/), or a file when there is one input.")
    fmt: Optional[Literal["png", "jpg", "webp"]] = option_like(Job, "fmt")
    quality: int = option_like(Job, "quality")
    overwrite: bool = option_like(RunConfig, "overwrite")
    skip_existing: bool = option_like(RunConfig, "skip_existing")
    recursive: bool = option_like(RunConfig, "recursive")
    json_out: bool = option_like(RunConfig, "json_out")
    quiet: bool = option_like(RunConfig, "quiet")
    report: Optional[Path] = option_like(RunConfig, "report")
    max_pixels: int = option_like(RunConfig, "max_pixels")
    background: str = option_like(RunConfig, "background")
    no_provenance: bool = option_like(RunConfig, "no_provenance", help="Do not write the XMP label (IPTC digital source type) into outputs.")
    device: Literal["auto", "cpu", "cuda", "mps"] = option_like(Job, "device")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option_like(Job, "dtype", help="auto: fp16 on cuda/mps where the network supports it, fp32 on cpu.")

    @classmethod
    def from_values(cls, values: dict) -> "UpscaleConfig":
        """Build from the Typer command's values (keyed by field name) and validate.

        Raises:
            UsageError: as :meth:`validate`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k in names and v is not None}
        return cls(**kwargs).validate()

    @property
    def network(self) -> bool:
        """Whether ``--upscaler`` names a network file (not Lanczos)."""
        return self.upscaler is not None and self.upscaler.strip().lower() != LANCZOS

    def validate(self) -> "UpscaleConfig":
        """Check every option and the ``--upscaler`` file (exists, known extension), reading
        no image and no weights.

        Raises:
            UsageError: naming the flag and the value.
        """
        if not self.inputs:
            raise UsageError("no inputs: give one or more image files or folders")
        if self.upscaler is None and self.factor is None:
            raise UsageError(f"give --upscaler FILE (a super-resolution network), or -x FACTOR for a {LANCZOS} resize")
        if not self.network and self.factor is None:
            raise UsageError(f"--upscaler {LANCZOS} needs -x FACTOR")
        if self.factor is not None and not (0 < self.factor <= MAX_FACTOR):
            raise UsageError(f"-x must be in (0, {MAX_FACTOR:g}], got {self.factor:g}")
        if self.tile_size != 0 and not (MIN_TILE_SIZE <= self.tile_size <= MAX_TILE_SIZE):
            raise UsageError(f"--tile-size must be 0 or in [{MIN_TILE_SIZE}, {MAX_TILE_SIZE}], got {self.tile_size}")
        if self.tile_size and not (0 <= self.tile_overlap < self.tile_size // 2):
            raise UsageError(f"--tile-overlap must be in [0, {self.tile_size // 2}) for --tile-size {self.tile_size}, got {self.tile_overlap}")
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.overwrite and self.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other; pass one")
        self.background_rgb
        Job(fmt=self.fmt, quality=self.quality, device=self.device, dtype=self.dtype).validate()
        check_upscaler(self.upscaler)
        return self

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        """``--background`` as ``(R, G, B)``, 0-255 each (raises :class:`UsageError`)."""
        return parse_colour(self.background)


@dataclass
class _Item:
    """One input, its output path and what happened to it."""

    input: object  # InputItem
    dest: Path
    outcome: object  # Outcome


def plan(config: UpscaleConfig) -> list[_Item]:
    """Each input and its output path; nothing read but the folder listings.

    Raises:
        UsageError: a missing input, no image, ``-o FILE`` with several inputs.
    """
    from .inputs import collect_inputs
    from .outputs import OutputPlan
    from .work import Outcome

    items = collect_inputs(config.inputs, recursive=config.recursive)
    outputs = OutputPlan.make(config.output, config.fmt, len(items))
    taken: set[Path] = set()
    return [_Item(it, outputs.claim(it, 1, taken)[0], Outcome(it.path, "ok")) for it in items]


def run_upscale(
    config: UpscaleConfig,
    *,
    emit: Callable[[object, Path, int | None, float], None] = lambda *a: None,
    progress: bool = False,
):
    """Upscale every input of ``config``: one upscaler load, one outcome per input.

    Args:
        emit: called after each output is written with ``(outcome, path, None, seconds)``
            (the same callback as ``run``'s; there is no seed).
        progress: show a progress bar on stderr.

    Returns:
        the :class:`~img2img_cli.report.Summary`: ``exit_code`` 0, 1 when an input failed,
        130/143 when interrupted.

    Raises:
        UsageError, ModelError: before any image is read (bad input path, output name,
            device) or when the upscaler cannot be loaded.
    """
    from .models import resolve_device
    from .report import ReportFile, Summary
    from .runner import Interrupted, _on_term
    from .upscalers import load_upscaler
    from .writing import remove_stale_temp_files

    start = time.perf_counter()
    items = plan(config)
    device = resolve_device(config.device) if config.network else "cpu"  # Lanczos: no torch
    summary = Summary()
    report = ReportFile(config.report)
    try:
        todo = []
        for it in items:
            if config.skip_existing and os.path.lexists(it.dest):
                it.outcome.status, it.outcome.outputs = "skipped", [it.dest]
                summary.skipped += 1
                report.write(_record(it, config, None))
                log.info("%s: skipped, output exists", display(it.input.path))
            else:
                todo.append(it)
        if todo:
            upscaler = load_upscaler(config.upscaler or LANCZOS, device, config.dtype)
            summary.load_seconds = time.perf_counter() - start
            for folder in {it.dest.parent for it in todo}:
                remove_stale_temp_files(folder)
            old_term = signal.signal(signal.SIGTERM, _on_term) if threading.current_thread() is threading.main_thread() else None
            try:
                _loop(todo, upscaler, config, summary, report, emit, progress, {os.path.realpath(i.input.path) for i in items})
            except KeyboardInterrupt:
                summary.interrupted = 130
            except Interrupted as e:
                summary.interrupted = e.code
            finally:
                if old_term is not None:
                    signal.signal(signal.SIGTERM, old_term)
            if summary.interrupted or summary.fatal:
                summary.remaining = sum(1 for it in todo if it.outcome.status == "ok" and not it.outcome.outputs)
        summary.outcomes = [it.outcome for it in items]
    finally:
        report.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _loop(todo: list[_Item], upscaler, config: UpscaleConfig, summary, report, emit, progress: bool, protected: set) -> None:
    """Upscale and write each item in order; timings for the summary line."""
    from .runner import FATAL_ERRNOS

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="upscale", file=sys.stderr, dynamic_ncols=True)
    first_end = last_end = None
    later = 0
    try:
        for it in todo:
            t0 = time.perf_counter()
            try:
                path = _one(it, upscaler, config, os.path.realpath(it.dest) in protected)
            except (InputError, OutputError) as e:
                it.outcome.status, it.outcome.error = "failed", str(e)
                summary.failed += 1
                log.error("%s", e)
                if isinstance(e, OutputError) and e.errno in FATAL_ERRNOS:
                    summary.fatal = str(e)
                path = None
            it.outcome.seconds = time.perf_counter() - t0
            if path is not None:
                it.outcome.outputs.append(path)
                summary.written += 1
                emit(it.outcome, path, None, it.outcome.seconds)
                if first_end is None:
                    first_end = time.perf_counter()
                    summary.first_batch_seconds, summary.first_batch_images = it.outcome.seconds, 1
                else:
                    later, last_end = later + 1, time.perf_counter()
            report.write(_record(it, config, upscaler))
            if bar is not None:
                bar.update(1)
            if summary.fatal:
                break
    finally:
        if bar is not None:
            bar.close()
        if last_end is not None and last_end > first_end:
            summary.steady_rate = later / (last_end - first_end)


def _one(it: _Item, upscaler, config: UpscaleConfig, protect: bool) -> Path:
    """Read, upscale and write one input; returns the path written.

    Raises:
        InputError: the input cannot be read, or the network fails on it.
        OutputError: the output cannot be written.
    """
    from .io import EXTENSION_FORMATS, load_image
    from .metadata import read_infotext
    from .runner import short
    from .upscalers import upscale_image
    from .writing import atomic_save

    src = load_image(it.input.path, max_pixels=config.max_pixels, background=config.background_rgb)
    try:
        image = upscale_image(upscaler, src, config.factor, tile=config.tile_size, overlap=config.tile_overlap)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        raise InputError(f"{display(it.input.path)}: upscaling failed ({short(e)})") from None
    try:
        existing = read_infotext(it.input.path)
    except OSError:
        existing = None
    text = postprocess_infotext(existing, upscaler.name, config.factor if config.factor is not None else upscaler.scale)
    fmt = EXTENSION_FORMATS.get(it.dest.suffix.lower(), "png")
    return atomic_save(
        image, it.dest, fmt, text, quality=config.quality, overwrite=config.overwrite and not protect,
        xmp=_xmp(it.input.path, upscaler, config),
    )


def postprocess_infotext(existing: str | None, upscaler: str, factor: float) -> str:
    """The infotext of an upscaled image.

    Args:
        existing: the input's infotext (:func:`img2img_cli.metadata.read_infotext`), or ``None``.
        upscaler: the upscaler's name (:attr:`img2img_cli.upscalers.Upscaler.name`).
        factor: the output size over the input size.

    Returns:
        ``existing`` with ``Postprocess upscaler: <name>, Postprocess upscale by: <factor>``
        appended to its parameters line (A1111's Extras keys, ``format(factor, "g")``) when it
        has one; otherwise those two and ``Version: img2img-cli <version>`` alone (a text
        without a parameters line, such as a camera's EXIF comment, is not carried over).
    """
    from .metadata import append_params, format_infotext
    from .provenance import software_agent
    from .work import format_number

    params = {"Postprocess upscaler": upscaler, "Postprocess upscale by": format_number(factor)}
    text = append_params(existing, params) if existing else None
    return text if text is not None else format_infotext("", None, {**params, "Version": software_agent()})


def _xmp(source: Path, upscaler, config: UpscaleConfig) -> bytes | None:
    """The XMP label of an output: made by a trained model for a network; for Lanczos, the
    input's own label when it has one of ours (an upscaled AI image is still one), else none."""
    from .provenance import COMPOSITE, TRAINED, read_source_type, xmp_packet

    if config.no_provenance:
        return None
    if upscaler.is_network:
        return xmp_packet(TRAINED)
    found = read_source_type(source)
    return xmp_packet(found) if found in (TRAINED, COMPOSITE) else None


def _record(it: _Item, config: UpscaleConfig, upscaler) -> dict:
    """The ``--report`` line of one input, with ``run``'s keys: ``input``, ``outputs``,
    ``seed`` (``None``), ``seeds``, ``parameters`` (``mode: upscale``, ``upscaler``,
    ``architecture``, ``scale`` (the network's), ``factor`` (``-x``), ``tile_size``,
    ``tile_overlap``), ``status``, ``error``, ``seconds``."""
    o = it.outcome
    return {
        "input": display(it.input.path),
        "outputs": [display(p) for p in o.outputs],
        "seed": None,
        "seeds": [],
        "parameters": {
            "mode": "upscale",
            "upscaler": upscaler.name if upscaler is not None else config.upscaler,
            "architecture": upscaler.architecture if upscaler is not None else None,
            "scale": upscaler.scale if upscaler is not None else None,
            "factor": config.factor,
            "tile_size": config.tile_size,
            "tile_overlap": config.tile_overlap,
        },
        "status": o.status,
        "error": o.error,
        "seconds": round(o.seconds, 3),
    }

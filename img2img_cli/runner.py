"""The batched loop of one process: reader thread -> device (main thread) -> writer thread.

The reader thread reads, resizes and converts the next batches to tensors (and the mode's
extra inputs); the main thread runs the denoiser; the writer thread encodes and writes the
results atomically. Images of the same output size and parameters share a pipeline call.
Per-image noise comes from each image's own CPU ``torch.Generator``, so batching never changes
a picture. Nothing here knows about a particular mode: it calls the :class:`~img2img_cli.modes.Mode`
hooks.

Faults: out of device memory halves the batch, then tries VAE tiling; any other failed batch
is retried image by image; an output error that every later write would hit too (a full disk)
stops the run; SIGINT and SIGTERM stop it cleanly (exit 130 / 143), with finished images written.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, OutputError
from .io import EXTENSION_FORMATS, display, load_image, probe_size
from .provenance import software_agent, xmp_packet
from .report import ReportFile, Summary, record
from .work import Unit, WorkItem, infotext_params
from .writing import atomic_save, remove_stale_temp_files

log = logging.getLogger(__name__)

#: Output errors that stop the whole run (every later write would fail the same way).
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: Batches read ahead of the one on the device.
LOOKAHEAD = 2


class Interrupted(BaseException):
    """Raised in the main thread by the SIGTERM handler (SIGINT raises KeyboardInterrupt)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Loaded:
    """What :func:`Runner.go`'s ``load_pipe(device)`` returns: the pipeline, the sampler name
    and model name recorded in the infotext, and the native resolution in pixels."""

    pipe: object
    sampler: str
    model_name: str
    native: int
    text: object = None  # the pipeline's text Conditioner (img2img_cli.text.conditioning)


def auto_batch_size(device: str, native: int) -> int:
    """Default ``--batch-size``.

    Measured (``make bench``): on our CPU the tiny model (64 px) makes 1.38 images/s one at a
    time and 2.28 at 8, where per-call overhead dominates; SD-size models on a CPU are
    compute-bound and gain nothing, so 1. On CUDA: 8 up to 512 px, 4 at 768, 2 at 1024 (SDXL),
    so the activations of a batch stay within a consumer GPU's memory in fp16.
    """
    if device.startswith("cuda"):
        return 8 if native <= 512 else 4 if native <= 768 else 2
    if device.startswith("cpu"):
        return 8 if native <= 128 else 1
    return 1


class Runner:
    """Runs ``todo`` (work items not skipped) in one process.

    Args:
        todo: the :class:`~img2img_cli.work.WorkItem` s to make; their ``outcome`` set.
        config: the :class:`~img2img_cli.config.RunConfig`.
        mode: the run's :class:`~img2img_cli.modes.Mode`.
        report: the open ``--report`` file; summary: counts, filled in as work completes.
        emit: ``emit(outcome, path, seed, seconds)`` after each output is written (writer thread).
        protected: real paths of every input of the run (all processes'): never written.
        progress: show a progress bar on stderr.
        signing: a :class:`~img2img_cli.credentials.Signing` to sign each output with C2PA
            Content Credentials, or ``None``.
    """

    def __init__(
        self, todo, config, mode, report: ReportFile, summary: Summary, emit, protected: frozenset, progress: bool,
        signing=None,
    ):
        self.todo = todo
        self.config = config
        self.mode = mode
        self.report = report
        self.summary = summary
        self.emit = emit
        self.protected = protected
        self.progress = progress
        self.lock = threading.Lock()
        self.sampler = None
        self.model_name = None
        self.text = None
        self.bar = None
        self.fatal: str | None = None
        self.batch_size = 1
        self.tiled = False
        self.pin = False  # pinned host memory for image tensors (CUDA)
        self.xmp = None if config.no_provenance else xmp_packet(mode.source_type)
        self.signing = signing
        # A1111 writes "Color correction: True"; colorize is ours, written the same way
        self._colour_fields = {k: True for k, on in (("Color correction", config.color_correction), ("Colorize", config.colorize)) if on}
        self._kept: dict[int, object] = {}  # prepared images of items with units in later batches
        self._unread: dict[int, int] = {}  # item index -> its units in batches not yet prepared
        self._tiles: dict[tuple, dict] = {}  # (item index, k) -> its tiles made so far (writer thread)

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
            log.error("%s", error)
        w.pending -= 1
        if self.bar is not None:
            self.bar.update(1)
        if w.pending == 0:
            if o.status == "failed":
                with self.lock:
                    self.summary.failed += 1
            self.report.write(record(w, self.sampler, self.model_name, self.mode.name))

    def _fail_item(self, w: WorkItem, error: str) -> None:
        for k in range(w.pending):
            self._unit_done(Unit(w, k), None, error, 0.0)

    # -- stages

    def _batches(self, batch_size: int) -> list[list[Unit]]:
        """Units grouped by :meth:`Unit.key`, in order of first appearance, cut into batches of
        at most ``batch_size``."""
        groups: dict[tuple, list[Unit]] = {}
        for w in self.todo:
            if w.size is None:
                continue
            for k in range(w.job.num_images):
                for part in range(w.parts):
                    u = Unit(w, k, part)
                    groups.setdefault(u.key(), []).append(u)
        batches = []
        for units in groups.values():
            for i in range(0, len(units), batch_size):
                batches.append(units[i : i + batch_size])
        self._unread = collections.Counter(u.item.index for b in batches for u in b)
        return batches

    def _read(self, w: WorkItem):
        """``(tensor, prepared)`` for one item, or the :class:`InputError` it raised: the
        mode's :class:`~img2img_cli.modes.Prepared` input (by default the source resized to the
        output size) and its image as a float32 tensor ``(3, H, W)`` in ``[0, 1]`` (pinned on
        CUDA); for a tiled item no whole-image tensor (``None``): its tiles are cut per batch."""
        from .pipeline import to_tensor

        try:
            target = w.size if self.mode.scales_source(self.config) else None  # JPEG draft decoding
            src = load_image(w.input.path, max_pixels=self.config.max_pixels, background=self.config.background_rgb, target=target)
            prepared = self.mode.prepare(w, src, w.size, self.config)
            if w.grid is not None:
                if prepared.image.size != w.grid.size:
                    raise RuntimeError(f"the mode prepared {prepared.image.size}, its tiles cover {w.grid.size}")
                return None, prepared
            return to_tensor(prepared.image, pin=self.pin), prepared
        except InputError as e:
            return e
        except Exception as e:  # a Pillow plugin bug must not stop the folder
            return InputError(f"{display(w.input.path)}: cannot decode image ({short(e)})")

    def _prepare(self, batch: list[Unit]) -> dict[int, object]:
        """Read the items of ``batch`` (reader thread): item index -> :meth:`_read`'s result,
        and ``(item index, tile)`` -> that tile's tensor for a tiled item. An item whose
        ``-N`` images or tiles span several batches is read (and, say, enlarged) once: it is
        kept until the batch that holds its last unit."""
        from .pipeline import to_tensor

        out: dict = {}
        for u in batch:
            index = u.item.index
            if index not in out:
                cached = self._kept.pop(index, None)
                out[index] = cached if cached is not None else self._read(u.item)
        for u in batch:
            self._unread[u.item.index] -= 1
        for index in list(out):
            if self._unread[index] > 0:
                self._kept[index] = out[index]
        for u in batch:
            read = out[u.item.index]
            if u.item.grid is not None and not isinstance(read, InputError):
                box = u.item.grid.boxes[u.part]
                out[(u.item.index, u.part)] = (to_tensor(read[1].image.crop(box), pin=self.pin), self.mode.tile_extras(read[1].extras, box))
        return out

    def _collect(self, unit: Unit, image, error: str | None, seconds: float, prepared) -> None:
        """One unit's result (writer thread): an image is saved (:meth:`_save`) or reported
        failed at once; a tile waits for the other tiles of its image, which are then blended
        (:func:`img2img_cli.tiles.combine`) and saved as one output. A failed tile fails its
        image and nothing of it is written."""
        w = unit.item
        if w.grid is None:
            if error is not None:
                self._unit_done(unit, None, error, seconds)
            else:
                self._save(unit, image, seconds, prepared)
            return
        got = self._tiles.setdefault((w.index, unit.k), {"images": [None] * w.parts, "error": None, "seconds": 0.0, "n": 0})
        got["n"] += 1
        got["seconds"] += seconds
        if error is not None and got["error"] is None:
            got["error"], got["images"] = error, None  # the image fails: drop what it has
        elif got["error"] is None:
            got["images"][unit.part] = image
        if got["n"] < w.parts:
            if self.bar is not None:
                self.bar.update(1)
            return
        del self._tiles[(w.index, unit.k)]
        whole = Unit(w, unit.k)
        if got["error"] is not None:
            self._unit_done(whole, None, got["error"], got["seconds"])
            return
        from .tiles import combine

        try:
            combined = combine(w.grid, got["images"])
        except Exception as e:
            self._unit_done(whole, None, f"{display(w.input.path)}: cannot combine its tiles ({short(e)})", got["seconds"])
            return
        self._save(whole, combined, got["seconds"], prepared)

    def _save(self, unit: Unit, image, seconds: float, prepared) -> None:
        """Finish (the mode's :meth:`~img2img_cli.modes.Mode.finish`, then the colour steps)
        and write one result (writer thread)."""
        from .metadata import format_infotext

        w = unit.item
        t0 = time.perf_counter()
        try:
            image = self._finish(image, prepared)
            params = infotext_params(
                w.job, seed=unit.seed, size=w.size, sampler=self.sampler, model_name=self.model_name,
                extra={**self.mode.infotext(w, self.config), **self._colour_fields, **(w.text.fields if w.text is not None else {})},
            )
            text = format_infotext(w.prompt, w.negative_prompt, params)
            protect = os.path.realpath(unit.dest) in self.protected
            fmt = EXTENSION_FORMATS.get(unit.dest.suffix.lower(), "png")
            path = atomic_save(
                image, unit.dest, fmt, text, quality=w.job.quality, overwrite=self.config.overwrite and not protect,
                xmp=self.xmp, finish=self._signer(w, unit.dest, fmt),
            )
        except OutputError as e:
            if e.errno in FATAL_ERRNOS and self.fatal is None:
                self.fatal = str(e)
            self._unit_done(unit, None, str(e), seconds + time.perf_counter() - t0)
            return
        except Exception as e:  # a bug in an encoder or signer fails this image, not the run
            self._unit_done(unit, None, f"{display(unit.dest)}: cannot write ({short(e)})", seconds + time.perf_counter() - t0)
            return
        self._unit_done(unit, path, None, seconds + time.perf_counter() - t0)

    def _finish(self, image, prepared):
        """The mode's finish (an inpainting overlay), then the colour steps of the run:
        ``--color-correction`` before the overlay, as A1111 does, so kept pixels stay the
        source's; ``--colorize`` after it, against the whole canvas."""
        canvas = prepared.canvas
        if self.config.color_correction:
            from .color import color_correct

            image = color_correct(image, canvas if canvas.size == image.size else canvas.resize(image.size))
        image = self.mode.finish(image, prepared)
        if self.config.colorize:
            from .color import colorize

            image = colorize(image, canvas)
        return image

    def _signer(self, w: WorkItem, dest: Path, fmt: str):
        """``finish(tmp_path)`` for :func:`~img2img_cli.writing.atomic_save`: signs the written file
        with C2PA Content Credentials, or ``None`` without ``--c2pa-cert``."""
        if self.signing is None:
            return None
        from .credentials import sign

        def finish(tmp: Path) -> None:
            sign(self.signing, tmp, fmt, action=self.mode.c2pa_action, source_type=self.mode.source_type,
                 ingredient=w.input.path, software=software_agent(), name=display(dest))

        return finish

    def _requests(self, batch: list[Unit], prepared: dict[int, object]) -> list:
        from .pipeline import Request

        out = []
        for u in batch:
            w = u.item
            image, ready = prepared[w.index]
            extras = ready.extras
            if w.grid is not None:  # the tile, and the mode's extras for it (Mode.tile_extras)
                image, extras = prepared[(w.index, u.part)]
            prompt, negative = (w.text.prompt, w.text.negative) if w.text is not None else (w.prompt, w.negative_prompt)
            out.append(Request(
                image, prompt, negative, u.seed, w.job.strength, w.job.steps, w.job.guidance_scale, extras, w.loras, w.job.clip_skip,
            ))
        return out

    def _generate(self, pipe, batch: list[Unit], prepared: dict[int, object]):
        """Run the denoiser on ``batch``; returns ``[(unit, PIL image | exception)]``.

        Out of device memory: the batch is split in halves (and later batches use the smaller
        size), then a single image is retried with VAE tiling, with a warning each time; an
        image that still fails is reported failed and the run goes on. Any other error in a
        batch is retried image by image, so one bad image does not fail its neighbours.
        """
        from .pipeline import generate

        try:
            return list(zip(batch, generate(pipe, self._requests(batch, prepared), mode=self.mode, text=self.text)))
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as e:
            oom = is_oom(e)
            if oom:
                free_device_memory()
            if len(batch) > 1:
                if oom:
                    half = (len(batch) + 1) // 2
                    self.batch_size = min(self.batch_size, half)
                    log.warning("out of memory with a batch of %d; retrying in batches of %d", len(batch), half)
                    return self._generate(pipe, batch[:half], prepared) + self._generate(pipe, batch[half:], prepared)
                log.warning("a batch of %d failed (%s); retrying its images one by one", len(batch), short(e))
                return [r for u in batch for r in self._generate(pipe, [u], prepared)]
            if oom and not self.tiled and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
                log.warning("out of memory with a single image; retrying with VAE tiling")
                pipe.vae.enable_tiling()
                self.tiled = True
                return self._generate(pipe, batch, prepared)
            return [(batch[0], e)]

    def _run_batch(self, pipe, batch: list[Unit], prepared: dict[int, object], writer) -> int:
        """Generate the readable units of ``batch`` and queue their writes; returns how many
        images went through the pipeline (0 when every input of the batch was unreadable)."""
        ready = []
        for u in batch:
            if isinstance(prepared[u.item.index], InputError):
                writer.submit(self._collect, u, None, str(prepared[u.item.index]), 0.0, None)
            else:
                ready.append(u)
        if not ready:
            return 0
        t0 = time.perf_counter()
        results = []
        for j in range(0, len(ready), self.batch_size):  # smaller after an out-of-memory
            chunk = ready[j : j + self.batch_size]
            if self.config.speed.compile and len(chunk) < self.batch_size:
                # pad with repeats so a compiled graph sees one batch shape; extra results dropped
                padded = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
                results += self._generate(pipe, padded, prepared)[: len(chunk)]
            else:
                results += self._generate(pipe, chunk, prepared)
        per = (time.perf_counter() - t0) / len(ready)
        for u, result in results:
            if isinstance(result, BaseException):
                msg = f"{display(u.item.input.path)}: generation failed ({type(result).__name__}: {' '.join(str(result).split())})"
                writer.submit(self._collect, u, None, msg, per, None)
            else:
                writer.submit(self._collect, u, result, None, per, prepared[u.item.index][1])
        return len(ready)

    def _plan(self, native: int) -> list[list[Unit]]:
        """Header scan (output sizes, without decoding pixels), then the batches."""
        for w in self.todo:
            w.pending = w.job.num_images
        multiple = 64 if self.config.speed.compile else 8
        for w in self.todo:
            try:
                src = self.mode.canvas_size(w, probe_size(w.input.path, max_pixels=self.config.max_pixels), self.config)
                w.size = self.mode.output_size(w, src, native, multiple, self.config)
            except InputError as e:
                self._fail_item(w, str(e))
                continue
            w.grid = self.mode.tiles(w, native, self.config)
        return self._batches(self.batch_size)

    def _loop(self, pipe, batches: list[list[Unit]]) -> None:
        """Read ahead, generate, write; times the first batch and the steady state after it."""
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-read")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-write")
        reads: list[Future] = [reader.submit(self._prepare, b) for b in batches[:LOOKAHEAD]]
        first_end = last_end = None
        later = 0
        try:
            for i, batch in enumerate(batches):
                if self.fatal is not None:
                    break
                prepared = reads.pop(0).result()
                if i + LOOKAHEAD < len(batches):
                    reads.append(reader.submit(self._prepare, batches[i + LOOKAHEAD]))
                t0 = time.perf_counter()
                n = self._run_batch(pipe, batch, prepared, writer)
                if n and first_end is None:
                    first_end = time.perf_counter()
                    self.summary.first_batch_seconds, self.summary.first_batch_images = first_end - t0, n
                elif n:
                    later, last_end = later + n, time.perf_counter()
        finally:
            for f in reads:
                f.cancel()
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)  # finished images still queued are written (atomically)
            if self.bar is not None:
                self.bar.close()
            if last_end is not None and last_end > first_end:
                self.summary.steady_rate = later / (last_end - first_end)

    def go(self, load_pipe, device: str, start: float) -> None:
        """Load the model (``load_pipe(device)`` returns a :class:`Loaded`), plan the batches
        and run them; SIGTERM (main thread) and SIGINT stop it cleanly."""
        loaded = load_pipe(device)
        self.sampler, self.model_name, self.text = loaded.sampler, loaded.model_name, loaded.text
        _sync(device)
        self.summary.load_seconds = time.perf_counter() - start
        self.batch_size = self.config.batch or auto_batch_size(device, loaded.native)
        self.pin = device.startswith("cuda")
        log.info("batch size %d on %s", self.batch_size, device)
        for folder in {w.outputs[0].parent for w in self.todo}:
            n = remove_stale_temp_files(folder)
            if n:
                log.info("%s: removed %d temporary file(s) left by a killed run", display(folder), n)
        batches = self._plan(loaded.native)
        if any(w.grid is not None for w in self.todo):  # the batches hold tiles (an untiled image is one)
            self.summary.unit = "tiles"
        total = sum(len(b) for b in batches)
        if self.progress and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="images", file=sys.stderr, dynamic_ncols=True)
        old_term = None
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, _on_term)
        try:
            self._loop(loaded.pipe, batches)
        except KeyboardInterrupt:
            self.summary.interrupted = 130
        except Interrupted as e:
            self.summary.interrupted = e.code
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
        self.summary.fatal = self.fatal
        if self.summary.interrupted or self.fatal is not None:
            self.summary.remaining = sum(1 for w in self.todo if w.pending > 0)


def _on_term(signum, frame):
    raise Interrupted(143)


def _sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a time taken after it is true."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def is_oom(e: BaseException) -> bool:
    """Device out-of-memory (CUDA or MPS), whatever torch version raised it."""
    try:
        import torch

        if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
            return True
    except ImportError:
        pass
    return "out of memory" in str(e).lower() and isinstance(e, RuntimeError)


def free_device_memory() -> None:
    """Collect garbage and empty torch's CUDA cache (after an out-of-memory)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def short(e: BaseException) -> str:
    """``Type: message`` on one line, at most 200 characters of message."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"

"""Loading the diffusers pipeline a mode asks for, from a resolved :class:`ModelSpec`."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from pathlib import Path

from ..errors import ModelError, UsageError
from .device import speed_hint
from .resolve import CLIP_TOKENIZER_DIR, ModelSpec, read_json
from .speed import Speed, apply_speed

log = logging.getLogger(__name__)


def load_pipeline(
    spec: ModelSpec,
    *,
    mode=None,
    device: str,
    dtype,
    scheduler: str | None = None,
    progress: bool = False,
    speed: Speed | None = None,
    dtype_option: str | None = None,
    attach=None,
    adapt=None,
):
    """Load ``mode``'s pipeline for ``spec`` onto ``device`` in ``dtype``.

    The class is the mode's for the model's family (:meth:`img2img_cli.modes.Mode.pipeline_class`:
    for img2img, SD 1.x / 2.x give ``StableDiffusionImg2ImgPipeline``, SDXL
    ``StableDiffusionXLImg2ImgPipeline``), loaded with ``from_pretrained`` for folders and hub
    ids and ``from_single_file`` for checkpoints. The safety checker is never loaded (A1111
    has none).

    Warnings diffusers and transformers log while loading (a checkpoint whose weights do not
    fit its config: "Some weights ... were not used / newly initialized", transformers' LOAD
    REPORT) reach the ``img2img_cli`` logger (the CLI prints them as ``img2img: warning: ...``)
    once the model has loaded; only the known-noisy ones in :data:`NOISE` are dropped. When
    loading fails, the one-line :class:`ModelError` says it all and they are dropped.

    Args:
        mode: a :class:`~img2img_cli.modes.Mode`; ``None`` for plain img2img.
        scheduler: an A1111 sampler name, or ``None`` for the model's own scheduler.
        progress: show diffusers' per-step progress bar (on stderr).
        dtype_option: the ``--dtype`` value ``dtype`` was resolved from (``auto``, ``fp32``...);
            when given, :func:`~img2img_cli.models.device.speed_hint` may log a hint once.
        attach: ``attach(pipe) -> pipe``, run right after loading (the mode's add-ons:
            :meth:`img2img_cli.modes.Mode.attach`); its warnings are collected like the load's.
        adapt: ``adapt(pipe)``, run after the scheduler is set and before the speed options
            (embeddings and LoRAs: :func:`img2img_cli.text.adapt`).

    Raises:
        ModelError: one line naming the model when loading fails.
    """
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    from .. import modes
    from ..schedulers import make_scheduler

    # Weight-loading bars are not ours to show (hub download bars are: they are huggingface_hub's).
    dlogging.disable_progress_bar()
    tlogging.disable_progress_bar()
    try:
        with _library_warnings() as records:
            pipe = _load(spec, mode or modes.get("img2img"), dtype)
            _refuse_missing_weights(spec, pipe)
            if attach is not None:
                pipe = attach(pipe)
    except (ModelError, UsageError):
        raise
    except Exception as e:
        raise _load_error(spec, e) from e
    for _level, message in records:  # the model loaded: even a library's "error" is a warning to us
        log.warning("%s", message)
    # At run time their errors reach us as exceptions, reported in one line; their log lines would repeat them.
    dlogging.set_verbosity(dlogging.CRITICAL)
    tlogging.set_verbosity(tlogging.CRITICAL)
    if scheduler:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler)
    if adapt is not None:  # LoRAs and embeddings go in before compiling (diffusers' advice)
        adapt(pipe)
    pipe = apply_speed(pipe, speed or Speed(), device)
    if dtype_option is not None:
        hint = speed_hint(device, dtype_option, pipe)
        if hint:
            log.warning("%s", hint)
    if progress:  # the per-step bar of the denoising loop, under the overall bar
        dlogging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=not progress, leave=False, position=1, desc="steps", file=sys.stderr, dynamic_ncols=True)
    return pipe


#: Messages diffusers, transformers and Python warnings give while loading that say nothing
#: about the model the user asked for (matched with ``re.search`` on the message).
NOISE = (
    # transformers, when diffusers imports its pipelines: image processors for the safety
    # checker's feature extractor, which is never loaded.
    re.compile(r"requires torchvision \(not installed\); falling back to"),
    # diffusers' from_single_file casts each model with .to(dtype) and says so even when no
    # module needs keeping in fp32 (an empty list).
    re.compile(r"that should be kept in float32: \[\]"),
)
#: The loggers whose records are collected while loading.
_LIBRARY_LOGGERS = ("diffusers", "transformers", "huggingface_hub")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _library_warnings():
    """Collect the warnings the libraries give while loading as ``(level, one-line message)``.

    For the duration: the ``diffusers``, ``transformers`` and ``huggingface_hub`` loggers at
    (at most) WARNING, their own handlers replaced by a collector (so nothing is printed twice;
    their levels and handlers are restored after), and Python warnings recorded too (but
    ``DeprecationWarning`` / ``PendingDeprecationWarning``: those are for developers). Known
    noise (:data:`NOISE`) is dropped.
    """
    records: list[tuple[int, str]] = []

    class Collector(logging.Handler):
        def emit(self, record):
            try:
                text = _one_line(record.getMessage())
            except Exception:  # a malformed record: not worth failing the load
                return
            if not _is_noise(text):
                records.append((record.levelno, text))

    collector = Collector(logging.WARNING)
    saved = []
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, list(logger.handlers), logger.propagate))
        logger.handlers = [collector]
        logger.propagate = False
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield records
    finally:
        for logger, level, handlers, propagate in saved:
            logger.handlers = handlers
            logger.setLevel(level)
            logger.propagate = propagate
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):
            continue
        text = _one_line(f"{w.category.__name__}: {w.message}")
        if not _is_noise(text):
            records.append((logging.WARNING, text))


def _is_noise(text: str) -> bool:
    return any(p.search(text) for p in NOISE)


def _one_line(message: str) -> str:
    """A library's log message as one line: colour codes dropped, transformers' LOAD REPORT
    table folded to ``MISSING: a, b; UNEXPECTED: c``, long key lists shortened."""
    text = _ANSI.sub("", message)
    if "LOAD REPORT" in text:
        lines = text.splitlines()
        groups: dict[str, list[str]] = {}
        for line in lines[1:]:
            cells = [c.strip() for c in line.split("|")]
            if len(cells) >= 2 and cells[1] and cells[1].isupper() and cells[0] != "Key":
                groups.setdefault(cells[1], []).append(cells[0])
        if groups:
            detail = "; ".join(f"{status}: {_shorten(keys)}" for status, keys in groups.items())
            return f"{' '.join(lines[0].split())}: {detail}"
    text = re.sub(r"\[([^\[\]]*)\]", lambda m: "[" + _shorten_list(m.group(1)) + "]", text)
    return " ".join(text.split())


def _shorten(keys: list[str], n: int = 5) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _shorten_list(inner: str, n: int = 5) -> str:
    items = [i.strip() for i in inner.split(",") if i.strip()]
    if len(items) <= n:
        return inner.strip()
    return ", ".join(items[:n]) + f", ... {len(items) - n} more"


def _refuse_missing_weights(spec: ModelSpec, pipe) -> None:
    """diffusers leaves the weights a checkpoint lacks on the meta device (no data: the move to
    the device would fail with a traceback, and no image could come out): say which, in one line."""
    import torch

    for name, component in getattr(pipe, "components", {}).items():
        if not isinstance(component, torch.nn.Module):
            continue
        empty = [k for k, p in component.named_parameters() if p.is_meta]
        empty += [k for k, b in component.named_buffers() if b.is_meta]
        if empty:
            raise ModelError(
                f"--model {spec.source}: the {name} checkpoint lacks weights its config needs "
                f"({_shorten(empty)}); it does not fit its config.json"
            )


def _load_error(spec: ModelSpec, e: Exception) -> ModelError:
    """One line for a failed load; a hub download cut short says what to do."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain, cause = [], e
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if spec.kind == "hub" and any(
        isinstance(c, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError))
        or type(c).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
        for c in chain
    ):
        root = chain[-1]
        reason = " ".join(f"{type(root).__name__}: {root}".split())[:200]
        return ModelError(
            f"--model {spec.source}: cannot download it from the Hugging Face hub ({reason}); check the "
            f"network or proxy settings (HTTPS_PROXY), or download it where there is a network "
            f"(`hf download {spec.source}`)"
        )
    reason = " ".join(str(e).split())[:300]
    return ModelError(f"--model {spec.source}: cannot load ({type(e).__name__}: {reason})")


def _load(spec: ModelSpec, mode, dtype):
    """Build the pipeline for ``spec`` (no device move). Raises whatever diffusers raises."""
    import diffusers

    if spec.kind == "file":
        return _load_single_file(spec, mode, dtype)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": False}
    if spec.kind == "folder":
        index = read_json(Path(spec.source) / "model_index.json")
        kwargs["local_files_only"] = True
    else:
        from huggingface_hub import hf_hub_download

        # Complete in the cache: no network call. Otherwise model_index.json first (so the
        # safety checker below is never downloaded), then diffusers fetches, or resumes, the rest.
        index = read_json(Path(hf_hub_download(spec.source, "model_index.json", local_files_only=spec.cached)))
        if spec.cached:
            kwargs["local_files_only"] = True
    # The mode's class for the family model_index.json names, as diffusers' auto pipelines
    # map it; importing just that class is ~1 s faster than importing the auto-pipeline tables.
    cls = getattr(diffusers, mode.pipeline_class(index.get("_class_name", ""), spec.source))
    if "safety_checker" in index:
        kwargs.update(_no_safety_checker(cls))
    return cls.from_pretrained(spec.source, **kwargs)


def _no_safety_checker(cls) -> dict:
    """The keyword arguments that load ``cls`` without its safety checker (``requires_safety_checker``
    only where its ``__init__`` takes it: the x4 upscaler's does not)."""
    import inspect

    kwargs = dict(safety_checker=None, feature_extractor=None)
    if "requires_safety_checker" in inspect.signature(cls.__init__).parameters:
        kwargs["requires_safety_checker"] = False
    return kwargs


def _load_single_file(spec: ModelSpec, mode, dtype):
    import diffusers
    from transformers import CLIPTokenizer

    index = read_json(spec.config / "model_index.json")
    cls = getattr(diffusers, mode.pipeline_class(index.get("_class_name", "StableDiffusionPipeline"), spec.source))
    kwargs: dict = {"config": str(spec.config), "local_files_only": True, "dtype": dtype}
    # Tokenizers ship once, in models/clip_tokenizer/; the OpenCLIP ones (SD 2.x, the x4 upscaler,
    # SDXL's second tokenizer) pad with "!".
    if not (spec.config / "tokenizer").is_dir() and "tokenizer" in index and index["tokenizer"][0]:
        pad = "!" if spec.config.name.startswith(("sd2", "x4-upscaler")) else "<|endoftext|>"
        kwargs["tokenizer"] = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad)
    if not (spec.config / "tokenizer_2").is_dir() and "tokenizer_2" in index and index["tokenizer_2"][0]:
        kwargs["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token="!")
    if "safety_checker" in index:
        kwargs.update(_no_safety_checker(cls))
    return cls.from_single_file(spec.source, **kwargs)


def native_resolution(pipe) -> int:
    """The model's native output side in pixels: ``unet.config.sample_size * vae_scale_factor``
    (64 for tiny, 512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL), as diffusers' pipelines
    compute their default height and width."""
    size = pipe.unet.config.sample_size
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) * int(pipe.vae_scale_factor)


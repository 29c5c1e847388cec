"""Loading the diffusers pipeline a mode asks for, from a resolved :class:`ModelSpec`."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from ..errors import ModelError, UsageError
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
):
    """Load ``mode``'s pipeline for ``spec`` onto ``device`` in ``dtype``.

    The class is the mode's for the model's family (:meth:`img2img_cli.modes.Mode.pipeline_class`:
    for img2img, SD 1.x / 2.x give ``StableDiffusionImg2ImgPipeline``, SDXL
    ``StableDiffusionXLImg2ImgPipeline``), loaded with ``from_pretrained`` for folders and hub
    ids and ``from_single_file`` for checkpoints. The safety checker is never loaded (A1111
    has none).

    Args:
        mode: a :class:`~img2img_cli.modes.Mode`; ``None`` for plain img2img.
        scheduler: an A1111 sampler name, or ``None`` for the model's own scheduler.
        progress: show diffusers' per-step progress bar (on stderr).

    Raises:
        ModelError: one line naming the model when loading fails.
    """
    from diffusers.utils import logging as dlogging

    from .. import modes
    from ..schedulers import make_scheduler

    from transformers.utils import logging as tlogging

    # Weight-loading bars and info chatter from the libraries are not ours to show.
    dlogging.disable_progress_bar()
    tlogging.disable_progress_bar()
    # Their errors reach us as exceptions, reported in one line; their log lines would repeat them.
    dlogging.set_verbosity(dlogging.CRITICAL)
    tlogging.set_verbosity(tlogging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and pickle-protocol chatter
            pipe = _load(spec, mode or modes.get("img2img"), dtype)
    except (ModelError, UsageError):
        raise
    except Exception as e:
        reason = " ".join(str(e).split())[:300]
        raise ModelError(f"--model {spec.source}: cannot load ({type(e).__name__}: {reason})") from e
    if scheduler:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler)
    pipe = apply_speed(pipe, speed or Speed(), device)
    if progress:  # the per-step bar of the denoising loop, under the overall bar
        dlogging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=not progress, leave=False, position=1, desc="steps", file=sys.stderr, dynamic_ncols=True)
    return pipe


def _load(spec: ModelSpec, mode, dtype):
    """Build the pipeline for ``spec`` (no device move). Raises whatever diffusers raises."""
    import diffusers

    if spec.kind == "file":
        pipe = _load_single_file(spec, mode, dtype)
    else:
        kwargs: dict = {"dtype": dtype, "trust_remote_code": False}
        index = {}
        if spec.kind == "folder":
            index = read_json(Path(spec.source) / "model_index.json")
        elif spec.cached:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec.source, "model_index.json")
            index = read_json(Path(cached)) if isinstance(cached, str) else {}
        if spec.kind == "folder" or spec.cached:
            kwargs["local_files_only"] = True
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        # The mode's class for the family model_index.json names, as diffusers' auto pipelines
        # map it; importing just that class is ~1 s faster than importing the auto-pipeline tables.
        cls = getattr(diffusers, mode.pipeline_class(index.get("_class_name", ""), spec.source))
        pipe = cls.from_pretrained(spec.source, **kwargs)
    return pipe


def _load_single_file(spec: ModelSpec, mode, dtype):
    import diffusers
    from transformers import CLIPTokenizer

    index = read_json(spec.config / "model_index.json")
    cls = getattr(diffusers, mode.pipeline_class(index.get("_class_name", "StableDiffusionPipeline"), spec.source))
    kwargs: dict = {"config": str(spec.config), "local_files_only": True, "dtype": dtype}
    # Tokenizers ship once, in models/clip_tokenizer/; SD 2.x and SDXL's second tokenizer pad with "!".
    if not (spec.config / "tokenizer").is_dir() and "tokenizer" in index and index["tokenizer"][0]:
        pad = "!" if spec.config.name.startswith("sd2") else "<|endoftext|>"
        kwargs["tokenizer"] = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad)
    if not (spec.config / "tokenizer_2").is_dir() and "tokenizer_2" in index and index["tokenizer_2"][0]:
        kwargs["tokenizer_2"] = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token="!")
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return cls.from_single_file(spec.source, **kwargs)


def native_resolution(pipe) -> int:
    """The model's native output side in pixels: ``unet.config.sample_size * vae_scale_factor``
    (64 for tiny, 512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL), as diffusers' pipelines
    compute their default height and width."""
    size = pipe.unet.config.sample_size
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) * int(pipe.vae_scale_factor)


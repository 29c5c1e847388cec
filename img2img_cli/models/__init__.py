"""Resolving ``--model``, choosing device and dtype, and loading the diffusers pipeline.

``--model`` may be (checked in this order, before anything heavy is imported):

1. ``tiny``: the built-in tiny model, a diffusers folder at ``img2img_cli/models/tiny/``
   (loaded through the same code path as any local folder);
2. a local diffusers folder (it has a ``model_index.json``);
3. a single-file ``.safetensors`` checkpoint (A1111 / ComfyUI layout, SD 1.x, SD 2.x,
   SDXL), loaded with diffusers' ``from_single_file`` against the configs shipped in
   ``img2img_cli/models/configs/`` and the CLIP tokenizer in ``models/clip_tokenizer/``,
   so no network call is made;
4. a Hugging Face hub repo id (``owner/name``), through the user's Hugging Face cache;
   honours ``HF_HUB_OFFLINE``.

Pickle checkpoints (``.ckpt``, ``.pt``, ``.bin``) are refused: they can run code when loaded.
``trust_remote_code`` is never passed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, UsageError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TINY_DIR = HERE / "tiny"
CONFIGS_DIR = HERE / "configs"
CLIP_TOKENIZER_DIR = HERE / "clip_tokenizer"

#: diffusers' ``infer_diffusers_model_type`` name -> shipped config folder name.
SINGLE_FILE_CONFIGS = {
    "v1": "sd15",
    "v2": "sd2",
    "v2-base": "sd2-base",
    "xl_base": "sdxl",
    "xl_refiner": "sdxl-refiner",
}
#: Text-to-image pipeline class named in model_index.json -> its image-to-image class.
IMG2IMG_CLASSES = {
    "StableDiffusionPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionImg2ImgPipeline": "StableDiffusionImg2ImgPipeline",
    "StableDiffusionXLPipeline": "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLImg2ImgPipeline",
}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from.

    Attributes:
        kind: ``"folder"`` (``tiny`` included), ``"file"`` or ``"hub"``.
        source: folder path, file path or repo id.
        name: the name recorded in the infotext ``Model:`` field (``tiny``, folder name,
            checkpoint file stem, or repo id).
        config: for ``"file"``, the diffusers config folder used; else ``None``.
        cached: for ``"hub"``, whether the repo is in the local Hugging Face cache.
    """

    kind: str
    source: str
    name: str
    config: Path | None = None
    cached: bool = True


def resolve_model(model: str, model_config: str | None = None) -> ModelSpec:
    """Resolve ``--model`` without loading anything heavy (no torch import).

    Args:
        model: ``tiny``, a folder, a ``.safetensors`` file or a hub repo id.
        model_config: for a single file, a shipped config name (``sd15``, ``sd2``,
            ``sd2-base``, ``sdxl``, ``sdxl-refiner``) or a local diffusers folder; by default
            it is inferred from the checkpoint's keys (diffusers ``infer_diffusers_model_type``).

    Raises:
        ModelError: the model cannot be found, is a pickle file, or (offline) is not cached;
            the message names it and says what to do.
    """
    if model == "tiny":
        return ModelSpec("folder", str(TINY_DIR), "tiny")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"--model {model}: folder has no model_index.json; pass a diffusers model folder "
                "(as written by save_pretrained) or a .safetensors checkpoint"
            )
        return ModelSpec("folder", str(path), path.resolve().name)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if path.exists():
            raise ModelError(
                f"--model {model}: pickle checkpoints ({path.suffix}) can run arbitrary code when loaded "
                "and are refused; use the .safetensors version of this model"
            )
        raise ModelError(f"--model {model}: no such file")
    if path.suffix.lower() == ".safetensors" or path.is_file():
        if not path.is_file():
            raise ModelError(f"--model {model}: no such file")
        if path.suffix.lower() != ".safetensors":
            raise ModelError(f"--model {model}: not a .safetensors checkpoint or diffusers folder")
        config = _single_file_config(path, model_config)
        return ModelSpec("file", str(path), path.stem, config=config)
    if _REPO_ID.match(model) and not model.startswith((".", "/", "~")):
        return _resolve_hub(model)
    raise ModelError(
        f"--model {model}: not found; pass `tiny`, a diffusers folder, a .safetensors file or a "
        "Hugging Face repo id such as stable-diffusion-v1-5/stable-diffusion-v1-5"
    )


def _resolve_hub(repo_id: str) -> ModelSpec:
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # malformed id etc.
        cached = None
    if isinstance(cached, str):
        return ModelSpec("hub", repo_id, repo_id, cached=True)
    if _offline():
        raise ModelError(
            f"--model {repo_id}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it first (`hf download {repo_id}`) or pass a local folder or .safetensors file"
        )
    if not _hub_reachable():
        raise ModelError(
            f"--model {repo_id}: not in the Hugging Face cache and the hub cannot be reached; "
            f"download it where there is a network (`hf download {repo_id}`) or pass a local folder or .safetensors file"
        )
    return ModelSpec("hub", repo_id, repo_id, cached=False)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``, default huggingface.co)
    opens within ``timeout`` seconds: without a network we fail in seconds instead of waiting
    on huggingface_hub's download retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class _LazyCheckpoint(dict):
    """A read-only mapping over a safetensors file that loads a tensor only when asked."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        super().__init__()
        self._file = safe_open(str(path), framework="pt")
        self._keys = set(self._file.keys())

    def __contains__(self, key):
        return key in self._keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def keys(self):
        return self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def get(self, key, default=None):
        return self[key] if key in self._keys else default


def _single_file_config(path: Path, model_config: str | None) -> Path:
    if model_config:
        shipped = CONFIGS_DIR / model_config
        if model_config == "tiny":
            return TINY_DIR
        if shipped.is_dir():
            return shipped
        folder = Path(model_config).expanduser()
        if (folder / "model_index.json").is_file():
            return folder
        names = ", ".join(sorted(p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()))
        raise UsageError(
            f"--model-config {model_config}: not a shipped config ({names}) nor a diffusers folder"
        )
    try:
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type

        ckpt = _LazyCheckpoint(path)  # one header read serves every check below
        kind = infer_diffusers_model_type(ckpt)
        # diffusers answers 'v1' for anything it does not recognise: check a v1 key ourselves.
        if kind == "v1" and _V1_KEY not in ckpt:
            kind = "unknown"
        elif kind == "v2" and not _sd2_is_v_prediction(ckpt):
            kind = "v2-base"
    except Exception as e:
        raise ModelError(f"--model {path}: cannot read checkpoint ({' '.join(str(e).split())})") from None
    if kind not in SINGLE_FILE_CONFIGS:
        raise ModelError(
            f"--model {path}: checkpoint type {kind!r} is not supported (SD 1.x, SD 2.x, SDXL); "
            "pass --model-config with a diffusers folder that matches it"
        )
    return CONFIGS_DIR / SINGLE_FILE_CONFIGS[kind]


#: A key every SD 1.x / 2.x UNet in original (LDM) layout has (diffusers ``CHECKPOINT_KEY_NAMES["v1"]``).
_V1_KEY = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"
_SD2_VPRED_KEY = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def _sd2_is_v_prediction(ckpt: "_LazyCheckpoint") -> bool:
    """Tell SD 2.x 768-v (v-prediction) from 512-base (epsilon): both have the same keys and shapes.

    ComfyUI's rule (``comfy/supported_models.py``, ``SD20.model_type``): v-prediction when the
    standard deviation of ``output_blocks.11.1.transformer_blocks.0.norm1.bias`` exceeds 0.09.
    Without that tensor, v-prediction (diffusers' own default for SD 2.x).
    """
    if _SD2_VPRED_KEY not in ckpt:
        return True
    return float(ckpt[_SD2_VPRED_KEY].float().std()) > 0.09


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``mps``, else ``cpu``.

    Raises:
        UsageError: ``--device cuda`` or ``mps`` asked for but not available.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (try --device cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available (try --device cpu)")
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> ``torch.float16`` on cuda and mps, ``torch.float32`` on the CPU
    (diffusers' docs run fp16 on GPUs; its CPU default is fp32)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device in ("cuda", "mps") else torch.float32
    if device == "cpu" and dtype in ("bf16", "fp16") and not cpu_has_native(dtype):
        log.warning(
            "--dtype %s: this CPU has no native %s arithmetic (%s); it is emulated and much slower "
            "than fp32 (measured: 30x slower for the SD 1.5 UNet on an AVX2 CPU)",
            dtype, dtype, torch.backends.cpu.get_cpu_capability(),
        )
    return table[dtype]


def cpu_has_native(dtype: str) -> bool:
    """Whether oneDNN runs ``dtype`` (``bf16`` or ``fp16``) natively on this CPU (AVX512-BF16 /
    AMX / AVX512-FP16); on plain AVX2 it is emulated. Uses ``torch.ops.mkldnn._is_mkldnn_*_supported``."""
    import torch

    try:
        if dtype == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == "fp16":
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except Exception:
        return False
    return True


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Speed:
    """Speed settings applied after loading (all off by default: the plain path is diffusers'
    own, bit for bit).

    Attributes:
        compile: ``torch.compile`` the UNet and the VAE (:func:`compile_modules`; static shapes;
            the batch runner pads batches to a fixed size and buckets sizes so a folder does
            not recompile after warm-up).
        channels_last: UNet and VAE in ``torch.channels_last`` memory format.
        fuse_qkv: diffusers' ``fuse_qkv_projections()`` (one matmul for Q, K and V).
        offload: ``"model"`` (``enable_model_cpu_offload``: one component on the GPU at a time)
            or ``"sequential"`` (``enable_sequential_cpu_offload``: layer by layer, slowest,
            least memory); ``None`` keeps everything on the device.
        vae_tiling: decode and encode the VAE in tiles (``vae.enable_tiling()``): large images
            in little memory.
    """

    compile: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    offload: str | None = None
    vae_tiling: bool = False


def apply_speed(pipe, speed: Speed, device: str):
    """Move ``pipe`` to ``device`` (or set up offloading) and apply ``speed``; returns ``pipe``.

    Raises:
        UsageError: ``offload`` without a CUDA device.
    """
    import torch

    if speed.offload:
        if not device.startswith("cuda"):
            raise UsageError(f"--offload {speed.offload}: needs a CUDA device (got {device})")
        if speed.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    if speed.fuse_qkv:
        pipe.fuse_qkv_projections()
    if speed.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if speed.vae_tiling:
        pipe.vae.enable_tiling()
    if speed.compile:
        compile_modules(pipe, device)
    return pipe


def compile_modules(pipe, device: str) -> None:
    """``torch.compile`` the UNet and the VAE's decoder and encoder (``fullgraph``, static shapes).

    Inductor settings, process-wide:

    - on a CPU, ``freezing``: the weights are constants at inference, so inductor folds them
      into the graph and prepacks them for oneDNN's convolutions and matmuls. Measured on our
      2-core AVX2 CPU (SD 1.5 UNet, random weights, 256x256, CFG batch 2, fp32): eager 4.54 s,
      eager channels_last 3.60 s, compiled with freezing 2.39 s per call, max difference 6e-6,
      after 115 s of compiling (``/tmp`` experiment, see the README's *Speed*).
    - on CUDA, mode ``max-autotune`` (Triton GEMM autotuning and CUDA graphs) and the settings
      of diffusers' guide "Accelerate inference of text-to-image diffusion models"
      (``docs/source/en/tutorials/fast_diffusion.md``, from the PyTorch blog "Accelerating
      Generative AI Part III: Diffusion, Fast"): ``conv_1x1_as_mm``, ``coordinate_descent_tuning``,
      ``coordinate_descent_check_all_directions``, ``epilogue_fusion=False``. Not measured by
      us: no GPU was available (``benchmarks/gpu.py --configs`` measures them).

    The encoder is called one image at a time by the pipelines (``retrieve_latents`` per
    generator), so its one shape compiles once.

    CUDA graphs reuse their output memory at the next replay. The pipelines use the UNet's
    output at once, except where a scheduler keeps it across steps (PNDM's ``ets`` history
    holds the raw output when guidance is off, ``guidance_scale <= 1``), so the compiled UNet's
    output is cloned on CUDA (one latent-sized copy per step).
    """
    import torch
    import torch._inductor.config as inductor

    mode = None
    if not device.startswith("cuda"):
        inductor.freezing = True
    else:
        mode = "max-autotune"
        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.coordinate_descent_check_all_directions = True
        inductor.epilogue_fusion = False
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True, dynamic=False)
    if mode == "max-autotune":
        pipe.unet.register_forward_hook(_own_outputs)
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=mode, fullgraph=True, dynamic=False)
    pipe.vae.encoder = torch.compile(pipe.vae.encoder, mode=mode, fullgraph=True, dynamic=False)


def _own_outputs(_module, _args, output):
    """Forward hook: the outputs cloned out of the CUDA graph's memory pool."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in output)
    return output  # a dataclass output (return_dict=True): the pipelines ask for tuples


def load_pipeline(
    spec: ModelSpec,
    *,
    device: str,
    dtype,
    scheduler: str | None = None,
    progress: bool = False,
    speed: Speed | None = None,
):
    """Load the image-to-image pipeline for ``spec`` onto ``device`` in ``dtype``.

    ``AutoPipelineForImage2Image`` for folders and hub ids (SD 1.x / 2.x give
    ``StableDiffusionImg2ImgPipeline``, SDXL ``StableDiffusionXLImg2ImgPipeline``);
    ``from_single_file`` for checkpoints. The safety checker is never loaded (A1111 has none).

    Args:
        scheduler: an A1111 sampler name, or ``None`` for the model's own scheduler.
        progress: show diffusers' per-step progress bar (on stderr).

    Raises:
        ModelError: one line naming the model when loading fails.
    """
    from diffusers.utils import logging as dlogging

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
            pipe = _load(spec, dtype)
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


def _load(spec: ModelSpec, dtype):
    """Build the pipeline for ``spec`` (no device move). Raises whatever diffusers raises."""
    import diffusers

    if spec.kind == "file":
        pipe = _load_single_file(spec, dtype)
    else:
        kwargs: dict = {"dtype": dtype, "trust_remote_code": False}
        index = {}
        if spec.kind == "folder":
            index = _read_json(Path(spec.source) / "model_index.json")
        elif spec.cached:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(spec.source, "model_index.json")
            index = _read_json(Path(cached)) if isinstance(cached, str) else {}
        if spec.kind == "folder" or spec.cached:
            kwargs["local_files_only"] = True
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        # The img2img class named by model_index.json, as AutoPipelineForImage2Image maps it;
        # importing just that class is ~1 s faster than importing the auto-pipeline tables.
        cls_name = IMG2IMG_CLASSES.get(index.get("_class_name", ""))
        cls = getattr(diffusers, cls_name) if cls_name else diffusers.AutoPipelineForImage2Image
        pipe = cls.from_pretrained(spec.source, **kwargs)
    return pipe


def _load_single_file(spec: ModelSpec, dtype):
    import diffusers
    from transformers import CLIPTokenizer

    index = _read_json(spec.config / "model_index.json")
    cls_name = IMG2IMG_CLASSES.get(index.get("_class_name", ""), "StableDiffusionImg2ImgPipeline")
    cls = getattr(diffusers, cls_name)
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

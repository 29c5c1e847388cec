"""Resolving ``--model`` to a :class:`ModelSpec`, without loading anything heavy (no torch).

``--model`` may be (checked in this order):

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
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, UsageError

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


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


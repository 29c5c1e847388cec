"""Resolving ``--model`` to a :class:`ModelSpec`, without loading anything heavy (no torch).

``--model`` may be (checked in this order):

1. ``tiny``: the built-in tiny model, a diffusers folder at ``img2img_cli/models/tiny/``
   (loaded through the same code path as any local folder);
2. a local diffusers folder (it has a ``model_index.json``);
3. a single-file ``.safetensors`` checkpoint (A1111 / ComfyUI layout, SD 1.x, SD 2.x,
   SDXL, and stabilityai's x4 upscaler), loaded with diffusers' ``from_single_file`` against the configs shipped in
   ``img2img_cli/models/configs/`` and the CLIP tokenizer in ``models/clip_tokenizer/``,
   so no network call is made;
4. a Hugging Face hub repo id (``owner/name``), through the user's Hugging Face cache: a
   complete snapshot loads with no network call; a partial or absent one is downloaded (resumed)
   by diffusers through huggingface_hub (proxies honoured). With ``HF_HUB_OFFLINE`` set, or the
   hub out of reach, a model not completely cached fails at once with a one-line error naming
   ``hf download REPO``.

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
    # Inpainting checkpoints: UNet ``input_blocks.0.0.weight`` with 9 input channels (4 latent +
    # 4 masked-image latent + 1 mask); diffusers tells SD 2.x and SDXL ones apart by the same keys
    # as for the plain models.
    "inpainting": "sd15-inpaint",
    "inpainting_v2": "sd2-inpaint",
    "xl_inpaint": "sdxl-inpaint",
    # InstructPix2Pix: ``input_blocks.0.0.weight`` with 8 input channels (4 latent + 4 source
    # latent); diffusers checks the SD 2.x and SDXL keys first, see _single_file_config.
    "instruct-pix2pix": "sd15-pix2pix",
    # stabilityai's x4 upscaler (``x4-upscaler-ema.safetensors``): diffusers tells it by its
    # ``input_blocks.10.0.skip_connection`` (256 -> 512 -> 512 -> 1024 channels); its UNet takes 7
    # input channels (4 latent + the 3-channel low-resolution image), checked in _single_file_config.
    "upscale": "x4-upscaler",
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
        cached: for ``"hub"``, whether everything the pipeline loads is in the local Hugging
            Face cache (then it is loaded with ``local_files_only=True``, no network call);
            ``False``: diffusers downloads what is missing (resuming partial downloads).
    """

    kind: str
    source: str
    name: str
    config: Path | None = None
    cached: bool = True

    @property
    def index_class(self) -> str | None:
        """The ``_class_name`` of the model's ``model_index.json`` (``StableDiffusionPipeline``,
        ``StableDiffusionInstructPix2PixPipeline``...): the folder's, the shipped config's of a
        single file, or the cached snapshot's of a hub id; ``None`` when not known before loading
        (a hub model not in the cache)."""
        if self.kind == "folder":
            return read_json(Path(self.source) / "model_index.json").get("_class_name")
        if self.kind == "file":
            return read_json(Path(self.config) / "model_index.json").get("_class_name") if self.config else None
        if not self.cached:
            return None
        try:
            from huggingface_hub import hf_hub_download

            return read_json(Path(hf_hub_download(self.source, "model_index.json", local_files_only=True))).get("_class_name")
        except Exception:
            return None


def resolve_model(model: str, model_config: str | None = None) -> ModelSpec:
    """Resolve ``--model`` without loading anything heavy (no torch import).

    Args:
        model: ``tiny``, a folder, a ``.safetensors`` file or a hub repo id.
        model_config: for a single file, a shipped config name (``sd15``, ``sd2``,
            ``sd2-base``, ``sdxl``, ``sdxl-refiner``, ``sd15-inpaint``, ``sd2-inpaint``,
            ``sdxl-inpaint``, ``sd15-pix2pix``, ``x4-upscaler``) or a local diffusers folder; by default
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
    """A hub repo id: complete in the cache -> loaded from it with no network call; otherwise
    downloaded (or its download resumed) by diffusers, which needs the hub: offline, or with the
    hub out of reach, fail now with one line saying how to get the model."""
    missing = hub_cache_missing(repo_id)
    if missing == []:
        return ModelSpec("hub", repo_id, repo_id, cached=True)
    if missing is None:
        where = "not in the Hugging Face cache"
    else:
        where = f"incomplete in the Hugging Face cache (missing {_sample(missing)})"
    if _offline():
        raise ModelError(
            f"--model {repo_id}: {where} and HF_HUB_OFFLINE is set; "
            f"download it first (`hf download {repo_id}`) or pass a local folder or .safetensors file"
        )
    reason = _hub_unreachable()
    if reason:
        raise ModelError(
            f"--model {repo_id}: {where} and the Hugging Face hub cannot be reached ({reason}); check the "
            f"network or proxy settings (HTTPS_PROXY), download it where there is a network (`hf download "
            f"{repo_id}`) or pass a local folder or .safetensors file"
        )
    return ModelSpec("hub", repo_id, repo_id, cached=False)


#: Pipeline components this tool never loads (it passes ``None`` for them).
_NOT_LOADED = {"safety_checker", "feature_extractor"}
#: A component's weights without a variant (``.fp16``): ``diffusion_pytorch_model.safetensors``,
#: ``model-00001-of-00002.safetensors``..., and their shard index ``*.safetensors.index.json``.
_WEIGHTS = re.compile(r"^[^./]+(-\d+-of-\d+)?\.(safetensors|bin)$")
_WEIGHTS_INDEX = re.compile(r"^[^./]+\.(safetensors|bin)\.index\.json$")


def hub_cache_missing(repo_id: str) -> list[str] | None:
    """What the Hugging Face cache lacks of what the pipeline loads from ``repo_id``, without a
    network call: ``None`` when nothing of it is cached, ``[]`` when it is complete, else the
    missing files (repo-relative; a folder ends with ``/``).

    The snapshot is located with ``snapshot_download(local_files_only=True)`` (so
    ``HF_HUB_CACHE`` / ``HF_HOME`` and ``refs/`` are honoured as huggingface_hub does, and an
    incomplete snapshot it knows of raises ``IncompleteSnapshotError``). Then the components
    ``model_index.json`` names (but the safety checker and feature extractor, never loaded) are
    checked: each folder present; a model's ``config.json`` and weights (non-variant
    ``.safetensors``, else ``.bin``; every shard of a sharded one); every file of a tokenizer or
    scheduler. The expected files come from the repo's file listing when huggingface_hub cached
    one (``get_cached_repo_tree``: recent versions keep it after a download), else from what is
    on disk. An interrupted download leaves no file in the snapshot (only a ``blobs/*.incomplete``),
    so it shows as missing.
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of diffusers
        return None
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["model_index.json"]))
    except IncompleteSnapshotError:
        return ["model_index.json"]
    except (LocalEntryNotFoundError, ValueError, OSError):  # absent, or a malformed id
        return None
    listing = _cached_listing(repo_id)
    index = read_json(folder / "model_index.json")
    if not index:
        return ["model_index.json"]
    missing: list[str] = []
    for name, value in index.items():
        if name.startswith("_") or name in _NOT_LOADED:
            continue
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] and value[1]):
            continue  # a component set to null
        if listing is not None:
            files = {f[len(name) + 1:] for f in listing if f.startswith(name + "/") and "/" not in f[len(name) + 1:]}
        else:
            files = {p.name for p in (folder / name).glob("*") if p.is_file()} if (folder / name).is_dir() else set()
        if not files:
            missing.append(f"{name}/")
            continue
        missing += [f"{name}/{f}" for f in sorted(_needed_files(folder / name, files)) if not (folder / name / f).is_file()]
    return missing


def _needed_files(folder: Path, files: set[str]) -> set[str]:
    """Which of ``files`` (a component folder's listing) the pipeline loads: a model's
    ``config.json`` and weights (non-variant safetensors, else bin; with the shards its index
    names), or all files of a tokenizer, scheduler or other non-model component."""
    weights = {f for f in files if _WEIGHTS.match(f)}
    indexes = {f for f in files if _WEIGHTS_INDEX.match(f)}
    if not (weights or indexes or "config.json" in files):
        return files  # tokenizer, scheduler, feature extractor: every file
    need = {"config.json"}
    for ext in ("safetensors", "bin"):
        chosen = {f for f in weights | indexes if f.split(".")[1] == ext}
        if chosen:
            need |= chosen
            for idx in chosen & indexes:
                need |= set(read_json(folder / idx).get("weight_map", {}).values())
            break
    else:
        if not any(f.endswith((".safetensors", ".bin")) for f in files):
            need.add("diffusion_pytorch_model.safetensors")  # a model folder with no weights at all
    return need


def _cached_listing(repo_id: str) -> set[str] | None:
    """The repo's file listing huggingface_hub cached on download, or ``None`` (older versions,
    or a cache filled by other means)."""
    try:
        from huggingface_hub import get_cached_repo_tree

        return {f.path for f in get_cached_repo_tree(repo_id)}
    except Exception:
        return None


def _sample(paths: list[str], n: int = 3) -> str:
    text = ", ".join(paths[:n])
    return text + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub endpoint cannot be reached, or ``None`` when it answers (any HTTP status).

    One ``HEAD`` through huggingface_hub's own HTTP client (:func:`huggingface_hub.get_session`,
    so ``HF_ENDPOINT``, ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``, custom client factories
    and offline mode apply as for the download itself), bounded by ``timeout`` seconds: that
    client has no timeout of its own, so without this a firewalled network would hang.
    """
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}".rstrip(": ")
    return None


def _offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE``, read when it is imported), or the
    variable set since."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a ``.safetensors`` file, from its header only (no weight
    read, no torch import: safetensors' ``safe_open`` with the numpy framework).

    Raises:
        OSError: the file cannot be read. Exception: safetensors' error for a file that is not a
            valid safetensors file (callers word it, naming their flag).
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


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
        elif kind in ("v2", "xl_base") and _in_channels(ckpt) == 8:
            # diffusers calls any 8-channel file instruct-pix2pix only after its SD 2.x / SDXL
            # checks: such a file is an SD 2.x or SDXL InstructPix2Pix, with no shipped config.
            kind = f"{kind} instruct-pix2pix"
        elif kind == "v2" and not _sd2_is_v_prediction(ckpt):
            kind = "v2-base"
        elif kind == "inpainting" and any(k.startswith(_SGM_PREFIX) for k in ckpt.keys()):
            # diffusers' fallback for a 9-channel UNet that is neither SD 2.x nor SDXL base: an
            # SGM-layout file (``conditioner.``, e.g. a refiner-like model) is not SD 1.x.
            kind = "unknown"
        elif kind == "upscale" and _in_channels(ckpt) != 7:
            kind = f"upscale with {_in_channels(ckpt)} input channels"
    except Exception as e:
        raise ModelError(f"--model {path}: cannot read checkpoint ({' '.join(str(e).split())})") from None
    if kind not in SINGLE_FILE_CONFIGS:
        raise ModelError(
            f"--model {path}: checkpoint type {kind!r} is not supported (SD 1.x, SD 2.x, SDXL, "
            "their inpainting versions, SD 1.x instruct-pix2pix, the x4 upscaler); "
            "pass --model-config with a diffusers folder that matches it"
        )
    return CONFIGS_DIR / SINGLE_FILE_CONFIGS[kind]


#: A key every SD 1.x / 2.x UNet in original (LDM) layout has (diffusers ``CHECKPOINT_KEY_NAMES["v1"]``).
_V1_KEY = "model.diffusion_model.output_blocks.11.0.skip_connection.weight"
#: Stability AI's generative-models (SDXL) layout keeps the text encoders under this prefix.
_SGM_PREFIX = "conditioner."
_CONV_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
_SD2_VPRED_KEY = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def _in_channels(ckpt: "_LazyCheckpoint") -> int | None:
    """The UNet's input channels (``conv_in``: 4 plain, 8 instruct-pix2pix, 9 inpainting)."""
    w = ckpt.get(_CONV_IN_KEY)
    return None if w is None else int(w.shape[1])


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


"""LoRA files as A1111 users keep them: found by name, identified, hashed, applied through diffusers.

A prompt's ``<lora:name:te:unet>`` tags name files in the LoRA folders; this module

- finds the file (:func:`find_lora`), reads what it is from its header alone (:func:`inspect_lora`:
  kohya or diffusers layout, which base model it was trained for) and refuses, by name, the
  formats diffusers cannot apply (LyCORIS LoHa, LoKr, ...), before any model is loaded;
- checks it against the model's family (:func:`check_base`);
- hashes it as A1111 does for the infotext ``Lora hashes`` field (:func:`addnet_hash`);
- applies a set of LoRAs to a loaded pipeline and switches between sets without reloading
  anything (:class:`LoraSet`, on diffusers' ``load_lora_weights`` / ``set_adapters``, which run
  on peft).

Sources: AUTOMATIC1111/stable-diffusion-webui ``modules/hashes.py`` (``addnet_hash_safetensors``,
``calculate_sha256``), ``extensions-builtin/Lora/network.py`` (``NetworkOnDisk``: the hash, the
12-character short hash, ``detect_version`` from kohya metadata), ``extra_networks_lora.py``
(``Lora hashes: name: shorthash``); kohya-ss sd-scripts metadata (``ss_base_model_version``:
``sd_v1``, ``sd_v2``, ``sd_v2_v``, ``sdxl_base_v1-0``; older files ``ss_v2``); diffusers
``loaders/lora_pipeline.py`` (``StableDiffusionLoraLoaderMixin.lora_state_dict``: a file whose
keys all start with ``lora_unet_`` / ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` is converted
from kohya's layout) and ``loaders/lora_base.py`` (``set_adapters``, ``fuse_lora``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ModelError, UsageError

log = logging.getLogger(__name__)

#: What A1111 lists as LoRA files (``extensions-builtin/Lora/networks.py``), safest first.
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
#: kohya-ss key prefixes (SD 1.x/2.x: ``lora_te_``; SDXL: ``lora_te1_`` / ``lora_te2_``).
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
#: diffusers' component prefixes.
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.")
#: Base model -> the words used in messages.
BASE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}

# Key fragments of formats that are not plain LoRA (LyCORIS and others): diffusers' Stable
# Diffusion loaders would fail on them, or (DoRA) silently drop part of the weights.
_REFUSED = (
    (("hada_w1_a", "hada_w2_a", "hada_t1"), "a LyCORIS LoHa"),
    (("lokr_w1", "lokr_w2"), "a LyCORIS LoKr"),
    (("oft_blocks", "oft_diag", "oft_R"), "a LyCORIS OFT/BOFT"),
    ((".on_input",), "a LyCORIS (IA)^3"),
    ((".a1.weight", ".b1.weight"), "a LyCORIS GLoRA"),
    ((".w_norm", ".b_norm"), "a LyCORIS norm"),
    (("dora_scale",), "a DoRA"),
)
_FULL_DIFF = re.compile(r"\.diff(_b)?$")  # LyCORIS "full" (weight difference) modules
_LORA_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "lora_linear_layer")
# The input side (in_features) of a LoRA's down projection, in each layout.
_DOWN = r"(?:\.lora_down|\.lora_A|\.lora\.down|\.lora_linear_layer\.down|_lora\.down)\.weight$"
# Cross-attention key projection: its input is the text encoder's context, 768 (SD 1.x),
# 1024 (SD 2.x) or 2048 (SDXL: 768 + 1280).
_CROSS_ATTN_K = re.compile(r"attn2[._](?:processor[._])?to_k" + _DOWN)
_TEXT_Q = re.compile(r"self_attn[._]q_proj" + _DOWN)
_CONTEXT_BASES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
#: Stability AI's model spec (``modelspec.architecture``) for the bases diffusers' SD loaders take.
_SAI_ARCHITECTURES = ("stable-diffusion-v1", "stable-diffusion-v2", "stable-diffusion-xl-v1-base")
_TEXT_BASES = {768: "sd1", 1024: "sd2"}


def file_sha256(path: Path, offset: int = 0) -> str:
    """The sha256 (64 hex digits) of ``path``'s bytes from ``offset`` on, read 1 MiB at a time.

    With ``offset=0`` this is A1111's ``calculate_sha256`` (``modules/hashes.py``), the hash
    of checkpoints, embeddings and non-safetensors LoRAs.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def addnet_hash(path) -> str:
    """A1111's "addnet" hash of a ``.safetensors`` file: the first 12 hex digits of the sha256
    of the tensor data, i.e. of the bytes after the 8-byte little-endian header length and the
    header it gives, so editing the metadata does not change it.

    That is the hash A1111 writes in the infotext's ``Lora hashes`` field (its ``shorthash``,
    12 characters) unless the file's metadata carries kohya's ``sshs_model_hash`` (which kohya
    computes the same way when it saves). Source: A1111 ``modules/hashes.py``
    (``addnet_hash_safetensors``, after kohya-ss ``library/train_util.py``) and
    ``extensions-builtin/Lora/network.py`` (``set_hash``: ``shorthash = hash[0:12]``).

    Raises:
        InputError: ``path`` cannot be read or is not a safetensors file (its header length
            points past the end).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    header = int.from_bytes(head, "little") if len(head) == 8 else -1
    if header < 0 or 8 + header > size:
        raise InputError(f"{path}: not a .safetensors file (no valid header)")
    return file_sha256(path, 8 + header)[:12]


def walk_files(folder: Path):
    """Every file under ``folder``, recursively and in sorted order, following links to
    folders as A1111 does (``os.walk(..., followlinks=True)``) but entering each real folder
    once. Nothing when ``folder`` is not a folder."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def find_lora(name: str, dirs: list[Path]) -> Path:
    """The LoRA file a ``<lora:name:...>`` tag names: ``name.safetensors`` (or, when there is
    none, ``name.pt`` / ``name.ckpt``) anywhere under ``dirs``, searched recursively.

    ``name`` is matched against the file name without its extension, exactly (A1111 also
    accepts the alias in the file's ``ss_output_name`` metadata; this does not).

    Raises:
        UsageError: no such file under any of ``dirs`` (one line naming ``name`` and the folders
            searched), or several (naming them: which one is meant is not guessed).
    """
    found = [
        p for d in dirs for p in walk_files(Path(d)) if p.stem == name and p.suffix.lower() in LORA_SUFFIXES
    ]
    safe = [p for p in found if p.suffix.lower() == ".safetensors"]
    found = safe or found
    if len(found) == 1:
        return found[0]
    where = ", ".join(str(d) for d in dirs) or "no folder"
    if not found:
        raise UsageError(f"<lora:{name}>: no {name}.safetensors (nor .pt, .ckpt) under {where} (--lora-dir)")
    raise UsageError(
        f"<lora:{name}>: {len(found)} files named {found[0].name} under {where} "
        f"({', '.join(str(p) for p in found)}); rename or move all but one"
    )


@dataclass(frozen=True)
class LoraInfo:
    """What a LoRA file is, read from its header (or, for ``.pt`` / ``.ckpt``, its tensors).

    Attributes:
        path: the file.
        name: its name in prompts (the file name without extension).
        base: the model it was trained for: ``"sd1"``, ``"sd2"``, ``"sdxl"``, or ``None`` when
            neither the metadata nor the weights' shapes tell.
        kind: the layout of its keys: ``"kohya"`` (``lora_unet_...``, ``lora_te_...``: kohya-ss,
            A1111, ComfyUI) or ``"diffusers"`` (``unet.…``, ``text_encoder.…``).
        hash: A1111's short hash (12 hex digits): :func:`addnet_hash` for ``.safetensors``,
            the sha256 of the whole file for ``.pt`` / ``.ckpt`` (A1111 ``network.py``:
            ``use_addnet_hash=self.is_safetensors``).
    """

    path: Path
    name: str
    base: str | None
    kind: str
    hash: str


def inspect_lora(path) -> LoraInfo:
    """Identify a LoRA file without loading a model: only the safetensors header (metadata,
    key names and shapes, through ``safetensors.safe_open``) is read; a ``.pt`` / ``.ckpt``
    file is read whole with ``torch.load(weights_only=True)`` (no code runs).

    The base model comes from the metadata when it says so (kohya's ``ss_base_model_version``
    ``sdxl_*`` / ``sd_v2*`` / ``sd_v1*``, Stability AI's ``modelspec.architecture``
    ``stable-diffusion-xl-v1-base`` / ``-v2`` / ``-v1``, kohya's ``ss_v2 == "True"``), as A1111
    ``network.py`` ``detect_version`` does; otherwise from the keys (``lora_te1_`` /
    ``lora_te2_`` / ``text_encoder_2.``: SDXL) and shapes (the input width of a cross-attention
    ``to_k`` down projection: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL; else of a text-encoder
    ``q_proj``: 768 or 1024); a kohya file with only ``ss_v2 == "False"`` is SD 1.x. A1111
    takes any file with metadata but no SDXL/SD 2 mark for SD 1.x; here the shapes decide.

    Raises:
        InputError: the file cannot be read; it is a format diffusers cannot apply (named:
            LyCORIS LoHa, LoKr, OFT, (IA)^3, GLoRA, norm, full, and DoRA, whose ``dora_scale``
            diffusers drops); its metadata names another model family (``flux1``, ``sd3``...);
            it is a textual-inversion embedding or a model checkpoint; or it is not a LoRA at
            all. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such LoRA file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        shapes, metadata = _read_header(path)
        short = addnet_hash(path)
    elif suffix in (".pt", ".ckpt", ".pth", ".bin"):
        shapes = {k: tuple(v.shape) for k, v in _torch_load(path).items()}
        metadata = {}
        short = file_sha256(path)[:12]
    else:
        raise InputError(f"{path}: not a LoRA file (.safetensors, .pt or .ckpt)")
    kind = _kind(path, shapes)
    return LoraInfo(path=path, name=path.stem, base=_base(path, shapes, metadata), kind=kind, hash=short)


def _read_header(path: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise InputError(f"{path}: not a readable .safetensors file ({' '.join(str(e).split())[:200]})") from None
    return shapes, metadata


def _torch_load(path: Path) -> dict:
    """A ``.pt`` / ``.ckpt`` LoRA as ``{key: tensor}``, with ``torch.load(weights_only=True)``
    (tensors and plain containers only: a pickle that would run code is refused)."""
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = " ".join(str(e).split())[:200]
        raise InputError(
            f"{path}: cannot be read safely with torch.load(weights_only=True) ({type(e).__name__}: {reason}); "
            "use a .safetensors version of it"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a LoRA (a {type(data).__name__}, not a dictionary of tensors)")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _kind(path: Path, shapes: dict[str, tuple]) -> str:
    keys = list(shapes)
    for fragments, what in _REFUSED:
        hit = next((k for k in keys if any(f in k for f in fragments)), None)
        if hit is not None:
            raise InputError(
                f"{path}: {what} file (key {hit}); diffusers applies only plain LoRA (kohya or diffusers "
                "layout): use a LoRA version of it"
            )
    hit = next((k for k in keys if _FULL_DIFF.search(k)), None)
    if hit is not None:
        raise InputError(
            f"{path}: a LyCORIS full (weight difference) file (key {hit}); diffusers applies only plain LoRA"
        )
    if any(k in ("emb_params", "clip_l", "clip_g") or k.startswith("string_to_param") for k in keys):
        raise InputError(f"{path}: a textual inversion embedding, not a LoRA; put it in the embeddings folder")
    if any(k.startswith(("model.diffusion_model.", "conditioner.", "cond_stage_model.")) for k in keys):
        raise InputError(f"{path}: a model checkpoint, not a LoRA; pass it with --model")
    if not keys or not any(m in k for k in keys for m in _LORA_MARKERS):
        raise InputError(f"{path}: not a LoRA (no lora_down/lora_up or lora_A/lora_B weights)")
    if all(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if all(k.startswith(DIFFUSERS_PREFIXES) for k in keys):
        return "diffusers"
    odd = next(k for k in keys if not k.startswith(KOHYA_PREFIXES + DIFFUSERS_PREFIXES))
    raise InputError(
        f"{path}: not a LoRA for Stable Diffusion 1.x/2.x/XL in a layout diffusers reads (key {odd}; "
        "expected lora_unet_/lora_te_ (kohya) or unet./text_encoder. (diffusers) keys)"
    )


def _base(path: Path, shapes: dict[str, tuple], metadata: dict[str, str]) -> str | None:
    version = str(metadata.get("ss_base_model_version", ""))
    architecture = str(metadata.get("modelspec.architecture", ""))
    for value, known in ((version, ("sd_v1", "sd_v2", "sdxl")), (architecture, _SAI_ARCHITECTURES)):
        if value and not value.startswith(known):
            raise InputError(f"{path}: a LoRA for {value}, not for Stable Diffusion 1.x/2.x/XL")
    if version.startswith("sdxl") or architecture.startswith("stable-diffusion-xl"):
        return "sdxl"
    if version.startswith("sd_v2") or architecture.startswith("stable-diffusion-v2"):
        return "sd2"
    if version.startswith("sd_v1") or architecture.startswith("stable-diffusion-v1"):
        return "sd1"
    if str(metadata.get("ss_v2", "")) == "True":
        return "sd2"
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in shapes):
        return "sdxl"
    for pattern, table in ((_CROSS_ATTN_K, _CONTEXT_BASES), (_TEXT_Q, _TEXT_BASES)):
        for key, shape in shapes.items():
            if len(shape) >= 2 and pattern.search(key):
                if int(shape[1]) in table:
                    return table[int(shape[1])]
                break
    # Older kohya files say only ss_v2 (False: SD 1.x; A1111 takes any metadata for SD 1.x).
    return "sd1" if str(metadata.get("ss_v2", "")) == "False" else None


#: Family or model names (``img2img_cli.modes.FAMILIES`` values, shipped config names of
#: ``models/configs/``, ``tiny``, and the bases themselves) -> the LoRA bases that fit.
#: ``stable-diffusion`` is SD 1.x or 2.x (the pipeline class does not tell them apart: pass
#: :func:`model_base` for the exact one); the SDXL refiner takes no SDXL base LoRA.
FAMILY_BASES: dict[str, frozenset[str]] = {
    "sd1": frozenset({"sd1"}),
    "sd2": frozenset({"sd2"}),
    "sdxl": frozenset({"sdxl"}),
    "sdxl-refiner": frozenset(),
    "stable-diffusion": frozenset({"sd1", "sd2"}),
    "stable-diffusion-xl": frozenset({"sdxl"}),
    "tiny": frozenset({"sd1"}),
    "sd15": frozenset({"sd1"}),
    "sd15-inpaint": frozenset({"sd1"}),
    "sd2-base": frozenset({"sd2"}),
    "sd2-inpaint": frozenset({"sd2"}),
    "sdxl-inpaint": frozenset({"sdxl"}),
    "sd15-pix2pix": frozenset({"sd1"}),
}


def model_base(pipe) -> str:
    """The base of a loaded pipeline, in :attr:`LoraInfo.base`'s words: ``"sdxl"`` (two text
    encoders), ``"sdxl-refiner"`` (only the second), else ``"sd2"`` when the text encoder is
    1024 wide (OpenCLIP ViT-H) and ``"sd1"`` otherwise (768, CLIP ViT-L; the tiny model too)."""
    te, te2 = getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)
    if te2 is not None:
        return "sdxl" if te is not None else "sdxl-refiner"
    return "sd2" if getattr(getattr(te, "config", None), "hidden_size", 0) == 1024 else "sd1"


def check_base(info: LoraInfo, family: str) -> None:
    """Refuse a LoRA made for another base model than the one loaded.

    Args:
        info: from :func:`inspect_lora`; a LoRA whose base is unknown (``None``) passes.
        family: the model's family: a :data:`img2img_cli.modes.FAMILIES` value
            (``stable-diffusion``, ``stable-diffusion-xl``), a shipped config name (``sd15``,
            ``sd2``, ``sdxl``...), ``tiny``, or :func:`model_base`'s answer. A family this
            table does not know is not checked (diffusers reports a misfit when loading).

    Raises:
        ModelError: naming the LoRA, its base and the model's family.
    """
    bases = FAMILY_BASES.get(family)
    if info.base is None or bases is None or info.base in bases:
        return
    label = BASE_LABELS.get(info.base, info.base)
    fits = "/".join(BASE_LABELS[b] for b in sorted(bases)) or "no"
    raise ModelError(
        f"<lora:{info.name}>: {info.path.name} is a {label} ({info.base}) LoRA, but the model is "
        f"{family} ({fits} LoRAs); use a LoRA made for this model"
    )


class LoraSet:
    """The LoRAs applied to one loaded pipeline, switched per job without reloading anything.

    Each file is loaded once, as a peft adapter named ``lora_<hash>`` (its :func:`addnet_hash`,
    so two copies of one file are one adapter), with diffusers' ``pipe.load_lora_weights``;
    :meth:`apply` then activates exactly the requested set with ``pipe.set_adapters``, whose
    per-adapter weight may be a dict per component (diffusers ``loaders/lora_base.py``
    ``LoraBaseMixin.set_adapters``: keys from ``pipe._lora_loadable_modules``, ``unet``,
    ``text_encoder``, ``text_encoder_2``; a missing key means 1.0; a key for a component the
    adapter lacks only logs a warning, so only the adapter's own components are passed).
    The peft scale of each layer becomes ``weight * alpha / rank``.

    Switching sets costs a few milliseconds on the tiny model: it only changes which adapters
    each LoRA layer adds and their scales.
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self._infos: dict[tuple, LoraInfo] = {}  # (file, size, mtime) -> info
        self._components: dict[str, frozenset[str]] = {}  # adapter -> components it has weights for
        self._active: tuple[tuple[str, float, float], ...] = ()
        self._active_infos: tuple[tuple[LoraInfo, float, float], ...] = ()
        self._enabled = True
        self._fused: tuple[tuple[str, float, float], ...] | None = None
        self._fused_infos: tuple[tuple[LoraInfo, float, float], ...] = ()

    @property
    def active(self) -> tuple[tuple[LoraInfo, float, float], ...]:
        """The applied set: ``(info, text_encoder_weight, unet_weight)`` per LoRA (for the
        infotext ``Lora hashes`` field: ``name: info.hash``)."""
        return self._active_infos

    def apply(self, loras: tuple[tuple[Path, float, float], ...]) -> None:
        """Make ``loras`` the pipeline's LoRAs, exactly: those not listed are switched off.

        Args:
            loras: ``(file, text_encoder_weight, unet_weight)`` per LoRA, as A1111's
                ``<lora:name:te:unet>`` (weights are multipliers, usually in ``[0, 1]``; any
                finite value is allowed, negative ones included). The text-encoder weight
                applies to both SDXL text encoders. A file listed twice counts once with the
                sums of its weights (a LoRA's effect is linear in its weight). An empty tuple
                switches LoRAs off: the pipeline computes exactly what it did without them.

        Files not loaded yet are inspected (:func:`inspect_lora`) and loaded; files already
        loaded are not read again (unless changed on disk), nor is the model.

        Raises:
            UsageError: a weight is not a finite number, or :meth:`fuse` was called and
                ``loras`` is not the fused set.
            InputError: a file is not a LoRA diffusers can apply (see :func:`inspect_lora`),
                or diffusers cannot load it into this model (naming the file).
        """
        wanted = self._normalise(loras)
        key = tuple((self._adapter(info), te, unet) for info, te, unet in wanted)
        if self._fused is not None:
            if key != self._fused:
                raise UsageError(
                    f"--compile: the LoRAs {_describe(self._fused_infos)} are fused into the model's "
                    f"weights, so a job with {_describe(wanted)} cannot run in the same process; run it "
                    "separately or without --compile"
                )
            return
        if key == self._active:
            return
        for info, _, _ in wanted:
            if self._adapter(info) not in self._components:
                self._load(info)
        if not key:
            if self._components:
                self.pipe.disable_lora()
            self._enabled = False
        else:
            if not self._enabled:
                self.pipe.enable_lora()
                self._enabled = True
            self.pipe.set_adapters([name for name, _, _ in key], adapter_weights=self._weights(key))
        self._active, self._active_infos = key, wanted

    def fuse(self) -> None:
        """Fuse the applied set into the model's weights (``pipe.fuse_lora`` with the active
        adapters, then ``pipe.unload_lora_weights``, which keeps the fused weights): the
        pipeline is again plain diffusers modules, as ``torch.compile`` wants, and runs as
        fast as without LoRA. Call it before compiling (diffusers' ``fuse_lora`` skips a module
        already wrapped by ``torch.compile``). Fused weights differ from the unfused
        computation by float rounding only (about 1e-6 in fp32).

        After this, :meth:`apply` accepts only the same set again (a no-op) and raises
        :class:`UsageError` for any other: the adapters are gone from the model.
        """
        if self._fused is not None:
            return
        names = [name for name, _, _ in self._active] if self._enabled else []
        if names:
            components = sorted({c for name in names for c in self._components[name]})
            self.pipe.fuse_lora(components=components, adapter_names=names)
        if self._components:
            self.pipe.unload_lora_weights()
        self._fused = self._active if self._enabled else ()
        self._fused_infos = self._active_infos if self._enabled else ()

    def _normalise(self, loras) -> tuple[tuple[LoraInfo, float, float], ...]:
        merged: dict[str, list] = {}
        for path, te, unet in loras:
            info = self._info(Path(path))
            weights = []
            for w in (te, unet):
                try:
                    weights.append(float(w))
                except (TypeError, ValueError):
                    weights.append(math.nan)
                if not math.isfinite(weights[-1]):
                    raise UsageError(f"<lora:{info.name}>: weight {w!r} is not a finite number")
            entry = merged.setdefault(self._adapter(info), [info, 0.0, 0.0])
            entry[1] += weights[0]
            entry[2] += weights[1]
        return tuple((info, te, unet) for info, te, unet in merged.values())

    def _info(self, path: Path) -> LoraInfo:
        try:
            st = path.stat()
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        info = self._infos.get(key)
        if info is None:
            info = self._infos[key] = inspect_lora(path)
        return info

    @staticmethod
    def _adapter(info: LoraInfo) -> str:
        return f"lora_{info.hash}"

    def _load(self, info: LoraInfo) -> None:
        name = self._adapter(info)
        source = str(info.path) if info.path.suffix.lower() == ".safetensors" else _torch_load(info.path)
        try:
            with library_messages(info.path):
                self.pipe.load_lora_weights(source, adapter_name=name)
        except Exception as e:
            self._forget(name)
            reason = " ".join(str(e).split())[:300]
            raise InputError(f"{info.path}: cannot apply this LoRA to the model ({type(e).__name__}: {reason})") from e
        components = frozenset(c for c, names in self.pipe.get_list_adapters().items() if name in names)
        if not components:
            self._forget(name)
            raise InputError(f"{info.path}: none of this LoRA's weights fits a layer of the model")
        self._components[name] = components

    def _forget(self, name: str) -> None:
        """Remove what a failed load left of adapter ``name`` and restore the active set
        (loading an adapter makes it the active one)."""
        with contextlib.suppress(Exception):
            if any(name in names for names in self.pipe.get_list_adapters().values()):
                self.pipe.delete_adapters(name)
        with contextlib.suppress(Exception):
            if self._active and self._enabled:
                self.pipe.set_adapters([n for n, _, _ in self._active], adapter_weights=self._weights(self._active))
            elif self._components:
                self.pipe.disable_lora()

    def _weights(self, key) -> list[dict[str, float]]:
        """``set_adapters``' per-adapter weights: the text-encoder weight for ``text_encoder``
        and ``text_encoder_2``, the UNet weight for ``unet``, for the adapter's components only."""
        return [
            {c: (te if c.startswith("text_encoder") else unet) for c in sorted(self._components[name])}
            for name, te, unet in key
        ]


def _describe(loras) -> str:
    return " ".join(f"<lora:{info.name}:{te:g}:{unet:g}>" for info, te, unet in loras) or "no LoRA"


#: Library messages while loading a LoRA that say some of its weights were not used.
_UNUSED = re.compile(r"unexpected keys", re.IGNORECASE)


@contextlib.contextmanager
def library_messages(path: Path):
    """While diffusers loads a LoRA: its, transformers' and peft's log records and Python
    warnings go to this module's logger at DEBUG (transformers 5 prints a "LOAD REPORT" that
    lists every weight of the text encoder as MISSING, since an adapter state dict holds only
    LoRA weights; peft warns "Already found a peft_config" for each adapter after the first;
    peft/diffusers list the *other* adapters' weights as "missing keys"), except a message
    about unexpected keys, weights of the file that fit no layer, which is logged as a warning
    naming the file."""
    records: list[str] = []

    class Collector(logging.Handler):
        def emit(self, record):
            with contextlib.suppress(Exception):
                records.append(record.getMessage())

    collector = Collector(logging.WARNING)
    saved = []
    for name in ("diffusers", "transformers", "peft"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, list(logger.handlers), logger.propagate))
        logger.handlers, logger.propagate = [collector], False
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for logger, level, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        records += [str(w.message) for w in caught]
        for text in records:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
            rows = ([c.strip() for c in line.split("|")] for line in plain.splitlines())
            unused = [cells[0] for cells in rows if len(cells) >= 2 and cells[1] == "UNEXPECTED"]
            plain = " ".join(plain.split())
            if unused:  # transformers' LOAD REPORT table
                more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
                log.warning(
                    "%s: %d weights of this LoRA fit no layer of the model and are ignored (%s%s)",
                    path, len(unused), ", ".join(unused[:3]), more,
                )
            elif _UNUSED.search(plain):
                log.warning(
                    "%s: some weights of this LoRA fit no layer of the model and are ignored (%s)", path, plain[:300]
                )
            else:
                log.debug("%s: %s", path, plain[:500])

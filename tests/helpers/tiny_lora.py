"""Make tiny LoRA and textual-inversion files for the tiny models, as the tools people use write them.

LoRA weights are made as diffusers' own LoRA tests make them (``tests/lora/utils.py``): peft
``LoraConfig(r=4, lora_alpha=4, init_lora_weights=False)`` (random, non-zero ``lora_B``, so the
LoRA changes the outputs) added to *fresh* copies of the tiny model's UNet
(``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and text encoder(s) (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``), read back with ``peft.utils.get_peft_model_state_dict``. The copies are built here,
so no pipeline a test uses is touched. Then saved as:

* kohya-ss layout (:func:`save_kohya_lora`): diffusers' ``convert_state_dict_to_kohya`` (from the
  peft layout; it does not take diffusers' older ``lora.down`` layout), with what real kohya
  files have and that converter does not write: the text encoder under ``text_model.`` (kohya names
  modules from ``CLIPTextModel``, which transformers 5.22 no longer nests, while it still nests
  ``CLIPTextModelWithProjection``, SDXL's second encoder), ``lora_te_`` for a
  one-encoder model (``lora_te1_`` / ``lora_te2_`` only for SDXL), float ``alpha`` values, and
  kohya metadata (``ss_base_model_version``);
* diffusers layout (:func:`save_diffusers_lora`): ``save_lora_weights`` of the pipeline class,
  as diffusers' training scripts write it (peft keys under ``unet.`` / ``text_encoder.``).

Embeddings (:func:`save_a1111_embedding`, :func:`save_safetensors_embedding`,
:func:`save_sdxl_embedding`, :func:`save_diffusers_embedding`) follow A1111's
``textual_inversion.py`` (``Embedding.save``) and the formats it reads.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "img2img_cli" / "models" / "tiny"
RANK = 4
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _lora_weights(models: dict, seed: int) -> dict[str, dict]:
    """Add a random rank-4 LoRA to each model (``{"unet": ..., "text_encoder": ...}``) and return
    its weights per component, in peft's layout (``...to_q.lora_A.weight``, no component prefix)."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    out = {}
    for component, model in models.items():
        targets = UNET_TARGETS if component == "unet" else TEXT_TARGETS
        model.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False))
        out[component] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    return out


def tiny_sd_lora_weights(seed: int = 0, components=("unet", "text_encoder")) -> dict[str, dict]:
    """A random LoRA for the built-in tiny SD 1.x-style model (text encoder 32 wide, UNet
    cross-attention 32 wide), made on fresh copies of its UNet and text encoder."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    models = {}
    if "unet" in components:
        models["unet"] = UNet2DConditionModel.from_pretrained(str(TINY / "unet"), local_files_only=True)
    if "text_encoder" in components:
        models["text_encoder"] = CLIPTextModel.from_pretrained(str(TINY / "text_encoder"), local_files_only=True)
    return _lora_weights(models, seed)


def tiny_sdxl_lora_weights(seed: int = 0) -> dict[str, dict]:
    """A random LoRA for the tiny SDXL of :mod:`tests.helpers.tiny_sdxl` (UNet and both text
    encoders), made on a fresh build of its components."""
    from .tiny_sdxl import build_tiny_sdxl_components

    c = build_tiny_sdxl_components()
    return _lora_weights({k: c[k] for k in ("unet", "text_encoder", "text_encoder_2")}, seed)


def save_kohya_lora(path: Path, weights: dict[str, dict], metadata: dict[str, str] | None = None) -> Path:
    """Write ``weights`` (from :func:`tiny_sd_lora_weights` / :func:`tiny_sdxl_lora_weights`) as a
    kohya-ss LoRA ``.safetensors`` (``lora_unet_down_blocks_1_attentions_0_..._to_q.lora_down.weight``,
    ``.lora_up.weight``, ``.alpha``) with ``metadata`` (default ``ss_base_model_version=sd_v1``)."""
    import torch
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    prefixed = {}
    for component, state in weights.items():
        for key, value in state.items():
            if component != "unet" and not key.startswith("text_model."):
                key = "text_model." + key  # CLIPTextModel is flat in transformers 5; ...WithProjection is not
            prefixed[f"{component}.{key}"] = value
    kohya = convert_state_dict_to_kohya(prefixed)
    sdxl = "text_encoder_2" in weights
    out = {}
    for key, value in kohya.items():
        if not sdxl and key.startswith("lora_te1_"):
            key = "lora_te_" + key[len("lora_te1_"):]
        if key.endswith(".alpha"):
            value = torch.tensor(float(value))
        out[key] = value.contiguous()
    if metadata is None:
        metadata = {"ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1", "ss_network_dim": str(RANK)}
    save_file(out, str(path), metadata=metadata)
    return Path(path)


def save_diffusers_lora(path: Path, weights: dict[str, dict]) -> Path:
    """Write ``weights`` as diffusers' ``save_lora_weights`` does (``unet.…lora_A.weight``,
    ``text_encoder.…``), under the file name ``path`` (diffusers always names it
    ``pytorch_lora_weights.safetensors``)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    layers = {f"{component}_lora_layers": state for component, state in weights.items()}
    cls = StableDiffusionXLPipeline if "text_encoder_2" in weights else StableDiffusionPipeline
    with tempfile.TemporaryDirectory() as tmp:
        cls.save_lora_weights(tmp, safe_serialization=True, **layers)
        shutil.move(str(Path(tmp) / "pytorch_lora_weights.safetensors"), str(path))
    return Path(path)


def save_fake_lycoris(path: Path, kind: str = "loha") -> Path:
    """A file with LyCORIS LoHa (``hada_w1_a``...) or LoKr (``lokr_w1``...) keys in kohya naming
    (the weights are zeros: only the names matter)."""
    import torch
    from safetensors.torch import save_file

    module = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    if kind == "loha":
        names = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]
    else:
        names = ["lokr_w1", "lokr_w2"]
    tensors = {f"{module}.{n}": torch.zeros(4, 4) for n in names} | {f"{module}.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    return Path(path)


def save_a1111_embedding(path: Path, vectors) -> Path:
    """A1111's ``.pt`` embedding (``Embedding.save``): ``string_to_param {"*": (n, D)}`` and its
    bookkeeping fields."""
    import torch

    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": Path(path).stem,
            "step": 0,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
        },
        str(path),
    )
    return Path(path)


def save_safetensors_embedding(path: Path, vectors) -> Path:
    """A ``.safetensors`` embedding ``{"emb_params": (n, D)}`` (kohya-ss and most of civitai)."""
    from safetensors.torch import save_file

    save_file({"emb_params": vectors.contiguous()}, str(path))
    return Path(path)


def save_sdxl_embedding(path: Path, clip_l, clip_g) -> Path:
    """An SDXL ``.safetensors`` embedding ``{"clip_l": (n, D1), "clip_g": (n, D2)}``."""
    from safetensors.torch import save_file

    save_file({"clip_l": clip_l.contiguous(), "clip_g": clip_g.contiguous()}, str(path))
    return Path(path)


def save_diffusers_embedding(path: Path, token: str, vector) -> Path:
    """diffusers' ``learned_embeds.bin``: ``{token: (D,)}``."""
    import torch

    torch.save({token: vector}, str(path))
    return Path(path)

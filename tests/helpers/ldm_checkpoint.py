"""Write a diffusers Stable Diffusion pipeline as an original-layout single-file checkpoint.

The result is the kind of ``.safetensors`` file A1111 / ComfyUI users keep: one flat state dict with
the UNet under ``model.diffusion_model.``, the VAE under ``first_stage_model.`` and the CLIP text
encoder under ``cond_stage_model.transformer.`` (SD 1.x layout).

The key mapping tables are copied from huggingface/diffusers
``scripts/convert_diffusers_to_original_stable_diffusion.py`` (the diffusers -> original converter,
the inverse of what ``from_single_file`` does). That script hard-codes the SD 1.x geometry
(4 blocks, ``layers_per_block=2``, attention in down blocks 0-2 and up blocks 1-3). Its loops are
reproduced below with those constants read from the UNet / VAE config instead, so that the small
test-sized models of diffusers' own test suite (2 blocks, attention elsewhere) convert too; for the
SD 1.x geometry the generated tables are exactly the script's.

Two adaptations to current library versions:

* diffusers renamed the VAE mid-block attention to ``to_q/to_k/to_v/to_out.0``; upstream added
  ``vae_extra_conversion_map`` to the same script for that, copied here as well. Original
  checkpoints store those four weights as 1x1 convolutions, so 2-D weights are reshaped to 4-D.
* transformers >= 5 saves ``CLIPTextModel`` without the ``text_model.`` prefix, which original
  checkpoints carry (``cond_stage_model.transformer.text_model....``); it is added back.

SDXL base pipelines (two text encoders) are written in the layout of Stability AI's original SDXL
checkpoints (``sd_xl_base_1.0.safetensors``, generative-models / SGM): UNet under
``model.diffusion_model.`` (its ``add_embedding`` as ``label_emb.0.0`` / ``label_emb.0.2``, as in
diffusers ``scripts/convert_diffusers_to_original_sdxl.py``), VAE under ``first_stage_model.``, the
CLIP ViT-L encoder under ``conditioner.embedders.0.transformer.text_model.`` and the second
encoder in OpenCLIP layout under ``conditioner.embedders.1.model.`` (``transformer.resblocks.N``
with fused ``attn.in_proj_weight``, ``ln_1``/``ln_2``, ``mlp.c_fc``/``mlp.c_proj``, ``ln_final``,
``token_embedding``, ``positional_embedding`` and ``text_projection`` stored transposed): the
inverse of diffusers ``single_file_utils.convert_open_clip_checkpoint`` and of the
``DIFFUSERS_TO_LDM_MAPPING["openclip"]`` table it uses.

SD 2.x's OpenCLIP layout (``cond_stage_model.model.``) and SDXL refiner checkpoints (one OpenCLIP
encoder under ``conditioner.embedders.0.model.``) are not written as whole models.

Inpainting pipelines (``StableDiffusionInpaintPipeline``, UNet ``in_channels=9``) need nothing
special: ``conv_in`` becomes ``model.diffusion_model.input_blocks.0.0.weight`` of shape
``(C, 9, 3, 3)``, which is what diffusers' ``infer_diffusers_model_type`` reads to call a
checkpoint ``inpainting``. For detection-only tests, :func:`save_detection_checkpoint` writes just
the few keys that function reads, with the real models' shapes, for any of SD 1.x / SD 2.x / SDXL
base, 4- or 9-channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

__all__ = [
    "DETECTION_KEYS",
    "convert_open_clip_text_enc_state_dict",
    "convert_text_enc_state_dict",
    "convert_unet_state_dict",
    "convert_vae_state_dict",
    "save_detection_checkpoint",
    "save_original_checkpoint",
]

# =================#
# UNet Conversion #
# =================#
# From diffusers scripts/convert_diffusers_to_original_stable_diffusion.py (verbatim).

unet_conversion_map = [
    # (stable-diffusion, HF Diffusers)
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
]

# SDXL's micro-conditioning embedding (diffusers scripts/convert_diffusers_to_original_sdxl.py);
# only mapped when the UNet has it (``addition_embed_type="text_time"``).
unet_conversion_map_add_embedding = [
    # (stable-diffusion, HF Diffusers)
    ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
    ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "add_embedding.linear_2.weight"),
    ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
]

unet_conversion_map_resnet = [
    # (stable-diffusion, HF Diffusers)
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def unet_conversion_map_layer(config: Any) -> list[tuple[str, str]]:
    """(stable-diffusion prefix, HF Diffusers prefix) pairs for the UNet blocks.

    The script's loop, verbatim except for its constants: ``range(4)`` -> number of blocks,
    ``range(2)`` / ``range(3)`` -> ``layers_per_block`` / ``layers_per_block + 1``, ``3 * i`` ->
    ``(layers_per_block + 1) * i``, ``i < 3`` (has attention / has downsampler) and ``i > 0``
    (up block has attention) -> read from the block types.
    """
    down_types = list(_cfg(config, "down_block_types"))
    up_types = list(_cfg(config, "up_block_types"))
    layers = int(_cfg(config, "layers_per_block"))
    n = len(down_types)
    stride = layers + 1

    table: list[tuple[str, str]] = []
    for i in range(n):
        # loop over downblocks/upblocks

        for j in range(layers):
            # loop over resnets/attentions for downblocks
            hf_down_res_prefix = f"down_blocks.{i}.resnets.{j}."
            sd_down_res_prefix = f"input_blocks.{stride * i + j + 1}.0."
            table.append((sd_down_res_prefix, hf_down_res_prefix))

            if "CrossAttn" in down_types[i]:
                hf_down_atn_prefix = f"down_blocks.{i}.attentions.{j}."
                sd_down_atn_prefix = f"input_blocks.{stride * i + j + 1}.1."
                table.append((sd_down_atn_prefix, hf_down_atn_prefix))

        for j in range(stride):
            # loop over resnets/attentions for upblocks
            hf_up_res_prefix = f"up_blocks.{i}.resnets.{j}."
            sd_up_res_prefix = f"output_blocks.{stride * i + j}.0."
            table.append((sd_up_res_prefix, hf_up_res_prefix))

            if "CrossAttn" in up_types[i]:
                hf_up_atn_prefix = f"up_blocks.{i}.attentions.{j}."
                sd_up_atn_prefix = f"output_blocks.{stride * i + j}.1."
                table.append((sd_up_atn_prefix, hf_up_atn_prefix))

        if i < n - 1:
            # no downsample in the last down block
            hf_downsample_prefix = f"down_blocks.{i}.downsamplers.0.conv."
            sd_downsample_prefix = f"input_blocks.{stride * (i + 1)}.0.op."
            table.append((sd_downsample_prefix, hf_downsample_prefix))

            # no upsample in the last up block
            hf_upsample_prefix = f"up_blocks.{i}.upsamplers.0."
            sd_upsample_prefix = f"output_blocks.{stride * i + layers}.{2 if 'CrossAttn' in up_types[i] else 1}."
            table.append((sd_upsample_prefix, hf_upsample_prefix))

    hf_mid_atn_prefix = "mid_block.attentions.0."
    sd_mid_atn_prefix = "middle_block.1."
    table.append((sd_mid_atn_prefix, hf_mid_atn_prefix))

    for j in range(2):
        hf_mid_res_prefix = f"mid_block.resnets.{j}."
        sd_mid_res_prefix = f"middle_block.{2 * j}."
        table.append((sd_mid_res_prefix, hf_mid_res_prefix))

    return table


def convert_unet_state_dict(unet_state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    # buyer beware: this is a *brittle* function,
    # and correct output requires that all of these pieces interact in
    # the exact order in which I have arranged them.
    layer_map = unet_conversion_map_layer(config)
    mapping = {k: k for k in unet_state_dict.keys()}
    for sd_name, hf_name in unet_conversion_map:
        mapping[hf_name] = sd_name
    for sd_name, hf_name in unet_conversion_map_add_embedding:
        if hf_name in unet_state_dict:
            mapping[hf_name] = sd_name
    for k, v in mapping.items():
        if "resnets" in k:
            for sd_part, hf_part in unet_conversion_map_resnet:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    for k, v in mapping.items():
        for sd_part, hf_part in layer_map:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    new_state_dict = {v: unet_state_dict[k] for k, v in mapping.items()}
    _check_converted(
        "UNet",
        new_state_dict,
        allowed_prefixes=("time_embed.", "label_emb.", "input_blocks.", "middle_block.", "output_blocks.", "out."),
        forbidden=_DIFFUSERS_BLOCK_NAMES + ("time_embedding.", "conv_norm_out.", "add_embedding."),
    )
    return new_state_dict


# ================#
# VAE Conversion #
# ================#
# From diffusers scripts/convert_diffusers_to_original_stable_diffusion.py; the loop constants
# (4 blocks, 2 / 3 resnets, ``3 - i``, ``i < 3``) are read from the VAE config.

vae_conversion_map_static = [
    # (stable-diffusion, HF Diffusers)
    ("nin_shortcut", "conv_shortcut"),
    ("norm_out", "conv_norm_out"),
    ("mid.attn_1.", "mid_block.attentions.0."),
]


def vae_conversion_map(config: Any) -> list[tuple[str, str]]:
    n = len(_cfg(config, "down_block_types"))
    layers = int(_cfg(config, "layers_per_block"))
    table = list(vae_conversion_map_static)

    for i in range(n):
        # down_blocks have `layers_per_block` resnets
        for j in range(layers):
            hf_down_prefix = f"encoder.down_blocks.{i}.resnets.{j}."
            sd_down_prefix = f"encoder.down.{i}.block.{j}."
            table.append((sd_down_prefix, hf_down_prefix))

        if i < n - 1:
            hf_downsample_prefix = f"down_blocks.{i}.downsamplers.0."
            sd_downsample_prefix = f"down.{i}.downsample."
            table.append((sd_downsample_prefix, hf_downsample_prefix))

            hf_upsample_prefix = f"up_blocks.{i}.upsamplers.0."
            sd_upsample_prefix = f"up.{n - 1 - i}.upsample."
            table.append((sd_upsample_prefix, hf_upsample_prefix))

        # up_blocks have `layers_per_block + 1` resnets
        # also, up blocks in hf are numbered in reverse from sd
        for j in range(layers + 1):
            hf_up_prefix = f"decoder.up_blocks.{i}.resnets.{j}."
            sd_up_prefix = f"decoder.up.{n - 1 - i}.block.{j}."
            table.append((sd_up_prefix, hf_up_prefix))

    # this part accounts for mid blocks in both the encoder and the decoder
    for i in range(2):
        hf_mid_res_prefix = f"mid_block.resnets.{i}."
        sd_mid_res_prefix = f"mid.block_{i + 1}."
        table.append((sd_mid_res_prefix, hf_mid_res_prefix))

    return table


vae_conversion_map_attn = [
    # (stable-diffusion, HF Diffusers)
    ("norm.", "group_norm."),
    ("q.", "query."),
    ("k.", "key."),
    ("v.", "value."),
    ("proj_out.", "proj_attn."),
]

# This is probably not the most ideal solution, but it does work.
vae_extra_conversion_map = [
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]


def reshape_weight_for_sd(w: torch.Tensor) -> torch.Tensor:
    # convert HF linear weights to SD conv2d weights
    if not w.ndim == 1:
        return w.reshape(*w.shape, 1, 1)
    else:
        return w


def convert_vae_state_dict(vae_state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    table = vae_conversion_map(config)
    mapping = {k: k for k in vae_state_dict.keys()}
    for k, v in mapping.items():
        for sd_part, hf_part in table:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    for k, v in mapping.items():
        if "attentions" in k:
            for sd_part, hf_part in vae_conversion_map_attn:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    new_state_dict = {v: vae_state_dict[k] for k, v in mapping.items()}
    weights_to_convert = ["q", "k", "v", "proj_out"]
    keys_to_rename = {}
    for k, v in new_state_dict.items():
        for weight_name in weights_to_convert:
            if f"mid.attn_1.{weight_name}.weight" in k:
                new_state_dict[k] = reshape_weight_for_sd(v)
        for weight_name, real_weight_name in vae_extra_conversion_map:
            if f"mid.attn_1.{weight_name}.weight" in k or f"mid.attn_1.{weight_name}.bias" in k:
                keys_to_rename[k] = k.replace(weight_name, real_weight_name)
    for k, v in keys_to_rename.items():
        if k in new_state_dict:
            new_state_dict[v] = reshape_weight_for_sd(new_state_dict[k])
            del new_state_dict[k]
    _check_converted(
        "VAE",
        new_state_dict,
        allowed_prefixes=("encoder.", "decoder.", "quant_conv.", "post_quant_conv."),
        forbidden=_DIFFUSERS_BLOCK_NAMES
        + ("conv_norm_out.", "conv_shortcut.", "group_norm.", "to_q.", "to_k.", "to_v.", "to_out."),
    )
    return new_state_dict


# =========================#
# Text Encoder Conversion #
# =========================#
# pretty much a no-op (SD 1.x keeps the transformers CLIPTextModel names), except for the
# `text_model.` level that transformers >= 5 no longer has in CLIPTextModel.state_dict().


def convert_text_enc_state_dict(text_enc_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Easiest way to identify v2.0 model seems to be that the text encoder (OpenCLIP) is deeper
    if any(k.endswith("encoder.layers.22.layer_norm2.bias") for k in text_enc_dict):
        raise NotImplementedError("SD 2.x (OpenCLIP) text encoder layout is not supported by this helper")
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in text_enc_dict.items()}


def convert_open_clip_text_enc_state_dict(text_enc_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPTextModelWithProjection`` state dict in OpenCLIP's layout (the keys
    after ``conditioner.embedders.1.model.`` in an SDXL checkpoint).

    The inverse of diffusers ``convert_open_clip_checkpoint``: the per-layer ``q/k/v_proj`` are
    concatenated (in that order) into ``attn.in_proj_weight`` / ``attn.in_proj_bias``, and the
    projection is stored as ``text_projection`` of shape ``(width, projection_dim)``
    (``nn.Linear`` weight transposed; diffusers reads the width back from its first dimension).
    """
    sd = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v for k, v in text_enc_dict.items()}
    sd.pop("text_model.embeddings.position_ids", None)
    out: dict[str, torch.Tensor] = {}
    for diffusers_key, ldm_key in _OPEN_CLIP_STATIC.items():
        value = sd.pop(diffusers_key)
        out[ldm_key] = value.T.contiguous() if ldm_key == "text_projection" else value
    layer_prefix = "text_model.encoder.layers."
    n_layers = len({k[len(layer_prefix) :].split(".")[0] for k in sd if k.startswith(layer_prefix)})
    for i in range(n_layers):
        src, dst = f"{layer_prefix}{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0
            )
            for hf_part, sd_part in _OPEN_CLIP_LAYER_PARTS:
                out[f"{dst}{sd_part}.{kind}"] = sd.pop(f"{src}{hf_part}.{kind}")
    if sd:
        raise ValueError(f"OpenCLIP text encoder: {len(sd)} key(s) not converted, e.g. {sorted(sd)[:5]}")
    return out


# diffusers DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"] (diffusers name -> OpenCLIP name).
_OPEN_CLIP_STATIC = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",
}
# diffusers DIFFUSERS_TO_LDM_MAPPING["openclip"]["transformer"], per layer (q/k/v handled apart).
_OPEN_CLIP_LAYER_PARTS = (
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


# ===========#
# Whole file #
# ===========#


def save_original_checkpoint(pipe: Any, path: Path, *, half: bool = False) -> None:
    """Write ``pipe.unet``, ``pipe.vae`` and the text encoder(s) as one original-layout ``.safetensors``.

    ``pipe`` is a diffusers StableDiffusion(Img2Img)Pipeline with an SD 1.x style CLIP text encoder
    (written under ``cond_stage_model.transformer.``), or a StableDiffusionXL(Img2Img)Pipeline with
    both encoders (SDXL base layout: ``conditioner.embedders.0.transformer.`` and, in OpenCLIP
    layout, ``conditioner.embedders.1.model.``).
    Scheduler, tokenizer and safety checker are not part of an original checkpoint and are ignored.
    With ``half=True`` floating-point tensors are stored as float16 (like ``--half`` in the script).
    """
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if sdxl and getattr(pipe, "text_encoder", None) is None:
        raise NotImplementedError("SDXL refiner pipelines (one OpenCLIP encoder) are not supported by this helper")

    unet_state_dict = convert_unet_state_dict(pipe.unet.state_dict(), pipe.unet.config)
    unet_state_dict = {"model.diffusion_model." + k: v for k, v in unet_state_dict.items()}

    vae_state_dict = convert_vae_state_dict(pipe.vae.state_dict(), pipe.vae.config)
    vae_state_dict = {"first_stage_model." + k: v for k, v in vae_state_dict.items()}

    text_enc_dict = convert_text_enc_state_dict(pipe.text_encoder.state_dict())
    text_prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    text_enc_dict = {text_prefix + k: v for k, v in text_enc_dict.items()}

    text_enc_2_dict: dict[str, torch.Tensor] = {}
    if sdxl:
        text_enc_2_dict = convert_open_clip_text_enc_state_dict(pipe.text_encoder_2.state_dict())
        text_enc_2_dict = {"conditioner.embedders.1.model." + k: v for k, v in text_enc_2_dict.items()}

    # Put together new checkpoint
    state_dict = {**unet_state_dict, **vae_state_dict, **text_enc_dict, **text_enc_2_dict}
    expected = len(unet_state_dict) + len(vae_state_dict) + len(text_enc_dict) + len(text_enc_2_dict)
    if len(state_dict) != expected:
        raise ValueError("key collision while assembling the checkpoint")

    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous().clone()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"format": "pt"})


# ======================#
# Detection-only files  #
# ======================#

#: The keys diffusers' ``infer_diffusers_model_type`` reads (``CHECKPOINT_KEY_NAMES``) for SD 1.x /
#: 2.x / SDXL base, plus the SD 2.x norm bias the project reads to tell 768-v from 512-base.
DETECTION_KEYS = {
    "conv_in": "model.diffusion_model.input_blocks.0.0.weight",  # "inpainting": shape[1] == 9
    "v1": "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "v2": "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",  # shape[-1] 1024
    "sd2_norm": "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias",
    "xl_base": "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
}


def save_detection_checkpoint(path: Path, arch: str, *, in_channels: int = 4, v_prediction: bool = False) -> Path:
    """Write a small ``.safetensors`` with only the keys single-file type detection reads.

    ``arch`` is ``"sd15"`` (SD 1.x), ``"sd2"`` (SD 2.x; ``v_prediction`` picks the 768-v or the
    512-base statistics of ``norm1.bias``) or ``"sdxl"`` (SDXL base, original SGM layout). The
    UNet's first convolution has ``in_channels`` inputs (9 for an inpainting model) and the real
    models' output width (320). Tensors are zeros except that norm bias; no model can load it.
    """
    keys = DETECTION_KEYS
    tensors: dict[str, torch.Tensor] = {keys["conv_in"]: torch.zeros(320, in_channels, 3, 3)}
    if arch in ("sd15", "sd2"):
        tensors[keys["v1"]] = torch.zeros(320, 640, 1, 1)
    if arch == "sd15":
        tensors[keys["v2"]] = torch.zeros(320, 768)  # SD 1.x cross-attention: CLIP ViT-L, 768 wide
    elif arch == "sd2":
        tensors[keys["v2"]] = torch.zeros(320, 1024)
        # ComfyUI's rule (see img2img_cli.models.resolve): std > 0.09 means v-prediction.
        tensors[keys["sd2_norm"]] = torch.linspace(-1, 1, 320) if v_prediction else torch.full((320,), 0.01)
    elif arch == "sdxl":
        tensors[keys["xl_base"]] = torch.zeros(1280)
    else:
        raise ValueError(f"arch must be sd15, sd2 or sdxl, not {arch!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


# ========#
# Helpers #
# ========#


def _cfg(config: Any, name: str) -> Any:
    return config[name] if isinstance(config, dict) else getattr(config, name)


# diffusers-only names; none of them occurs in an original-layout key.
_DIFFUSERS_BLOCK_NAMES = (
    "down_blocks.",
    "up_blocks.",
    "mid_block.",
    "resnets.",
    "attentions.",
    "downsamplers.",
    "upsamplers.",
)


def _check_converted(
    what: str,
    state_dict: dict[str, torch.Tensor],
    *,
    allowed_prefixes: tuple[str, ...],
    forbidden: tuple[str, ...],
) -> None:
    """Fail loudly on a key the tables did not map (the script would silently keep it)."""
    bad = [k for k in state_dict if not k.startswith(allowed_prefixes) or any(part in k for part in forbidden)]
    if bad:
        raise ValueError(f"{what}: {len(bad)} key(s) left in diffusers naming, e.g. {bad[:5]}")

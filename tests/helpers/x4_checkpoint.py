"""Write a diffusers ``StableDiffusionUpscalePipeline`` as a single file in the layout of stabilityai's
``x4-upscaler-ema.safetensors`` (Stability-AI/stablediffusion, ``LatentUpscaleDiffusion``).

That file is one flat state dict: the UNet under ``model.diffusion_model.`` (its noise-level class
embedding, diffusers ``class_embedding.weight``, as ``label_emb.weight``: an ``nn.Embedding``
for ``num_classes: 1000``), the VAE under ``first_stage_model.`` and the OpenCLIP text encoder
under ``cond_stage_model.model.`` (``FrozenOpenCLIPEmbedder``: ``transformer.resblocks.N``,
``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``). The UNet and VAE
keys are those of SD models (:mod:`tests.helpers.ldm_checkpoint`, diffusers'
``convert_diffusers_to_original_stable_diffusion.py`` tables read from the config); the text
encoder is written with that module's OpenCLIP writer (the inverse of diffusers
``convert_open_clip_checkpoint``). A ``CLIPTextModel`` has no projection: ``text_projection`` is
written as the identity of its width, as SD 2.x files carry one (diffusers reads the width from it
and otherwise ignores it, ``SD_2_TEXT_ENCODER_KEYS_TO_IGNORE``).

:func:`save_x4_detection_checkpoint` writes just the keys single-file detection reads, with the
real model's shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .ldm_checkpoint import convert_open_clip_text_enc_state_dict, convert_unet_state_dict, convert_vae_state_dict

#: diffusers ``CHECKPOINT_KEY_NAMES["upscale"]``: the first resnet of the x4 UNet's last down
#: block (512 -> 1024 channels) has a skip connection; SD 1.x / 2.x ones do not.
UPSCALE_KEY = "model.diffusion_model.input_blocks.10.0.skip_connection.bias"
CONV_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def x4_original_state_dict(pipe: Any) -> dict[str, torch.Tensor]:
    """``pipe``'s UNet, VAE and text encoder in the original x4 upscaler layout (CPU tensors)."""
    unet = dict(pipe.unet.state_dict())
    label_emb = unet.pop("class_embedding.weight", None)
    unet_sd = convert_unet_state_dict(unet, pipe.unet.config)
    if label_emb is not None:
        unet_sd["label_emb.weight"] = label_emb
    text = dict(pipe.text_encoder.state_dict())
    width = pipe.text_encoder.config.hidden_size
    text["text_projection.weight"] = torch.eye(width)
    state = {
        **{"model.diffusion_model." + k: v for k, v in unet_sd.items()},
        **{"first_stage_model." + k: v for k, v in convert_vae_state_dict(pipe.vae.state_dict(), pipe.vae.config).items()},
        **{"cond_stage_model.model." + k: v for k, v in convert_open_clip_text_enc_state_dict(text).items()},
    }
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_x4_checkpoint(pipe: Any, path: Path) -> Path:
    """Write :func:`x4_original_state_dict` of ``pipe`` to ``path`` (safetensors); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(x4_original_state_dict(pipe), str(path), metadata={"format": "pt"})
    return path


def save_x4_detection_checkpoint(path: Path, in_channels: int = 7) -> Path:
    """A small ``.safetensors`` with only the keys detection reads, shaped as in stabilityai's
    ``x4-upscaler-ema.safetensors`` (``conv_in`` 256 x ``in_channels`` x 3 x 3, that skip
    connection's bias 1024); zeros, no model can load it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({CONV_IN_KEY: torch.zeros(256, in_channels, 3, 3), UPSCALE_KEY: torch.zeros(1024)}, str(path), metadata={"format": "pt"})
    return path

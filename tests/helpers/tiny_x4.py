"""Build a tiny, randomly initialised x4 upscaler (``StableDiffusionUpscalePipeline``, a diffusers folder).

The UNet and VAE are the dummy ones of diffusers'
``tests/pipelines/stable_diffusion_2/test_stable_diffusion_upscale.py``: UNet
``block_out_channels=(32, 32, 64)``, ``in_channels=7`` (4 noisy latents + the 3-channel
low-resolution image), ``num_class_embeds=100`` (the noise level's class embedding),
``attention_head_dim=8``, ``use_linear_projection=True``, ``only_cross_attention=(True, True,
False)``, ``sample_size=32``, ``cross_attention_dim=32``; VAE ``block_out_channels=[32, 32, 64]``
(scale factor 4), ``latent_channels=4``, with the x4 model's ``scaling_factor`` 0.08333; each
built after ``torch.manual_seed(0)``. The schedulers are the test's (``DDPMScheduler()`` for the
low-resolution noise, ``DDIMScheduler(prediction_type="v_prediction")``), ``max_noise_level``
350. The text encoder and tokenizer are the built-in tiny model's (``img2img_cli/models/tiny/``,
32 wide, its own 1000-token vocabulary). Native size: 32 px in, 128 px out. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "img2img_cli" / "models" / "tiny"


def build_tiny_x4_pipeline():
    """A ``StableDiffusionUpscalePipeline`` of the tiny components (fp32, CPU, not saved)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=(True, True, False),
        num_class_embeds=100,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        latent_channels=4,
        scaling_factor=0.08333,
    )
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(str(TINY_DIR), subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(str(TINY_DIR), subfolder="tokenizer"),
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )


def build_tiny_x4(folder: Path) -> Path:
    """Write the tiny x4 upscaler to ``folder`` (``save_pretrained``, safetensors); returns ``folder``."""
    folder = Path(folder)
    build_tiny_x4_pipeline().save_pretrained(str(folder), safe_serialization=True)
    return folder

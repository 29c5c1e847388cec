"""Build a tiny, randomly initialised SDXL base pipeline (a diffusers folder) for tests.

Sizes follow the dummy components of diffusers'
``tests/pipelines/stable_diffusion_xl/test_stable_diffusion_xl_img2img.py``
(``get_dummy_components``): a 2-block UNet (``block_out_channels=(32, 64)``,
``attention_head_dim=(2, 4)``, ``transformer_layers_per_block=(1, 2)``, linear projections,
``addition_embed_type="text_time"``, ``addition_time_embed_dim=8``), a 2-block AutoencoderKL,
an EulerDiscreteScheduler and two CLIP text encoders, with these deliberate differences so the
folder is a faithful *SDXL base* in miniature:

* ``requires_aesthetics_score=False`` (SDXL base; the test uses the refiner's True), so the
  time ids are 6 numbers (original size, crop top-left, target size) and
  ``projection_class_embeddings_input_dim = 6 * 8 + 32 = 80`` (the test's 72 is ``5 * 8 + 32``).
* The second encoder (``CLIPTextModelWithProjection``, OpenCLIP ViT-bigG in the real model) is
  wider than the first (64 vs 32 hidden, like 1280 vs 768) and has 10 layers, not 5: diffusers'
  single-file loader tells the two encoders apart by their width, and recognises an SDXL base
  checkpoint by ``conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias``
  (``infer_diffusers_model_type``), which needs a 10th layer. So ``cross_attention_dim`` is
  ``32 + 64 = 96`` (the real model's 768 + 1280 = 2048); the pooled projection is 32 wide.
* Both tokenizers are the CLIP tokenizer the package ships for single files
  (``img2img_cli/models/clip_tokenizer/``, the full 49408-token CLIP BPE vocabulary, as in
  SDXL; the second pads with ``!`` as SDXL's ``tokenizer_2`` does), so the encoders have
  ``vocab_size=49408`` (``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407); the first
  encoder has ``quick_gelu`` (CLIP ViT-L), the second ``gelu`` (OpenCLIP), as in SDXL.
* The VAE's ``scaling_factor`` is SDXL's 0.13025.
* The scheduler is SDXL base's ``scheduler_config.json`` (EulerDiscreteScheduler, scaled
  linear betas 0.00085..0.012, ``steps_offset=1``, ``timestep_spacing="leading"``).

The UNet's ``sample_size`` is 32 and the VAE scale factor 2, so the native resolution is 64 px.
Each model is initialised after ``torch.manual_seed(0)``: the folder is deterministic.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIP_TOKENIZER_DIR = ROOT / "img2img_cli" / "models" / "clip_tokenizer"

TIME_EMBED_DIM = 8
TEXT_1_WIDTH = 32
TEXT_2_WIDTH = 64
POOLED_DIM = 32
SCALING_FACTOR = 0.13025


def build_tiny_sdxl_components() -> dict:
    """The components of a tiny SDXL base pipeline (fp32, CPU), deterministic."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + POOLED_DIM,
        cross_attention_dim=TEXT_1_WIDTH + TEXT_2_WIDTH,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
        use_karras_sigmas=False,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
        scaling_factor=SCALING_FACTOR,
    )
    common = dict(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
        intermediate_size=37,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(hidden_size=TEXT_1_WIDTH, num_hidden_layers=5, hidden_act="quick_gelu", **common)
    )
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=TEXT_2_WIDTH, num_hidden_layers=10, hidden_act="gelu", projection_dim=POOLED_DIM, **common
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR))
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token="!")
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
    }


def save_tiny_sdxl(out_dir: Path) -> Path:
    """Write the tiny SDXL base as a diffusers folder (``StableDiffusionXLPipeline``, like
    ``stabilityai/stable-diffusion-xl-base-1.0``'s ``model_index.json``); returns ``out_dir``."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**build_tiny_sdxl_components(), force_zeros_for_empty_prompt=True)
    out_dir = Path(out_dir)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir

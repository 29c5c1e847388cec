"""Build a tiny, randomly initialised Stable Diffusion *inpainting* pipeline (a diffusers folder).

The UNet is the dummy UNet of diffusers'
``tests/pipelines/stable_diffusion/test_stable_diffusion_inpaint.py`` (``get_dummy_components``):
``block_out_channels=(32, 64)``, ``layers_per_block=2``, ``sample_size=32``, ``in_channels=9``
(4 noisy latents + 4 masked-image latents + 1 mask), ``out_channels=4``, a ``DownBlock2D`` and a
``CrossAttnDownBlock2D`` (``CrossAttnUpBlock2D`` / ``UpBlock2D`` up), ``cross_attention_dim=32``,
initialised after ``torch.manual_seed(0)``.

Everything else is the project's built-in tiny model (``img2img_cli/models/tiny/``, written by
``scripts/build_tiny_model.py``, the img2img test's dummy sizes): the 2-block AutoencoderKL and
the 5-layer, 32-wide CLIP text encoder are built with the same arguments after
``torch.manual_seed(0)`` (so their weights equal the tiny model's), and the tokenizer (its own
1000-token CLIP BPE vocabulary: ``<|startoftext|>`` 998, ``<|endoftext|>`` 999) and the
PNDM scheduler (SD 1.5's configuration) are loaded from the tiny folder. The 4-channel
counterpart of this model is therefore the tiny model itself (``img2img_cli.models.TINY_DIR``):
the two differ only in the UNet.

The folder is saved with ``StableDiffusionInpaintPipeline.save_pretrained`` (``model_index.json``
``_class_name`` ``StableDiffusionInpaintPipeline``) with no safety checker or feature extractor;
native resolution 64 px (UNet sample_size 32 x VAE scale factor 2). Deterministic.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "img2img_cli" / "models" / "tiny"


def build_tiny_inpaint_components() -> dict:
    """The components of the tiny inpainting pipeline (fp32, CPU), deterministic: the built-in
    tiny model's VAE, text encoder, tokenizer and scheduler, loaded from ``TINY_DIR``, and a
    9-channel UNet of the tiny UNet's sizes (diffusers' inpaint fast test), seeded with 0."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    return {
        "unet": unet,
        "scheduler": PNDMScheduler.from_pretrained(str(TINY_DIR), subfolder="scheduler"),
        "vae": AutoencoderKL.from_pretrained(str(TINY_DIR), subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(str(TINY_DIR), subfolder="text_encoder"),
        "tokenizer": CLIPTokenizer.from_pretrained(str(TINY_DIR), subfolder="tokenizer"),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def build_tiny_inpaint_pipeline():
    """A ``StableDiffusionInpaintPipeline`` of the tiny 9-channel components (not saved)."""
    from diffusers import StableDiffusionInpaintPipeline

    return StableDiffusionInpaintPipeline(**build_tiny_inpaint_components(), requires_safety_checker=False)


def build_tiny_inpaint(folder: Path) -> Path:
    """Write the tiny 9-channel inpainting pipeline to ``folder`` (``save_pretrained``, safetensors)
    and return ``folder``."""
    folder = Path(folder)
    pipe = build_tiny_inpaint_pipeline()
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder

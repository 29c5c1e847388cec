"""Build tiny, randomly initialised InstructPix2Pix pipelines (diffusers folders) for tests.

The UNet is the dummy UNet of diffusers'
``tests/pipelines/stable_diffusion/test_stable_diffusion_instruction_pix2pix.py``
(``get_dummy_components``): the tiny model's UNet sizes with ``in_channels=8`` (4 noisy latents
+ 4 latents of the source image), initialised after ``torch.manual_seed(0)``; it is made from the
4-channel UNet's own config (``from_config`` with ``in_channels`` changed), so nothing else
differs.

- SD (:func:`build_tiny_pix2pix`): everything but the UNet is the project's built-in tiny model
  (``img2img_cli/models/tiny/``: VAE, CLIP text encoder, tokenizer, PNDM scheduler), saved with
  ``StableDiffusionInstructPix2PixPipeline.save_pretrained`` (``model_index.json`` ``_class_name``
  ``StableDiffusionInstructPix2PixPipeline``), no safety checker; native size 64 px.
- SDXL (:func:`build_tiny_pix2pix_xl`): the tiny SDXL base of :mod:`tests.helpers.tiny_sdxl` with
  an 8-channel UNet, saved as a ``StableDiffusionXLInstructPix2PixPipeline``
  (``diffusers/sdxl-instructpix2pix-768`` is one; ``force_zeros_for_empty_prompt`` true).

Deterministic.
"""

from __future__ import annotations

from pathlib import Path

from .tiny_sdxl import build_tiny_sdxl_components

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "img2img_cli" / "models" / "tiny"


def eight_channel(unet):
    """A UNet of ``unet``'s config with ``in_channels=8``, initialised after ``manual_seed(0)``."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel.from_config({**unet.config, "in_channels": 8})


def build_tiny_pix2pix_pipeline():
    """A ``StableDiffusionInstructPix2PixPipeline`` of the tiny model's components and an
    8-channel UNet (fp32, CPU; not saved)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    tiny = StableDiffusionPipeline.from_pretrained(str(TINY_DIR), local_files_only=True)
    parts = {**tiny.components, "unet": eight_channel(tiny.unet), "safety_checker": None, "feature_extractor": None}
    return StableDiffusionInstructPix2PixPipeline(**parts, requires_safety_checker=False)


def build_tiny_pix2pix(folder: Path) -> Path:
    """Write the tiny SD InstructPix2Pix pipeline to ``folder`` (safetensors); returns it."""
    folder = Path(folder)
    build_tiny_pix2pix_pipeline().save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_tiny_pix2pix_xl(folder: Path) -> Path:
    """Write the tiny SDXL InstructPix2Pix pipeline to ``folder`` (safetensors); returns it."""
    from diffusers import StableDiffusionXLInstructPix2PixPipeline

    parts = build_tiny_sdxl_components()
    parts["unet"] = eight_channel(parts["unet"])
    pipe = StableDiffusionXLInstructPix2PixPipeline(**parts, force_zeros_for_empty_prompt=True)
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder

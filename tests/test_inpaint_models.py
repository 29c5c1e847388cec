"""Inpainting models: the tiny 9-channel pipeline, single-file detection and the shipped configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from img2img_cli.errors import ModelError
from img2img_cli.models import CONFIGS_DIR, TINY_DIR, resolve_model

from .helpers.ldm_checkpoint import save_detection_checkpoint, save_original_checkpoint
from .helpers.tiny_inpaint import build_tiny_inpaint

INPAINT_CONFIGS = {
    # folder: (pipeline class, plain counterpart, cross_attention_dim, UNet parameters in millions)
    "sd15-inpaint": ("StableDiffusionInpaintPipeline", "sd15", 768, 859.54),
    "sd2-inpaint": ("StableDiffusionInpaintPipeline", "sd2-base", 1024, 865.93),
    "sdxl-inpaint": ("StableDiffusionXLInpaintPipeline", "sdxl", 2048, 2567.48),
}


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory):
    return build_tiny_inpaint(tmp_path_factory.mktemp("tiny-inpaint") / "tiny-inpaint")


@pytest.fixture(scope="module")
def inpaint_pipe(inpaint_dir):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(inpaint_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint_ckpt(tmp_path_factory, inpaint_pipe):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-inpaint-original.safetensors"
    save_original_checkpoint(inpaint_pipe, path)
    return path


def _image_and_mask():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    return image, Image.fromarray(mask)


# --- the tiny 9-channel model ----------------------------------------------------------------


def test_tiny_inpaint_folder_runs_at_64px(inpaint_dir, inpaint_pipe):
    index = json.loads((inpaint_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert inpaint_pipe.unet.config.in_channels == 9 and inpaint_pipe.unet.config.out_channels == 4
    assert inpaint_pipe.unet.config.sample_size * inpaint_pipe.vae_scale_factor == 64
    image, mask = _image_and_mask()
    out = inpaint_pipe(
        "a cat", image=image, mask_image=mask, num_inference_steps=2, height=64, width=64,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert out.size == (64, 64)
    assert np.asarray(out).std() > 0  # not a blank image


def test_tiny_inpaint_shares_everything_but_the_unet_with_tiny(inpaint_pipe):
    """The 4-channel counterpart is the built-in tiny model: same VAE, text encoder, tokenizer."""
    from diffusers import StableDiffusionPipeline

    tiny = StableDiffusionPipeline.from_pretrained(str(TINY_DIR), local_files_only=True)
    for name in ("vae", "text_encoder"):
        ours, ref = getattr(inpaint_pipe, name).state_dict(), getattr(tiny, name).state_dict()
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref), name
    assert inpaint_pipe.tokenizer("a cat").input_ids == tiny.tokenizer("a cat").input_ids
    assert tiny.unet.config.in_channels == 4
    skip = {"in_channels", "_name_or_path"}
    assert {k: v for k, v in inpaint_pipe.unet.config.items() if k not in skip} == {
        k: v for k, v in tiny.unet.config.items() if k not in skip
    }


def test_tiny_inpaint_build_is_deterministic(tmp_path, inpaint_dir):
    again = build_tiny_inpaint(tmp_path / "again")
    for rel in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors"):
        assert (again / rel).read_bytes() == (inpaint_dir / rel).read_bytes(), rel


# --- single files: detection -------------------------------------------------------------------


def test_tiny_inpaint_single_file_is_detected_as_sd15_inpaint(inpaint_ckpt):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open

    with safe_open(str(inpaint_ckpt), framework="pt") as f:
        ckpt = {k: f.get_tensor(k) for k in f.keys()}
    assert ckpt["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    assert infer_diffusers_model_type(ckpt) == "inpainting"
    spec = resolve_model(str(inpaint_ckpt))
    assert spec.kind == "file" and spec.config == CONFIGS_DIR / "sd15-inpaint"
    assert spec.name == "tiny-inpaint-original"


def test_tiny_4_channel_single_file_is_still_not_inferred(tmp_path):
    """Unchanged: a 4-channel tiny file has no SD 1.x output block 11, so it needs --model-config.
    (A 9-channel UNet in the original layout is itself a positive sign of an inpainting model, as
    for diffusers, hence the difference with the test above.)"""
    from diffusers import StableDiffusionPipeline

    path = tmp_path / "tiny.safetensors"
    save_original_checkpoint(StableDiffusionPipeline.from_pretrained(str(TINY_DIR), local_files_only=True), path)
    with pytest.raises(ModelError, match="--model-config"):
        resolve_model(str(path))


@pytest.mark.parametrize(
    "arch, in_channels, v_prediction, config",
    [
        ("sd15", 9, False, "sd15-inpaint"),
        ("sd2", 9, False, "sd2-inpaint"),
        ("sd2", 9, True, "sd2-inpaint"),  # SD 2 inpainting exists only as the 512-base epsilon model
        ("sdxl", 9, False, "sdxl-inpaint"),
        ("sd15", 4, False, "sd15"),
        ("sd2", 4, False, "sd2-base"),
        ("sd2", 4, True, "sd2"),
        ("sdxl", 4, False, "sdxl"),
    ],
)
def test_inpainting_is_told_apart_from_the_plain_model(tmp_path, arch, in_channels, v_prediction, config):
    path = save_detection_checkpoint(tmp_path / "m.safetensors", arch, in_channels=in_channels, v_prediction=v_prediction)
    spec = resolve_model(str(path))
    assert spec.kind == "file" and spec.config == CONFIGS_DIR / config


def test_nine_channel_sgm_file_that_is_not_sdxl_base_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(384, 9, 3, 3),
            "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1280),
        },
        str(path),
    )
    with pytest.raises(ModelError, match="--model-config"):
        resolve_model(str(path))


@pytest.mark.parametrize("name", sorted(INPAINT_CONFIGS))
def test_model_config_names_the_inpainting_configs(tmp_path, name):
    path = save_detection_checkpoint(tmp_path / "m.safetensors", "sd15")  # a plain file: the option wins
    assert resolve_model(str(path), name).config == CONFIGS_DIR / name


# --- single files: loading ---------------------------------------------------------------------


def test_tiny_inpaint_single_file_loads_with_weights_equal_to_the_folder(inpaint_ckpt, inpaint_dir, inpaint_pipe):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_single_file(
        str(inpaint_ckpt), config=str(inpaint_dir), local_files_only=True
    )
    assert type(pipe) is StableDiffusionInpaintPipeline and pipe.unet.config.in_channels == 9
    for name in ("unet", "vae", "text_encoder"):
        ours, ref = getattr(pipe, name).state_dict(), getattr(inpaint_pipe, name).state_dict()
        assert ours.keys() == ref.keys(), name
        assert all(torch.equal(ours[k], ref[k]) for k in ref), name


# --- the shipped configs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INPAINT_CONFIGS))
def test_shipped_inpainting_config_is_a_valid_single_file_config(name):
    """What ``from_single_file(config=<folder>)`` reads: model_index.json names the pipeline and its
    components, each component's config loads with its class, the UNet has 9 input channels and the
    real architecture (meta device, no memory)."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    pipeline_class, plain, cross_dim, params = INPAINT_CONFIGS[name]
    folder = CONFIGS_DIR / name
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == pipeline_class
    cls = getattr(diffusers, pipeline_class)
    modules, parameters = cls._get_signature_keys(cls)
    components = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list)}
    assert set(components) <= set(modules)  # nothing the pipeline does not take
    assert set(modules) - set(cls._optional_components) <= set(components)  # nothing required missing
    assert {k for k in index if not k.startswith("_") and k not in components} <= set(parameters)
    for component, (library, class_name) in components.items():
        if class_name is None or component.startswith("tokenizer"):
            continue  # tokenizers are passed by the loader (SOURCES.md)
        assert (folder / component).is_dir(), component
        lib = diffusers if library == "diffusers" else transformers
        klass = getattr(lib, class_name)
        if library == "transformers":
            klass.config_class.from_pretrained(str(folder / component))
        else:
            klass.load_config(str(folder), subfolder=component)

    unet_config = UNet2DConditionModel.load_config(str(folder), subfolder="unet")
    assert unet_config["in_channels"] == 9 and unet_config["out_channels"] == 4
    assert unet_config["cross_attention_dim"] == cross_dim
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
    assert tuple(unet.conv_in.weight.shape) == (320, 9, 3, 3)
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 2) == params

    # The inpainting UNet is the plain model's UNet with 5 more input channels, nothing else.
    plain_config = UNet2DConditionModel.load_config(str(CONFIGS_DIR / plain), subfolder="unet")
    with init_empty_weights():
        resolved = dict(UNet2DConditionModel.from_config(plain_config).config)
    resolved["in_channels"] = 9
    ignore = {"_name_or_path", "_diffusers_version", "_use_default_values"}
    assert {k: v for k, v in unet.config.items() if k not in ignore} == {
        k: v for k, v in resolved.items() if k not in ignore
    }


def test_sd2_inpaint_is_epsilon_and_sd15_inpaint_uses_ddim():
    from diffusers import DDIMScheduler, PNDMScheduler

    sd15 = DDIMScheduler.from_pretrained(str(CONFIGS_DIR / "sd15-inpaint"), subfolder="scheduler")
    sd2 = PNDMScheduler.from_pretrained(str(CONFIGS_DIR / "sd2-inpaint"), subfolder="scheduler")
    for s in (sd15, sd2):
        assert s.config.prediction_type == "epsilon" and s.config.steps_offset == 1
        assert s.config.beta_schedule == "scaled_linear"
    index = json.loads((CONFIGS_DIR / "sdxl-inpaint" / "model_index.json").read_text())
    assert index["requires_aesthetics_score"] is False and index["force_zeros_for_empty_prompt"] is True

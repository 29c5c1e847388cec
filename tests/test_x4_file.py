"""x4 upscaler single files (stabilityai's ``x4-upscaler-ema.safetensors`` layout): detection picks
the shipped ``x4-upscaler`` config, the tiny x4 model written in that layout runs as its folder
does, and the shipped config is what diffusers derives from the original yaml."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from img2img_cli.errors import ModelError
from img2img_cli.metadata import parse_infotext, read_infotext
from img2img_cli.models import CONFIGS_DIR, resolve_model

from .conftest import EXAMPLES
from .helpers.cli import invoke, pixels
from .helpers.x4_checkpoint import save_x4_checkpoint, save_x4_detection_checkpoint

ARGS = ["--steps", "3", "--seed", "11", "-g", "6", "-p", "a red ball", "-n", "blurry"]
X4_CONFIG = CONFIGS_DIR / "x4-upscaler"
ROOT = CONFIGS_DIR.parents[2]


@pytest.fixture(scope="module")
def x4_file(tmp_path_factory, x4_pipe):
    return save_x4_checkpoint(x4_pipe, tmp_path_factory.mktemp("x4file") / "tiny-x4-ema.safetensors")


# --- the file's layout -----------------------------------------------------------------------


def test_written_file_is_the_original_layout_and_diffusers_converts_it_back(x4_file, x4_pipe):
    """The keys are the original model's (``label_emb``, OpenCLIP ``resblocks`` with fused
    ``in_proj``), and diffusers' own single-file converters give back every weight exactly."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from safetensors.torch import load_file

    sd = load_file(str(x4_file))
    assert sd["model.diffusion_model.label_emb.weight"].shape == (100, 128)
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 7
    assert sd["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    assert not any(k.startswith(("model.diffusion_model.down_blocks", "first_stage_model.encoder.down_blocks")) for k in sd)
    for got, model in (
        (convert_ldm_unet_checkpoint(sd, dict(x4_pipe.unet.config)), x4_pipe.unet),
        (convert_ldm_vae_checkpoint(sd, dict(x4_pipe.vae.config)), x4_pipe.vae),
    ):
        want = model.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k].reshape(want[k].shape), want[k]) for k in want)
    text = {"text_model." + k: v for k, v in x4_pipe.text_encoder.state_dict().items()}
    got = convert_open_clip_checkpoint(x4_pipe.text_encoder, sd)
    assert all(torch.equal(got[k], v) for k, v in text.items() if "position_ids" not in k)


# --- detection -------------------------------------------------------------------------------


def test_a_full_size_x4_header_resolves_to_the_shipped_config(tmp_path):
    path = save_x4_detection_checkpoint(tmp_path / "x4-upscaler-ema.safetensors")
    spec = resolve_model(str(path))
    assert spec.kind == "file" and spec.config == X4_CONFIG and spec.name == "x4-upscaler-ema"
    assert spec.index_class == "StableDiffusionUpscalePipeline"


def test_the_upscale_key_with_other_input_channels_is_refused(tmp_path):
    path = save_x4_detection_checkpoint(tmp_path / "odd.safetensors", in_channels=4)
    with pytest.raises(ModelError, match="'upscale with 4 input channels' is not supported.*--model-config"):
        resolve_model(str(path))


def test_the_tiny_file_needs_its_config(x4_file, x4):
    """The tiny UNet has 3 blocks, so not the x4 model's keys: refused, and taken with its folder."""
    with pytest.raises(ModelError, match="not supported.*--model-config"):
        resolve_model(str(x4_file))
    spec = resolve_model(str(x4_file), str(x4))
    assert spec.config == x4 and spec.index_class == "StableDiffusionUpscalePipeline"


# --- running it ------------------------------------------------------------------------------


def test_the_file_runs_as_the_folder_does(tmp_path, x4_file, x4, x4_pipe):
    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((120, 20, 360, 220)).resize((24, 16), Image.LANCZOS).save(src)
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", x4_file, "--model-config", x4, *ARGS, "--noise-level", 40, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "requires_safety_checker" not in r.stderr and "not used" not in r.stderr
    ours = pixels(out)
    assert ours.shape == (64, 96, 3)
    theirs = x4_pipe(prompt="a red ball", negative_prompt="blurry", image=Image.open(src).convert("RGB"), num_inference_steps=3,
                     guidance_scale=6, noise_level=40, generator=torch.Generator("cpu").manual_seed(11)).images[0]
    assert np.abs(ours - pixels(theirs)).max() <= 1
    fields = parse_infotext(read_infotext(out))
    assert fields["Model"] == "tiny-x4-ema" and fields["Noise level"] == "40" and "Denoising strength" not in fields


def test_the_shipped_config_loads_with_an_openclip_tokenizer(monkeypatch, tmp_path):
    """``from_single_file`` gets the shipped folder, offline, and the shipped CLIP tokenizer padding
    with "!" as OpenCLIP does (token 0; SD 2.x's tokenizer too)."""
    from diffusers import StableDiffusionUpscalePipeline

    from img2img_cli import modes
    from img2img_cli.models import load

    seen = {}
    monkeypatch.setattr(StableDiffusionUpscalePipeline, "from_single_file", classmethod(lambda cls, path, **kw: seen.update(kw, path=path)))
    spec = resolve_model(str(save_x4_detection_checkpoint(tmp_path / "x4.safetensors")))
    load._load_single_file(spec, modes.get("x4"), torch.float16)
    assert seen["path"] == spec.source and seen["config"] == str(X4_CONFIG) and seen["local_files_only"] is True
    assert seen["tokenizer"].pad_token == "!" and seen["tokenizer"].convert_tokens_to_ids("!") == 0
    assert "safety_checker" not in seen


# --- the shipped config ----------------------------------------------------------------------


def _build_script():
    spec = importlib.util.spec_from_file_location("build_x4_config", ROOT / "scripts" / "build_x4_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_config_is_what_diffusers_derives_from_the_original_yaml():
    """Every file equals ``scripts/build_x4_config.py``'s derivation (which also checks that the
    original checkpoint's keys convert to exactly these models' keys and shapes); 473.40M UNet
    parameters, 55.33M VAE."""
    files, models = _build_script().derive()
    def values(config):  # the writing version aside
        return {k: v for k, v in config.items() if k != "_diffusers_version"}

    for name, data in files.items():
        assert values(json.loads((X4_CONFIG / name).read_text())) == values(data), name
    assert sorted(str(p.relative_to(X4_CONFIG)) for p in X4_CONFIG.rglob("*.json")) == sorted(files)
    counts = {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for k, m in models.items()}
    assert counts == {"UNet": 473.40, "VAE": 55.33}
    unet = files["unet/config.json"]
    assert (unet["in_channels"], unet["num_class_embeds"], unet["sample_size"], unet["cross_attention_dim"]) == (7, 1000, 128, 1024)
    assert files["vae/config.json"]["scaling_factor"] == 0.08333
    assert files["scheduler/scheduler_config.json"]["prediction_type"] == "v_prediction"
    assert files["model_index.json"]["max_noise_level"] == 350
    assert (X4_CONFIG / "text_encoder" / "config.json").read_bytes() == (CONFIGS_DIR / "sd2" / "text_encoder" / "config.json").read_bytes()


def test_the_low_res_schedule_is_the_original_noise_augmentation():
    """``low_res_scheduler``'s betas are the original ``ImageConcatWithNoiseAugmentation`` schedule:
    LDM's "linear", ``linspace(sqrt(0.0001), sqrt(0.02), 1000) ** 2``; the sampler's are the same."""
    from diffusers import DDIMScheduler, DDPMScheduler

    want = torch.linspace(0.0001 ** 0.5, 0.02 ** 0.5, 1000, dtype=torch.float64) ** 2
    for cls, sub in ((DDPMScheduler, "low_res_scheduler"), (DDIMScheduler, "scheduler")):
        sched = cls.from_pretrained(str(X4_CONFIG), subfolder=sub)
        assert torch.allclose(sched.betas.double(), want, rtol=1e-5, atol=0)

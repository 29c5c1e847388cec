"""Instruction editing (InstructPix2Pix) end to end with tiny 8-channel models (CPU): equality
with diffusers' pipelines, batch invariance, the refusals, the infotext, single files and the
shipped ``sd15-pix2pix`` config."""

from __future__ import annotations

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
from .helpers.tiny_controlnet import save_tiny_controlnet
from .helpers.ldm_checkpoint import save_detection_checkpoint, save_original_checkpoint
from .helpers.tiny_pix2pix import build_tiny_pix2pix, build_tiny_pix2pix_xl

INSTRUCTION = "make it winter"
ARGS = ["--steps", "4", "--seed", "5", "-g", "6", "-p", INSTRUCTION]


@pytest.fixture(scope="module")
def pix_dir(tmp_path_factory):
    return build_tiny_pix2pix(tmp_path_factory.mktemp("pix2pix") / "tiny-pix2pix")


@pytest.fixture(scope="module")
def pix_pipe(pix_dir):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(pix_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def src(tmp_path):
    """A 64x48 crop of chelsea.png: not square, so a pipeline that resized to its native size would show."""
    path = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((100, 20, 356, 212)).resize((64, 48), Image.LANCZOS).save(path)
    return path


def expected(pipe, src, image_guidance=1.5, seed=5, **kwargs):
    """diffusers' InstructPix2Pix pipeline called directly, as the CLI's ARGS ask."""
    return pipe(prompt=INSTRUCTION, image=Image.open(src).convert("RGB"), num_inference_steps=4, guidance_scale=6,
                image_guidance_scale=image_guidance, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


@pytest.mark.parametrize("image_guidance", [None, 2.5])
def test_equals_diffusers_and_writes_image_cfg_scale(tmp_path, src, pix_dir, pix_pipe, image_guidance):
    out = tmp_path / "out.png"
    extra = [] if image_guidance is None else ["--image-guidance", image_guidance]
    r = invoke("run", src, "--model", pix_dir, *ARGS, *extra, "--report", tmp_path / "r.jsonl", "-o", out)
    assert r.exit_code == 0, r.stderr
    scale = 1.5 if image_guidance is None else image_guidance
    ours = pixels(out)
    assert ours.shape == (48, 64, 3)
    assert np.abs(ours - pixels(expected(pix_pipe, src, scale))).max() <= 1
    fields = parse_infotext(read_infotext(out))
    assert fields["Image CFG scale"] == format(scale, "g") and "Denoising strength" not in fields
    assert fields["Steps"] == "4" and fields["CFG scale"] == "6"
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert line["parameters"]["mode"] == "pix2pix" and line["parameters"]["strength"] is None


def test_image_guidance_changes_the_output(tmp_path, src, pix_dir):
    outs = {}
    for scale in ("1.5", "1", "3"):
        outs[scale] = tmp_path / f"{scale}.png"
        r = invoke("run", src, "--model", pix_dir, *ARGS, "--image-guidance", scale, "-o", outs[scale])
        assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(outs["1.5"]) - pixels(outs["1"])).max() > 3
    assert np.abs(pixels(outs["1.5"]) - pixels(outs["3"])).max() > 3


def test_batch_of_four_equals_single_runs(tmp_path, photos, pix_dir):
    common = [*ARGS, "--size", "64x48", "-n", "blurry"]
    r = invoke("run", photos, "--model", pix_dir, *common, "--batch-size", "4", "-o", tmp_path / "batched")
    assert r.exit_code == 0, r.stderr
    for name in ("chelsea", "coffee", "rocket", "camera"):
        single = tmp_path / f"{name}.png"
        photo = next(photos.glob(f"{name}.*"))
        r = invoke("run", photo, "--model", pix_dir, *common, "--batch-size", "1", "-o", single)
        assert r.exit_code == 0, r.stderr
        assert np.abs(pixels(tmp_path / "batched" / f"{name}.png") - pixels(single)).max() <= 1, name


def test_prompt_editing_switches_in_the_three_branch_layout(tmp_path, src, pix_dir, pix_pipe):
    """``[a:b:0.25]`` runs ``a`` for steps 0-1 of all 4 (A1111's schedule: ``int(0.25 * 4)``
    = 1 is its last; with img2img's ``int(4 * 0.75)`` = 3 steps it would be step 0) and ``b``
    after, replacing the pipeline's [text, image, unconditional] embeddings: equal to diffusers
    with a callback doing that switch; switching to an equal prompt (a second space tokenises
    the same) changes nothing."""
    plain, same, other = (tmp_path / f"{n}.png" for n in ("plain", "same", "other"))
    for out, prompt in ((plain, INSTRUCTION), (same, "[make it winter:make it  winter:0.25]"), (other, "[make it winter:a red ball:0.25]")):
        r = invoke("run", src, "--model", pix_dir, *ARGS, "-p", prompt, "-o", out)
        assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(same) - pixels(plain)).max() <= 1
    red_ball = pix_pipe._encode_prompt("a red ball", "cpu", 1, True)  # (3, 77, D): text, image, unconditional

    def switch(pipe, i, t, tensors):
        return {"prompt_embeds": red_ball} if i == 1 else {}

    theirs = expected(pix_pipe, src, callback_on_step_end=switch, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    assert np.abs(pixels(other) - pixels(theirs)).max() <= 1
    assert np.abs(pixels(other) - pixels(plain)).max() > 3


def test_refusals(tmp_path, src, pix_dir):
    r = invoke("run", src, "--model", pix_dir, *ARGS, "--strength", "0.5", "-o", tmp_path / "a.png")
    assert r.exit_code == 2 and "--strength: an instruct-pix2pix model has no denoising strength" in r.stderr
    r = invoke("run", src, "--model", "tiny", *ARGS, "--image-guidance", "2", "-o", tmp_path / "b.png")
    assert r.exit_code == 2
    assert "--image-guidance needs an instruct-pix2pix model; --model tiny is a stable-diffusion model" in r.stderr
    r = invoke("run", src, "--model", "tiny", *ARGS, "--image-guidance", "1.5", "-o", tmp_path / "b.png")  # typed, at its default
    assert r.exit_code == 2 and "--image-guidance needs an instruct-pix2pix model" in r.stderr
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 48), 255).save(mask)
    r = invoke("run", src, "--model", pix_dir, *ARGS, "--mask", mask, "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and "is an instruct-pix2pix model, which does not do inpaint (--mask or --outpaint)" in r.stderr
    r = invoke("run", src, "--model", pix_dir, *ARGS, "--image-guidance", "101", "-o", tmp_path / "d.png")
    assert r.exit_code == 2 and "--image-guidance must be in [0, 100], got 101" in r.stderr
    r = invoke("run", src, "--model", pix_dir, *ARGS, "--x", "strength=0.5,1", "-o", tmp_path / "e")
    assert r.exit_code == 2 and "strength: an instruct-pix2pix model has no denoising strength" in r.stderr
    cn = save_tiny_controlnet(tmp_path / "cn")
    r = invoke("run", src, "--model", pix_dir, *ARGS, "--controlnet", cn, "-o", tmp_path / "f.png")
    assert r.exit_code == 2 and "--controlnet: --model" in r.stderr and "is an instruct-pix2pix model, which has no controlnet pipeline" in r.stderr
    assert sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".png") == ["mask.png", "src.png"]  # nothing written


def test_jobs_file_strength_column_is_refused(tmp_path, src, pix_dir):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input,prompt,strength\n{src},{INSTRUCTION},\n{src},make it night,0.5\n")
    r = invoke("run", "--jobs", jobs, "--model", pix_dir, "--steps", "2", "-o", tmp_path / "out")
    assert r.exit_code == 2
    assert "line 3: strength: an instruct-pix2pix model has no denoising strength" in r.stderr
    jobs.write_text(f"input,prompt\n{src},{INSTRUCTION}\n")  # prompts and seeds per row are fine
    r = invoke("run", "--jobs", jobs, "--model", pix_dir, *ARGS, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr


# --- single files and the shipped config --------------------------------------------------------


def test_single_file_is_detected_and_equals_the_folder(tmp_path, src, pix_dir, pix_pipe):
    ckpt = tmp_path / "tiny-pix2pix.safetensors"
    save_original_checkpoint(pix_pipe, ckpt)
    spec = resolve_model(str(ckpt))
    assert spec.config == CONFIGS_DIR / "sd15-pix2pix" and spec.index_class == "StableDiffusionInstructPix2PixPipeline"
    a, b = tmp_path / "file.png", tmp_path / "folder.png"
    r = invoke("run", src, "--model", ckpt, "--model-config", pix_dir, *ARGS, "-o", a)
    assert r.exit_code == 0, r.stderr
    assert "Image CFG scale: 1.5" in read_infotext(a)
    assert invoke("run", src, "--model", pix_dir, *ARGS, "-o", b).exit_code == 0
    assert np.abs(pixels(a) - pixels(b)).max() <= 1


@pytest.mark.parametrize("arch, config", [("sd15", "sd15-pix2pix"), ("sd2", None), ("sdxl", None)])
def test_eight_channel_detection(tmp_path, arch, config):
    path = save_detection_checkpoint(tmp_path / "m.safetensors", arch, in_channels=8)
    if config is None:  # SD 2.x / SDXL InstructPix2Pix files: no shipped config, a clear error
        with pytest.raises(ModelError, match="instruct-pix2pix' is not supported .*--model-config"):
            resolve_model(str(path))
    else:
        assert resolve_model(str(path)).config == CONFIGS_DIR / config


def test_shipped_config_is_sd15_with_an_eight_channel_unet():
    """``sd15-pix2pix`` builds timbrooks/instruct-pix2pix's models: the SD 1.5 UNet with 8 input
    channels (859.53M parameters: SD 1.5's 859.52M + 4 x 320 x 3 x 3), SD 1.5's VAE and text
    encoder; every component config loads."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    folder = CONFIGS_DIR / "sd15-pix2pix"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    with init_empty_weights():  # meta device: no 3 GB of weights
        unet_pix, sd15 = (UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(CONFIGS_DIR / n / "unet")))
                          for n in ("sd15-pix2pix", "sd15"))
    assert unet_pix.config.in_channels == 8
    differ = {k for k in unet_pix.config if not k.startswith("_") and unet_pix.config[k] != sd15.config[k]}
    assert differ == {"in_channels"}
    n_pix, n_plain = (sum(p.numel() for p in m.parameters()) for m in (unet_pix, sd15))
    assert n_pix - n_plain == 4 * 320 * 9 and round(n_pix / 1e6, 2) == 859.53
    assert AutoencoderKL.load_config(str(folder / "vae"))["block_out_channels"] == [128, 256, 512, 512]
    assert CLIPTextConfig.from_pretrained(str(folder / "text_encoder")).hidden_size == 768
    assert EulerAncestralDiscreteScheduler.from_pretrained(str(folder / "scheduler")).config.steps_offset == 1


# --- SDXL ---------------------------------------------------------------------------------------


def test_sdxl_pix2pix_equals_diffusers(tmp_path, src):
    from diffusers import StableDiffusionXLInstructPix2PixPipeline

    folder = build_tiny_pix2pix_xl(tmp_path / "tiny-pix2pix-xl")
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", folder, *ARGS, "--image-guidance", "2", "-o", out)
    assert r.exit_code == 0, r.stderr
    pipe = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    theirs = expected(pipe, src, 2.0, height=48, width=64)
    assert pixels(out).shape == (48, 64, 3)
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    assert "Image CFG scale: 2, Version" in read_infotext(out)
    r = invoke("run", src, "--model", folder, *ARGS, "-p", "[make it winter:a red ball:2]", "-o", tmp_path / "e.png")
    assert r.exit_code == 1 and "prompt editing ([from:to:when], [a|b]) needs callback_on_step_end" in r.stderr


def test_one_step_runs_with_no_strength_and_is_refused_with_one(tmp_path, src, pix_dir):
    """``int(steps * strength) < 1`` is an error only for a model with a strength: an
    InstructPix2Pix model runs every step, so ``--steps 1`` makes an image; the plain model at
    ``--steps 1`` (default strength 0.75) is refused before it loads, naming both flags."""
    r = invoke("run", src, "--model", pix_dir, "--steps", "1", "--seed", "5", "-p", INSTRUCTION, "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.stderr
    assert "Steps: 1," in read_infotext(tmp_path / "a.png")
    r = invoke("run", src, "--model", "tiny", "--steps", "1", "-o", tmp_path / "b.png")
    assert r.exit_code == 2
    assert "--steps 1 with --strength 0.75 runs no denoising step (int(steps * strength) = 0)" in r.stderr
    assert not (tmp_path / "b.png").exists()


def test_one_step_in_a_jobs_row_or_a_plot_cell_runs_with_no_strength(tmp_path, src, pix_dir):
    """The same deferral for a jobs file's ``steps`` column and a ``steps`` plot axis: one step is
    fine for an InstructPix2Pix model, and still refused (naming the line or the cell) for the
    plain model, before it loads."""
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input,prompt,steps\n{src},{INSTRUCTION},2\n{src},make it night,1\n")
    r = invoke("run", "--jobs", jobs, "--model", pix_dir, "--seed", "5", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert "Steps: 1," in read_infotext(tmp_path / "out" / "src-png.png")
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "-o", tmp_path / "plain")
    assert r.exit_code == 2
    assert "line 3: --steps 1 with --strength 0.75 runs no denoising step" in r.stderr
    r = invoke("run", src, "--model", pix_dir, "--seed", "5", "-p", INSTRUCTION, "--x", "steps=1,2", "-o", tmp_path / "grid.png")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "grid.png").exists()
    r = invoke("run", src, "--model", "tiny", "--x", "steps=1,2", "-o", tmp_path / "plain.png")
    assert r.exit_code == 2
    assert "plot cell x0: --steps 1 with --strength 0.75 runs no denoising step" in r.stderr
    assert not (tmp_path / "plain").exists() and not (tmp_path / "plain.png").exists()

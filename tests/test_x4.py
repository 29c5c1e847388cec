"""x4 upscaler models (a model mode): a tiny ``StableDiffusionUpscalePipeline`` (diffusers' fast-test
sizes: 32 px native input, 128 px output) through ``img2img run``, against the pipeline called directly."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from img2img_cli.metadata import parse_infotext, read_infotext

from .conftest import EXAMPLES
from .helpers.cli import invoke, pixels

ARGS = ["--steps", "3", "--seed", "11", "-g", "6", "-p", "a red ball", "-n", "blurry"]


def photo(tmp_path, size, name="src.png"):
    path = tmp_path / name
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((120, 20, 360, 220)).resize(size, Image.LANCZOS).save(path)
    return path


def direct(pipe, image, seed=11, noise_level=20):
    return pipe(prompt="a red ball", negative_prompt="blurry", image=image, num_inference_steps=3, guidance_scale=6,
                noise_level=noise_level, generator=torch.Generator("cpu").manual_seed(seed)).images[0]


def test_x4_equals_the_pipeline_called_directly(tmp_path, x4, x4_pipe):
    src = photo(tmp_path, (24, 16))
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", x4, *ARGS, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "requires_safety_checker" not in r.stderr  # loaded without a warning
    ours = pixels(out)
    assert ours.shape == (64, 96, 3)
    assert np.abs(ours - pixels(direct(x4_pipe, Image.open(src).convert("RGB")))).max() <= 1
    fields = parse_infotext(read_infotext(out))
    assert fields["Noise level"] == "20" and fields["Size"] == "96x64" and "Denoising strength" not in fields
    assert "Tile size" not in fields

    louder = tmp_path / "louder.png"
    assert invoke("run", src, "--model", x4, *ARGS, "--noise-level", 80, "-o", louder).exit_code == 0
    theirs = pixels(direct(x4_pipe, Image.open(src).convert("RGB"), noise_level=80))
    assert np.abs(pixels(louder) - theirs).max() <= 1 and np.abs(pixels(louder) - ours).max() > 1


def test_large_inputs_go_in_tiles_with_seed_plus_k(tmp_path, x4, x4_pipe):
    """48x40 in 32 px tiles overlapping by 8 (2x2, at x 0/16, y 0/8): 192x160 out, and where tile
    k alone covers the output it is the pipeline on that crop with seed 11 + k."""
    src = photo(tmp_path, (48, 40))
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", x4, *ARGS, "-o", out)
    assert r.exit_code == 0, r.stderr
    ours = pixels(out)
    assert ours.shape == (160, 192, 3)
    fields = parse_infotext(read_infotext(out))
    assert fields["Tile size"] == "32x32" and fields["Tile overlap"] == "8"
    image = Image.open(src).convert("RGB")
    tile0 = pixels(direct(x4_pipe, image.crop((0, 0, 32, 32)), seed=11))
    assert np.abs(ours[:32, :64] - tile0[:32, :64]).max() <= 1
    tile3 = pixels(direct(x4_pipe, image.crop((16, 8, 48, 40)), seed=14))
    assert np.abs(ours[64:, 96:] - tile3[32:, 32:]).max() <= 1


def test_batch_size_does_not_change_an_x4_image(tmp_path, x4):
    src = photo(tmp_path, (48, 40))
    for b in (1, 4):
        r = invoke("run", src, "--model", x4, *ARGS, "--tile-size", "32x24", "--tile-overlap", 4, "-b", b, "-o", tmp_path / f"b{b}.png")
        assert r.exit_code == 0, r.stderr
    diff = np.abs(pixels(tmp_path / "b1.png") - pixels(tmp_path / "b4.png"))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("args,message", [
    (["-s", "0.5"], "--strength: an x4 upscaler model has no denoising strength"),
    (["--noise-level", 400], r"--noise-level must be in \[0, 350\], got 400"),
    (["--width", 104], "--width 104: an x4 upscaler.s output is 4 times its input, so a multiple of 32"),
    (["--upscale", 2], r"is a stable-diffusion-x4-upscaler model, which does not do sdupscale \(--upscale\)"),
])
def test_x4_refusals(tmp_path, x4, args, message):
    r = invoke("run", photo(tmp_path, (24, 16)), "--model", x4, "--steps", 2, *args, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and re.search(message, r.stderr), r.stderr


@pytest.mark.parametrize("args,message", [
    (["--x", "strength=0.5,1"], "--x/--y/--z strength: an x4 upscaler model has no denoising strength"),
    (["--x", "seed=1,2", "--y", "size=64x64,72x72"], "--y size=72x72: an x4 upscaler.s output is 4 times its input, so a multiple of 32"),
])
def test_x4_refuses_plot_axes_it_cannot_honour(tmp_path, x4, args, message):
    """A strength axis would make identical cells labelled with strengths that were never used;
    a size that is not a multiple of 32 would make a smaller image than its label says."""
    r = invoke("run", photo(tmp_path, (24, 16)), "--model", x4, "--steps", 2, *args, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and re.search(message, r.stderr), r.stderr
    assert not (tmp_path / "o.png").exists()


def test_x4_refuses_a_jobs_files_strength_column(tmp_path, x4):
    photo(tmp_path, (24, 16))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("input,strength\nsrc.png,0.7\n")
    r = invoke("run", "--jobs", jobs, "--model", x4, "--steps", 2, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "line 2: strength: an x4 upscaler model has no denoising strength" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_noise_level_needs_an_x4_model(tmp_path):
    r = invoke("run", photo(tmp_path, (24, 16)), "--model", "tiny", "--noise-level", 30, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "--noise-level needs a stable-diffusion-x4-upscaler model; --model tiny is a stable-diffusion model" in r.stderr

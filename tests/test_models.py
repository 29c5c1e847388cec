"""Resolving and loading --model: tiny, local folders, single-file checkpoints, hub ids (offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from img2img_cli.cli import app
from img2img_cli.errors import ModelError
from img2img_cli.models import CONFIGS_DIR, TINY_DIR, resolve_dtype, resolve_model

from .conftest import EXAMPLES, ROOT
from .helpers.ldm_checkpoint import save_original_checkpoint

runner = CliRunner()
ARGS = ["-p", "a cat", "--steps", "6", "--seed", "11"]


def run_cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_pipe_module):
    path = tmp_path_factory.mktemp("ckpt") / "tiny-original.safetensors"
    save_original_checkpoint(tiny_pipe_module, path)
    return path


@pytest.fixture(scope="module")
def tiny_pipe_module():
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY_DIR), local_files_only=True)


def test_single_file_checkpoint_loads_offline_and_matches_folder(tmp_path, tiny_checkpoint):
    a, b = tmp_path / "folder.png", tmp_path / "file.png"
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", "tiny", *ARGS, "-o", a)
    assert r.exit_code == 0, r.stderr
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", tiny_checkpoint, "--model-config", "tiny", *ARGS, "-o", b)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(pixels(a), pixels(b))  # same weights -> same pixels
    assert "Model: tiny-original" in Image.open(b).info["parameters"]


def test_single_file_weights_round_trip_exactly(tiny_checkpoint, tiny_pipe_module):
    from img2img_cli.models import load_pipeline

    spec = resolve_model(str(tiny_checkpoint), "tiny")
    pipe = load_pipeline(spec, device="cpu", dtype=torch.float32)
    for name in ("unet", "vae", "text_encoder"):
        ours = getattr(pipe, name).state_dict()
        ref = getattr(tiny_pipe_module, name).state_dict()
        assert ours.keys() == ref.keys()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), name


def test_unrecognised_checkpoint_is_a_clear_error(tiny_checkpoint, tmp_path):
    # the tiny UNet has no SD 1.x output block 11: not an architecture we can infer
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", tiny_checkpoint)
    assert r.exit_code == 2 and "--model-config" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", junk)
    assert r.exit_code == 2 and "junk.safetensors" in r.stderr and "Traceback" not in r.stderr


def _fake_checkpoint(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "tensors, config",
    [
        ({"model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(320, 640, 1, 1)}, "sd15"),
        (
            {
                "model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024),
                "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.linspace(-1, 1, 320),
            },
            "sd2",
        ),
        (
            {
                "model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, 1024),
                "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.full((320,), 0.01),
            },
            "sd2-base",
        ),
        ({"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1280)}, "sdxl"),
        ({"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(1280)}, "sdxl-refiner"),
    ],
)
def test_single_file_architecture_is_inferred(tmp_path, tensors, config):
    spec = resolve_model(str(_fake_checkpoint(tmp_path / "m.safetensors", tensors)))
    assert spec.kind == "file" and spec.config == CONFIGS_DIR / config and spec.name == "m"


def test_shipped_configs_build_the_real_architectures():
    """The shipped SD 1.5 config builds an 859.5M-parameter UNet (meta device, no memory)."""
    import json

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(json.loads((CONFIGS_DIR / "sd15" / "unet" / "config.json").read_text()))
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6, 1) == 859.5
    assert unet.config.sample_size * 8 == 512


def test_local_folder_and_hub_cache(tmp_path):
    # a diffusers folder anywhere on disk
    folder = tmp_path / "my-model"
    shutil.copytree(TINY_DIR, folder)
    out = tmp_path / "o.png"
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", folder, *ARGS, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "Model: my-model" in Image.open(out).info["parameters"]

    # the same files as a hub repo in a Hugging Face cache, loaded with HF_HUB_OFFLINE=1
    cache = tmp_path / "hf-cache"
    repo = cache / "models--someone--tiny-sd"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(TINY_DIR, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    out2 = tmp_path / "hub.png"
    cmd = [sys.executable, "-m", "img2img_cli", "run", str(EXAMPLES / "chelsea.png"), "--model", "someone/tiny-sd", *ARGS, "-o", str(out2)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(pixels(out), pixels(out2))

    # not cached + offline: exit 2 within seconds, saying how to get it
    t0 = time.perf_counter()
    cmd[cmd.index("someone/tiny-sd")] = "someone/not-downloaded"
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert p.returncode == 2
    assert "hf download someone/not-downloaded" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 20


def test_model_errors_before_loading(tmp_path):
    with pytest.raises(ModelError, match="no model_index.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="not found"):
        resolve_model("not a model id!")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="pickle"):
        resolve_model(str(tmp_path / "m.bin"))


def test_dtype_defaults():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16


def test_env_default_model(tmp_path):
    out = tmp_path / "o.png"
    r = runner.invoke(app, ["run", str(EXAMPLES / "chelsea.png"), *ARGS, "-o", str(out)], env={"IMG2IMG_MODEL": "tiny"})
    assert r.exit_code == 0, r.stderr
    assert "Model: tiny" in Image.open(out).info["parameters"]


def test_pipeline_class_is_the_one_autopipeline_picks():
    from diffusers import AutoPipelineForImage2Image

    from img2img_cli.models import load_pipeline

    ours = load_pipeline(resolve_model("tiny"), device="cpu", dtype=torch.float32)
    auto = AutoPipelineForImage2Image.from_pretrained(str(TINY_DIR), local_files_only=True)
    assert type(ours) is type(auto)

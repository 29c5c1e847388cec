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


# -- warnings while loading ----------------------------------------------------------------------


@pytest.fixture
def our_log():
    """The records that reach the ``img2img_cli`` logger (whatever handlers the CLI left on it)."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("img2img_cli")
    handler = Keep(logging.DEBUG)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old)


def _edited_tiny(tmp_path: Path, component: str, edit: str) -> Path:
    """A copy of the tiny model whose ``component`` weights miss a key or have an extra one."""
    from safetensors.torch import load_file

    folder = tmp_path / f"tiny-{component}-{edit}"
    shutil.copytree(TINY_DIR, folder)
    weights = next((folder / component).glob("*.safetensors"))
    tensors = load_file(str(weights))
    if edit == "missing":
        del tensors["conv_norm_out.weight" if component == "unet" else "final_layer_norm.weight"]
    else:
        tensors["extra_block.weight"] = torch.zeros(4)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return folder


def test_checkpoint_with_unused_weights_warns_on_stderr(tmp_path):
    folder = _edited_tiny(tmp_path, "unet", "extra")
    out = tmp_path / "o.png"
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", folder, "--steps", "2", "--seed", "1", "-o", out)
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("img2img: warning:")]
    assert len(warnings) == 1, r.stderr
    assert "were not used when initializing UNet2DConditionModel" in warnings[0] and "extra_block.weight" in warnings[0]


def test_text_encoder_weights_missing_or_unused_warn(tmp_path, our_log):
    from img2img_cli.models import load_pipeline

    for edit, status in (("missing", "MISSING: final_layer_norm.weight"), ("extra", "UNEXPECTED: extra_block.weight")):
        our_log.clear()
        load_pipeline(resolve_model(str(_edited_tiny(tmp_path, "text_encoder", edit))), device="cpu", dtype=torch.float32)
        messages = [r.getMessage() for r in our_log]
        assert len(messages) == 1 and "CLIPTextModel LOAD REPORT" in messages[0] and status in messages[0], messages
        assert "\n" not in messages[0] and "\x1b" not in messages[0]


def test_unet_weights_missing_is_a_clear_error(tmp_path):
    folder = _edited_tiny(tmp_path, "unet", "missing")
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", folder, "--steps", "2", "--seed", "1", "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert "the unet checkpoint lacks weights its config needs (conv_norm_out.weight)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_intact_models_load_without_a_word(tmp_path, tiny_checkpoint, our_log, capsys):
    from img2img_cli.models import load_pipeline

    load_pipeline(resolve_model("tiny"), device="cpu", dtype=torch.float32, dtype_option="auto")
    load_pipeline(resolve_model(str(tiny_checkpoint), "tiny"), device="cpu", dtype=torch.float32, dtype_option="auto")
    assert [r.getMessage() for r in our_log] == []
    assert capsys.readouterr().err == ""
    r = run_cli("run", EXAMPLES / "chelsea.png", "--model", "tiny", "--steps", "2", "--seed", "1", "-o", tmp_path / "o.png")
    assert r.exit_code == 0 and "warning" not in r.stderr and "bf16" not in r.stderr, r.stderr


def test_known_noise_is_dropped_and_other_library_warnings_kept():
    import logging
    import warnings

    from img2img_cli.models.load import _LIBRARY_LOGGERS, _library_warnings

    def state():
        return [(lg.level, list(lg.handlers), lg.propagate) for lg in map(logging.getLogger, _LIBRARY_LOGGERS)]

    before = state()
    with _library_warnings() as records:
        logging.getLogger("transformers.utils.import_utils").warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` ...")
        logging.getLogger("diffusers.models.modeling_utils").warning(
            "There are modules in AutoencoderKL that should be kept in float32: []. Casting directly ...")
        logging.getLogger("diffusers.models.modeling_utils").info("chatter")
        logging.getLogger("diffusers.models.modeling_utils").warning("Some weights of X were not used: \n ['a', 'b']")
        warnings.warn("an API going away", DeprecationWarning)
        warnings.warn("something the user should know", UserWarning)
    assert records == [
        (logging.WARNING, "Some weights of X were not used: ['a', 'b']"),
        (logging.WARNING, "UserWarning: something the user should know"),
    ]
    assert state() == before  # the libraries' loggers are left as they were found


# -- the bf16 hint -------------------------------------------------------------------------------


class _Param:
    def __init__(self, n):
        self.n = n

    def numel(self):
        return self.n


def _fake_pipe(unet_params: int):
    from types import SimpleNamespace

    return SimpleNamespace(unet=SimpleNamespace(parameters=lambda: [_Param(unet_params - 1), _Param(1)]))


@pytest.mark.parametrize(
    "device, option, native, params, hinted",
    [
        ("cpu", "auto", True, 859_520_964, True),  # SD 1.5 UNet
        ("cpu", "auto", True, 2_567_463_684, True),  # SDXL UNet
        ("cpu", "fp32", True, 859_520_964, False),  # fp32 asked for: a choice
        ("cpu", "bf16", True, 859_520_964, False),
        ("cpu", "auto", False, 859_520_964, False),  # AVX2 only: bf16 would be emulated
        ("cpu", "auto", True, 1_500_000, False),  # the tiny model
        ("cuda", "auto", True, 859_520_964, False),
    ],
)
def test_speed_hint(monkeypatch, device, option, native, params, hinted):
    from img2img_cli.models import device as dev

    asked = []
    monkeypatch.setattr(dev, "cpu_has_native", lambda dtype: asked.append(dtype) or native)
    hint = dev.speed_hint(device, option, _fake_pipe(params))
    assert hint == (dev.BF16_HINT if hinted else None)
    assert asked in ([], ["bf16"])
    if hinted:
        assert "--dtype bf16 is about 3x faster" in hint and "differs slightly from fp32" in hint


def test_speed_hint_is_logged_once_after_loading(monkeypatch, our_log):
    from img2img_cli.models import device as dev
    from img2img_cli.models import load_pipeline

    monkeypatch.setattr(dev, "cpu_has_native", lambda dtype: True)
    monkeypatch.setattr(dev, "SD_SIZE_UNET_PARAMS", 1000)  # the tiny UNet counts as SD-size here
    load_pipeline(resolve_model("tiny"), device="cpu", dtype=torch.float32, dtype_option="auto")
    assert [(r.levelname, r.getMessage()) for r in our_log] == [("WARNING", dev.BF16_HINT)]
    our_log.clear()
    load_pipeline(resolve_model("tiny"), device="cpu", dtype=torch.float32, dtype_option="fp32")
    load_pipeline(resolve_model("tiny"), device="cpu", dtype=torch.float32)  # a caller that does not say
    assert our_log == []


def test_speed_hint_via_the_cli(tmp_path, monkeypatch):
    from img2img_cli.models import device as dev

    monkeypatch.setattr(dev, "cpu_has_native", lambda dtype: True)
    args = ["run", EXAMPLES / "chelsea.png", "--model", "tiny", "--steps", "2", "--seed", "1", "--device", "cpu", "-o", tmp_path / "o.png"]
    r = run_cli(*args)  # the tiny model: nothing to gain
    assert r.exit_code == 0 and "bf16" not in r.stderr, r.stderr
    monkeypatch.setattr(dev, "SD_SIZE_UNET_PARAMS", 1000)  # pretend it is SD-size
    r = run_cli(*args, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count(f"img2img: warning: {dev.BF16_HINT}") == 1
    r = run_cli(*args, "--overwrite", "--dtype", "fp32")
    assert r.exit_code == 0 and "bf16" not in r.stderr, r.stderr

"""The mode seam: a mode added as one class and one registration runs through the unchanged
runner, batching, naming, report and metadata, and its output equals its diffusers call.

The test mode here is A1111's "Eta (DDIM)" (``--eta``: the DDIM sampler's eta, the weight of
fresh noise in each step, DDIM paper (Song et al. 2020) eq. 16; diffusers' ``eta`` argument,
A1111's infotext field ``Eta DDIM``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli import modes
from img2img_cli.cli import app
from img2img_cli.config import RunConfig, cli_fields, option
from img2img_cli.errors import ModelError, UsageError
from img2img_cli.modes.img2img import Img2Img

from .conftest import EXAMPLES


@dataclass(frozen=True)
class EtaOptions:
    eta: Optional[float] = option(None, "--eta", help="DDIM eta, 0-1.")
    eta_note: Optional[str] = option(None, "--eta-note", help="A note for the infotext.")


class Eta(Img2Img):
    name = "eta"
    options = EtaOptions
    trigger = "eta"

    def validate(self, config):
        if not 0 <= config.mode_options.eta <= 1:
            raise UsageError(f"--eta must be in [0, 1], got {config.mode_options.eta}")

    def prepare(self, item, source, size, config):
        prepared = super().prepare(item, source, size, config)
        prepared.extras["eta"] = config.mode_options.eta
        return prepared

    def batch_key(self, item):
        return ("eta",)

    def call_kwargs(self, pipe, requests):
        return {"eta": requests[0].extras["eta"]}

    def infotext(self, item, config):
        return {"Eta DDIM": 1}


@pytest.fixture
def eta_mode(monkeypatch):
    monkeypatch.setitem(modes.MODES, "eta", Eta)


def config_for(src, out, **values) -> RunConfig:
    base = {"inputs": [src], "model": "tiny", "steps": 6, "seed": 5, "prompt": "a cat", "negative_prompt": "blurry",
            "output": out, "device": "cpu"}
    return RunConfig.from_values({**base, **values})


def test_a_registered_mode_runs_through_the_runner_and_equals_diffusers(tmp_path, tiny_pipe, eta_mode):
    import torch

    from img2img_cli.core import run

    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").resize((64, 40)).save(src)
    report = tmp_path / "report.jsonl"
    config = config_for(src, tmp_path / "out.png", eta=1.0, scheduler="DDIM", report=report)
    assert config.mode == "eta" and config.mode_options == EtaOptions(eta=1.0)
    written = []
    summary = run(config, emit=lambda outcome, path, seed, seconds: written.append((path, seed)))
    assert summary.exit_code == 0 and summary.written == 1
    assert written == [(tmp_path / "out.png", 5)]

    from diffusers import DDIMScheduler

    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = DDIMScheduler.from_config(original.config)
    try:
        expected, no_eta = (
            tiny_pipe(prompt="a cat", negative_prompt="blurry", image=Image.open(src).convert("RGB"), strength=0.75,
                      num_inference_steps=6, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(5),
                      eta=eta).images[0]
            for eta in (1.0, 0.0)
        )
    finally:
        tiny_pipe.scheduler = original
    ours = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.int16)
    assert np.abs(ours - np.asarray(expected, dtype=np.int16)).max() <= 1
    assert np.abs(ours - np.asarray(no_eta, dtype=np.int16)).max() > 1  # the mode's argument reached the pipeline

    text = Image.open(tmp_path / "out.png").info["parameters"]
    assert "Sampler: DDIM" in text and "Denoising strength: 0.75, Eta DDIM: 1, Version: img2img-cli" in text
    line = json.loads(report.read_text())
    assert line["parameters"]["mode"] == "eta" and line["status"] == "ok"


def test_mode_validation_and_foreign_options(eta_mode, tmp_path):
    with pytest.raises(UsageError, match=r"--eta must be in \[0, 1\], got 2"):
        config_for(tmp_path / "a.png", tmp_path, eta=2)
    with pytest.raises(UsageError, match="--eta-note needs --eta"):
        config_for(tmp_path / "a.png", tmp_path, eta_note="hello")
    plain = config_for(tmp_path / "a.png", tmp_path)
    assert plain.mode == "img2img" and plain.mode_options is None


def test_two_triggers_contradict(monkeypatch, tmp_path):
    class Other(Eta):
        name = "other"

        @property
        def options(self):
            @dataclass(frozen=True)
            class O:
                other: Optional[int] = option(None, "--other", help="x")

            return O

        trigger = "other"

    monkeypatch.setitem(modes.MODES, "eta", Eta)
    monkeypatch.setitem(modes.MODES, "other", Other)
    with pytest.raises(UsageError, match="--eta and --other contradict"):
        config_for(tmp_path / "a.png", tmp_path, eta=0.5, other=1)


def test_pipeline_class_table():
    mode = Img2Img()
    assert mode.pipeline_class("StableDiffusionPipeline", "m") == "StableDiffusionImg2ImgPipeline"
    assert mode.pipeline_class("StableDiffusionXLPipeline", "m") == "StableDiffusionXLImg2ImgPipeline"
    assert mode.pipeline_class("KandinskyV22Pipeline", "m") == "AutoPipelineForImage2Image"

    class SdOnly(Img2Img):
        name = "sd-only"
        pipelines = {"stable-diffusion": "StableDiffusionImg2ImgPipeline"}

    with pytest.raises(ModelError, match="--model m: a stable-diffusion-xl model .* has no sd-only pipeline"):
        SdOnly().pipeline_class("StableDiffusionXLPipeline", "m")


def test_every_declared_option_is_a_flag_of_run():
    """Options are declared once (config fields); the Typer command is made from them."""
    r = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert r.exit_code == 0
    fields = cli_fields(RunConfig)
    assert len(fields) > 35
    for name, _type, _default, meta in fields:
        if not meta["argument"]:
            assert meta["flags"][0] in r.stdout, name


def test_device_env_var_is_the_device_option(monkeypatch, tmp_path):
    """Tests pin the CPU through IMG2IMG_DEVICE (conftest); the variable is --device's."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.setenv("IMG2IMG_DEVICE", "cuda")
    r = CliRunner().invoke(app, ["run", str(EXAMPLES / "chelsea.png"), "--model", "tiny", "-o", str(tmp_path)])
    assert r.exit_code == 2
    assert "--device cuda: no CUDA device is available" in r.stderr


def test_a_mode_input_error_fails_its_image_alone(monkeypatch, tmp_path, photos):
    """A mode's extra input that cannot be read (say a missing mask) fails that input only."""
    from img2img_cli.core import run
    from img2img_cli.errors import InputError

    class NeedsPair(Eta):
        def prepare(self, item, source, size, config):
            if item.input.path.name == "rocket.jpg":
                raise InputError(f"{item.input.path.name}: no mask")
            return super().prepare(item, source, size, config)

    monkeypatch.setitem(modes.MODES, "eta", NeedsPair)
    config = config_for(photos, tmp_path / "out", eta=0.0, batch_size="4", steps=2, report=tmp_path / "r.jsonl")
    summary = run(config)
    assert (summary.written, summary.failed, summary.exit_code) == (3, 1, 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["camera.png", "chelsea.png", "coffee.png"]
    failed = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines() if '"failed"' in x]
    assert [(f["input"].endswith("rocket.jpg"), f["error"]) for f in failed] == [(True, "rocket.jpg: no mask")]


class EtaAddon(Eta):
    """The eta mode as an add-on: it stacks on the task mode instead of replacing it."""

    name = "eta"
    addon = True

    def validate(self, config):
        if not 0 <= config.options_of("eta").eta <= 1:
            raise UsageError(f"--eta must be in [0, 1], got {config.options_of('eta').eta}")

    def prepare(self, item, source, size, config):  # an add-on is never the task mode
        raise AssertionError("an add-on's prepare is not called")

    def extend(self, item, source, prepared, size, config):
        assert prepared.image.size == size  # the task mode's input is there already
        prepared.extras["eta"] = config.options_of("eta").eta


def test_an_addon_stacks_on_the_task_mode(monkeypatch, tmp_path):
    """``--mask`` with an add-on: the task mode's hooks, then the add-on's; both infotexts."""
    from img2img_cli.core import run

    monkeypatch.setitem(modes.MODES, "eta", EtaAddon)
    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").resize((64, 40)).save(src)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 40), 255).save(mask)
    config = config_for(src, tmp_path / "out.png", eta=1.0, scheduler="DDIM", mask=mask, report=tmp_path / "r.jsonl")
    assert (config.mode, config.addons, config.options_of("eta").eta) == ("inpaint", ("eta",), 1.0)
    mode = modes.for_config(config)
    assert mode.name == "inpaint+eta" and mode.source_type == "compositeWithTrainedAlgorithmicMedia"
    assert mode.pipeline_class("StableDiffusionPipeline", "m") == "StableDiffusionInpaintPipeline"
    assert run(config).written == 1
    text = Image.open(tmp_path / "out.png").info["parameters"]
    assert "Mask blur: 4" in text and "Eta DDIM: 1" in text
    assert json.loads((tmp_path / "r.jsonl").read_text())["parameters"]["mode"] == "inpaint+eta"
    with pytest.raises(UsageError, match=r"--eta must be in \[0, 1\], got 3"):
        config_for(src, tmp_path, eta=3.0, mask=mask)
    # the add-on's own options still need its trigger
    with pytest.raises(UsageError, match="--eta-note needs --eta"):
        config_for(src, tmp_path, eta_note="x", mask=mask)


@dataclass(frozen=True)
class FooOptions:
    foo: float = option(1.5, "--foo", help="A model mode's option.")


def test_a_model_mode_is_chosen_by_the_model(monkeypatch, tmp_path):
    """A mode whose ``model_family`` is the model's replaces the default task mode once the
    model is resolved; its options for a model of another family, or a task mode the model
    does not do, are refused naming the flags."""
    from img2img_cli.models import resolve_model

    class ForSd(Img2Img):
        name = "for-sd"
        options = FooOptions
        model_family = "stable-diffusion"

        def validate(self, config):
            if "strength" in config.given:
                raise UsageError("--strength: this mode has no strength")

    class ForPix(ForSd):
        name = "for-pix"
        model_family = "instruct-pix2pix"

    monkeypatch.setitem(modes.MODES, "for-sd", ForSd)
    spec = resolve_model("tiny")
    assert spec.index_class == "StableDiffusionPipeline"
    config = config_for(tmp_path / "a.png", tmp_path, foo=2.0)
    assert config.mode == "img2img" and config.options_of("for-sd") == FooOptions(2.0)
    assert modes.for_model(modes.for_config(config), spec.index_class, "tiny", config).name == "for-sd"
    with pytest.raises(UsageError, match="--strength: this mode has no strength"):
        strong = config_for(tmp_path / "a.png", tmp_path, strength=0.5, _given={"strength"})
        modes.for_model(modes.for_config(strong), spec.index_class, "tiny", strong)
    mask = tmp_path / "m.png"
    Image.new("L", (8, 8)).save(mask)
    masked = config_for(tmp_path / "a.png", tmp_path, mask=mask)
    with pytest.raises(UsageError, match=r"--model tiny is a stable-diffusion model, which does not do inpaint \(--mask or --outpaint\)"):
        modes.for_model(modes.for_config(masked), spec.index_class, "tiny", masked)

    monkeypatch.delitem(modes.MODES, "for-sd")
    monkeypatch.setitem(modes.MODES, "for-pix", ForPix)
    config = config_for(tmp_path / "a.png", tmp_path, foo=2.0)
    with pytest.raises(UsageError, match="--foo needs an instruct-pix2pix model; --model tiny is a stable-diffusion model"):
        modes.for_model(modes.for_config(config), spec.index_class, "tiny", config)
    plain = config_for(tmp_path / "a.png", tmp_path)  # its option at its default: no complaint
    assert modes.for_model(modes.for_config(plain), spec.index_class, "tiny", plain).name == "img2img"


def test_given_options_come_from_the_command_line(monkeypatch, tmp_path):
    """``RunConfig.given`` holds the flags typed (or set by environment variable), not defaults."""
    from img2img_cli import cli

    seen = {}

    def fake_run(config, **kwargs):
        seen["given"] = config.given
        raise UsageError("stop here")

    monkeypatch.setattr("img2img_cli.core.run", fake_run)
    monkeypatch.setenv("IMG2IMG_MODEL", "tiny")
    r = CliRunner().invoke(cli.app, ["run", str(EXAMPLES / "chelsea.png"), "-s", "0.75", "--steps", "3"])
    assert r.exit_code == 2 and "stop here" in r.stderr
    assert {"strength", "steps", "model", "inputs"} <= seen["given"]
    assert "guidance_scale" not in seen["given"] and "seed" not in seen["given"]

"""IP-Adapter (``--ip-adapter``, ``--style-image``): an add-on on img2img and inpainting, end to end
with the tiny model and a tiny adapter and CLIP image encoder (tests/helpers/tiny_ip_adapter.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from img2img_cli.metadata import parse_infotext, read_infotext
from img2img_cli.models import TINY_DIR

from .conftest import EXAMPLES
from .helpers.cli import invoke, pixels
from .helpers.tiny_ip_adapter import build_tiny_ip_adapter, save_image_encoder

ARGS = ["--model", "tiny", "--steps", "4", "--seed", "5", "-s", "0.8", "-g", "6", "-p", "a red ball", "-n", "blurry"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """h94's layout: models/ip-adapter_tiny.safetensors beside models/image_encoder/."""
    return build_tiny_ip_adapter(tmp_path_factory.mktemp("h94") / "models")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 64x64 source (a crop of chelsea.png), two style images and a mask (a disc)."""
    d = tmp_path_factory.mktemp("scene")
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((150, 40, 278, 168)).resize((64, 64), Image.LANCZOS).save(d / "src.png")
    shutil.copy(EXAMPLES / "coffee.png", d / "coffee.png")
    shutil.copy(EXAMPLES / "rocket.jpg", d / "rocket.jpg")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((12, 12, 52, 52), fill=255)
    mask.save(d / "mask.png")
    return d


@pytest.fixture(scope="module")
def diffusers_pipes(adapter):
    """diffusers' own pipelines with the adapter loaded its way: load_ip_adapter also loads the
    image encoder (image_encoder/ beside the file) and builds the CLIP feature extractor."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    pipes = {}
    for name, cls in (("img2img", StableDiffusionImg2ImgPipeline), ("inpaint", StableDiffusionInpaintPipeline)):
        pipe = cls.from_pretrained(str(TINY_DIR), local_files_only=True)
        pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = pipe
    return pipes


def expected(pipes, task, scene, style, scale=1.0):
    pipe = pipes[task]
    pipe.set_ip_adapter_scale(scale)
    src = Image.open(scene / "src.png").convert("RGB")
    kwargs = dict(prompt="a red ball", negative_prompt="blurry", image=src, strength=0.8, num_inference_steps=4,
                  guidance_scale=6, generator=torch.Generator("cpu").manual_seed(5),
                  ip_adapter_image=Image.open(scene / style).convert("RGB"))
    if task == "img2img":
        return pipe(**kwargs).images[0]
    mask = Image.open(scene / "mask.png").convert("L")
    return pipe.image_processor.apply_overlay(mask, src, pipe(**kwargs, mask_image=mask).images[0])


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_equals_diffusers_and_the_style_image_matters(tmp_path, adapter, scene, diffusers_pipes, task):
    extra = ["--mask", scene / "mask.png", "--mask-blur", "0"] if task == "inpaint" else []
    outs = {}
    for style in ("coffee.png", "rocket.jpg"):
        outs[style] = tmp_path / f"{style}.png"
        r = invoke("run", scene / "src.png", *ARGS, *extra, "--ip-adapter", adapter, "--style-image", scene / style, "-o", outs[style])
        assert r.exit_code == 0, r.stderr
        assert np.abs(pixels(outs[style]) - pixels(expected(diffusers_pipes, task, scene, style))).max() <= 1
    r = invoke("run", scene / "src.png", *ARGS, *extra, "-o", tmp_path / "plain.png")
    assert r.exit_code == 0, r.stderr
    a, b, plain = pixels(outs["coffee.png"]), pixels(outs["rocket.jpg"]), pixels(tmp_path / "plain.png")
    assert np.abs(a - b).max() > 8  # the style image reaches the UNet...
    assert np.abs(a - plain).max() > 8  # ...and the adapter changes the picture
    fields = parse_infotext(read_infotext(outs["rocket.jpg"]))
    assert fields["IP-Adapter"] == "ip-adapter_tiny" and fields["IP-Adapter image"] == "rocket.jpg"
    assert fields["IP-Adapter scale"] == "1" and len(fields["IP-Adapter hash"]) == 12
    if task == "inpaint":
        outside = np.asarray(Image.open(scene / "mask.png")) == 0
        assert (a[outside] == pixels(scene / "src.png")[outside]).all()


def test_scale_forms_and_scale_zero_equals_no_adapter(tmp_path, adapter, scene, diffusers_pipes):
    style = ["--style-image", scene / "coffee.png"]
    runs = {
        "half": ["--ip-adapter", f"{adapter}:0.5", *style],
        "half-flag": ["--ip-adapter", adapter, "--ip-adapter-scale", "0.5", *style],
        "zero": ["--ip-adapter", f"{adapter}:0", *style],
        "plain": [],
    }
    for name, flags in runs.items():
        r = invoke("run", scene / "src.png", *ARGS, *flags, "-o", tmp_path / f"{name}.png")
        assert r.exit_code == 0, (name, r.stderr)
    half = pixels(tmp_path / "half.png")
    assert (half == pixels(tmp_path / "half-flag.png")).all()
    assert np.abs(half - pixels(expected(diffusers_pipes, "img2img", scene, "coffee.png", scale=0.5))).max() <= 1
    assert np.abs(half - pixels(expected(diffusers_pipes, "img2img", scene, "coffee.png", scale=1.0))).max() > 2
    assert np.abs(pixels(tmp_path / "zero.png") - pixels(tmp_path / "plain.png")).max() <= 1
    assert "IP-Adapter scale: 0.5," in read_infotext(tmp_path / "half.png")
    assert "IP-Adapter scale: 0," in read_infotext(tmp_path / "zero.png")


def _styles_for(photos, folder, names):
    folder.mkdir()
    for i, name in enumerate(names):  # distinct pictures: crops of the bundled photos
        with Image.open(EXAMPLES / "coffee.png") as im:
            im.convert("RGB").crop((40 * i, 0, 40 * i + 200, 200)).save(folder / name)
    return folder


def test_style_folder_pairs_by_stem_and_a_missing_one_fails_alone(tmp_path, adapter, photos):
    styles = _styles_for(photos, tmp_path / "styles", ["chelsea.png", "coffee.jpg", "rocket.webp"])  # camera has none
    common = [*ARGS, "--size", "64x64", "--ip-adapter", adapter]
    r = invoke("run", photos, *common, "--style-image", styles, "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chelsea.png", "coffee.png", "rocket.png"]
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "camera.png: no style image for it in" in errors[0]
    assert "IP-Adapter image: rocket.webp" in read_infotext(tmp_path / "out" / "rocket.png")
    # the pair is the file of the same stem: the same as naming that file
    r = invoke("run", photos / "coffee.png", *common, "--style-image", styles / "coffee.jpg", "-o", tmp_path / "one.png")
    assert r.exit_code == 0, r.stderr
    assert (pixels(tmp_path / "one.png") == pixels(tmp_path / "out" / "coffee.png")).all()


@pytest.mark.parametrize("form", ["file", "folder"])
def test_batch_of_four_equals_single_runs(tmp_path, adapter, photos, form):
    """One style image for all (batches of 4) and a folder of distinct ones (a call per style image)."""
    if form == "file":
        style = _styles_for(photos, tmp_path / "styles", ["any.png"]) / "any.png"
    else:
        style = _styles_for(photos, tmp_path / "styles", [f"{p.stem}.png" for p in sorted(photos.iterdir())])
    common = [*ARGS, "--size", "64x64", "--ip-adapter", adapter, "--style-image", style]
    r = invoke("run", photos, *common, "--batch-size", "4", "-o", tmp_path / "batch")
    assert r.exit_code == 0, r.stderr
    # one style image: one call of 4; a folder of 4 distinct ones: a call per style image
    assert f"first batch of {4 if form == 'file' else 1} " in r.stderr
    for p in photos.iterdir():
        r = invoke("run", p, *common, "--batch-size", "1", "-o", tmp_path / "single")
        assert r.exit_code == 0, r.stderr
    outs = sorted((tmp_path / "batch").iterdir())
    assert len(outs) == 4
    for f in outs:
        assert np.abs(pixels(f) - pixels(tmp_path / "single" / f.name)).max() <= 1


def test_style_folder_batch_key(tmp_path, adapter, photos):
    """A folder splits batches by style image; one file keeps every input in one key."""
    from img2img_cli import modes
    from img2img_cli.config import RunConfig
    from img2img_cli.core import plan

    styles = _styles_for(photos, tmp_path / "styles", ["chelsea.png", "coffee.png"])
    shutil.copy(styles / "chelsea.png", styles / "camera.png")
    keys = {}
    for name, style in (("folder", styles), ("file", styles / "coffee.png")):
        config = RunConfig.from_values({"inputs": [photos], "model": "tiny", "output": tmp_path / "o", "device": "cpu",
                                        "ip_adapter": str(adapter), "style_image": style})
        mode = modes.for_config(config)
        assert mode.name == "img2img+ip-adapter"
        keys[name] = {w.input.path.name: w.mode_key for w in plan(config, mode)}
    f = keys["folder"]
    assert f["camera.png"] == (str(styles / "camera.png"),) and f["rocket.jpg"] == ("missing",)
    assert len(set(f.values())) == 4
    assert set(keys["file"].values()) == {()}


def test_usage_errors_before_loading(tmp_path, adapter, scene):
    from safetensors.torch import save_file

    src = scene / "src.png"
    style = ["--style-image", scene / "coffee.png"]
    no_encoder = build_tiny_ip_adapter(tmp_path / "bare", encoder=False)
    not_ipa = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(not_ipa))
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    cases = [
        (["--style-image", scene / "coffee.png"], "--style-image needs --ip-adapter"),
        (["--ip-adapter", adapter], "--ip-adapter needs --style-image FILE or DIR"),
        (["--ip-adapter", tmp_path / "none.safetensors", *style], f"--ip-adapter {tmp_path / 'none.safetensors'}: no such file"),
        (["--ip-adapter", not_ipa, *style], "not an IP-Adapter file (no image_proj.* and ip_adapter.* tensors)"),
        (["--ip-adapter", tmp_path / "junk.safetensors", *style], "junk.safetensors: not a .safetensors file"),
        (["--ip-adapter", adapter, "--style-image", tmp_path / "nope.png"], f"--style-image {tmp_path / 'nope.png'}: no such file or folder"),
        (["--ip-adapter", no_encoder, *style], f"--ip-adapter {no_encoder}: no image encoder: no {tmp_path / 'bare' / 'image_encoder' / 'config.json'}; pass --image-encoder DIR"),
        (["--ip-adapter", adapter, "--image-encoder", tmp_path, *style], f"--image-encoder {tmp_path}: no config.json in it"),
        (["--ip-adapter", f"{adapter}:3", *style], f"--ip-adapter {adapter}:3: the scale must be in [0, 2], got 3"),
        (["--ip-adapter", f"{adapter}:0.5", "--ip-adapter-scale", "0.7", *style], "and --ip-adapter-scale 0.7 contradict each other"),
        (["--ip-adapter", adapter, "--ip-adapter-scale", "-1", *style], "--ip-adapter-scale: the scale must be in [0, 2], got -1"),
        (["--ip-adapter", adapter, "--fuse-qkv", *style], "--fuse-qkv and --ip-adapter contradict each other"),
    ]
    for flags, message in cases:
        r = invoke("run", src, "--model", "tiny", *flags, "-o", tmp_path / "o.png")
        assert r.exit_code == 2, (flags, r.stderr)
        assert message in r.stderr, (message, r.stderr)
        assert not (tmp_path / "o.png").exists()


def test_an_adapter_or_encoder_that_does_not_fit_is_refused_naming_both(tmp_path, adapter, scene):
    other = build_tiny_ip_adapter(tmp_path / "other", cross_attention_dim=64)  # another base model's width
    r = invoke("run", scene / "src.png", "--model", "tiny", "--ip-adapter", other, "--style-image", scene / "coffee.png", "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert f"--ip-adapter {other}: made for a model with 64-wide text conditioning; --model tiny has 32-wide" in r.stderr
    narrow = save_image_encoder(tmp_path / "narrow", projection_dim=16)
    r = invoke("run", scene / "src.png", "--model", "tiny", "--ip-adapter", adapter, "--image-encoder", narrow,
               "--style-image", scene / "coffee.png", "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert f"--image-encoder {narrow}: gives 16-wide image features; --ip-adapter {adapter} expects 32" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_attach_reuses_the_loaded_pipeline_and_survives_controlnet_from_pipe(tmp_path, adapter, scene):
    """attach loads only the encoder and the adapter into the loaded pipeline (its own
    components stay), and a ControlNet add-on's from_pipe after it keeps them."""
    from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    from img2img_cli import modes
    from img2img_cli.config import RunConfig

    config = RunConfig.from_values({"inputs": [scene / "src.png"], "model": "tiny", "output": tmp_path, "device": "cpu",
                                    "ip_adapter": f"{adapter}:0.25", "style_image": scene / "coffee.png"})
    mode = modes.for_config(config)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY_DIR), local_files_only=True)
    before = dict(pipe.components)
    assert mode.attach(pipe, config) is pipe
    assert all(pipe.components[k] is v for k, v in before.items() if k not in ("image_encoder", "feature_extractor"))
    ip = [p for p in pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert len(ip) == 6 and {p.scale[0] for p in ip} == {0.25}  # the tiny UNet's cross-attention layers: 2 down, 1 mid, 3 up
    torch.manual_seed(0)
    cn = ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4, cross_attention_dim=32,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), conditioning_embedding_out_channels=(16, 32))
    cpipe = StableDiffusionControlNetImg2ImgPipeline.from_pipe(pipe, controlnet=cn)
    assert cpipe.image_encoder is pipe.image_encoder and cpipe.feature_extractor is pipe.feature_extractor
    assert cpipe.unet is pipe.unet and cpipe.unet.encoder_hid_proj is not None


def test_a_lora_and_the_adapter_both_act(tmp_path, adapter, scene):
    """LoRAs load after attach (peft layers beside the IP-Adapter processors): both change the picture."""
    from .helpers.tiny_lora import save_kohya_lora, tiny_sd_lora_weights

    loras = tmp_path / "loras"
    loras.mkdir()
    save_kohya_lora(loras / "ink.safetensors", tiny_sd_lora_weights())
    ipa = ["--ip-adapter", adapter, "--style-image", scene / "coffee.png"]
    runs = {"both": ["-p", "a cat <lora:ink:1>", *ipa], "adapter": ["-p", "a cat", *ipa], "lora": ["-p", "a cat <lora:ink:1>"]}
    out = {}
    for name, flags in runs.items():
        r = invoke("run", scene / "src.png", "--model", "tiny", "--steps", "4", "--seed", "2", "--lora-dir", loras, *flags,
                   "-o", tmp_path / f"{name}.png")
        assert r.exit_code == 0, (name, r.stderr)
        out[name] = pixels(tmp_path / f"{name}.png")
    assert np.abs(out["both"] - out["adapter"]).max() > 8 and np.abs(out["both"] - out["lora"]).max() > 8
    text = read_infotext(tmp_path / "both.png")
    assert "IP-Adapter: ip-adapter_tiny" in text and 'Lora hashes: "ink: ' in text


def test_sdxl_equals_diffusers_and_an_sd_adapter_is_refused(tmp_path, adapter, scene):
    """The tiny SDXL (tests/helpers/tiny_sdxl.py, text conditioning 96 wide) with an adapter made
    for its UNet equals diffusers' SDXL img2img with ip_adapter_image; the SD adapter is refused."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from .helpers.tiny_sdxl import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "tiny-sdxl")
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(model), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    xl = build_tiny_ip_adapter(tmp_path / "sdxl_models", name="ip-adapter_tinyxl", unet=pipe.unet)
    out = tmp_path / "out.png"
    r = invoke("run", scene / "src.png", "--model", model, "--steps", "4", "--seed", "5", "-s", "0.8", "-g", "6", "-p", "a red ball",
               "--ip-adapter", xl, "--style-image", scene / "coffee.png", "-o", out)
    assert r.exit_code == 0, r.stderr
    args = dict(prompt="a red ball", image=Image.open(scene / "src.png").convert("RGB"), strength=0.8, num_inference_steps=4,
                guidance_scale=6)
    plain = pipe(**args, generator=torch.Generator("cpu").manual_seed(5)).images[0]
    pipe.load_ip_adapter(str(xl.parent), subfolder="", weight_name=xl.name, local_files_only=True)
    theirs = pipe(**args, generator=torch.Generator("cpu").manual_seed(5),
                  ip_adapter_image=Image.open(scene / "coffee.png").convert("RGB")).images[0]
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    assert np.abs(pixels(out) - pixels(plain)).max() > 8
    r = invoke("run", scene / "src.png", "--model", model, "--ip-adapter", adapter, "--style-image", scene / "coffee.png",
               "-o", tmp_path / "sd.png")
    assert r.exit_code == 2
    assert f"--ip-adapter {adapter}: made for a model with 32-wide text conditioning; --model {model} has 96-wide" in r.stderr


def test_sd_upscale_tiles_share_the_style_image(tmp_path, adapter, scene):
    """With ``--upscale`` every tile is guided by the whole style image (``Mode.tile_extras``
    keeps it whole): the one-tile case equals an IP-Adapter run on the enlarged input."""
    small = tmp_path / "small.png"
    Image.open(scene / "src.png").convert("RGB").resize((32, 32), Image.LANCZOS).save(small)
    big = tmp_path / "big.png"
    Image.open(small).resize((64, 64), Image.LANCZOS).save(big)
    style = ["--ip-adapter", adapter, "--style-image", scene / "coffee.png"]
    r = invoke("run", small, *ARGS, "--upscale", 2, *style, "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.stderr
    assert invoke("run", big, *ARGS, *style, "-o", tmp_path / "b.png").exit_code == 0
    assert np.abs(pixels(tmp_path / "a.png") - pixels(tmp_path / "b.png")).max() <= 1
    r = invoke("run", small, *ARGS, "--upscale", 2, *style, "--tile-size", "48x48", "--tile-overlap", 16, "-o", tmp_path / "c.png")
    assert r.exit_code == 0, r.stderr  # 2x2 tiles
    assert pixels(tmp_path / "c.png").shape == (64, 64, 3)
    assert "Size: 48x48" in read_infotext(tmp_path / "c.png")

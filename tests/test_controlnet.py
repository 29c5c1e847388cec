"""ControlNet (``--controlnet``), end to end with tiny ControlNets (CPU), against diffusers'
ControlNet pipelines called directly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from img2img_cli.io import resize_image
from img2img_cli.metadata import read_infotext
from img2img_cli.models import TINY_DIR
from img2img_cli.modes import controlnet as cn

from .conftest import EXAMPLES, cat_face
from .helpers.cli import invoke, pixels
from .helpers.tiny_controlnet import build_tiny_controlnet, save_original_controlnet

STEPS, SEED, STRENGTH, CFG = 4, 5, 0.8, 6.0
ARGS = ["--model", "tiny", "--steps", STEPS, "--seed", SEED, "-s", STRENGTH, "-g", CFG, "-p", "a red ball", "-n", "blurry"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Two tiny ControlNets (seeds 0 and 1) as diffusers folders, the first also as a single
    file in lllyasviel's layout, and one for another base model (cross-attention 24)."""
    root = tmp_path_factory.mktemp("controlnets")
    a, b = build_tiny_controlnet(0), build_tiny_controlnet(1)
    a.save_pretrained(str(root / "cn-a"))
    b.save_pretrained(str(root / "cn-b"))
    save_original_controlnet(a, root / "control_tiny_canny.safetensors")
    build_tiny_controlnet(2, cross_attention_dim=24).save_pretrained(str(root / "cn-other"))
    return {"a": root / "cn-a", "b": root / "cn-b", "file": root / "control_tiny_canny.safetensors", "other": root / "cn-other"}


@pytest.fixture
def src(tmp_path):
    return cat_face(tmp_path / "src.png")


def diffusers_controlnet(paths, src, controls, *, mask=None, scale=1.0, **kwargs):
    """diffusers' StableDiffusionControlNet(Img2Img|Inpaint)Pipeline called directly."""
    from diffusers import (ControlNetModel, MultiControlNetModel, StableDiffusionControlNetImg2ImgPipeline,
                           StableDiffusionControlNetInpaintPipeline)

    loaded = [ControlNetModel.from_pretrained(str(p), local_files_only=True) for p in paths]
    net = loaded[0] if len(loaded) == 1 else MultiControlNetModel(loaded)
    cls = StableDiffusionControlNetInpaintPipeline if mask is not None else StableDiffusionControlNetImg2ImgPipeline
    pipe = cls.from_pretrained(str(TINY_DIR), controlnet=net, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(src).convert("RGB")
    extra = {"mask_image": mask, "height": 64, "width": 64} if mask is not None else {}
    out = pipe(prompt="a red ball", negative_prompt="blurry", image=image, control_image=controls[0] if len(controls) == 1 else controls,
               strength=STRENGTH, num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=scale,
               generator=torch.Generator("cpu").manual_seed(SEED), **extra, **kwargs).images[0]
    return pipe.image_processor.apply_overlay(mask, image, out) if mask is not None else out


def cv2_canny(path, low=100, high=200):
    import cv2

    edges = cv2.Canny(np.asarray(Image.open(path).convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=2))


def test_canny_controlnet_equals_diffusers_and_the_control_image_matters(tmp_path, nets, src):
    out = tmp_path / "out.png"
    r = invoke("run", src, *ARGS, "--controlnet", nets["a"], "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = diffusers_controlnet([nets["a"]], src, [cv2_canny(src)])
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    # the control image reaches the ControlNet: the input itself (tile) instead of its edges changes the picture
    tile = tmp_path / "tile.png"
    assert invoke("run", src, *ARGS, "--controlnet", nets["a"], "--control", "tile", "-o", tile).exit_code == 0
    assert np.abs(pixels(out) - pixels(tile)).mean() > 2
    # and the ControlNet itself matters: plain img2img differs
    plain = tmp_path / "plain.png"
    assert invoke("run", src, *ARGS, "-o", plain).exit_code == 0
    assert np.abs(pixels(out) - pixels(plain)).mean() > 2
    assert ('ControlNet 0: "Module: canny, Model: cn-a, Weight: 1.0, Resize Mode: Crop and Resize, Low Vram: False, '
            'Processor Res: 64, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, '
            'Pixel Perfect: True, Control Mode: Balanced"') in read_infotext(out)


def test_weight_start_end_guess_mode_and_thresholds_equal_diffusers(tmp_path, nets, src):
    out = tmp_path / "out.png"
    r = invoke("run", src, *ARGS, "--controlnet", f"{nets['a']}:0.6", "--control-start", "0.25", "--control-end", "0.75",
               "--guess-mode", "--canny-low", "50", "--canny-high", "120", "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = diffusers_controlnet([nets["a"]], src, [cv2_canny(src, 50, 120)], scale=0.6, control_guidance_start=0.25,
                                  control_guidance_end=0.75, guess_mode=True)
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    text = read_infotext(out)
    assert "Weight: 0.6" in text and "Threshold A: 50, Threshold B: 120, Guidance Start: 0.25, Guidance End: 0.75" in text
    assert "Control Mode: ControlNet is more important" in text


def test_canny_is_opencv_on_the_resized_input(tmp_path):
    """The control image is cv2.Canny of the input after it is sized to the output."""
    big = Image.open(EXAMPLES / "chelsea.png").convert("RGB")  # 451x300
    sized = resize_image(big, 96, 64, "crop")
    ours = np.asarray(cn.canny(sized, 100, 200))
    import cv2

    edges = cv2.Canny(np.asarray(sized), 100, 200)
    assert ours.shape == (64, 96, 3) and (ours == edges[:, :, None]).all()
    assert 0.02 < (edges > 0).mean() < 0.5  # real edges, not a blank map
    lines = np.asarray(cn.lineart(sized))
    assert lines.shape == (64, 96, 3) and lines.max() > 100 and (lines[..., 0] == lines[..., 2]).all()


def test_single_file_in_lllyasviel_layout_loads_like_the_folder(tmp_path, nets, src, monkeypatch):
    from diffusers import ControlNetModel

    keys = cn.safetensors_keys(nets["file"])
    assert "control_model.input_hint_block.0.weight" in keys and "control_model.zero_convs.0.0.weight" in keys
    assert "control_model.middle_block_out.0.weight" in keys and not any("controlnet_" in k for k in keys)
    # a real SD 1.5 file (cross-attention 768) picks the shipped SD 1.5 config; the tiny one (32) has none
    with pytest.raises(Exception, match="cross-attention width 32 has no shipped config"):
        cn.single_file_config(nets["file"], str(nets["file"]))
    monkeypatch.setitem(cn.CONFIG_BY_CROSS_ATTENTION, 32, nets["a"])
    loaded = cn.load_controlnet(cn.resolve_controlnet(str(nets["file"])), torch.float32)
    reference = ControlNetModel.from_pretrained(str(nets["a"]))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in reference.state_dict().items())
    out_file, out_folder = tmp_path / "file.png", tmp_path / "folder.png"
    assert invoke("run", src, *ARGS, "--controlnet", nets["file"], "-o", out_file).exit_code == 0
    assert invoke("run", src, *ARGS, "--controlnet", nets["a"], "-o", out_folder).exit_code == 0
    assert (pixels(out_file) == pixels(out_folder)).all()
    assert "Model: control_tiny_canny," in read_infotext(out_file)


def test_shipped_single_file_configs_are_picked_by_the_header(tmp_path):
    from safetensors.numpy import save_file

    def fake(name, tensors):
        path = tmp_path / name
        save_file({k: np.zeros(s, np.float16) for k, s in tensors.items()}, str(path))
        return path

    hint = {"control_model.input_hint_block.0.weight": (16, 3, 3, 3)}
    sd15 = fake("sd15.safetensors", {**hint, "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    sd2 = fake("sd2.safetensors", {**hint, "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)})
    xl = fake("xl.safetensors", {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "add_embedding.linear_1.weight": (1280, 2816),
                                 "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight": (640, 640)})
    xl_small = fake("xl-small.safetensors", {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "add_embedding.linear_1.weight": (1280, 2816)})
    lora = fake("lora.safetensors", {"lora_unet_x.alpha": (1,)})
    assert cn.single_file_config(sd15, "x").name == "controlnet-sd15"
    assert cn.single_file_config(sd2, "x").name == "controlnet-sd2"
    assert cn.single_file_config(xl, "x").name == "controlnet-sdxl"
    with pytest.raises(Exception, match="reduced .* SDXL ControlNet"):
        cn.single_file_config(xl_small, "x")
    with pytest.raises(Exception, match="not a ControlNet"):
        cn.single_file_config(lora, "x")
    from diffusers import ControlNetModel

    for name, width in (("controlnet-sd15", 768), ("controlnet-sd2", 1024), ("controlnet-sdxl", 2048)):
        config = ControlNetModel.load_config(str(cn.CONFIGS_DIR / name))
        assert config["cross_attention_dim"] == width


def test_two_controlnets_equal_diffusers_multicontrolnet(tmp_path, nets, src):
    out = tmp_path / "out.png"
    r = invoke("run", src, *ARGS, "--controlnet", f"{nets['a']}:0.8", "--controlnet", f"{nets['b']}:0.5",
               "--control", "canny", "--control", "tile", "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = diffusers_controlnet([nets["a"], nets["b"]], src, [cv2_canny(src), Image.open(src).convert("RGB")], scale=[0.8, 0.5])
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    one = diffusers_controlnet([nets["a"]], src, [cv2_canny(src)], scale=0.8)
    assert np.abs(pixels(out) - pixels(one)).mean() > 1  # the second ControlNet counts
    text = read_infotext(out)
    assert 'ControlNet 0: "Module: canny, Model: cn-a, Weight: 0.8' in text
    assert 'ControlNet 1: "Module: tile_resample, Model: cn-b, Weight: 0.5' in text and "Threshold A: -1" in text


def test_control_image_folder_pairs_by_stem_and_a_missing_one_fails_alone(tmp_path, nets, photos):
    maps = tmp_path / "maps"
    maps.mkdir()
    for i, name in enumerate(("chelsea", "coffee", "rocket")):  # camera has none
        m = Image.new("RGB", (80, 80), 0)
        ImageDraw.Draw(m).ellipse((10 + 5 * i, 10, 60, 70), outline=(255, 255, 255), width=3)
        m.save(maps / f"{name}.png")
    out = tmp_path / "out"
    r = invoke("run", photos, "--model", "tiny", "--steps", 2, "--seed", 1, "--size", "64x64", "--controlnet", nets["a"],
               "--control-image", maps, "-o", out)
    assert r.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "coffee.png", "rocket.png"]
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "camera.png: no control image for it in" in errors[0]
    assert 'Module: none, Model: cn-a' in read_infotext(out / "chelsea.png")
    # the map is what the ControlNet sees: the same input with another map differs
    (maps / "rocket.png").unlink()
    Image.open(maps / "chelsea.png").save(maps / "rocket.png")
    r = invoke("run", photos / "rocket.jpg", "--model", "tiny", "--steps", 2, "--seed", 1, "--size", "64x64",
               "--controlnet", nets["a"], "--control-image", maps, "-o", tmp_path / "again.png")
    assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(tmp_path / "again.png") - pixels(out / "rocket.png")).mean() > 1


def test_batch_of_four_equals_single_runs(tmp_path, nets, photos):
    common = ["--model", "tiny", "--steps", 3, "--seed", 3, "--size", "64x64", "--controlnet", nets["a"]]
    r = invoke("run", photos, *common, "--batch-size", "4", "-o", tmp_path / "batch")
    assert r.exit_code == 0, r.stderr
    for p in photos.iterdir():
        r = invoke("run", p, *common, "--batch-size", "1", "-o", tmp_path / "single")
        assert r.exit_code == 0, r.stderr
    files = sorted((tmp_path / "batch").iterdir())
    assert len(files) == 4
    for f in files:
        assert np.abs(pixels(f) - pixels(tmp_path / "single" / f.name)).max() <= 1


def test_with_a_mask_equals_controlnet_inpainting_with_the_overlay(tmp_path, nets, src):
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((16, 12, 48, 44), fill=255)
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    r = invoke("run", src, *ARGS, "--controlnet", nets["a"], "--mask", tmp_path / "mask.png", "--mask-blur", "0", "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = diffusers_controlnet([nets["a"]], src, [cv2_canny(src)], mask=mask)
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    inside = np.asarray(mask) > 0
    assert (pixels(out)[~inside] == pixels(src)[~inside]).all()
    plain = tmp_path / "plain.png"
    assert invoke("run", src, *ARGS, "--mask", tmp_path / "mask.png", "--mask-blur", "0", "-o", plain).exit_code == 0
    assert np.abs(pixels(out) - pixels(plain))[inside].mean() > 2
    assert "ControlNet 0:" in read_infotext(out)
    r = invoke("run", src, *ARGS, "--controlnet", nets["a"], "--mask", tmp_path / "mask.png", "--masked-content", "latent-noise", "-o", out)
    assert r.exit_code == 2 and "--masked-content latent-noise does not work with --controlnet" in r.stderr


def test_masked_content_fill_feeds_the_pipeline_not_the_preprocessor(tmp_path, nets, src):
    """--masked-content fill changes the pipeline's input only: canny runs on the unfilled source
    (sd-webui-controlnet preprocesses A1111's init image, which the fill does not touch), so the
    edges inside the mask still guide the repaint."""
    from img2img_cli.masks import fill

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((16, 12, 48, 44), fill=255)
    mask.save(tmp_path / "mask.png")
    filled = tmp_path / "filled.png"
    fill(Image.open(src).convert("RGB"), mask).save(filled)
    assert (pixels(cv2_canny(filled)) != pixels(cv2_canny(src))).mean() > 0.02  # the fill wipes the edges out
    out = tmp_path / "out.png"
    r = invoke("run", src, *ARGS, "--controlnet", nets["a"], "--mask", tmp_path / "mask.png", "--mask-blur", "0",
               "--masked-content", "fill", "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = diffusers_controlnet([nets["a"]], filled, [cv2_canny(src)], mask=mask)
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1


def test_refusals_name_the_flag_and_the_value(tmp_path, nets, src):
    r = invoke("run", src, *ARGS, "--controlnet", nets["other"], "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert f"--controlnet {nets['other']}: a ControlNet for (cross-attention 24, blocks 32/64) does not fit --model tiny, (cross-attention 32, blocks 32/64)" in r.stderr
    missing = tmp_path / "nope.safetensors"
    r = invoke("run", src, *ARGS, "--controlnet", missing, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and f"--controlnet {missing}: no such file or folder" in r.stderr
    r = invoke("run", src, *ARGS, "--controlnet", TINY_DIR, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "a whole pipeline folder" in r.stderr
    for repo in ("someone/not-cached-controlnet", "someone/controlnet-sdxl-1.0:0.5"):
        r = invoke("run", src, *ARGS, "--controlnet", repo, "-o", tmp_path / "o.png")
        assert r.exit_code == 2 and f"--controlnet {repo}: {repo.split(':')[0]} is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in r.stderr
    cases = [
        (["--control", "depth"], "--control depth: expected one of canny, tile, lineart, none"),
        (["--control", "canny", "--control", "tile"], "--control given 2 times for 1 --controlnet"),
        (["--control", "none"], "--control none needs --control-image"),
        (["--control-image", tmp_path / "x.png"], "--control-image " + str(tmp_path / "x.png") + ": no such file or folder"),
        (["--control-start", "0.8", "--control-end", "0.5"], "--control-start (0.8) must be below --control-end (0.5)"),
        (["--canny-low", "300"], "--canny-low must be in [1, 255], got 300"),
        (["--controlnet", f"{nets['b']}:nan"], "the weight must be a finite number"),
    ]
    for extra, message in cases:
        r = invoke("run", src, *ARGS, "--controlnet", nets["a"], *extra, "-o", tmp_path / "o.png")
        assert r.exit_code == 2 and message in r.stderr, (extra, r.stderr)
    r = invoke("run", src, *ARGS, "--guess-mode", "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "--guess-mode needs --controlnet" in r.stderr


def test_attach_reuses_the_loaded_components(nets, tiny_pipe):
    """from_pipe: the ControlNet pipeline shares the loaded UNet, VAE and text encoder."""
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    from img2img_cli.config import RunConfig

    config = RunConfig.from_values({"inputs": [EXAMPLES / "chelsea.png"], "model": "tiny", "controlnet": [str(nets["a"]), str(nets["b"])]})
    mode = cn.ControlNet()
    start = time.perf_counter()
    pipe = mode.attach(tiny_pipe, config)
    seconds = time.perf_counter() - start
    assert isinstance(pipe, StableDiffusionControlNetImg2ImgPipeline)
    assert pipe.unet is tiny_pipe.unet and pipe.vae is tiny_pipe.vae and pipe.text_encoder is tiny_pipe.text_encoder
    assert len(pipe.controlnet.nets) == 2 and pipe.controlnet.nets[0].dtype == tiny_pipe.unet.dtype
    assert seconds < 10


def test_sdxl_controlnet_equals_diffusers_and_an_sd_controlnet_is_refused(tmp_path, nets, src):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetImg2ImgPipeline, UNet2DConditionModel

    from .helpers.tiny_sdxl import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "tiny-sdxl")
    net = tmp_path / "cn-xl"
    build_tiny_controlnet(0, unet=UNet2DConditionModel.from_pretrained(str(model), subfolder="unet")).save_pretrained(str(net))
    out = tmp_path / "out.png"
    args = [a if a != "tiny" else model for a in ARGS]
    r = invoke("run", src, *args, "--controlnet", net, "-o", out)
    assert r.exit_code == 0, r.stderr
    pipe = StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(
        str(model), controlnet=ControlNetModel.from_pretrained(str(net)), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt="a red ball", negative_prompt="blurry", image=Image.open(src).convert("RGB"), control_image=cv2_canny(src),
                  strength=STRENGTH, num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=1.0,
                  generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    r = invoke("run", src, *args, "--controlnet", nets["a"], "-o", tmp_path / "x.png")
    assert r.exit_code == 2
    assert "a ControlNet for (cross-attention 32, blocks 32/64) does not fit --model" in r.stderr and "(cross-attention 96" in r.stderr


def test_a_cached_hub_controlnet_loads_offline(tmp_path, nets, src, monkeypatch):
    """A hub id in the Hugging Face cache loads with no network call (HF_HUB_OFFLINE is set)."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    repo = cache / "models--someone--tiny-controlnet-1.0"
    shutil.copytree(nets["a"], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    hub, folder = tmp_path / "hub.png", tmp_path / "folder.png"
    r = invoke("run", src, *ARGS, "--controlnet", "someone/tiny-controlnet-1.0:0.7", "-o", hub)
    assert r.exit_code == 0, r.stderr
    assert invoke("run", src, *ARGS, "--controlnet", f"{nets['a']}:0.7", "-o", folder).exit_code == 0
    assert (pixels(hub) == pixels(folder)).all()
    assert "Model: someone/tiny-controlnet-1.0, Weight: 0.7" in read_infotext(hub)


def test_only_masked_inpainting_crops_the_given_map_like_the_source(tmp_path, nets):
    """--inpaint-area masked: the map is stretched to the source, cropped to the masked region
    and fitted like the crop; the result is pasted back, the rest of the source untouched."""
    src = EXAMPLES / "chelsea.png"  # 451x300
    mask = Image.new("L", (451, 300), 0)
    ImageDraw.Draw(mask).rectangle((200, 100, 240, 140), fill=255)
    mask.save(tmp_path / "m.png")
    depth = Image.new("RGB", (225, 150), 0)
    ImageDraw.Draw(depth).rectangle((100, 50, 120, 70), fill=(255, 255, 255))
    depth.save(tmp_path / "depth.png")
    outs = {}
    for name, extra in (("map", ["--control-image", tmp_path / "depth.png"]), ("lineart", ["--control", "lineart"])):
        outs[name] = tmp_path / f"{name}.png"
        r = invoke("run", src, *ARGS, "--mask", tmp_path / "m.png", "--mask-blur", "0", "--inpaint-area", "masked", "--padding", "8",
                   "--controlnet", nets["a"], *extra, "-o", outs[name])
        assert r.exit_code == 0, r.stderr
    region = np.zeros((300, 451), bool)
    region[100:141, 200:241] = True
    for out in outs.values():
        assert (pixels(out)[~region] == pixels(src)[~region]).all()
    assert np.abs(pixels(outs["map"]) - pixels(outs["lineart"]))[region].mean() > 1
    assert "Module: lineart_standard" in read_infotext(outs["lineart"])

"""Inpainting, outpainting and the colour steps, end to end with tiny models (CPU)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from img2img_cli.io import resize_image
from img2img_cli.metadata import parse_infotext, read_infotext
from img2img_cli.models import TINY_DIR

from .conftest import EXAMPLES
from .helpers.cli import invoke, pixels
from .helpers.tiny_inpaint import build_tiny_inpaint

ARGS = ["--steps", "6", "--seed", "5", "-s", "0.8", "-g", "6", "-p", "a red ball", "-n", "blurry"]


@pytest.fixture(scope="module")
def nine_channel(tmp_path_factory):
    return build_tiny_inpaint(tmp_path_factory.mktemp("inpaint") / "tiny-inpaint")


@pytest.fixture
def scene(tmp_path):
    """A 64x64 source (a crop of chelsea.png) and a mask: a white disc on black."""
    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((150, 40, 278, 168)).resize((64, 64), Image.LANCZOS).save(src)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((20, 16, 44, 40), fill=255)
    mask.save(tmp_path / "mask.png")
    return src, tmp_path / "mask.png"


def expected(model_dir, src, mask):
    """diffusers' StableDiffusionInpaintPipeline called directly, then apply_overlay."""
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(model_dir), local_files_only=True, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image, mask_image = Image.open(src).convert("RGB"), Image.open(mask).convert("L")
    out = pipe(prompt="a red ball", negative_prompt="blurry", image=image, mask_image=mask_image, strength=0.8,
               num_inference_steps=6, guidance_scale=6, generator=torch.Generator("cpu").manual_seed(5)).images[0]
    return pipe.image_processor.apply_overlay(mask_image, image, out)


@pytest.mark.parametrize("channels", [4, 9])
def test_inpaint_equals_diffusers_with_overlay(tmp_path, scene, nine_channel, channels):
    src, mask = scene
    model = TINY_DIR if channels == 4 else nine_channel
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", model, *ARGS, "--mask", mask, "--mask-blur", "0", "-o", out)
    assert r.exit_code == 0, r.stderr
    theirs = pixels(expected(model, src, mask))
    ours = pixels(out)
    assert np.abs(ours - theirs).max() <= 1
    inside = np.asarray(Image.open(mask)) > 0
    assert np.abs(ours - pixels(src))[inside].mean() > 5  # the disc was repainted...
    assert (ours[~inside] == pixels(src)[~inside]).all()  # ...and nothing else
    fields = parse_infotext(read_infotext(out))
    assert "Mask blur" not in fields and "Masked content" not in fields


def test_default_blur_keeps_far_pixels_and_writes_a1111_keys(tmp_path, scene):
    src, _ = scene
    mask = tmp_path / "disc.png"
    disc = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(disc).ellipse((8, 8, 56, 56), fill=255)  # radius 24 around (32, 32)
    disc.save(mask)
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", "tiny", *ARGS, "--mask", mask, "--invert-mask", "--masked-content", "fill", "-o", out)
    assert r.exit_code == 0, r.stderr
    text = read_infotext(out)
    assert "Mask blur: 4, Mask mode: Inpaint not masked, Masked content: fill, Version:" in text
    # inverted: the disc is kept; the blur's kernel reaches int(2.5 * 4 + 0.5) = 10 px along
    # each axis (14.2 px diagonally), so a disc 15 px smaller is kept exactly
    keep = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(keep).ellipse((23, 23, 41, 41), fill=255)
    k = np.asarray(keep) > 0
    assert (pixels(out)[k] == pixels(src)[k]).all()
    assert np.abs(pixels(out) - pixels(src))[:8].mean() > 5  # the outside was repainted


def test_masked_content_modes_start_differently(tmp_path, scene):
    src, mask = scene
    outs = {}
    for content in ("original", "fill", "latent-noise", "latent-nothing"):
        outs[content] = tmp_path / f"{content}.png"
        r = invoke("run", src, "--model", "tiny", *ARGS, "--mask", mask, "--masked-content", content, "-o", outs[content])
        assert r.exit_code == 0, (content, r.stderr)
    inside = np.asarray(Image.open(mask)) > 128
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(pixels(outs[a]) - pixels(outs[b]))[inside].max() > 3, (a, b)
    assert "Masked content: latent noise" in read_infotext(outs["latent-noise"])
    assert "Masked content" not in read_infotext(outs["original"])


def test_only_masked_crops_and_pastes_back(tmp_path):
    src = EXAMPLES / "chelsea.png"  # 451x300
    mask = tmp_path / "m.png"
    m = Image.new("L", (451, 300), 0)
    ImageDraw.Draw(m).rectangle((200, 100, 240, 140), fill=255)
    m.save(mask)
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", "tiny", *ARGS, "--mask", mask, "--mask-blur", "0", "--inpaint-area", "masked",
               "--padding", "16", "-o", out)
    assert r.exit_code == 0, r.stderr
    ours, source = pixels(out), pixels(Image.open(src))
    assert ours.shape == source.shape  # pasted back at the source's size
    region = np.zeros(ours.shape[:2], bool)
    region[100:141, 200:241] = True
    assert np.abs(ours - source)[region].mean() > 5
    assert (ours[~region] == source[~region]).all()
    assert "Inpaint area: Only masked, Masked area padding: 16" in read_infotext(out)


def test_blank_mask_in_only_masked_falls_back_with_a_warning(tmp_path, scene):
    src, _ = scene
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 0).save(blank)
    r = invoke("run", src, "--model", "tiny", *ARGS, "--mask", blank, "--inpaint-area", "masked", "-o", tmp_path / "o.png")
    assert r.exit_code == 0, r.stderr
    assert "mask is blank" in r.stderr
    assert (pixels(tmp_path / "o.png") == pixels(src)).all()  # nothing to repaint


def test_mask_folder_pairs_by_stem_and_a_missing_mask_fails_alone(tmp_path, photos):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("chelsea", "coffee", "rocket"):  # camera has none
        Image.new("L", (32, 32), 255).save(masks / f"{name}.{'png' if name != 'rocket' else 'webp'}")
    out = tmp_path / "out"
    r = invoke("run", photos, "--model", "tiny", "--steps", "2", "--seed", "1", "--mask", masks, "-o", out)
    assert r.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "coffee.png", "rocket.png"]
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "camera.png: no mask for it in" in errors[0]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(masks / "chelsea.png", one / "any-name.png")
    r = invoke("run", photos, "--model", "tiny", "--steps", "2", "--seed", "1", "--mask", one, "-o", tmp_path / "all")
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "all").iterdir())) == 4


def test_batch_of_four_with_masks_equals_single_runs(tmp_path, photos):
    masks = tmp_path / "masks"
    masks.mkdir()
    for i, p in enumerate(sorted(photos.iterdir())):
        m = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(m).rectangle((4 * i, 8, 40 + 4 * i, 50), fill=255)
        m.save(masks / f"{p.stem}.png")
    common = ["--model", "tiny", "--steps", "4", "--seed", "3", "--size", "64x64", "--mask", masks]
    r = invoke("run", photos, *common, "--batch-size", "4", "-o", tmp_path / "batch")
    assert r.exit_code == 0, r.stderr
    for p in photos.iterdir():
        r = invoke("run", p, *common, "--batch-size", "1", "-o", tmp_path / "single")
        assert r.exit_code == 0, r.stderr
    for f in (tmp_path / "batch").iterdir():
        assert np.abs(pixels(f) - pixels(tmp_path / "single" / f.name)).max() <= 1


def test_outpaint_grows_the_canvas_and_keeps_the_source(tmp_path, scene):
    src, _ = scene
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", "tiny", *ARGS, "--outpaint", "16,0,16,8", "--size", "96x72", "-o", out)
    assert r.exit_code == 0, r.stderr
    ours = pixels(out)
    assert ours.shape == (72, 96, 3)
    # the source sits at (16, 0) on a 96x72 canvas; its pixels more than 2 x blur + kernel
    # from the new edges are its own
    inner = ours[0:72 - 8 - 20, 16 + 20:16 + 64 - 20]
    assert (inner == pixels(src)[0:44, 20:44]).all()
    assert np.abs(ours[:, :16].astype(float) - 128).mean() < 127  # the new area is painted, not empty
    assert 'Outpaint: "16,0,16,8"' in read_infotext(out) and "Masked content: fill" in read_infotext(out)
    r = invoke("run", src, "--model", "tiny", "--outpaint", "0", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "--outpaint: at least one side must grow" in r.stderr


def test_mode_options_need_their_mode(tmp_path, scene):
    src, mask = scene
    r = invoke("run", src, "--model", "tiny", "--mask-blur", "8", "-o", tmp_path)
    assert r.exit_code == 2 and "--mask-blur needs --mask or --outpaint" in r.stderr
    r = invoke("run", src, "--model", "tiny", "--mask", mask, "--outpaint", "8", "-o", tmp_path)
    assert r.exit_code == 2 and "contradict" in r.stderr


def test_colorize_keeps_the_source_lightness(tmp_path):
    from skimage.color import rgb2lab

    grey = tmp_path / "grey.png"
    Image.open(EXAMPLES / "coffee.png").convert("L").convert("RGB").resize((64, 48)).save(grey)
    out = tmp_path / "out.png"
    r = invoke("run", grey, "--model", "tiny", "--steps", "4", "--seed", "2", "--colorize", "-o", out)
    assert r.exit_code == 0, r.stderr
    lab_out = rgb2lab(np.asarray(Image.open(out)))
    lab_src = rgb2lab(np.asarray(Image.open(grey)))
    assert np.abs(lab_out[..., 0] - lab_src[..., 0]).max() < 0.5  # L* is the source's
    assert np.abs(lab_out[..., 1:]).mean() > 1  # colour came from the result
    assert "Colorize: True" in read_infotext(out)
    r = invoke("run", grey, "--model", "tiny", "--colorize", "--color-correction", "-o", tmp_path)
    assert r.exit_code == 2


def test_color_correction_moves_colour_towards_the_source(tmp_path):
    from skimage.color import rgb2lab

    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((64, 48)).save(src)
    plain, corrected = tmp_path / "plain.png", tmp_path / "corrected.png"
    common = ["--model", "tiny", "--steps", "6", "--seed", "4", "-s", "1"]
    assert invoke("run", src, *common, "-o", plain).exit_code == 0
    r = invoke("run", src, *common, "--color-correction", "-o", corrected)
    assert r.exit_code == 0, r.stderr
    lab = {k: rgb2lab(np.asarray(Image.open(p).convert("RGB"))) for k, p in (("src", src), ("plain", plain), ("cc", corrected))}

    def distance(k):
        return sum(abs(lab[k][..., c].mean() - lab["src"][..., c].mean()) + abs(lab[k][..., c].std() - lab["src"][..., c].std())
                   for c in (1, 2))

    assert distance("cc") < 0.5 * distance("plain")
    assert "Color correction: True" in read_infotext(corrected)


def test_sdxl_inpaint_equals_diffusers_with_overlay(tmp_path, scene):
    from diffusers import StableDiffusionXLInpaintPipeline

    from .helpers.tiny_sdxl import save_tiny_sdxl

    model = save_tiny_sdxl(tmp_path / "tiny-sdxl")
    src, mask = scene
    out = tmp_path / "out.png"
    r = invoke("run", src, "--model", model, *ARGS, "--mask", mask, "--mask-blur", "0", "-o", out)
    assert r.exit_code == 0, r.stderr
    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(str(model), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image, mask_image = Image.open(src).convert("RGB"), Image.open(mask).convert("L")
    theirs = pipe(prompt="a red ball", negative_prompt="blurry", image=image, mask_image=mask_image, strength=0.8,
                  num_inference_steps=6, guidance_scale=6, height=64, width=64,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0]
    theirs = pipe.image_processor.apply_overlay(mask_image, image, theirs)
    assert np.abs(pixels(out) - pixels(theirs)).max() <= 1
    assert np.abs(pixels(out) - pixels(src))[np.asarray(mask_image) > 0].mean() > 5


def test_single_file_inpainting_checkpoint_and_img2img_refusal(tmp_path, scene, nine_channel):
    from diffusers import StableDiffusionInpaintPipeline

    from .helpers.ldm_checkpoint import save_original_checkpoint

    src, mask = scene
    ckpt = tmp_path / "tiny-inpaint.safetensors"
    save_original_checkpoint(StableDiffusionInpaintPipeline.from_pretrained(str(nine_channel)), ckpt)
    a, b = tmp_path / "file.png", tmp_path / "folder.png"
    common = [*ARGS, "--mask", mask, "--mask-blur", "0"]
    r = invoke("run", src, "--model", ckpt, "--model-config", nine_channel, *common, "-o", a)
    assert r.exit_code == 0, r.stderr
    assert invoke("run", src, "--model", nine_channel, *common, "-o", b).exit_code == 0
    assert np.abs(pixels(a) - pixels(b)).max() <= 1
    r = invoke("run", src, "--model", nine_channel, "--steps", "2", "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and "an inpainting model (StableDiffusionInpaintPipeline) needs a mask" in r.stderr


def test_jobs_mask_column(tmp_path, photos):
    disc = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(disc).ellipse((16, 16, 48, 48), fill=255)
    disc.save(tmp_path / "disc.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "none.png")  # a mask that keeps everything
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input,mask\n{photos / 'coffee.png'},disc.png\n{photos / 'camera.png'},\n")
    common = ["--model", "tiny", "--steps", "3", "--seed", "1", "--size", "64x64", "--mask-blur", "0"]
    r = invoke("run", "--jobs", jobs, *common[:-2], "-o", tmp_path / "out")
    assert r.exit_code == 2 and "line 2: a mask needs inpainting: pass --mask too" in r.stderr
    r = invoke("run", "--jobs", jobs, *common, "--mask", tmp_path / "none.png", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    camera = pixels(resize_image(Image.open(photos / "camera.png").convert("RGB"), 64, 64, "crop"))
    assert (pixels(tmp_path / "out" / "camera.png") == camera).all()  # the --mask default: nothing repainted
    coffee = pixels(resize_image(Image.open(photos / "coffee.png").convert("RGB"), 64, 64, "crop"))
    changed = np.abs(pixels(tmp_path / "out" / "coffee.png") - coffee).max(axis=2) > 0
    assert changed[32, 32] and not changed[2, 2]  # its own mask: the disc

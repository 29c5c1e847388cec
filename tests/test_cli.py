"""The CLI end to end with the built-in tiny model (CPU, no network)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app

from .conftest import EXAMPLES, ROOT

runner = CliRunner()
FAST = ["--model", "tiny", "--steps", "4", "--seed", "7"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_single_image_end_to_end(tmp_path):
    out = tmp_path / "out.png"
    r = invoke("run", EXAMPLES / "chelsea.png", "-p", "a watercolor painting", *FAST, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    with Image.open(out) as im:
        # 451x300 keeps its aspect ratio with the longer side at tiny's native 64 px:
        # 64 x 42.6 -> rounded down to a multiple of 8 -> 64x40.
        assert im.size == (64, 40)
        assert im.mode == "RGB"
        text = im.info["parameters"]
    assert text.startswith("a watercolor painting\n")
    assert "Seed: 7" in text and "Steps: 4" in text and "Denoising strength: 0.75" in text
    assert "Size: 64x40" in text and "Model: tiny" in text and "Sampler: PNDM" in text
    assert "written" in r.stderr  # the summary goes to stderr


def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for out, seed in ((a, 1), (b, 1), (c, 2)):
        r = invoke("run", EXAMPLES / "rocket.jpg", "-p", "a rocket", "--model", "tiny", "--steps", "4", "--seed", seed, "-o", out)
        assert r.exit_code == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    assert np.abs(pixels(a) - pixels(c)).max() > 10


def test_equals_diffusers_pipeline_called_directly(tmp_path, tiny_pipe):
    """Default options give diffusers' StableDiffusionImg2ImgPipeline's pixels (within 1/255)."""
    import torch

    src = tmp_path / "src.png"
    with Image.open(EXAMPLES / "chelsea.png") as im:
        im.convert("RGB").crop((150, 40, 278, 168)).resize((64, 64), Image.Resampling.LANCZOS).save(src)
    out = tmp_path / "ours.png"
    args = ["-p", "a cat, oil painting", "-n", "blurry", "--strength", "0.6", "--steps", "10", "-g", "6.5", "--seed", "1234"]
    r = invoke("run", src, "--model", "tiny", *args, "-o", out)
    assert r.exit_code == 0, r.stderr

    with Image.open(src) as im:
        image = im.convert("RGB")
    expected = tiny_pipe(
        prompt="a cat, oil painting",
        negative_prompt="blurry",
        image=image,
        strength=0.6,
        num_inference_steps=10,
        guidance_scale=6.5,
        generator=torch.Generator("cpu").manual_seed(1234),
    ).images[0]
    ours = pixels(out)
    theirs = np.asarray(expected, dtype=np.int16)
    assert ours.shape == theirs.shape == (64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1
    # ...and the result is not just the input passed through
    assert np.abs(ours - pixels(src)).mean() > 5


def test_equals_diffusers_with_a1111_scheduler(tmp_path, tiny_pipe):
    import torch
    from diffusers import DPMSolverMultistepScheduler

    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((64, 48)).save(src)
    out = tmp_path / "ours.png"
    r = invoke("run", src, "--model", "tiny", "-p", "coffee", "--steps", "8", "--seed", "3", "--scheduler", "DPM++ 2M Karras", "-o", out)
    assert r.exit_code == 0, r.stderr
    pipe = tiny_pipe
    original = pipe.scheduler
    try:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config, use_karras_sigmas=True)
        expected = pipe(prompt="coffee", image=Image.open(src).convert("RGB"), strength=0.75, num_inference_steps=8,
                        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    finally:
        pipe.scheduler = original
    assert np.abs(pixels(out) - np.asarray(expected, dtype=np.int16)).max() <= 1
    assert "Sampler: DPM++ 2M Karras" in Image.open(out).info["parameters"]


@pytest.mark.parametrize(
    "extra, size",
    [
        ([], (64, 40)),
        (["--width", "48"], (48, 24)),  # 48 * 300/451 = 31.9, rounded down to a multiple of 8
        (["--size", "32x48"], (32, 48)),
        (["--size", "32x48", "--resize", "just"], (32, 48)),
        (["--size", "32x48", "--resize", "fill"], (32, 48)),
    ],
)
def test_output_sizes(tmp_path, extra, size):
    out = tmp_path / "o.png"
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, *extra, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).size == size


def test_exif_orientation_is_applied(tmp_path):
    src = tmp_path / "rotated.jpg"
    im = Image.open(EXAMPLES / "rocket.jpg").convert("RGB").resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: the picture is portrait
    im.save(src, exif=exif.tobytes())
    out = tmp_path / "o.png"
    r = invoke("run", src, *FAST, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).size == (40, 64)  # portrait, longer side 64


def test_info_round_trip(tmp_path):
    out = tmp_path / "o.webp"
    prompt = "a cat: sitting, \"quoted\"\nsecond line é"
    r = invoke("run", EXAMPLES / "chelsea.png", "-p", prompt, "-n", "ugly, blurry", *FAST, "-o", out)
    assert r.exit_code == 0, r.stderr
    r = invoke("info", out, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["prompt"] == prompt
    assert data["negative_prompt"] == "ugly, blurry"
    assert data["Seed"] == "7" and data["Steps"] == "4" and data["Size"] == "64x40"
    assert data["Denoising strength"] == "0.75" and data["CFG scale"] == "7.5" and data["Model"] == "tiny"
    r = invoke("info", out)
    assert "Negative prompt: ugly, blurry" in r.stdout


def test_folder_naming_no_overwrite_skip_existing(tmp_path, photos):
    outdir = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", outdir)
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in outdir.iterdir())
    assert names == ["camera.png", "chelsea.png", "coffee.png", "rocket.png"]
    assert r.stdout.splitlines() == [str(outdir / n) for n in names]
    before = (outdir / "chelsea.png").read_bytes()

    r = invoke("run", photos / "chelsea.png", *FAST, "--seed", "8", "-o", outdir)
    assert r.exit_code == 0
    assert r.stdout.strip() == str(outdir / "chelsea-0001.png")
    assert (outdir / "chelsea.png").read_bytes() == before

    r = invoke("run", photos, *FAST, "-o", outdir, "--skip-existing")
    assert r.exit_code == 0 and r.stdout == ""
    assert "0 written, 4 skipped" in r.stderr

    r = invoke("run", photos / "chelsea.png", *FAST[:-1], "9", "-o", outdir, "--overwrite")
    assert r.exit_code == 0
    assert r.stdout.strip() == str(outdir / "chelsea.png")
    assert (outdir / "chelsea.png").read_bytes() != before


def test_num_images_seeds_and_json(tmp_path):
    outdir = tmp_path / "out"
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, "-N", "2", "-o", outdir, "--json")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(row["output"]).name for row in rows] == ["chelsea-0.png", "chelsea-1.png"]
    assert [row["seed"] for row in rows] == [7, 8]
    assert all(row["input"] == str(EXAMPLES / "chelsea.png") and row["seconds"] >= 0 for row in rows)
    # image k of -N equals a single run with seed S+k
    single = tmp_path / "single.png"
    invoke("run", EXAMPLES / "chelsea.png", "--model", "tiny", "--steps", "4", "--seed", "8", "-o", single)
    assert np.abs(pixels(single) - pixels(outdir / "chelsea-1.png")).max() <= 1


def test_recursive_keeps_relative_paths(tmp_path, photos):
    (photos / "sub").mkdir()
    shutil.copy(EXAMPLES / "coffee.png", photos / "sub" / "cup.png")
    (photos / ".hidden.png").write_bytes((EXAMPLES / "coffee.png").read_bytes())
    (photos / "notes.txt").write_text("not an image")
    outdir = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", outdir, "-r", "--format", "jpg")
    assert r.exit_code == 0, r.stderr
    written = sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*.jpg"))
    assert written == ["camera.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg", "sub/cup.jpg"]


def test_folder_with_a_broken_file_exits_1_and_writes_the_others(tmp_path, photos):
    (photos / "broken.jpg").write_bytes(b"this is not a jpeg")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    outdir = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", outdir)
    assert r.exit_code == 1
    assert sorted(p.name for p in outdir.iterdir()) == ["camera.png", "chelsea.png", "coffee.png", "rocket.png"]
    errors = [line for line in r.stderr.splitlines() if "broken.jpg" in line]
    assert len(errors) == 1 and "not an image" in errors[0]
    assert "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_input_is_never_written(tmp_path, photos):
    src = photos / "chelsea.png"
    before = src.read_bytes()
    r = invoke("run", src, *FAST, "-o", src, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert src.read_bytes() == before
    assert r.stdout.strip() == str(photos / "chelsea-0001.png")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--strength", "0"], "--strength"),
        (["--strength", "1.5"], "--strength"),
        (["--steps", "0"], "--steps"),
        (["--steps", "abc"], "--steps': Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
        (["--width", "50"], "--width must be a multiple of 8, got 50"),
        (["--size", "big"], "--size"),
        (["--scheduler", "Euler z"], "--scheduler"),
        (["--model", "/no/such/model.safetensors"], "/no/such/model.safetensors"),
        (["--model", "nobody/not-a-cached-model"], "not in the Hugging Face cache"),
        (["--seed", "-3"], "--seed"),
        (["--device", "tpu"], "--device"),
        (["--style", "no-such-style"], "--style"),
        (["-N", "2", "-o", "x.png"], "-o"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, args, needle):
    r = invoke("run", EXAMPLES / "chelsea.png", "--model", "tiny", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_missing_input_and_no_input_exit_2(tmp_path):
    r = invoke("run", tmp_path / "nope.jpg", "--model", "tiny")
    assert r.exit_code == 2 and "nope.jpg: no such file" in r.stderr
    r = invoke("run", "--model", "tiny")
    assert r.exit_code == 2 and "no inputs" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("run", empty, "--model", "tiny")
    assert r.exit_code == 2 and "no input images" in r.stderr


def test_pickle_checkpoint_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    r = invoke("run", EXAMPLES / "chelsea.png", "--model", ckpt)
    assert r.exit_code == 2 and "safetensors" in r.stderr


def test_style_preset_wraps_prompt(tmp_path):
    out = tmp_path / "o.png"
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, "-p", "a cat", "--style", "watercolor", "-o", out)
    assert r.exit_code == 0, r.stderr
    text = Image.open(out).info["parameters"]
    assert text.startswith("watercolor painting of a cat, ")
    assert "Negative prompt: photo, photorealistic" in text


def test_schedulers_and_styles_commands():
    r = invoke("schedulers")
    assert r.exit_code == 0
    assert any(line.startswith("DPM++ 2M Karras") and "use_karras_sigmas=True" in line for line in r.stdout.splitlines())
    r = invoke("styles")
    names = {line.split(":")[0] for line in r.stdout.splitlines()}
    assert {"watercolor", "oil-painting", "pencil-sketch", "anime", "photorealistic", "night-scene", "winter-scene"} <= names


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from img2img_cli.cli import main\n"
        "sys.argv = ['img2img', 'run', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "--strength" in out.stdout
    assert "LOADED []" in out.stdout


def test_console_script_exit_codes(tmp_path):
    """Through a real process: 0 on success, 2 on a usage error, stdout only paths."""
    exe = Path(sys.executable).parent / "img2img"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "img2img_cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "o.jpg"
    p = subprocess.run([*cmd, "run", str(EXAMPLES / "coffee.png"), *FAST, "-o", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{out}\n"
    assert Image.open(out).format == "JPEG"
    p = subprocess.run([*cmd, "run", str(EXAMPLES / "coffee.png"), "--model", "tiny", "--strength", "2"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "--strength" in p.stderr and "Traceback" not in p.stderr

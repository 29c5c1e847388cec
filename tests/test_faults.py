"""Faults: full disk, non-finite decodes, out of memory, SIGKILL, unsafe checkpoints,
unwritable output; property tests for option parsing."""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import img2img_cli.metadata as metadata
import img2img_cli.pipeline as pipeline
from img2img_cli.cli import app
from img2img_cli.config import parse_colour as _parse_colour
from img2img_cli.config import MAX_STEPS, Job, parse_size
from img2img_cli.errors import UsageError
from img2img_cli.models import TINY_DIR

from .conftest import EXAMPLES, ROOT

runner = CliRunner()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
FAST = ["--model", "tiny", "--steps", "4", "--seed", "2"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_disk_full_stops_cleanly(tmp_path, photos, monkeypatch):
    real = metadata.write_image
    calls = {"n": 0}

    def flaky(image, path, fmt, infotext, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the disk fills up while the second image is written
            with open(path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(image, path, fmt, infotext, **kw)

    monkeypatch.setattr(metadata, "write_image", flaky)
    before = snapshot(photos)
    out = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", out, "--batch-size", "1")
    assert r.exit_code == 1
    assert "No space left on device" in r.stderr and "stopped" in r.stderr and "Traceback" not in r.stderr
    files = list(out.iterdir())
    assert [f.name for f in files] == ["camera.png"]  # the one complete image, nothing partial
    Image.open(files[0]).load()
    assert snapshot(photos) == before


def test_output_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, "-o", blocker / "out")
    assert r.exit_code == 1
    assert "cannot create output folder" in r.stderr and "Traceback" not in r.stderr


def test_non_finite_decode_is_decoded_again_in_fp32(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    real_decode = AutoencoderKL.decode

    def overflowing(self, z, *a, **kw):
        out = real_decode(self, z, *a, **kw)
        if self.dtype != torch.float32:  # what an fp16 VAE does on some SD 1.x / SDXL latents
            sample = out[0] if isinstance(out, tuple) else out.sample
            sample.fill_(float("nan"))
        return out

    monkeypatch.setattr(AutoencoderKL, "decode", overflowing)
    out = tmp_path / "o.png"
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, "--dtype", "bf16", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "NaN" in r.stderr and "fp32" in r.stderr
    arr = np.asarray(Image.open(out))
    assert arr.std() > 5  # a real picture, not a black frame


def test_out_of_memory_halves_the_batch(tmp_path, photos, monkeypatch):
    real = pipeline.generate
    sizes = []

    def tight(pipe, requests, **kw):
        sizes.append(len(requests))
        if len(requests) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pipe, requests, **kw)

    monkeypatch.setattr(pipeline, "generate", tight)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(photos / name, photos / f"copy-{name}")
    out = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", out, "--batch-size", "4")
    assert r.exit_code == 0, r.stderr
    assert len(list(out.iterdir())) == 6
    assert "out of memory with a batch of" in r.stderr
    assert 4 in sizes and 2 in sizes and sizes.count(1) >= 6  # 4 -> 2 -> 1, and later batches stay small


def test_out_of_memory_on_one_image_tries_tiling_then_fails_only_it(tmp_path, photos, monkeypatch):
    real = pipeline.generate

    def no_room_for_rocket(pipe, requests, **kw):
        if any(getattr(r.image, "_rocket", False) for r in requests):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(pipe, requests, **kw)

    # mark the rocket's prepared image through the reader: load -> resize -> tensor
    import img2img_cli.io as io
    import img2img_cli.runner as batch

    real_load, real_resize, real_tensor = batch.load_image, io.resize_image, pipeline.to_tensor

    def load(path, **kw):
        im = real_load(path, **kw)
        im._rocket = Path(path).name == "rocket.jpg"
        return im

    def resize(im, *a, **kw):
        out = real_resize(im, *a, **kw)
        out._rocket = getattr(im, "_rocket", False)
        return out

    def to_tensor(im, **kw):
        t = real_tensor(im, **kw)
        t._rocket = getattr(im, "_rocket", False)
        return t

    monkeypatch.setattr(batch, "load_image", load)
    monkeypatch.setattr(io, "resize_image", resize)  # the mode's prepare resizes
    monkeypatch.setattr(pipeline, "to_tensor", to_tensor)
    monkeypatch.setattr(pipeline, "generate", no_room_for_rocket)
    out = tmp_path / "out"
    r = invoke("run", photos, *FAST, "-o", out, "--batch-size", "1")
    assert r.exit_code == 1
    assert "VAE tiling" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["camera.png", "chelsea.png", "coffee.png"]
    assert "rocket.jpg: generation failed (OutOfMemoryError" in r.stderr


def test_sigkill_at_random_moments_leaves_only_complete_images(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(EXAMPLES / ("chelsea.png", "rocket.jpg", "coffee.png")[i % 3], src / f"p{i}{('.png', '.jpg', '.png')[i % 3]}")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "img2img_cli", "run", str(src), "--model", "tiny", "--steps", "16", "--strength", "1",
            "--seed", "4", "--batch-size", "1", "-o", str(out)]
    rng = random.Random(1234)
    for attempt in range(2):
        p = subprocess.Popen(args + (["--skip-existing"] if attempt else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
        p.stdout.readline()  # started writing
        time.sleep(rng.uniform(0.0, 1.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        for f in out.iterdir():
            if f.name.startswith("."):
                assert f.name.startswith(".img2img-") and f.name.endswith(".tmp")  # a temp file, never a real name
            else:
                Image.open(f).load()  # every visible file is a complete image
    p = subprocess.run(args + ["--skip-existing"], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == [f"p{i}.png" for i in range(6)]  # temp files of the killed runs removed


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    r = invoke("run", EXAMPLES / "chelsea.png", "--model", ckpt, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "safetensors" in r.stderr
    assert not marker.exists()

    # a diffusers folder whose UNet weights are a malicious pickle (.bin): torch.load(weights_only=True) refuses it
    folder = tmp_path / "evil-model"
    shutil.copytree(TINY_DIR, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with open(folder / "unet" / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_in.weight": _Evil(marker)}, f)
    r = invoke("run", EXAMPLES / "chelsea.png", "--model", folder, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "evil-model" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_background_colour(tmp_path):
    src = tmp_path / "clear.png"
    Image.new("RGBA", (64, 64), (10, 200, 10, 0)).save(src)
    assert _parse_colour("black") == (0, 0, 0) and _parse_colour("#ff8000") == (255, 128, 0) and _parse_colour("1, 2, 3") == (1, 2, 3)
    with pytest.raises(UsageError, match="--background"):
        _parse_colour("not-a-colour")
    from img2img_cli.io import load_image

    assert load_image(src, background=(0, 0, 255)).getpixel((5, 5)) == (0, 0, 255)
    r = invoke("run", src, *FAST, "--background", "nope", "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "--background" in r.stderr


# --- property tests ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100000), st.integers(1, 100000), st.sampled_from(["x", "X", "×", " x "]))
def test_size_parsing_round_trip(w, h, sep):
    assert parse_size(f"{w}{sep}{h}") == (w, h)


def _expected_size(text: str) -> tuple[int, int] | None:
    """``parse_size``'s documented grammar, independently: one ``x``/``X``/``×`` with decimal
    digits (Unicode category Nd, as ``int`` reads them) on each side, whitespace around."""
    seps = [i for i, c in enumerate(text) if c in "xX×"]
    if len(seps) != 1:
        return None
    left, right = text[: seps[0]].strip(), text[seps[0] + 1 :].strip()
    if not (left.isdecimal() and right.isdecimal()):
        return None
    return int(left), int(right)


number_like = st.one_of(
    st.text(st.sampled_from("0123456789"), min_size=1, max_size=6),
    st.text(st.sampled_from("0123456789٣５ a+-._"), max_size=6),
)
size_like = st.tuples(
    st.sampled_from(["", " ", "\t", "\u3000", "\n"]),
    number_like,
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["x", "X", "×", "x", "", "xx", "*", ","]),
    st.sampled_from(["", " "]),
    number_like,
    st.sampled_from(["", " ", "\n", "\r\n"]),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), size_like))
@example("512x768")
@example(" 64 X 32 \n")
@example("٣×٥")  # Arabic-Indic digits: int() reads them, and so does \d
@example("0x0")
@example("007x8")
@example("-8x8")
@example("8x8x8")
@example("8 8x8")
@example("")
def test_size_parsing_accepts_exactly_its_grammar(text):
    expected = _expected_size(text)
    try:
        w, h = parse_size(text)
    except UsageError as e:
        assert expected is None, (text, expected)
        assert str(e) == f"--size: expected WIDTHxHEIGHT such as 512x768, got {text!r}"
    else:
        assert (w, h) == expected


@settings(max_examples=300, deadline=None)
@example(strength=1.0, steps=1000, guidance=0.0, seed=None, width=None, n=1)  # just past MAX_STEPS
@example(strength=1.0, steps=999, guidance=0.0, seed=None, width=None, n=1)
@given(
    strength=st.floats(allow_nan=True, allow_infinity=True),
    steps=st.integers(-5, 2000),
    guidance=st.floats(allow_nan=True, allow_infinity=True),
    seed=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    width=st.one_of(st.none(), st.integers(-10, 10000)),
    n=st.integers(-2, 10),
)
def test_job_validation_accepts_exactly_the_documented_ranges(strength, steps, guidance, seed, width, n):
    job = Job(strength=strength, steps=steps, guidance_scale=guidance, seed=seed, width=width, num_images=n)
    valid = (
        0 < strength <= 1
        and 1 <= steps <= MAX_STEPS
        and int(steps * strength) >= 1
        and 0 <= guidance <= 100
        and (seed is None or 0 <= seed and seed + n - 1 <= 2**32 - 1)
        and n >= 1
        and (width is None or (8 <= width <= 8192 and width % 8 == 0))
    )
    try:
        job.validate()
    except UsageError as e:
        assert not valid, e
        assert str(e).startswith("--") and "\n" not in str(e)
    else:
        assert valid

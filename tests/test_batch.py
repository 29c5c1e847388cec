"""Folders at scale: batch invariance, seeds, reports, jobs files, sidecars, interrupts,
several processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app
from img2img_cli.metadata import parse_infotext, read_infotext

from .conftest import EXAMPLES, ROOT

runner = CliRunner()
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture
def mixed(tmp_path) -> Path:
    """7 photos of three output sizes (64x40, 64x64, 40x64) under one folder."""
    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", d / "a-chelsea.png")
    shutil.copy(EXAMPLES / "camera.png", d / "b-camera.png")
    shutil.copy(EXAMPLES / "coffee.png", d / "c-coffee.png")
    shutil.copy(EXAMPLES / "rocket.jpg", d / "d-rocket.jpg")
    Image.open(EXAMPLES / "coffee.png").rotate(90, expand=True).save(d / "e-coffee-tall.png")
    Image.open(EXAMPLES / "chelsea.png").crop((0, 0, 300, 300)).save(d / "f-chelsea-square.png")
    Image.open(EXAMPLES / "rocket.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "g-rocket-flipped.jpg")
    return d


def test_batch_invariance_each_image_equals_its_single_run(tmp_path, mixed):
    out = tmp_path / "batched"
    r = invoke("run", mixed, "--model", "tiny", "--steps", "8", "--seed", "5", "-p", "a painting", "--batch-size", "4", "-o", out)
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 7
    sizes = {Image.open(out / n).size for n in names}
    assert sizes == {(64, 40), (64, 64), (40, 64)}
    worst = 0
    for src in sorted(mixed.iterdir()):
        alone = tmp_path / "alone" / (src.stem + ".png")
        r = invoke("run", src, "--model", "tiny", "--steps", "8", "--seed", "5", "-p", "a painting", "--batch-size", "1", "-o", alone)
        assert r.exit_code == 0, r.stderr
        diff = np.abs(pixels(alone) - pixels(out / alone.name)).max()
        worst = max(worst, diff)
    assert worst <= 1  # within 1/255 per pixel


def test_random_seeds_are_recorded_and_reproduce(tmp_path, mixed):
    out = tmp_path / "out"
    r = invoke("run", mixed, "--model", "tiny", "--steps", "6", "-o", out, "--json", "--batch-size", "3")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    seeds = {row["seed"] for row in rows}
    assert len(seeds) == 7  # each image drew its own seed
    row = rows[4]
    assert parse_infotext(read_infotext(Path(row["output"])))["Seed"] == str(row["seed"])
    again = tmp_path / "again.png"
    r = invoke("run", row["input"], "--model", "tiny", "--steps", "6", "--seed", row["seed"], "-o", again)
    assert np.abs(pixels(again) - pixels(row["output"])).max() <= 1


def test_report_jsonl(tmp_path, mixed):
    (mixed / "h-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    report = tmp_path / "report.jsonl"
    out = tmp_path / "out"
    r = invoke("run", mixed, "--model", "tiny", "--steps", "4", "--seed", "1", "-o", out, "--report", report)
    assert r.exit_code == 1
    records = {Path(rec["input"]).name: rec for rec in map(json.loads, report.read_text().splitlines())}
    assert len(records) == 8
    assert records["h-broken.png"]["status"] == "failed" and "h-broken.png" in records["h-broken.png"]["error"]
    ok = records["a-chelsea.png"]
    assert ok["status"] == "ok" and ok["seed"] == 1 and ok["error"] is None and ok["seconds"] > 0
    assert ok["outputs"] == [str(out / "a-chelsea.png")]
    assert ok["parameters"]["strength"] == 0.75 and ok["parameters"]["steps"] == 4 and ok["parameters"]["size"] == "64x40"
    # resumed: the report gets "skipped" lines appended
    r = invoke("run", mixed, "--model", "tiny", "--steps", "4", "--seed", "1", "-o", out, "--report", report, "--skip-existing")
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(lines) == 16 and sum(rec["status"] == "skipped" for rec in lines) == 7


def test_jobs_csv_and_jsonl(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", d / "cat.png")
    shutil.copy(EXAMPLES / "rocket.jpg", d / "rocket.jpg")
    jobs = d / "jobs.csv"
    jobs.write_text(
        "input,prompt,negative_prompt,seed,strength,steps,guidance_scale,output\n"
        'cat.png,"a cat, watercolor",blurry,11,0.5,8,5,cats/watercolor-cat\n'
        "rocket.jpg,a rocket at night,,12,,,,\n"
    )
    out = tmp_path / "out"
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "--steps", "6", "-o", out)
    assert r.exit_code == 0, r.stderr
    cat = parse_infotext(read_infotext(out / "cats" / "watercolor-cat.png"))
    assert cat["prompt"] == "a cat, watercolor" and cat["negative_prompt"] == "blurry"
    assert (cat["Seed"], cat["Denoising strength"], cat["Steps"], cat["CFG scale"]) == ("11", "0.5", "8", "5")
    rocket = parse_infotext(read_infotext(out / "rocket.png"))
    assert (rocket["prompt"], rocket["Seed"], rocket["Steps"], rocket["Denoising strength"]) == ("a rocket at night", "12", "6", "0.75")

    jl = d / "jobs.jsonl"
    jl.write_text(json.dumps({"input": "cat.png", "prompt": "x", "seed": 3}) + "\n\n" + json.dumps({"input": "rocket.jpg", "seed": 4, "output": "r.webp"}) + "\n")
    out2 = tmp_path / "out2"
    r = invoke("run", "--jobs", jl, "--model", "tiny", "--steps", "4", "-o", out2)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out2.iterdir()) == ["cat.png", "r.webp"]


@pytest.mark.parametrize(
    "line, needle",
    [
        ("cat.png,x,,1,1.5,,,", "line 2: --strength must be in (0, 1], got 1.5"),
        ("cat.png,x,,abc,,,,", "line 2: seed 'abc' is not a number"),
        ("missing.png,x,,1,,,,", "line 2: input"),
        ("cat.png,x,,1,,,,../escape", "line 2: output '../escape'"),
        ("cat.png,x,,1,,,,/etc/escape", "line 2: output '/etc/escape'"),
    ],
)
def test_bad_jobs_rows_name_their_line_before_loading(tmp_path, line, needle):
    shutil.copy(EXAMPLES / "chelsea.png", tmp_path / "cat.png")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("input,prompt,negative_prompt,seed,strength,steps,guidance_scale,output\n" + line + "\n")
    r = invoke("run", "--jobs", jobs, "--model", "/nonexistent/model/never/loaded", "-o", tmp_path / "out")
    assert r.exit_code == 2
    assert needle in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()


def test_prompt_from_sidecar(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", d / "cat.png")
    shutil.copy(EXAMPLES / "rocket.jpg", d / "rocket.jpg")
    (d / "cat.txt").write_text("a sleepy cat, oil painting\n")
    out = tmp_path / "out"
    r = invoke("run", d, "--model", "tiny", "--steps", "4", "-p", "fallback", "--prompt-from-sidecar", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert parse_infotext(read_infotext(out / "cat.png"))["prompt"] == "a sleepy cat, oil painting"
    assert parse_infotext(read_infotext(out / "rocket.png"))["prompt"] == "fallback"


def _cli(*args):
    return [sys.executable, "-m", "img2img_cli", "run", *map(str, args)]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupt_then_resume_gives_the_uninterrupted_result(tmp_path, sig, code):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        shutil.copy(EXAMPLES / ("chelsea.png" if i % 2 else "rocket.jpg"), src / f"p{i:02d}{'.png' if i % 2 else '.jpg'}")
    out = tmp_path / "out"
    args = [src, "--model", "tiny", "--steps", "60", "--strength", "1", "--seed", "9", "--batch-size", "2", "-o", out]  # slow enough that the signal lands mid-run on a loaded machine
    p = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    first = p.stdout.readline()  # wait for the first written file
    assert first.strip(), p.stderr.read()
    p.send_signal(sig)
    rest, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    written = sorted(out.iterdir())
    assert 0 < len(written) < 8, "the run should have been stopped part-way"
    assert all(not f.name.startswith(".") for f in written)  # no temporary files left
    for f in written:
        Image.open(f).load()  # every file a complete image
    r = invoke("run", *args, "--skip-existing")  # the same command, resumed (in-process: faster)
    assert r.exit_code == 0, r.stderr
    assert f"{len(written)} skipped" in r.stderr
    assert len(list(out.iterdir())) == 8
    full = tmp_path / "full"
    args[args.index(out)] = full
    r = invoke("run", *args)  # an uninterrupted run
    assert r.exit_code == 0, r.stderr
    assert sorted(f.name for f in full.iterdir()) == sorted(f.name for f in out.iterdir())
    for f in full.iterdir():
        assert np.abs(pixels(f) - pixels(out / f.name)).max() <= 1


def test_two_processes_with_torchrun_match_one_process(tmp_path, mixed):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", "tiny", "--steps", "6", "--seed", "21", "--device", "cpu"]
    p = subprocess.run(_cli(mixed, *common, "-o", one), capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "img2img_cli", "run", str(mixed), *common, "-o", str(two)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(p.stdout.split()) == sorted(str(two / f.name) for f in one.iterdir())  # each file once
    assert p.stderr.count(" written, ") == 1  # one summary
    assert "7 written, 0 skipped, 0 failed" in p.stderr
    for f in one.iterdir():
        assert np.abs(pixels(f) - pixels(two / f.name)).max() <= 1

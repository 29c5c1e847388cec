"""What the tool leaves behind: file modes under the umask, the XMP provenance label beside
the infotext, the --steps limit, and a prompt stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli import provenance
from img2img_cli.cli import app
from img2img_cli.metadata import read_infotext, write_image

from .conftest import EXAMPLES, ROOT

FAST = ["--model", "tiny", "--steps", "2", "--seed", "1"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TRAINED_URI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_and_report_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    out, report = tmp_path / "out", tmp_path / "run.jsonl"
    r = invoke("run", EXAMPLES / "chelsea.png", EXAMPLES / "rocket.jpg", *FAST, "-o", out, "--report", report, "--format", "jpg")
    assert r.exit_code == 0, r.stderr
    for f in [*out.iterdir(), report]:
        assert oct(os.stat(f).st_mode & 0o777) == oct(mode), f
    umask(0o022)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert os.stat(plain).st_mode & 0o777 == 0o644  # what any other file gets under 022


def test_overwrite_keeps_the_existing_files_mode(tmp_path, umask):
    out = tmp_path / "out.png"
    assert invoke("run", EXAMPLES / "chelsea.png", *FAST, "-o", out).exit_code == 0
    os.chmod(out, 0o640)
    before = out.read_bytes()
    r = invoke("run", EXAMPLES / "chelsea.png", *FAST, "--seed", "2", "-o", out, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() != before  # really replaced
    assert os.stat(out).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_xmp_label_read_by_pillow_beside_the_infotext(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    r = invoke("run", EXAMPLES / "coffee.png", *FAST, "-p", "latte art", "-o", out)
    assert r.exit_code == 0, r.stderr
    with Image.open(out) as im:
        xmp = im.getxmp()  # Pillow's reader (defusedxml), not ours
    desc = xmp["xmpmeta"]["RDF"]["Description"]
    assert desc["DigitalSourceType"] == TRAINED_URI
    assert desc["CreatorTool"] == provenance.software_agent()
    text = read_infotext(out)
    assert text.startswith("latte art\n") and "Seed: 1" in text and "Steps: 2" in text
    # the same image without the label: the infotext is byte for byte the same text
    bare = tmp_path / f"bare.{fmt}"
    assert invoke("run", EXAMPLES / "coffee.png", *FAST, "-p", "latte art", "-o", bare, "--no-provenance").exit_code == 0
    assert read_infotext(bare) == text
    with Image.open(bare) as im:
        assert im.getxmp() == {}
    assert provenance.read_source_type(out) == "trainedAlgorithmicMedia"
    assert provenance.read_source_type(bare) is None


def test_xmp_packet_terms_and_info(tmp_path):
    with pytest.raises(ValueError):
        provenance.xmp_packet("photograph")
    path = tmp_path / "c.png"
    write_image(Image.new("RGB", (8, 8)), path, "png", "p\nSteps: 1, Sampler: X, Seed: 1",
                xmp=provenance.xmp_packet(provenance.COMPOSITE))
    assert provenance.read_source_type(path) == "compositeWithTrainedAlgorithmicMedia"
    r = invoke("info", path, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    r = invoke("info", path)
    assert "Digital source type: compositeWithTrainedAlgorithmicMedia" in r.stdout


def test_steps_over_the_limit_are_refused_before_loading(tmp_path):
    t0 = time.perf_counter()
    r = invoke("run", EXAMPLES / "chelsea.png", "--model", "tiny", "--steps", "100000000", "-o", tmp_path)
    assert r.exit_code == 2
    assert r.stderr.strip() == "img2img: error: --steps must be at most 999 (the schedulers have 1000 training timesteps), got 100000000"
    assert time.perf_counter() - t0 < 5
    assert invoke("run", EXAMPLES / "chelsea.png", *FAST, "--steps", "999", "-s", "0.002", "-o", tmp_path / "a.png").exit_code == 0
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input,steps\n{EXAMPLES / 'chelsea.png'},5000\n")
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "-o", tmp_path / "j")
    assert r.exit_code == 2 and "line 2: --steps must be at most 999" in r.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_scheduler_runs_at_the_steps_limit():
    """Each --scheduler name is made (LMS needs scipy) and its timesteps at --steps 999 stay
    inside the 1000 training timesteps where the scheduler indexes its tables with them."""
    from diffusers import PNDMScheduler

    from img2img_cli.config import MAX_STEPS
    from img2img_cli.models import TINY_DIR
    from img2img_cli.schedulers import SCHEDULERS, make_scheduler

    base = PNDMScheduler.from_pretrained(str(TINY_DIR), subfolder="scheduler")
    for name in SCHEDULERS:
        s = make_scheduler(name, base)
        s.set_timesteps(MAX_STEPS)
        if name in ("PNDM", "DDIM", "DDPM"):
            assert int(s.timesteps.max()) < 1000, name


def test_sigterm_mid_batch_stops_within_a_step(tmp_path):
    """A batch of 4 images of 999 steps each takes far longer than the wait; SIGTERM during its
    denoising ends the process promptly with 143 and no file, partial or whole."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"p{i}.png").write_bytes((EXAMPLES / "coffee.png").read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "img2img_cli", "run", str(src), "--model", "tiny", "--steps", "999", "--strength", "1",
           "--seed", "3", "--batch-size", "4", "--size", "64x64", "-o", str(out), "--report", str(tmp_path / "r.jsonl")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "r.jsonl").exists() and time.monotonic() < deadline:  # opened just before the model loads
        time.sleep(0.05)
    time.sleep(8)  # model loaded, denoising under way (the batch needs well over a minute)
    assert p.poll() is None, p.communicate()
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    delay = time.monotonic() - t0
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM, 4 inputs left" in err and "Traceback" not in err
    assert delay < 3, f"{delay:.1f} s from SIGTERM to exit"
    assert not out.exists() or list(out.iterdir()) == []

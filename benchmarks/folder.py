"""Folder throughput: the ``img2img`` command against a diffusers reference loop, side by side.

In one run, on the same photos, seeds and model:

- reference: ``benchmarks/reference_loop.py``, diffusers' ``StableDiffusionImg2ImgPipeline``
  called once per image with the model loaded once (a separate process);
- tool: ``img2img run DIR`` (a separate process: start-up, imports and model load included).

Prints images per second for both (whole command; and the reference's loop alone), their
ratios, each process's peak resident memory (``ru_maxrss`` from ``os.wait4``), and the
largest per-pixel difference between the two outputs of each photo.

    python benchmarks/folder.py [--images 32] [--steps 20] [--strength 0.75] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"]


def make_corpus(folder: Path, n: int) -> None:
    """``n`` distinct photos: crops (80-100 % of each side) and mirror images of the bundled ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        with Image.open(ROOT / "examples" / PHOTOS[i % len(PHOTOS)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x, y, x + cw, y + ch))
            if i % 2:
                im = ImageOps.mirror(im)
            im.save(folder / f"photo-{i:03d}.png")


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str, str]:
    """Run ``cmd`` as a child, wait with ``os.wait4`` for its own rusage.
    Returns (wall seconds, peak RSS MiB, stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if p.returncode:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, out, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = str(ROOT / "img2img_cli" / "models" / "tiny") if a.model == "tiny" else a.model
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "in", a.images)
        ref_cmd = [py, str(ROOT / "benchmarks" / "reference_loop.py"), str(tmp / "in"), str(tmp / "ref"),
                   "--model", model, "--steps", str(a.steps), "--strength", str(a.strength), "--seed", str(a.seed)]
        tool_cmd = [py, "-m", "img2img_cli", "run", str(tmp / "in"), "--model", a.model, "-p", "a watercolor painting",
                    "--steps", str(a.steps), "--strength", str(a.strength), "--seed", str(a.seed),
                    "--batch-size", a.batch_size, "-o", str(tmp / "tool"), "--quiet"]
        ref_wall, ref_rss, ref_out, _ = run_measured(ref_cmd, env)
        tool_wall, tool_rss, _, _ = run_measured(tool_cmd, env)
        ref = json.loads(ref_out.strip().splitlines()[-1])
        diffs = []
        for f in sorted((tmp / "ref").iterdir()):
            x = np.asarray(Image.open(f).convert("RGB"), dtype=np.int16)
            y = np.asarray(Image.open(tmp / "tool" / f.name).convert("RGB"), dtype=np.int16)
            diffs.append(int(np.abs(x - y).max()))
    n = a.images
    ref_ips, ref_loop_ips, tool_ips = n / ref_wall, n / ref["loop_s"], n / tool_wall
    print(f"folder benchmark: {n} photos, model {a.model}, {a.steps} steps, strength {a.strength}, "
          f"batch size {a.batch_size}, {os.cpu_count()} CPUs")
    print(f"  reference (diffusers loop), whole command: {ref_wall:7.2f} s  {ref_ips:6.3f} images/s  "
          f"peak RSS {ref_rss:7.1f} MiB  (imports {ref['import_s']:.2f} s, load {ref['load_s']:.2f} s, loop {ref['loop_s']:.2f} s)")
    print(f"  reference loop alone (model loaded):       {ref['loop_s']:7.2f} s  {ref_loop_ips:6.3f} images/s")
    print(f"  img2img run, whole command:                {tool_wall:7.2f} s  {tool_ips:6.3f} images/s  peak RSS {tool_rss:7.1f} MiB")
    print(f"  ratio tool / reference (whole commands):   {tool_ips / ref_ips:.2f}x")
    print(f"  ratio tool / reference loop alone:         {tool_ips / ref_loop_ips:.2f}x")
    print(f"  max per-pixel difference tool vs reference: {max(diffs)}/255 (over {len(diffs)} images)")


if __name__ == "__main__":
    main()

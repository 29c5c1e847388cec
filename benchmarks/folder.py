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
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from _common import PHOTOS, ROOT, bench_env, pixel_diff, run_or_exit


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
    env = bench_env()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "in", a.images)
        ref_cmd = [py, str(ROOT / "benchmarks" / "reference_loop.py"), str(tmp / "in"), str(tmp / "ref"),
                   "--model", model, "--steps", str(a.steps), "--strength", str(a.strength), "--seed", str(a.seed)]
        tool_cmd = [py, "-m", "img2img_cli", "run", str(tmp / "in"), "--model", a.model, "-p", "a watercolor painting",
                    "--steps", str(a.steps), "--strength", str(a.strength), "--seed", str(a.seed),
                    "--batch-size", a.batch_size, "-o", str(tmp / "tool"), "--quiet"]
        r_ref, r_tool = run_or_exit(ref_cmd, env), run_or_exit(tool_cmd, env)
        ref_wall, ref_rss, tool_wall, tool_rss = r_ref["wall"], r_ref["rss_mib"], r_tool["wall"], r_tool["rss_mib"]
        ref = json.loads(r_ref["out"].strip().splitlines()[-1])
        diffs = [pixel_diff(f, tmp / "tool" / f.name).max for f in sorted((tmp / "ref").iterdir())]
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

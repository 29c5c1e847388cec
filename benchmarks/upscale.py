"""SD upscale: tiles per second at ``--batch-size 1`` and at the automatic batch size, in one run.

One input (``examples/chelsea.png`` resized to 128x96), ``--upscale 4`` to 512x384 with the
built-in tiny model (native 64 px: 64x64 tiles overlapping by 16, 11 x 8 = 88 tiles), 8 steps at
strength 0.5 (4 denoising steps a tile), seed 1. Each contestant is one ``img2img_cli.core.run``
in this process after a warm-up run (so imports and the first call's set-up are not counted);
tiles/s is the tile count over the run's time after its model load (``Summary.seconds -
Summary.load_seconds``). The two outputs are compared pixel for pixel (batching may change a
value by a rounding step, as it does for whole images).

Threads: torch's default (``OMP_NUM_THREADS`` as the environment sets it, printed), as a
plain ``img2img run`` would have.

    python benchmarks/upscale.py [--steps N] [--factor F] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--factor", type=float, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="runs per contestant (the best is kept)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from img2img_cli.config import RunConfig
    from img2img_cli.core import run

    root = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="bench-upscale-"))
    src = tmp / "src.png"
    Image.open(root / "examples" / "chelsea.png").convert("RGB").resize((128, 96), Image.LANCZOS).save(src)

    def once(batch: str, out: Path, quiet=False):
        config = RunConfig.from_values({
            "inputs": [src], "model": "tiny", "device": "cpu", "steps": args.steps, "strength": 0.5, "seed": 1,
            "prompt": "a photo of a cat", "upscale": args.factor, "tile_overlap": 16, "batch_size": batch,
            "output": out, "overwrite": True,
        })
        counted = {}
        import img2img_cli.runner as runner

        real = runner.Runner._plan

        def plan(self, native):
            batches = real(self, native)
            counted["tiles"], counted["batch"] = sum(len(b) for b in batches), self.batch_size
            return batches

        runner.Runner._plan = plan
        try:
            t0 = time.perf_counter()
            summary = run(config)
            wall = time.perf_counter() - t0
        finally:
            runner.Runner._plan = real
        assert summary.exit_code == 0, summary.line()
        return counted["tiles"], counted["batch"], summary.seconds - summary.load_seconds, wall

    once("auto", tmp / "warm.png")  # imports and first-call set-up, not counted
    results = {}
    for batch in ("1", "auto"):
        best = None
        for _ in range(args.repeat):
            r = once(batch, tmp / f"b{batch}.png")
            best = r if best is None or r[2] < best[2] else best
        results[batch] = best
    a = np.asarray(Image.open(tmp / "b1.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp / "bauto.png"), dtype=np.int16)
    print(f"SD upscale x{args.factor:g} of 128x96 -> {a.shape[1]}x{a.shape[0]}, tiny model, {args.steps} steps at strength 0.5, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    for batch, (tiles, size, seconds, wall) in results.items():
        print(f"  --batch-size {batch:<4} (batch {size}): {tiles} tiles in {seconds:6.2f} s after load = {tiles / seconds:6.2f} tiles/s  (run {wall:.2f} s)")
    print(f"  speed-up auto/1: {results['1'][2] / results['auto'][2]:.2f}x; max pixel difference {int(np.abs(a - b).max())}, "
          f"{int((a != b).sum())} of {a.size} values differ")


if __name__ == "__main__":
    main()

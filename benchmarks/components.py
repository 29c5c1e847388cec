"""Where one img2img call spends its time: the text encoder, the UNet, the VAE encoder and
decoder, timed with forward hooks inside the tool's own ``generate``, for the plain path and
for one speed setting, in one process.

The model is the one ``benchmarks/cpu.py`` builds (SD 1.5 architecture, random weights, in
``~/.cache/img2img-cli/bench/sd15-random-seed0``; run that first) or any ``--model``. The
workload is ``benchmarks/cpu.py``'s: a real photo at 256x256, strength 0.75, 8 steps, guidance
7.5. Each setting is loaded, called once to warm up (this is where ``--compile`` compiles;
its time is printed), then ``--runs`` times; the two settings alternate call by call so that a
shared machine's drift hits both alike. Printed per setting: the median seconds per call of
the whole ``generate`` and of each component (per call of that component and per image), and
the largest pixel difference between the two settings' outputs.

    python benchmarks/components.py [--setting compile|channels_last|fuse_qkv] [--runs 3]
        [--size 256] [--steps 8] [--device cpu] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
from _common import pixel_diff  # noqa: E402
from cpu import CACHE  # noqa: E402  the model benchmarks/cpu.py builds


def timed(pipe, device: str) -> dict:
    """Forward hooks on the pipeline's components; returns ``{name: [seconds per call]}``,
    filled as the pipeline runs (CUDA is synchronised around each call)."""
    import torch

    times: dict = defaultdict(list)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for name, module in (("text encoder", pipe.text_encoder), ("unet", pipe.unet),
                         ("vae encoder", pipe.vae.encoder), ("vae decoder", pipe.vae.decoder)):
        start = {}

        def pre(*_a, start=start):
            sync()
            start["t"] = time.perf_counter()

        def post(*_a, name=name, start=start):
            sync()
            times[name].append(time.perf_counter() - start["t"])

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(CACHE))
    ap.add_argument("--setting", default="compile", choices=["compile", "channels_last", "fuse_qkv"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if not (Path(a.model) / "model_index.json").is_file():
        sys.exit(f"no model in {a.model}: run benchmarks/cpu.py once (it builds it)")
    import torch

    from img2img_cli.io import load_image, resize_image
    from img2img_cli.models import Speed, load_pipeline, resolve_model
    from img2img_cli.pipeline import Request, generate, to_tensor

    dtype = torch.float32 if a.device == "cpu" else torch.float16
    photo = resize_image(load_image(ROOT / "examples" / "chelsea.png"), a.size, a.size, "crop")
    source = to_tensor(photo)
    settings = {"plain": Speed(), a.setting: Speed(**{a.setting: True})}
    pipes, hooks, calls, outputs = {}, {}, defaultdict(list), {}
    for name, speed in settings.items():
        pipes[name] = load_pipeline(resolve_model(a.model), device=a.device, dtype=dtype, speed=speed)
        hooks[name] = timed(pipes[name], a.device)
        t0 = time.perf_counter()
        generate(pipes[name], [Request(source, "a watercolor painting", "", 0, 0.75, a.steps, 7.5)])
        print(f"{name}: first call (warm-up{', compiling' if name == 'compile' else ''}) "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        hooks[name].clear()
    for _ in range(a.runs):
        for name in settings:
            t0 = time.perf_counter()
            out = generate(pipes[name], [Request(source, "a watercolor painting", "", 0, 0.75, a.steps, 7.5)])
            calls[name].append(time.perf_counter() - t0)
            outputs[name] = out[0]
    print(f"{a.model}, {a.size}x{a.size}, {a.steps} steps, strength 0.75, {a.device} {str(dtype)[6:]}, "
          f"{torch.get_num_threads()} threads, median of {a.runs} alternating calls")
    for name in settings:
        parts = ", ".join(
            f"{part} {statistics.median(ts) :.2f} s x {len(ts) // a.runs}" for part, ts in hooks[name].items())
        print(f"  {name:>13}: generate {statistics.median(calls[name]):6.2f} s  ({parts})")
    base = statistics.median(calls["plain"])
    print(f"  speed-up of {a.setting}: {base / statistics.median(calls[a.setting]):.2f}x; "
          f"max pixel difference {pixel_diff(outputs['plain'], outputs[a.setting]).max}/255")


if __name__ == "__main__":
    main()

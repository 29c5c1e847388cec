"""CPU speed: diffusers' img2img pipeline with its CPU defaults against the tool's fastest
CPU settings, side by side in one run.

Model: the Stable Diffusion 1.5 architecture built from the configs shipped in the package
(``img2img_cli/models/configs/sd15``) with random weights (no download; the speed of random
weights is the speed of real ones), saved once to a cache folder. Workload: a real photo at
256x256, strength 0.75, 8 steps (6 denoising steps), guidance scale 7.5, seed 0.

Each contestant runs in its own process (peak resident memory from ``os.wait4``):

- reference: ``StableDiffusionImg2ImgPipeline.from_pretrained(folder)`` as diffusers sets it
  up on a CPU (fp32), called twice (cold, then warm);
- tool: ``img2img run photo --model folder --size 256x256 ... -N 2`` with the fastest CPU
  settings (``--compile``: torch.compile of the UNet and VAE with inductor's weight freezing,
  plus ``--dtype bf16`` where the CPU runs bf16 natively, i.e. AVX512-BF16 or AMX; on plain
  AVX2 bf16 is emulated and about 30x slower), the two images' pipeline times from ``--json``
  (the first one compiles: its excess over the second is the compile time); and the tool with
  ``--dtype fp32`` (no other setting) to show it gives diffusers' pixels.

Prints the warm pipeline wall time of each, the speed ratio, peak RSS, the difference between
the outputs, and the compute floor: FLOPs per image (UNet calls x one CFG-batch-2 UNet call +
VAE encode + decode, counted by ``benchmarks/gpu.py:count_flops`` on the meta device) against
this CPU's fp32 peak, measured in the same run with a 2048x2048 matmul (``measure_peak``).

    python benchmarks/cpu.py [--steps 8] [--size 256] [--tool-args "--dtype bf16 --channels-last"]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, bench_env, pixel_diff, run_or_exit

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "img2img-cli" / "bench" / "sd15-random-seed0"

BUILD = r'''
import json, sys, torch
from pathlib import Path
from diffusers import UNet2DConditionModel, AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTextConfig, CLIPTokenizer
cfg = Path(sys.argv[1]); out = sys.argv[2]
torch.manual_seed(0)
unet = UNet2DConditionModel.from_config(json.loads((cfg / "unet/config.json").read_text()))
vae = AutoencoderKL.from_config(json.loads((cfg / "vae/config.json").read_text()))
te = CLIPTextModel(CLIPTextConfig.from_dict(json.loads((cfg / "text_encoder/config.json").read_text())))
sched = PNDMScheduler.from_config(json.loads((cfg / "scheduler/scheduler_config.json").read_text()))
tok = CLIPTokenizer.from_pretrained(sys.argv[3])
StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                        feature_extractor=None, requires_safety_checker=False).save_pretrained(out)
'''

REFERENCE = r'''
import json, sys, time, torch
from PIL import Image
from diffusers import StableDiffusionImg2ImgPipeline
folder, src, out, steps, strength, guidance = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
image = Image.open(src).convert("RGB")
times = []
for _ in range(2):
    t0 = time.perf_counter()
    result = pipe(prompt="a watercolor painting", image=image, strength=strength, num_inference_steps=steps,
                  guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    times.append(time.perf_counter() - t0)
result.save(out)
print(json.dumps({"seconds": times, "threads": torch.get_num_threads()}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--tool-args", default=None,
                    help="the tool's settings (default: --compile, plus --dtype bf16 where the CPU has native "
                         "bf16: emulated bf16 is ~30x slower)")
    ap.add_argument("--no-fp32-check", action="store_true", help="skip the tool's --dtype fp32 run")
    a = ap.parse_args()
    if a.tool_args is None:
        from img2img_cli.models import cpu_has_native

        a.tool_args = "--compile --dtype bf16" if cpu_has_native("bf16") else "--compile"
    env = bench_env()
    py = sys.executable
    if not (CACHE / "model_index.json").exists():
        print(f"building SD 1.5 with random weights in {CACHE} (once)...", flush=True)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([py, "-c", BUILD, str(ROOT / "img2img_cli/models/configs/sd15"), str(CACHE),
                        str(ROOT / "img2img_cli/models/clip_tokenizer")], check=True, env=env)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "photo.png"
        from img2img_cli.io import load_image, resize_image

        resize_image(load_image(ROOT / "examples" / "chelsea.png"), a.size, a.size, "crop").save(src)
        common = ["--steps", str(a.steps), "--strength", str(a.strength), "-g", str(a.guidance)]
        r = run_or_exit(
            [py, "-c", REFERENCE, str(CACHE), str(src), str(tmp / "ref.png"), str(a.steps), str(a.strength), str(a.guidance)], env)
        ref_wall, ref_rss = r["wall"], r["rss_mib"]
        ref = json.loads(r["out"].strip().splitlines()[-1])

        def tool(args: list[str], out: Path):
            cmd = [py, "-m", "img2img_cli", "run", str(src), "--model", str(CACHE), "-p", "a watercolor painting",
                   "--size", f"{a.size}x{a.size}", *common, "--seed", "0", "-N", "2", "--batch-size", "1",
                   "--json", "--quiet", "-o", str(out), *args]
            r = run_or_exit(cmd, env)
            rows = [json.loads(line) for line in r["out"].splitlines() if line.startswith("{")]
            return r["wall"], r["rss_mib"], rows

        fast_wall, fast_rss, fast_rows = tool(shlex.split(a.tool_args), tmp / "fast")
        fp32 = None if a.no_fp32_check else tool(["--dtype", "fp32"], tmp / "fp32")
        # image 0 of -N 2 uses seed 0, as the reference does
        d_fast = pixel_diff(tmp / "ref.png", Path(fast_rows[0]["output"]))
        d_fp32 = pixel_diff(tmp / "ref.png", Path(fp32[2][0]["output"])) if fp32 else None
    ref_warm = ref["seconds"][1]
    fast_warm = fast_rows[1]["seconds"]
    import torch

    from gpu import count_flops, measure_peak, unet_calls

    f = count_flops(CACHE, a.size)
    calls = unet_calls(CACHE, a.steps, a.strength)
    per_image = calls * f["unet_b2"] + f["vae_encode"] + f["vae_decode"]
    peak, peak_what = measure_peak("cpu", torch.float32)

    print(f"CPU benchmark: SD 1.5 architecture (random weights), {a.size}x{a.size}, {a.steps} steps, "
          f"strength {a.strength}, guidance {a.guidance}, {os.cpu_count()} CPUs, torch threads {ref['threads']}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: "
          f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    print(f"  reference diffusers (fp32 CPU defaults): pipeline {ref_warm:6.2f} s warm ({ref['seconds'][0]:.2f} s cold), "
          f"whole process {ref_wall:6.1f} s, peak RSS {ref_rss:7.0f} MiB")
    print(f"  img2img {a.tool_args}: pipeline {fast_warm:6.2f} s warm ({fast_rows[0]['seconds']:.2f} s cold), "
          f"whole process {fast_wall:6.1f} s, peak RSS {fast_rss:7.0f} MiB")
    print(f"  speed-up (warm pipeline wall time): {ref_warm / fast_warm:.2f}x; the tool's first image "
          f"(compiling) took {fast_rows[0]['seconds'] - fast_warm:.1f} s more than its second")
    print(f"  compute: {per_image / 1e12:.3f} TFLOP per image ({calls} UNet calls x {f['unet_b2'] / 1e12:.3f} + VAE "
          f"encode {f['vae_encode'] / 1e12:.3f} + decode {f['vae_decode'] / 1e12:.3f}); fp32 peak "
          f"{peak / 1e9:.0f} GFLOP/s ({peak_what}): floor {per_image / peak:.2f} s per image")
    print(f"  utilisation of that peak: reference {per_image / ref_warm / peak:.0%}, tool {per_image / fast_warm / peak:.0%}; "
          f"2.5x the reference would be {ref_warm / 2.5:.2f} s, {per_image / (ref_warm / 2.5) / peak:.0%} of the fp32 peak")
    print(f"  output difference vs reference: max {d_fast.max}/255, mean {d_fast.mean:.2f}/255, PSNR {d_fast.psnr:.1f} dB")
    if fp32:
        print(f"  img2img --dtype fp32: pipeline {fp32[2][1]['seconds']:6.2f} s warm, peak RSS {fp32[1]:7.0f} MiB, "
              f"difference vs reference max {d_fp32.max}/255 (PSNR {d_fp32.psnr:.1f} dB)")


if __name__ == "__main__":
    main()

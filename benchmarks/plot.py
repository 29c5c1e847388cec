"""X/Y/Z plot: one ``img2img run --x ... --y ...`` command against the same cells as separate
``img2img run`` commands, side by side in one run.

One bundled photo (``examples/chelsea.png``), seed 1, the same model, steps, size and dtype
for every contestant; each contestant is whole commands (start-up, imports, model load
included), run as child processes one after the other (``_common.run_measured``):

- A, plot: ``img2img run chelsea.png --x "strength=0.5,0.65,0.8" --y "guidance=4,7,10"
  --save-cells -o DIR``, a 3x3 grid in one process (the model loaded once, each cell a run
  through the batch runner; the grid drawn at the end);
- B, separate: the same 9 cells as 9 ``img2img run chelsea.png -s S -g G`` commands, one after
  the other. Each saved cell of A (``chelsea-x<i>-y<j>.png``) is compared with B's image of the
  same strength and guidance, pixel for pixel (``_common.pixel_diff``);
- C, batching: a 3x3 plot ``--x "seed=1-3" --y "prompt-sr=cat,dog,fox"`` with
  ``--batch-size 3``: the 3 cells of a row share a batch key (same prompt, other seeds), so
  each row is one pipeline call; against the same 9 cells as 9 commands (``-p "a photo of a
  dog" --seed 2``...). Batched cells may differ from single ones by a rounding step (the
  batch's matmuls are not the single image's), which is printed as the max difference too.

Models: ``--model tiny`` (the built-in tiny model, its own size: seconds a command) or
``--model sd15``: the Stable Diffusion 1.5 architecture with random weights by
``benchmarks/cpu.py``'s recipe (``BUILD``), saved once to a temporary folder whose path is
passed as ``--model``; at ``--size 256x256`` and 8 steps by default, with ``--dtype bf16`` when
the CPU's flags (``/proc/cpuinfo``) have ``avx512_bf16`` (native bf16; emulated bf16 on plain
AVX2 is about 30x slower).

Prints wall seconds, images/s and peak RSS of each contestant, the ratios (separate / plot),
the max pixel difference of the cells, and the CPU (``lscpu`` model name, ``avx512_bf16``
yes/no) and the torch version.

On a machine shared with other jobs, torch's default of one thread per core can make small
models' steps many times slower (threads wait for a core another job holds): ``--threads N``
sets ``OMP_NUM_THREADS`` in every child's environment, alike for all contestants. ``--only ab``
or ``--only c`` runs half of it (SD 1.5 on 2 shared cores: about 4 minutes each half).

    python benchmarks/plot.py [--model tiny|sd15] [--steps N] [--size WxH] [--dtype auto|fp32|bf16]
        [--threads N] [--only ab|c]
    python benchmarks/plot.py --model tiny --threads 1      # about a minute on 2 shared cores
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, bench_env, pixel_diff, run_or_exit
from cpu import BUILD  # benchmarks/cpu.py's SD 1.5 recipe (random weights, seed 0)

PHOTO = ROOT / "examples" / "chelsea.png"
STRENGTHS = ["0.5", "0.65", "0.8"]
GUIDANCES = ["4", "7", "10"]
SEEDS = ["1", "2", "3"]
ANIMALS = ["cat", "dog", "fox"]
PROMPT = "a photo of a cat"
#: per model: steps, size (None: the model's own)
DEFAULTS = {"tiny": (20, None), "sd15": (8, "256x256")}


def cpu_description() -> tuple[str, bool]:
    """``lscpu``'s model name, and whether ``/proc/cpuinfo``'s flags list ``avx512_bf16``."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        name = " ".join(fields.get("Model name", "unknown").split())
    except (OSError, subprocess.CalledProcessError):
        name = "unknown (no lscpu)"
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return name, "avx512_bf16" in flags


def torch_version(env: dict) -> str:
    """torch's version, asked of a child (this launcher stays free of torch: see ``run_measured``)."""
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True, env=env)
    return r.stdout.strip() or "unknown"


def line(label: str, walls: list[float], rss: float, n: int) -> str:
    wall = sum(walls)
    each = f"  ({len(walls)} commands, {min(walls):.2f}-{max(walls):.2f} s each)" if len(walls) > 1 else ""
    return f"  {label:<34} {wall:8.2f} s  {n / wall:6.3f} images/s  peak RSS {rss:7.1f} MiB{each}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=sorted(DEFAULTS))
    ap.add_argument("--steps", type=int, help="--steps of every command (tiny: 20, sd15: 8)")
    ap.add_argument("--size", help="--size WxH of every command (tiny: the model's own, sd15: 256x256)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                    help="auto: bf16 for sd15 where /proc/cpuinfo has avx512_bf16, else the tool's default")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS of every child (default: torch's, one per core)")
    ap.add_argument("--only", choices=["ab", "c"], help="run only A and B, or only C (default: all)")
    a = ap.parse_args()
    steps, size = DEFAULTS[a.model]
    steps, size = a.steps or steps, a.size or size
    cpu_name, avx512_bf16 = cpu_description()
    dtype = a.dtype
    if dtype == "auto":
        dtype = "bf16" if a.model == "sd15" and avx512_bf16 else None
    env = bench_env(**({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}))
    py = sys.executable

    with tempfile.TemporaryDirectory(prefix="plot-bench-") as tmp:
        tmp = Path(tmp)
        notes = []
        if a.model == "tiny":
            model = "tiny"
        else:
            model = str(tmp / "sd15")
            t0 = time.perf_counter()
            subprocess.run([py, "-c", BUILD, str(ROOT / "img2img_cli/models/configs/sd15"), model,
                            str(ROOT / "img2img_cli/models/clip_tokenizer")], check=True, env=env)
            notes.append(f"SD 1.5 architecture built and saved in {time.perf_counter() - t0:.1f} s (not timed below)")
        common = ["--model", model, "--steps", str(steps), "--quiet",
                  *(["--size", size] if size else []), *(["--dtype", dtype] if dtype else [])]

        def run(*args: str) -> dict:
            return run_or_exit([py, "-m", "img2img_cli", "run", str(PHOTO), *common, *args], env)

        do_ab, do_c = a.only in (None, "ab"), a.only in (None, "c")
        # A: the 3x3 strength x guidance plot, one command
        if do_ab:
            plot_a = run("-p", PROMPT, "--seed", "1", "--x", f"strength={','.join(STRENGTHS)}",
                         "--y", f"guidance={','.join(GUIDANCES)}", "--save-cells", "-o", str(tmp / "a"))
            # B: the same cells, one command each
            sep_b, diffs_b = [], []
            for j, g in enumerate(GUIDANCES):
                for i, s in enumerate(STRENGTHS):
                    out = tmp / "b" / f"s{s}-g{g}.png"
                    sep_b.append(run("-p", PROMPT, "--seed", "1", "-s", s, "-g", g, "-o", str(out)))
                    diffs_b.append(pixel_diff(tmp / "a" / f"{PHOTO.stem}-x{i}-y{j}.png", out))
        if do_c:
            # C: seed x prompt-sr with batches of 3 (one pipeline call per prompt), against 9 commands
            plot_c = run("-p", PROMPT, "--x", f"seed={SEEDS[0]}-{SEEDS[-1]}", "--y", f"prompt-sr={','.join(ANIMALS)}",
                         "--batch-size", "3", "--save-cells", "-o", str(tmp / "c"))
            sep_c, diffs_c = [], []
            for j, animal in enumerate(ANIMALS):
                for i, seed in enumerate(SEEDS):
                    out = tmp / "d" / f"{animal}-{seed}.png"
                    sep_c.append(run("-p", PROMPT.replace("cat", animal), "--seed", seed, "-o", str(out)))
                    diffs_c.append(pixel_diff(tmp / "c" / f"{PHOTO.stem}-x{i}-y{j}.png", out))
        from PIL import Image

        with Image.open(tmp / ("a" if do_ab else "c") / f"{PHOTO.stem}-x0-y0.png") as im:
            cell = f"{im.width}x{im.height}"
    tv = torch_version(env)

    n = len(STRENGTHS) * len(GUIDANCES)
    print(f"plot benchmark: model {a.model}{' (random weights)' if a.model == 'sd15' else ''}, {PHOTO.name} "
          f"at {cell}, {steps} steps, seed 1, dtype {dtype or 'default (fp32 on CPU)'}, "
          f"threads {a.threads or 'torch default'}")
    print(f"  CPU: {cpu_name}, avx512_bf16: {'yes' if avx512_bf16 else 'no'}; torch {tv}")
    for note in notes:
        print(f"  {note}")
    if do_ab:
        print("A/B: strength=0.5,0.65,0.8 x guidance=4,7,10 (9 cells)")
        print(line("A plot, one command:", [plot_a["wall"]], plot_a["rss_mib"], n))
        print(line("B separate commands:", [r["wall"] for r in sep_b], max(r["rss_mib"] for r in sep_b), n))
        print(f"  ratio B / A (wall): {sum(r['wall'] for r in sep_b) / plot_a['wall']:.2f}x")
        print(f"  max per-pixel difference A cell vs B: {max(d.max for d in diffs_b)}/255 (over {n} cells)")
    if do_c:
        print("C: seed=1-3 x prompt-sr=cat,dog,fox, --batch-size 3 (9 cells, 3 pipeline calls)")
        print(line("C plot, one command:", [plot_c["wall"]], plot_c["rss_mib"], n))
        print(line("C cells as separate commands:", [r["wall"] for r in sep_c], max(r["rss_mib"] for r in sep_c), n))
        print(f"  ratio separate / C plot (wall): {sum(r['wall'] for r in sep_c) / plot_c['wall']:.2f}x")
        md = max(diffs_c, key=lambda d: d.max)
        print(f"  max per-pixel difference C cell vs separate: {md.max}/255 (over {n} cells; "
              f"mean of that cell {md.mean:.2f}/255, PSNR {md.psnr:.1f} dB)")


if __name__ == "__main__":
    main()

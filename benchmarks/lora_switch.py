"""What switching LoRA sets between batches costs in the tool, against reloading the model,
side by side in one run (one process).

Model: the Stable Diffusion 1.5 architecture built from the configs shipped in the package
(``img2img_cli/models/configs/sd15``) with random weights, by ``benchmarks/cpu.py``'s recipe,
saved to a temporary folder (``--model sd15``, the default); or the built-in tiny model
(``--model tiny``, seconds). Loaded with the tool's ``load_pipeline``, fp32 on the CPU.

Two LoRA files made for that model (``A`` and ``B``, seeds 1 and 2; rank 16 for SD 1.5, 4 for
tiny), in kohya's layout, UNet and text encoder, with the test helpers
(``tests/helpers/tiny_lora.py``: ``_lora_weights`` on fresh UNet and text-encoder copies built
from the model's configs, ``save_kohya_lora``), written to the temporary folder. The copies'
own weights are left uninitialised (only the LoRA weights peft adds to them are kept), so
making the files takes a second, not a random init of a second UNet.

Contestants, each timed with ``time.perf_counter`` (median, min, max of the repeats):

- (a) switch: ``img2img_cli.text.lora.LoraSet(pipe).apply(...)``, what the tool does between
  two batches whose prompts name other LoRAs, cycling A -> B -> A -> () -> A (``()``: no LoRA)
  ``--switch-repeats`` times, each of the 4 switches of a cycle timed on its own. The first
  ``apply`` of each file (inspect, hash, ``load_lora_weights``, activate) is not a switch: it
  is reported apart as "first load of a LoRA file";
- (b) reload: ``load_pipeline`` of the saved pipeline, what a tool that cannot switch
  adapters pays per switch at least (it then loads the new LoRA too). diffusers maps the
  ``.safetensors`` files into memory and reads the weights only when they are first used, so
  ``load_pipeline`` returns before most of the model is read: the reload is timed as
  ``load_pipeline`` plus its weights' first read, i.e. a pass over every parameter and buffer
  of every component (``sum``) less the same pass done again (the compute of ``sum``). The
  files were just written or read, so they come from the page cache; ``--cold`` evicts them
  first (``posix_fadvise(DONTNEED)`` on the saved copy's files alone) for a reload from disk;
- (c) for reference, one UNet forward (batch 1, ``--size`` px: 512 for SD 1.5, 64 for tiny,
  no LoRA loaded yet): one denoising step without classifier-free guidance. On a machine
  shared with other jobs, torch's default of one thread per core can make small models' steps
  many times slower (threads wait for each other): ``--threads 1`` shows the difference.

Prints a table, the ratio reload / switch, a switch as a fraction of a UNet step, the CPU
(``lscpu`` model name, whether its flags have ``avx512_bf16``) and the torch version.

    python benchmarks/lora_switch.py [--model sd15|tiny] [--switch-repeats N] [--reload-repeats N]
        [--unet-repeats N] [--size PX] [--threads N] [--cold]
    python benchmarks/lora_switch.py --model tiny     # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
from _common import bench_env  # noqa: E402
from cpu import BUILD  # noqa: E402  benchmarks/cpu.py's SD 1.5 recipe (random weights, seed 0)

#: per model: LoRA rank, switch cycles, reloads, UNet forwards
DEFAULTS = {"sd15": (16, 5, 2, 2), "tiny": (4, 20, 5, 10)}


def cpu_description() -> tuple[str, bool]:
    """``lscpu``'s model name and whether its flags list ``avx512_bf16``."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)", False
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = " ".join(fields.get("Model name", "unknown").split())
    return name, "avx512_bf16" in fields.get("Flags", "").split()


def fresh_copies(folder: Path) -> dict:
    """A UNet and a text encoder built from ``folder``'s configs, their weights uninitialised
    (made on the meta device, then given empty CPU storage): ``_lora_weights`` only needs
    their layers' shapes."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((folder / "unet" / "config.json").read_text()))
        te = CLIPTextModel(CLIPTextConfig.from_dict(json.loads((folder / "text_encoder" / "config.json").read_text())))
    return {"unet": unet.to_empty(device="cpu"), "text_encoder": te.to_empty(device="cpu")}


def make_loras(folder: Path, rank: int, out: Path) -> dict[str, Path]:
    """LoRA files ``A`` (seed 1) and ``B`` (seed 2) of ``rank`` for the model whose configs are
    in ``folder``, in kohya's layout, written under ``out``."""
    from tests.helpers import tiny_lora

    tiny_lora.RANK = rank  # _lora_weights and save_kohya_lora read it when called
    files = {}
    for name, seed in (("A", 1), ("B", 2)):
        with warnings.catch_warnings():  # peft: no tokenizer config for the text encoder's name
            warnings.simplefilter("ignore", UserWarning)
            weights = tiny_lora._lora_weights(fresh_copies(folder), seed)
        files[name] = tiny_lora.save_kohya_lora(out / f"lora_{name}.safetensors", weights)
    return files


def read_weights(pipe) -> float:
    """Seconds to read every parameter and buffer of the pipeline's modules once (``sum``)."""
    import itertools

    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                for t in itertools.chain(module.parameters(), module.buffers()):
                    t.sum()
    return time.perf_counter() - t0


def evict(folder: Path) -> None:
    """Drop ``folder``'s files from the page cache (written back first): the next read is from disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def stats(xs: list[float]) -> tuple[float, float, float, int]:
    return statistics.median(xs), min(xs), max(xs), len(xs)


def steps_of(x: float) -> str:
    return f"{100 * x:.2g}% of a UNet step" if x < 1 else f"{x:.1f} UNet steps"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sd15", choices=sorted(DEFAULTS))
    ap.add_argument("--switch-repeats", type=int, help="A -> B -> A -> () -> A cycles (sd15: 5, tiny: 20)")
    ap.add_argument("--reload-repeats", type=int, help="pipeline reloads (sd15: 2, tiny: 5)")
    ap.add_argument("--unet-repeats", type=int, help="UNet forwards (sd15: 2, tiny: 10)")
    ap.add_argument("--size", type=int, help="image side of the UNet forward, px (default: the model's, 512 / 64)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's, one per core)")
    ap.add_argument("--cold", action="store_true", help="evict the saved model from the page cache before each reload")
    a = ap.parse_args()
    rank, switch_n, reload_n, unet_n = DEFAULTS[a.model]
    switch_n = a.switch_repeats or switch_n
    reload_n = a.reload_repeats or reload_n
    unet_n = a.unet_repeats or unet_n

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from img2img_cli.models import CONFIGS_DIR, TINY_DIR, load_pipeline, native_resolution, resolve_model
    from img2img_cli.text.lora import LoraSet

    cpu_name, avx512_bf16 = cpu_description()
    with tempfile.TemporaryDirectory(prefix="lora-switch-") as tmp:
        tmp = Path(tmp)
        notes = []
        if a.model == "tiny":
            folder, configs, label = str(TINY_DIR), TINY_DIR, "tiny model (built in)"
        else:
            folder, configs, label = str(tmp / "sd15"), CONFIGS_DIR / "sd15", "SD 1.5 architecture (random weights)"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", BUILD, str(configs), folder,
                            str(ROOT / "img2img_cli" / "models" / "clip_tokenizer")], check=True, env=bench_env())
            notes.append(f"built and saved in {time.perf_counter() - t0:.1f} s (a child process)")
        t0 = time.perf_counter()
        files = make_loras(configs, rank, tmp)
        size_mib = sum(f.stat().st_size for f in files.values()) / 2 / 2**20
        notes.append(f"2 LoRA files of {size_mib:.1f} MiB made in {time.perf_counter() - t0:.1f} s")

        # (b) reload: each load_pipeline from the folder; the last pipeline is kept for (c) and (a)
        reloads, loads, first_reads, pipe = [], [], [], None
        for _ in range(reload_n):
            pipe = None  # free the previous one first, as a tool reloading would
            if a.cold:
                evict(Path(folder))
            t0 = time.perf_counter()
            pipe = load_pipeline(resolve_model(folder), device="cpu", dtype=torch.float32 if a.model == "sd15" else None)
            loads.append(time.perf_counter() - t0)
            first_reads.append(max(0.0, read_weights(pipe) - read_weights(pipe)))  # noise can make it < 0
            reloads.append(loads[-1] + first_reads[-1])

        # (c) one UNet forward, batch 1, before any LoRA is loaded
        size = a.size or native_resolution(pipe)
        cfg = pipe.unet.config
        latents = torch.randn(1, cfg.in_channels, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor,
                              generator=torch.Generator().manual_seed(0), dtype=pipe.unet.dtype)
        context = torch.randn(1, pipe.tokenizer.model_max_length, cfg.cross_attention_dim,
                              generator=torch.Generator().manual_seed(1), dtype=pipe.unet.dtype)
        timestep = torch.tensor(500)
        steps = []
        with torch.inference_mode():
            for _ in range(unet_n):
                t0 = time.perf_counter()
                pipe.unet(latents, timestep, encoder_hidden_states=context)
                steps.append(time.perf_counter() - t0)

        # (a) first loads, then switches
        loras = LoraSet(pipe)
        sets = {"A": ((files["A"], 1.0, 1.0),), "B": ((files["B"], 1.0, 1.0),), "()": ()}
        first = []
        for name in ("A", "B"):
            t0 = time.perf_counter()
            loras.apply(sets[name])
            first.append(time.perf_counter() - t0)
        loras.apply(sets["A"])  # the cycle starts from A
        switches: dict[str, list[float]] = {}
        current = "A"
        for _ in range(switch_n):
            for name in ("B", "A", "()", "A"):
                t0 = time.perf_counter()
                loras.apply(sets[name])
                switches.setdefault(f"{current} -> {name}", []).append(time.perf_counter() - t0)
                current = name
        active = pipe.get_active_adapters()
        want = [f"lora_{info.hash}" for info, _, _ in loras.active]
        if active != want:
            sys.exit(f"the switches did not end on A: active adapters {active}, expected {want}")

    every = [t for ts in switches.values() for t in ts]
    sw, rl, st = stats(every)[0], stats(reloads)[0], stats(steps)[0]
    print(f"LoRA switch benchmark: {label}, fp32 CPU, {torch.get_num_threads()} threads; LoRA rank {rank} "
          f"(kohya, UNet + text encoder); {'; '.join(notes)}")
    print(f"  CPU: {cpu_name} ({os.cpu_count()} CPUs), avx512_bf16 in lscpu flags: {'yes' if avx512_bf16 else 'no'}; "
          f"torch {torch.__version__}")
    print(f"  {'':<46} {'median':>9} {'min':>9} {'max':>9}   n")
    rows = [("(a) switch LoraSet.apply, all switches", every)]
    rows += [(f"      {k}", v) for k, v in switches.items()]
    rows += [("    first load of a LoRA file (A, then B)", first),
             (f"(b) reload the pipeline{' (from disk)' if a.cold else ''}: total", reloads),
             ("      load_pipeline", loads),
             ("      first read of the mmapped weights", first_reads),
             (f"(c) UNet forward {size}x{size} batch 1", steps)]
    for title, xs in rows:
        med, lo, hi, n = stats(xs)
        print(f"  {title:<46} {med:9.4f} {lo:9.4f} {hi:9.4f} {n:3d}  s")
    print(f"  ratio reload / switch: {rl / sw:.0f}x (medians); reload / first load: {rl / stats(first)[0]:.1f}x; "
          f"a switch is {steps_of(sw / st)}, a reload {steps_of(rl / st)}")


if __name__ == "__main__":
    main()

r"""GPU speed: diffusers' img2img pipeline as its docs set it up against the tool, side by side
in one run, with model FLOP utilisation (MFU) and the compute floor of the workload.

Model: the Stable Diffusion 1.5 architecture (``--model sdxl`` / ``--sdxl``: SDXL) built from the
configs shipped in the package (``img2img_cli/models/configs/sd15``: unet, vae, text_encoder,
scheduler; the CLIP tokenizer from ``img2img_cli/models/clip_tokenizer``; SDXL adds
text_encoder_2, a ``CLIPTextModelWithProjection``, and tokenizer_2, the same tokenizer padding
with ``"!"``) with random weights: no download, and the speed of random weights is the speed of
real ones. The modules are constructed directly on the target device (``with torch.device(dev)``:
PyTorch's default initialisation runs there, seeded with ``torch.manual_seed(0)``; seconds on a
GPU), cast to fp16 (fp32 on a CPU) and saved once with ``save_pretrained`` (safetensors) to a
temporary folder (``--model-dir DIR`` keeps it and reuses it next time), which every contestant
loads. ``--model tiny`` uses the built-in tiny model instead (64x64), for smoke tests on a CPU.

Workload: img2img at 512x512 (1024 for SDXL), strength 0.75, 50 scheduler steps, guidance
scale 7.5 (classifier-free guidance: each UNet call is on a batch of 2), prompt "a watercolor
painting", on real photos: 64 distinct square crops (70-100 % of the short side, random
position, seed 0) of ``examples/{chelsea,coffee,rocket,camera}`` resized to the size, every other
group of four mirrored. The number of UNet calls per image is what the pipeline's
``get_timesteps`` gives (SD 1.5's PNDM scheduler has 51 timesteps at 50 steps, so 0.75 runs
38 calls, not 37; SDXL's Euler runs 37); the reference counts them with a forward pre-hook.

Contestants, each in its own process (peak resident memory from ``os.wait4``; peak GPU memory
from ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` once the model is
loaded, so the weights count; CUDA only). The launcher itself never imports torch: building the
model, counting FLOPs and measuring the peak also run in a child process (``prepare``), because
Linux gives a child started by (v)fork + exec a ``ru_maxrss`` of at least the launcher's own
peak; the launcher's own peak RSS (~25 MiB) is printed as the floor of those figures.

(a) reference (measured once per run): ``StableDiffusionImg2ImgPipeline.from_pretrained(folder, dtype=torch.float16)``
    (``StableDiffusionXLImg2ImgPipeline`` for SDXL)
    (fp32 on a CPU; ``dtype`` is diffusers 0.42's name for the deprecated ``torch_dtype``),
    ``pipe.to("cuda")``, default attention (PyTorch SDPA), eager, one image per call, the model
    loaded once, CPU generator seeded per image: 1 warm-up call, then
    images/s = N / (wall time of N calls on N photos); photo i gets seed i. Its first outputs
    (as many as (b) makes) are saved, after the clock, for the comparison in (b).

Then, for each config (``--configs "ARGS1;ARGS2;..."``: sets of `img2img run` speed flags, each
measured in (b) and (c) against the one reference; ``--tool-args ARGS`` is one config; with
neither, the device's default below), one after the other, each printed as soon as it is done:

(b) the tool, one image at a time, through its Python API:
    ``load_pipeline(resolve_model(folder), device=..., dtype=..., speed=Speed(...))`` then
    ``generate(pipe, [Request(...)])``, the settings parsed from the config (default on CUDA
    ``--compile --channels-last --fuse-qkv --dtype fp16``; on a CPU ``--dtype fp32
    --channels-last``; ``--batch-size`` is ignored here); 2 warm-up calls with ``--compile``
    (the first compiles, the second may still record CUDA graphs under max-autotune), else 1;
    then the median latency of ``--latency-runs`` calls, call i on photo i with seed i as in
    (a); images/s = 1 / median latency. Output difference: the pixels (0-255) of those calls
    against (a)'s for the same photo and seed: max and mean |difference| and how many are
    identical (the tool's plain path, no speed flags in (a)'s dtype, is meant to be diffusers'
    own bit for bit: 0 here in fp32 on a CPU, not yet checked on CUDA; compiled kernels, fused
    QKV, channels-last and another dtype may differ).
    Compile/warm-up in the table = the first warm-up call - the median latency.
    ``--sync-check`` (CUDA): after the timed calls, one more call (photo 0, seed 0) under
    ``torch.cuda.set_sync_debug_mode("warn")``, where every host-device synchronisation raises
    a warning; a ``warnings.showwarning`` hook takes the Python stack of each (the innermost
    frame outside torch, and its caller) and ``generate``'s step callback says which denoising
    step it fell in. Printed: synchronisations before the end of step 1 (prompt encoding, VAE
    encode, set-up), per step over steps 2..n (min, max), after the loop (decode, the NaN
    guard, the copy to the host), and the top 5 call sites inside the loop (file:line
    function). On a CPU it prints that it does not apply.
(c) the tool on a folder of N photos as a whole command: ``python -m img2img_cli run DIR
    --model FOLDER --size 512x512 --steps 50 --strength 0.75 -g 7.5 --seed 0 --quiet --json -o OUT
    --device DEV <tool args>``; images/s = N / wall time from spawn to exit. To split that wall
    time the command is started through a tiny probe (``python -c PROBE ...`` that wraps
    ``img2img_cli.models.load_pipeline`` and ``img2img_cli.pipeline.generate`` to note wall-clock
    times, then calls ``img2img_cli.cli.main()``, which is all ``python -m img2img_cli`` does;
    at exit it records ``torch.cuda.max_memory_allocated``, and it counts calls of the NaN guard's
    fp32 re-decode, ``img2img_cli.pipeline.decode_fp32``, which would slow the run down):
      start-up = model loaded (``load_pipeline`` returned) - spawn;
      first batch = duration of the first ``generate`` call (compile + warm-up + its images);
      steady state = images after the first batch / (end of last batch - end of first batch);
      compile/warm-up = first batch - its images x steady seconds per image;
      tail = exit - end of last batch (writing the last images, interpreter exit).
    With ``--plain-cli`` the command runs as ``python -m img2img_cli`` with no probe; then
    start-up (+ compile) is estimated as wall - sum of the per-image ``seconds`` of the
    ``--json`` lines (those include each image's share of its batch and its own save, which
    overlaps the next batch, so the estimate is low by up to the total save time), steady
    state as 1 / median per-image seconds, and peak GPU memory is not available.
    Each process gets its own empty ``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR``, so
    compile times are cold-cache times. ``--shared-compile-cache`` leaves those variables
    alone: every process and every later run on the same machine shares the usual caches
    (``/tmp/torchinductor_$USER``), which cuts repeated compiles of the same graphs (a second
    run, or a second command on a machine still warm); then compile times are warm-cache times
    where a graph was seen before. (b) compiles for batch 1 and (c) for its batch size
    (8 on CUDA for SD 1.5 with ``--batch-size auto``): different graphs, so within one run
    the cache saves little.
    A config that fails (or is stopped by ``--budget-s``) gets its error in its row; the other
    configs still run.

Peak and MFU:

- FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes
  only, no memory; attention is counted there, while on a real CPU the flash-attention kernel
  is not registered with the counter and would count 0): one UNet call on a CFG batch of 2 at
  size/8 latents (size/2 for tiny; with 77-token text embeddings; SDXL with its text_embeds and
  6 time ids), one VAE encode and one VAE decode of one image at the size. SD 1.5 at 512x512:
  1.607 TFLOP per UNet call (0.80 per evaluation), 1.117 encode, 2.515 decode; with 38 calls
  64.7 TFLOP per image (63.1 with 37).
  FLOPs per image = UNet calls x F(UNet, batch 2) + F(VAE encode) + F(VAE decode)
  (the text encoders, 0.027 TFLOP for SD 1.5, are printed but not counted).
- Peak: measured in the same run with large matmuls in the tool's dtype: on CUDA 8192x8192 @
  8192x8192 (best of 5 windows of 20, CUDA events), TFLOP/s = 2 n^3 / t; on a CPU 2048x2048
  (fp32 by default; a CPU figure, not a GPU one).
- The peak is measured for the reference's dtype and for each config's (fp16 and bf16 on CUDA
  differ little; fp32 is far lower, as TF32 is off by default); each row's MFU is against its
  own dtype's peak.
- MFU = FLOPs per image / (seconds per image x measured peak FLOP/s), with seconds per image
  = 1 / images/s of each figure: (a) its loop, (b) the median latency, (c) the whole command
  and the steady state separately.
- Compute floor = FLOPs per image / measured peak (ms per image; its inverse is images/s).

Targets from the issue, printed next to the results (judged only for SD 1.5, 512x512, 50 steps,
strength 0.75 on CUDA): folder throughput >= 4x the reference and >= 5 images/s on one H100;
single-image latency <= 0.35 s; compute floor about 63 TFLOP per image (74 UNet evaluations of
~0.8 TFLOP + VAE), about 79 ms at 800 TFLOP/s.

Usage::

    make bench-gpu                      # python benchmarks/gpu.py
    python benchmarks/gpu.py [--device auto|cuda|cpu] [--model sd15|sdxl|tiny] [--sdxl]
        [--images 64] [--steps 50] [--size 512] [--latency-runs 10] [--sync-check]
        [--tool-args "--compile --channels-last --fuse-qkv" | --configs="ARGS1;ARGS2;..."]
        [--model-dir DIR] [--shared-compile-cache] [--budget-s S] [--json FILE]
    python benchmarks/gpu.py --model tiny --device cpu --images 4 --steps 8   # smoke test, minutes on 2 cores
    python benchmarks/gpu.py --estimate --images 24 --configs="..."         # the H100 time estimate only

Write ``--configs=...`` / ``--tool-args=...`` with ``=``: argparse takes a lone value that starts
with ``--`` and has no space (``--tool-args --compile``) for an option of its own.

On a CUDA machine: an environment with this project installed (``make install`` with a CUDA
torch, see the README's *Development*, or ``pip install -e .`` into an environment whose torch
is a CUDA build), then, from the repository root::

    nvidia-smi -L
    python -c "import torch; print(torch.__version__, torch.cuda.is_available())"   # must say True
    python benchmarks/gpu.py --device cuda --images 24 --latency-runs 6 --sync-check \
        --configs="--compile --channels-last --fuse-qkv --dtype fp16;--dtype fp16" \
        --model-dir /tmp/sd15 --shared-compile-cache --json gpu.json 2>&1 | tee gpu.log

``--device cuda`` fails at once when torch sees no GPU (``--device auto`` would quietly measure
the CPU). ``--model-dir`` keeps the random model for the next run, ``--shared-compile-cache``
lets a second run reuse the compiled kernels, and ``--json`` keeps every figure. A machine
without internet needs the project's dependencies as wheels: ``pip download`` them on a machine
that has it (for the target's Python and platform: ``--python-version``, ``--platform``,
``--only-binary=:all:``), copy the folder over, and ``pip install --no-index --find-links DIR``.

How long it takes: before the work the run prints a rough time estimate for one H100
(``--estimate`` prints only that, on any machine, without torch). It rests on assumptions, not
on measurements: the reference at ~1.3 s per image for SD 1.5 at 512 px with 38 UNet calls in
fp16 eager (scaled by UNet calls and pixels; SDXL ~4 s at 1024 px), the tool's single image at
1x that eager and 0.5x compiled, its folder at 0.6x eager and 0.3x compiled per image, fp32 3x,
~15 s start-up per process, ~45 s to build and save the random model (less with an existing
``--model-dir``), and a cold compile of 2-3 min per compiling process (``--est-compile-s``, 150
by default). So each ``--compile`` config costs ~5-6 min (two processes, (b) and (c), each
compiling cold), an eager config ~1 min, the reference and the model ~1.5 min. ``--images``
24-32 gives at least two batches of 8 for a steady-state figure and ``--latency-runs`` 5-8 a
stable median. Where the machine is yours for a fixed time, ``--budget-s S`` skips a config
part whose estimate no longer fits in S seconds and kills a child still running then, so the
table is still printed; put the config that matters most first.

Nothing here has been measured on a GPU yet: the figures above are assumptions for sizing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import PHOTOS, ROOT, bench_env, launcher_rss_mib, pixel_diff, run_measured

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "a watercolor painting"
RESULT = "GPU_BENCH_RESULT "
DEFAULT_TOOL_ARGS = {
    "cuda": "--compile --channels-last --fuse-qkv --dtype fp16",
    "cpu": "--dtype fp32 --channels-last",
}
DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024, "tiny": 64}
TARGETS = {
    "folder_ips": 5.0,  # images/s on one H100
    "folder_ratio": 4.0,  # x the reference
    "latency_s": 0.35,  # single image
    "floor_tflop": 63.0,  # TFLOP per image
    "floor_ms": 79.0,  # at 800 TFLOP/s
}

# The folder command, started through a probe that notes when the model is loaded and when each
# pipeline call starts and ends, and the peak GPU memory at exit; otherwise it is exactly
# `python -m img2img_cli` (whose __main__ only calls img2img_cli.cli.main()).
PROBE = r'''
import atexit, json, sys, time
_out, sys.argv = sys.argv[1], ["img2img"] + sys.argv[2:]
_ev = {"loaded": None, "calls": [], "peak_gpu_bytes": None, "fp32_redecodes": 0}

def _sync():
    t = sys.modules.get("torch")
    if t is not None and t.cuda.is_available() and t.cuda.is_initialized():
        t.cuda.synchronize()

def _dump():
    t = sys.modules.get("torch")
    try:
        if t is not None and t.cuda.is_available() and t.cuda.is_initialized():
            _ev["peak_gpu_bytes"] = t.cuda.max_memory_allocated()
    except Exception:
        pass
    with open(_out, "w") as f:
        json.dump(_ev, f)

atexit.register(_dump)
import img2img_cli.models as _m, img2img_cli.pipeline as _p
_load, _gen, _redecode = _m.load_pipeline, _p.generate, getattr(_p, "decode_fp32", None)

def load_pipeline(*a, **k):
    pipe = _load(*a, **k)
    _sync()
    _ev["loaded"] = time.time()
    return pipe

def generate(pipe, requests, *a, **k):
    t0 = time.time()
    out = _gen(pipe, requests, *a, **k)
    _ev["calls"].append([t0, time.time(), len(requests)])
    return out

def decode_fp32(*a, **k):  # the NaN guard's second decode: it would cost time, so count it
    _ev["fp32_redecodes"] += 1
    return _redecode(*a, **k)

_m.load_pipeline, _p.generate = load_pipeline, generate
if _redecode is not None:
    _p.decode_fp32 = decode_fp32
from img2img_cli.cli import main
main()
'''


# --- photos -------------------------------------------------------------------------------


def make_corpus(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` distinct ``size`` x ``size`` photos: square crops (70-100 % of the short side, random
    position) of the bundled photos, resized with Lanczos; every other group of four mirrored."""
    import random

    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    paths = []
    for i in range(n):
        with Image.open(ROOT / "examples" / PHOTOS[i % len(PHOTOS)]) as im:
            im = im.convert("RGB")
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.7, 1.0))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        im = im.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.LANCZOS)
        if (i // len(PHOTOS)) % 2:
            im = ImageOps.mirror(im)
        path = folder / f"photo-{i:03d}.png"
        im.save(path)
        paths.append(path)
    return paths


def load_corpus(folder: Path, n: int) -> list:
    from PIL import Image

    images = []
    for p in sorted(folder.glob("photo-*.png"))[:n]:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return images


# --- model --------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_model(config_dir: Path, out: Path, device: str, dtype) -> float:
    """Build the pipeline described by ``config_dir`` (a shipped config folder) with random weights
    on ``device``, cast to ``dtype``, and ``save_pretrained`` it to ``out``. Returns seconds."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from img2img_cli.models import CLIP_TOKENIZER_DIR

    t0 = time.perf_counter()
    index = _json(config_dir / "model_index.json")
    sdxl = "text_encoder_2" in index
    torch.manual_seed(0)
    with torch.device(device):  # default init runs on the device: seconds on a GPU
        unet = UNet2DConditionModel.from_config(_json(config_dir / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(_json(config_dir / "vae" / "config.json"))
        te = CLIPTextModel(CLIPTextConfig.from_dict(_json(config_dir / "text_encoder" / "config.json")))
        te2 = None
        if sdxl:
            te2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_dict(_json(config_dir / "text_encoder_2" / "config.json"))
            )
    for m in (unet, vae, te, te2):
        if m is not None:
            m.to(dtype).eval()
    sched_cfg = _json(config_dir / "scheduler" / "scheduler_config.json")
    scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    tok = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR))
    if sdxl:
        tok2 = CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token="!")
        pipe = diffusers.StableDiffusionXLPipeline(
            vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2, unet=unet,
            scheduler=scheduler, force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True),
        )
    else:
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    del pipe, unet, vae, te, te2
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return time.perf_counter() - t0


def unet_calls(folder: Path, steps: int, strength: float) -> int:
    """UNet calls per image as the img2img pipelines' ``get_timesteps`` computes them."""
    import diffusers

    cfg = _json(folder / "scheduler" / "scheduler_config.json")
    sched = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    sched.set_timesteps(steps)
    init = min(int(steps * strength), steps)
    t_start = max(steps - init, 0)
    return len(sched.timesteps[t_start * sched.order :])


def count_flops(folder: Path, size: int) -> dict:
    """FLOPs of one UNet call (CFG batch 2), one VAE encode and one VAE decode (batch 1) at
    ``size``, and of the text encoder(s), counted with ``FlopCounterMode`` on the meta device."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    meta = dict(device="meta", dtype=torch.float16)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_json(folder / "unet" / "config.json")).half()
        vae = AutoencoderKL.from_config(_json(folder / "vae" / "config.json")).half()
        tes = [CLIPTextModel(CLIPTextConfig.from_dict(_json(folder / "text_encoder" / "config.json")))]
        if (folder / "text_encoder_2" / "config.json").is_file():
            tes.append(CLIPTextModelWithProjection(
                CLIPTextConfig.from_dict(_json(folder / "text_encoder_2" / "config.json"))))
    seq = 77
    tok_cfg = folder / "tokenizer" / "tokenizer_config.json"
    if tok_cfg.is_file():
        seq = int(_json(tok_cfg).get("model_max_length", 77))
    seq = min(seq, tes[0].config.max_position_embeddings)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    lat = size // scale
    cross = unet.config.cross_attention_dim
    cross = cross if isinstance(cross, int) else cross[0]
    added = None
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeds + 6 time ids
        n_ids = 6
        dim = unet.config.projection_class_embeddings_input_dim - n_ids * unet.config.addition_time_embed_dim
        added = {"text_embeds": torch.zeros(2, dim, **meta), "time_ids": torch.zeros(2, n_ids, **meta)}

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())

    with torch.no_grad():
        f_unet = flops(lambda: unet(
            torch.zeros(2, unet.config.in_channels, lat, lat, **meta), torch.full((2,), 500.0, **meta),
            encoder_hidden_states=torch.zeros(2, seq, cross, **meta), added_cond_kwargs=added,
        ))
        f_enc = flops(lambda: vae.encode(torch.zeros(1, vae.config.in_channels, size, size, **meta)))
        f_dec = flops(lambda: vae.decode(torch.zeros(1, vae.config.latent_channels, lat, lat, **meta)))
        f_te = sum(flops(lambda t=t: t(torch.zeros(2, seq, dtype=torch.long, device="meta"))) for t in tes)
    return {"unet_b2": f_unet, "vae_encode": f_enc, "vae_decode": f_dec, "text_encoders": f_te}


def measure_peak(device: str, dtype) -> tuple[float, str]:
    """Dense matmul FLOP/s in ``dtype`` on ``device``: best of several timed windows."""
    import torch

    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    best = 0.0
    if device == "cuda":
        for _ in range(5):
            torch.mm(a, b, out=c)
        torch.cuda.synchronize()
        reps = 20
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1000.0 / reps
            best = max(best, 2.0 * n**3 / t)
    else:
        torch.mm(a, b, out=c)
        for _ in range(3):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    del a, b, c
    name = str(dtype).replace("torch.", "")
    return best, f"{name} {n}x{n} matmul"


# --- contestants (run in child processes: `gpu.py _worker NAME CONFIG_JSON`) -------------------


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gpu(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return None


def worker_reference(c: dict) -> dict:
    """(a) diffusers' img2img pipeline as its docs set it up; one image per call. Its first
    ``save`` outputs are written to ``save_dir`` as PNG (after the timed loop) for the output
    comparison in (b)."""
    import torch
    import diffusers

    dev, dtype = c["device"], getattr(torch, c["dtype"])
    cls = diffusers.StableDiffusionXLImg2ImgPipeline if c["sdxl"] else diffusers.StableDiffusionImg2ImgPipeline
    images = load_corpus(Path(c["corpus"]), c["images"])
    t0 = time.perf_counter()
    pipe = cls.from_pretrained(c["model"], dtype=dtype, local_files_only=True)
    if pipe.unet.dtype != dtype:  # an older diffusers that only knows torch_dtype
        pipe = cls.from_pretrained(c["model"], torch_dtype=dtype, local_files_only=True)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    if dev == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    _peak_reset(dev)

    def call(image, seed):
        return pipe(prompt=PROMPT, image=image, strength=c["strength"], num_inference_steps=c["steps"],
                    guidance_scale=c["guidance"], generator=torch.Generator("cpu").manual_seed(seed)).images[0]

    calls = [0]
    hook = pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    t0 = time.perf_counter()
    call(images[0], 0)
    warmup_s = time.perf_counter() - t0
    hook.remove()
    seconds, outs = [], []
    t_loop = time.perf_counter()
    for i, image in enumerate(images):
        t0 = time.perf_counter()
        out = call(image, i)
        seconds.append(time.perf_counter() - t0)
        if i < c.get("save", 0):
            outs.append(out)  # saved after the loop, off the clock
    total = time.perf_counter() - t_loop
    peak_gpu = _peak_gpu(dev)
    if outs:
        save = Path(c["save_dir"])
        save.mkdir(parents=True, exist_ok=True)
        for i, out in enumerate(outs):
            out.save(save / f"ref-{i:03d}.png")
    return {"load_s": load_s, "warmup_s": [warmup_s], "seconds": seconds, "total_s": total,
            "unet_calls": calls[0], "peak_gpu_bytes": peak_gpu, "threads": torch.get_num_threads()}


def parse_tool_args(args: list[str], what: str = "--tool-args") -> argparse.Namespace:
    """The speed options of `img2img run` that the single-image run understands."""
    p = argparse.ArgumentParser(prog=what, add_help=False)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--fuse-qkv", action="store_true")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--offload", choices=["model", "sequential"], default=None)
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--scheduler", "--sampler", default=None)
    p.add_argument("--batch-size", "-b", default="auto")  # used by the folder run only
    try:
        ns, rest = p.parse_known_args(args)
    except SystemExit:
        sys.exit(f"gpu.py: {what}: cannot parse {shlex.join(args)!r}")
    if rest:
        sys.exit(f"gpu.py: {what}: not understood by the single-image run: {' '.join(rest)}")
    return ns


def compare_outputs(outs: list, ref_dir: Path) -> dict | None:
    """Pixel differences (0-255) between ``outs[i]`` and the reference's ``ref-{i}.png``."""
    diffs = []
    for i, out in enumerate(outs):
        p = ref_dir / f"ref-{i:03d}.png"
        if not p.is_file():
            break
        try:
            diffs.append(pixel_diff(out, p))
        except ValueError as e:
            return {"error": f"{e} (output vs reference)"}
    if not diffs:
        return None
    return {"images": len(diffs), "max": max(d.max for d in diffs), "mean": sum(d.mean for d in diffs) / len(diffs),
            "identical": sum(d.identical for d in diffs)}


def sync_check(pipe, request) -> dict:
    """One ``generate`` call under ``torch.cuda.set_sync_debug_mode("warn")``: every host-device
    synchronisation raises a warning, caught here with the Python stack of the call that made
    it, and sorted by the denoising step it fell in (``generate``'s step callback)."""
    import collections
    import traceback
    import warnings

    import torch

    from img2img_cli.pipeline import generate

    torch_dir = os.path.dirname(torch.__file__) + os.sep
    roots = sorted({os.path.abspath(p) + os.sep for p in sys.path if p and os.path.isdir(p)}, key=len, reverse=True)

    def short(filename: str) -> str:
        f = os.path.abspath(filename)
        for r in roots:
            if f.startswith(r):
                return f[len(r):]
        return filename

    phase = [0]
    records: list[tuple[int, str, str]] = []  # (steps done, call site <- its caller, innermost torch frame)

    def on_step(step, _total):
        phase[0] = step

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return
        stack = traceback.extract_stack()[:-1]  # without this function
        sites, inner = [], None  # the innermost frame outside torch, and its caller outside torch
        for fr in reversed(stack):
            if fr.filename.endswith(os.sep + "warnings.py"):
                continue
            if fr.filename.startswith(torch_dir):
                inner = inner or f"{short(fr.filename)}:{fr.lineno} {fr.name}"
                continue
            sites.append(f"{short(fr.filename)}:{fr.lineno} {fr.name}")
            if len(sites) == 2:
                break
        records.append((phase[0], " <- ".join(sites) or f"{filename}:{lineno}", inner or ""))

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            generate(pipe, [request], callback=on_step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    seconds = time.perf_counter() - t0
    steps = phase[0]
    loop = [r for r in records if 1 <= r[0] < steps]
    top = collections.Counter((s, i) for _, s, i in loop).most_common(5)
    top_all = collections.Counter((s, i) for _, s, i in records).most_common(5)
    return {"steps": steps, "total": len(records), "seconds": seconds,
            "setup_and_step1": sum(1 for r in records if r[0] == 0),
            "loop": len(loop), "loop_steps": max(steps - 1, 0),
            "per_step": [sum(1 for r in records if r[0] == k) for k in range(1, steps)],
            "after_loop": sum(1 for r in records if r[0] >= steps and steps > 0),
            "top_loop": [[s, i, n] for (s, i), n in top], "top_all": [[s, i, n] for (s, i), n in top_all]}


def worker_tool(c: dict) -> dict:
    """(b) the tool's Python API, one image per call."""
    import logging

    import torch

    from img2img_cli.models import Speed, load_pipeline, resolve_dtype, resolve_model
    from img2img_cli.pipeline import Request, generate

    class Count(logging.Handler):
        n = 0

        def emit(self, record):
            Count.n += 1

    logging.getLogger("img2img_cli").addHandler(Count(logging.WARNING))
    dev = c["device"]
    ns = parse_tool_args(c["tool_args"])
    dtype = resolve_dtype(ns.dtype, dev)
    speed = Speed(compile=ns.compile, channels_last=ns.channels_last, fuse_qkv=ns.fuse_qkv,
                  offload=ns.offload, vae_tiling=ns.vae_tiling)
    images = load_corpus(Path(c["corpus"]), max(c["runs"], 1))
    import diffusers  # imported before the clock starts, as in the reference

    getattr(diffusers, "StableDiffusionXLImg2ImgPipeline" if c["sdxl"] else "StableDiffusionImg2ImgPipeline")
    t0 = time.perf_counter()
    pipe = load_pipeline(resolve_model(c["model"]), device=dev, dtype=dtype, scheduler=ns.scheduler, speed=speed)
    if dev == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    _peak_reset(dev)

    def request(image, seed):
        return Request(image, PROMPT, "", seed, c["strength"], c["steps"], c["guidance"])

    def call(image, seed):
        return generate(pipe, [request(image, seed)])[0]

    warmup = []
    for k in range(c["warmup"] if c["warmup"] is not None else (2 if ns.compile else 1)):
        t0 = time.perf_counter()
        call(images[0], k)
        warmup.append(time.perf_counter() - t0)
    seconds, outs = [], []
    for i in range(c["runs"]):
        t0 = time.perf_counter()
        out = call(images[i % len(images)], i)  # image i with seed i, as in the reference loop
        seconds.append(time.perf_counter() - t0)
        outs.append(out)
    res = {"load_s": load_s, "warmup_s": warmup, "seconds": seconds, "total_s": sum(seconds),
           "peak_gpu_bytes": _peak_gpu(dev), "warnings": Count.n, "dtype": str(dtype).replace("torch.", "")}
    if c.get("ref_dir"):
        res["diff"] = compare_outputs(outs, Path(c["ref_dir"]))
    if c.get("sync_check"):
        if dev == "cuda":
            try:  # a diagnostic: its failure must not cost the timings above
                res["sync"] = sync_check(pipe, request(images[0], 0))
            except Exception as e:
                res["sync"] = {"skipped": f"failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        else:
            res["sync"] = {"skipped": f"not applicable on {dev} (host-device synchronisation is a CUDA notion)"}
    return res


def worker_prepare(c: dict) -> dict:
    """Device, model (built if needed), UNet calls, FLOPs and the measured peak of each dtype in
    use, in a child process so that the launcher stays small (see ``_common.run_measured``)."""
    import diffusers
    import torch

    from img2img_cli.models import CONFIGS_DIR, TINY_DIR, resolve_dtype

    device = c["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: --device cuda: no CUDA device is available")
    ref_dtype = torch.float16 if device == "cuda" else torch.float32
    dtypes = [ref_dtype]
    for name in c["tool_dtypes"]:
        d = resolve_dtype(name, device)
        if d not in dtypes:
            dtypes.append(d)
    build_s = None
    if c["model"] == "tiny":
        model = TINY_DIR
    else:
        model = Path(c["model_dir"])
        if not (model / "model_index.json").is_file():
            print(f"building {c['model']} with random weights on {device} in {model} ...", file=sys.stderr, flush=True)
            build_s = build_model(CONFIGS_DIR / c["model"], model, device, ref_dtype)
    n_calls = unet_calls(model, c["steps"], c["strength"])
    flops = count_flops(model, c["size"])
    peaks = {}
    for d in dtypes:
        peaks[str(d).replace("torch.", "")] = measure_peak(device, d)
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {"device": device, "device_name": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "model": str(model), "build_s": build_s, "unet_calls": n_calls, "flops": flops, "peaks": peaks,
            "ref_dtype": str(ref_dtype).replace("torch.", "")}


WORKERS = {"prepare": worker_prepare, "reference": worker_reference, "tool": worker_tool}


# --- running children ---------------------------------------------------------------------


class BenchError(Exception):
    """A contestant's run failed; the message says how (fatal for (a), one config's row otherwise)."""


def _check(r: dict, what: str) -> None:
    if r.get("killed"):
        raise BenchError(f"{what} was stopped after {r['wall']:.0f} s (--budget-s)")
    if r["rc"]:
        raise BenchError(f"{what} failed (exit {r['rc']}):\n{r['err'][-4000:]}")


def run_worker(name: str, config: dict, env: dict, timeout: float | None = None) -> dict:
    r = run_measured([sys.executable, str(Path(__file__).resolve()), "_worker", name, json.dumps(config)], env, timeout)
    _check(r, f"the {name} run")
    lines = [ln for ln in r["out"].splitlines() if ln.startswith(RESULT)]
    if not lines:
        raise BenchError(f"the {name} run printed no result:\n{r['err'][-4000:]}")
    res = json.loads(lines[-1][len(RESULT):])
    res["rss_mib"], res["wall"] = r["rss_mib"], r["wall"]
    return res


def run_folder(a, model: Path, corpus: Path, out: Path, tool_args: list[str], env: dict, probe_file: Path,
               timeout: float | None = None) -> dict:
    """(c) the whole command on the folder; timings split with the probe (or estimated)."""
    args = ["run", str(corpus), "--model", str(model), "-p", PROMPT, "--size", f"{a.size}x{a.size}",
            "--steps", str(a.steps), "--strength", str(a.strength), "-g", str(a.guidance), "--seed", "0",
            "--quiet", "--json", "-o", str(out), "--device", a.device, *tool_args]
    if a.plain_cli:
        cmd = [sys.executable, "-m", "img2img_cli", *args]
    else:
        cmd = [sys.executable, "-c", PROBE, str(probe_file), *args]
    r = run_measured(cmd, env, timeout)
    _check(r, "the folder command")
    rows = [json.loads(ln) for ln in r["out"].splitlines() if ln.startswith("{")]
    n = len(rows)
    if n != a.images:
        raise BenchError(f"the folder command wrote {n} images, expected {a.images}:\n{r['err'][-3000:]}")
    res = {"wall": r["wall"], "rss_mib": r["rss_mib"], "images": n, "probe": False, "cmd": cmd[:1] + ["..."] + args}
    seconds = [row["seconds"] for row in rows]
    ev = None
    if not a.plain_cli and probe_file.is_file():
        ev = json.loads(probe_file.read_text())
        res["peak_gpu_bytes"] = ev.get("peak_gpu_bytes")
        res["fp32_redecodes"] = ev.get("fp32_redecodes", 0)
    if ev and ev.get("loaded") and ev.get("calls"):
        res["probe"] = True
        calls = sorted(ev["calls"])
        real, left = [], n
        for _, _, k in calls:  # a padded last batch (static shapes) holds fewer real images
            real.append(min(k, left))
            left -= real[-1]
        res["startup_s"] = ev["loaded"] - r["spawn"]
        res["first_batch_s"] = calls[0][1] - calls[0][0]
        res["first_batch_images"] = real[0]
        res["batches"] = len(calls)
        res["tail_s"] = r["end"] - calls[-1][1]
        res["between_s"] = calls[0][0] - ev["loaded"]  # reading the first photos etc.
        if len(calls) > 1:
            steady_n = sum(real[1:])
            steady_s = calls[-1][1] - calls[0][1]
            res["steady_images"], res["steady_s"] = steady_n, steady_s
            res["steady_ips"] = steady_n / steady_s
            res["compile_s"] = max(0.0, res["first_batch_s"] - real[0] * steady_s / steady_n)
    else:
        med = statistics.median(seconds)
        res["startup_s"] = r["wall"] - sum(seconds)  # start-up (+ tail), estimated
        res["steady_ips"] = 1.0 / med if med > 0 else None
        res["compile_s"] = max(0.0, sum(seconds) - n * med)
        res["estimated"] = True
    return res


# --- time estimate (CUDA; assumed figures, nothing measured) ------------------------------

#: Assumed seconds per image of the reference (fp16, eager, batch 1) on one H100, and the UNet
#: calls and side they are for; scaled by UNet calls and pixels. Not measured here: a guess to
#: size a device command, to be replaced by the first real figures.
EST_REF = {"sd15": (1.3, 38, 512), "sdxl": (4.0, 37, 1024), "tiny": (0.05, 7, 64)}
EST_PROCESS_S = {"sd15": 15.0, "sdxl": 25.0, "tiny": 8.0}  # spawn, imports, load
EST_PREPARE_S = {"sd15": 45.0, "sdxl": 90.0, "tiny": 15.0}  # + build and save the random model
EST_FACTORS = {  # seconds per image relative to the reference
    "b_eager": 1.0, "b_compiled": 0.5, "c_eager": 0.6, "c_compiled": 0.3, "fp32": 3.0,
}


def estimate(a, configs: list[str]) -> tuple[float, list[tuple[str, float]], dict]:
    """Rough wall-clock seconds of the whole run on one H100, from the assumed figures above.
    Returns the total, its parts ``(label, seconds)``, and each config's (b) and (c) parts."""
    spi0, calls0, side0 = EST_REF[a.model]
    calls = max(1, int(a.steps * a.strength)) + (0 if a.model == "sdxl" else 1)  # PNDM runs one more
    ref_spi = spi0 * calls / calls0 * (a.size / side0) ** 2
    over = EST_PROCESS_S[a.model]
    reuse = a.model_dir is not None and (a.model_dir / "model_index.json").is_file()
    prep = over if reuse else EST_PREPARE_S[a.model]
    parts = [("prepare", prep), ("(a)", over + (a.images + 1) * ref_spi)]
    per = {}
    for k, cfg in enumerate(configs, 1):
        ns = parse_tool_args(shlex.split(cfg), f"config {k}")
        f = EST_FACTORS["fp32"] if ns.dtype == "fp32" else 1.0
        comp = a.est_compile_s if ns.compile else 0.0
        lat = ref_spi * f * EST_FACTORS["b_compiled" if ns.compile else "b_eager"]
        warm = a.warmup if a.warmup is not None else (2 if ns.compile else 1)
        b = over + comp + (warm + a.latency_runs + (2 if a.sync_check else 0)) * lat
        c = over + comp + a.images * ref_spi * f * EST_FACTORS["c_compiled" if ns.compile else "c_eager"]
        per[k] = (b, c)
        parts.append((f"[{k}]", b + c))
    return sum(s for _, s in parts), parts, per


def print_estimate(a, configs: list[str]) -> dict:
    total, parts, per = estimate(a, configs)
    spi0, calls0, side0 = EST_REF[a.model]
    print(f"time estimate for one H100 (rough; assumed, not measured: the reference {spi0} s/image at "
          f"{side0} px with {calls0} UNet calls in fp16 eager, the tool's single image "
          f"{EST_FACTORS['b_eager']}x/{EST_FACTORS['b_compiled']}x that eager/compiled and its folder "
          f"{EST_FACTORS['c_eager']}x/{EST_FACTORS['c_compiled']}x, fp32 {EST_FACTORS['fp32']}x, "
          f"{EST_PROCESS_S[a.model]:.0f} s start-up per process, {a.est_compile_s:.0f} s per compiling process "
          f"(--est-compile-s)):", flush=True)
    print("  " + ", ".join(f"{label} ~{s:.0f} s" for label, s in parts) + f"; total ~{total:.0f} s", flush=True)
    limit = a.budget_s if a.budget_s is not None else 540.0
    if total > limit:
        print(f"  WARNING: ~{total:.0f} s is more than {limit:.0f} s{' (--budget-s)' if a.budget_s is not None else ''}: "
              "where the machine's time is limited use fewer --images / --latency-runs / configs, or split the configs "
              "across runs; --budget-s skips what would not fit and still prints the table", flush=True)
    return per


# --- report -------------------------------------------------------------------------------


def flop(x: float) -> str:
    return f"{x / 1e12:.3f} TFLOP" if x >= 1e11 else f"{x / 1e9:.3f} GFLOP"


def gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def split_configs(text: str) -> list[str]:
    return [c.strip() for c in text.split(";") if c.strip()]


def print_sync(sync: dict, indent: str = "      ") -> None:
    if "skipped" in sync:
        print(f"{indent}sync check: {sync['skipped']}")
        return
    per = sync["per_step"]
    rng = f" (min {min(per)}, max {max(per)})" if per else ""
    loop_rate = sync["loop"] / sync["loop_steps"] if sync["loop_steps"] else 0.0
    print(f"{indent}sync check (one call under torch.cuda.set_sync_debug_mode('warn'), {sync['seconds']:.2f} s): "
          f"{sync['total']} host-device synchronisations: {sync['setup_and_step1']} before the end of step 1, "
          f"{loop_rate:.2f} per denoising step over steps 2-{sync['steps']}{rng}, {sync['after_loop']} after the loop")
    top = sync["top_loop"] or sync["top_all"]
    if top:
        print(f"{indent}  top call sites ({'inside the denoising loop' if sync['top_loop'] else 'whole call'}):")
        for site, inner, n in top:
            print(f"{indent}    {n:4d}x {site}" + (f"  (torch: {inner})" if inner else ""))


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "_worker":
        res = WORKERS[sys.argv[2]](json.loads(sys.argv[3]))
        print(RESULT + json.dumps(res), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--model", choices=["sd15", "sdxl", "tiny"], default="sd15")
    ap.add_argument("--sdxl", action="store_true", help="same as --model sdxl")
    ap.add_argument("--images", type=int, default=64,
                    help="photos in the folder run (c) and the reference loop (a); at least 2 batches for a "
                         "steady-state figure (the folder runs 8 per batch on CUDA for SD 1.5): 24-32 on an H100 "
                         "keeps a run with a compiled config under 10 minutes")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=None, help="square side in px (512; 1024 for SDXL; 64 for tiny)")
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--tool-args", default=None,
                    help=f"speed flags of `img2img run`, one config (CUDA: {DEFAULT_TOOL_ARGS['cuda']!r}; "
                         f"CPU: {DEFAULT_TOOL_ARGS['cpu']!r})")
    ap.add_argument("--configs", default=None,
                    help="several configs of speed flags separated by ';', each measured in (b) and (c) against "
                         "one reference (a), e.g. \"--dtype fp16;--compile --channels-last --fuse-qkv --dtype bf16\"")
    ap.add_argument("--latency-runs", type=int, default=10, help="timed single-image calls in (b) (5-10 on an H100)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls in (b) (default 2 with --compile, else 1)")
    ap.add_argument("--sync-check", action="store_true",
                    help="CUDA: after (b)'s timed calls, one more call under torch.cuda.set_sync_debug_mode('warn'): "
                         "host-device synchronisations per denoising step and their top call sites")
    ap.add_argument("--model-dir", type=Path, default=None, help="keep the built model here and reuse it")
    ap.add_argument("--plain-cli", action="store_true", help="run (c) as plain `python -m img2img_cli` (no probe)")
    ap.add_argument("--shared-compile-cache", action="store_true",
                    help="let compiles use the usual inductor/triton caches (shared by all processes and later runs)")
    ap.add_argument("--estimate", action="store_true",
                    help="print the time estimate for one H100 and exit (imports nothing heavy; any machine)")
    ap.add_argument("--est-compile-s", type=float, default=150.0,
                    help="assumed seconds of one cold compile per compiling process, for the estimate (150)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop by this many seconds: on CUDA a config part whose estimate does not fit is skipped, "
                         "and any child still running then is killed; the table is printed all the same")
    ap.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    a = ap.parse_args()
    if a.sdxl:
        a.model = "sdxl"
    if a.images < 1 or a.steps < 1 or a.latency_runs < 1:
        ap.error("--images, --steps and --latency-runs must be at least 1")
    if a.configs is not None and a.tool_args is not None:
        ap.error("give --configs or --tool-args, not both (--tool-args X is --configs X)")
    a.size = a.size or DEFAULT_SIZE[a.model]
    if a.size % 8:
        ap.error("--size must be a multiple of 8")
    given = split_configs(a.configs) if a.configs is not None else ([a.tool_args] if a.tool_args is not None else None)
    if given is not None and not given:
        ap.error("--configs: no config given")
    for k, cfg in enumerate(given or [], 1):  # fail now, not after the reference
        parse_tool_args(shlex.split(cfg), "--tool-args" if a.tool_args is not None else f"--configs, config {k}")
    if a.estimate:
        print_estimate(a, given or [DEFAULT_TOOL_ARGS["cuda"]])
        return
    missing = [m for m in ("torch", "diffusers", "transformers", "typer", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"gpu.py: missing {', '.join(missing)}: install the project (`make install` or `pip install -e .`; "
                 "for a machine without internet see the docstring)")
    t_all = time.perf_counter()

    def left() -> float | None:
        return None if a.budget_s is None else a.budget_s - (time.perf_counter() - t_all)

    est = None
    if a.device == "cuda":
        est = print_estimate(a, given or [DEFAULT_TOOL_ARGS["cuda"]])
    # the dtypes whose matmul peak is measured: the reference's and each config's ("auto" is the
    # device's default, fp16 on CUDA and fp32 on a CPU, as in the default configs)
    tool_dtypes = sorted({parse_tool_args(shlex.split(c)).dtype for c in (given or [""])})
    env = bench_env(DIFFUSERS_VERBOSITY="error", PYTHONUNBUFFERED="1")
    tmp = Path(tempfile.mkdtemp(prefix="img2img-bench-gpu-"))
    rows: list[dict] = []
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    T = 1e12
    try:
        # 1. device, model, FLOPs, peaks (a child process)
        print("preparing: device, model, FLOP count, peak matmul ...", flush=True)
        try:
            prep = run_worker("prepare", {"device": a.device, "model": a.model, "tool_dtypes": tool_dtypes,
                                          "model_dir": str(a.model_dir or tmp / f"{a.model}-random"),
                                          "steps": a.steps, "strength": a.strength, "size": a.size}, env, left())
        except BenchError as e:
            sys.exit(f"gpu.py: {e}")
        resolved_from_auto = a.device == "auto"
        a.device, model = prep["device"], Path(prep["model"])
        configs = given or [DEFAULT_TOOL_ARGS[a.device]]
        if resolved_from_auto and a.device == "cuda":
            est = print_estimate(a, configs)
        elif a.device != "cuda":
            print("time estimate: only for CUDA (H100); none for a CPU", flush=True)
        n_calls, fl, peaks = prep["unet_calls"], prep["flops"], prep["peaks"]
        per_image = n_calls * fl["unet_b2"] + fl["vae_encode"] + fl["vae_decode"]
        ref_peak = peaks[prep["ref_dtype"]][0]
        results["prepare"] = prep
        results["flops_per_image"] = per_image
        judged = (a.model == "sd15" and a.device == "cuda" and a.size == 512 and a.steps == 50
                  and a.strength == 0.75 and a.guidance == 7.5)

        def verdict(ok: bool) -> str:
            return ("met" if ok else "NOT met") if judged else "not judged here"

        def mfu_pct(s_per_image: float, dtype: str) -> float:
            return 100.0 * per_image / s_per_image / peaks.get(dtype, [ref_peak])[0]

        def mfu(s_per_image: float, dtype: str) -> str:
            return f"{mfu_pct(s_per_image, dtype):5.1f} %"

        # --- header ---
        dev_kind = "GPU" if a.device == "cuda" else "CPU"
        print()
        print(f"{dev_kind} benchmark: {a.model} architecture "
              f"({'built-in tiny model' if a.model == 'tiny' else 'random weights'}), {a.size}x{a.size} img2img, "
              f"strength {a.strength}, {a.steps} steps -> {n_calls} UNet calls on a CFG batch of 2, guidance {a.guidance}")
        print(f"  device: {prep['device_name']}; torch {prep['torch']}, diffusers {prep['diffusers']}")
        if prep["build_s"] is not None:
            print(f"  model built on {a.device} in {prep['build_s']:.1f} s ({prep['ref_dtype']}), saved with save_pretrained")
        print(f"  FLOPs per image (torch.utils.flop_counter, meta device): UNet {flop(fl['unet_b2'])} per call (CFG batch 2) x "
              f"{n_calls} + VAE encode {flop(fl['vae_encode'])} + VAE decode {flop(fl['vae_decode'])} = "
              f"{flop(per_image)}  (text encoders {flop(fl['text_encoders'])}, not counted)")
        for dt, (pk, what) in peaks.items():
            rate = f"{pk / T:.1f} TFLOP/s" if pk >= T else f"{pk / 1e9:.1f} GFLOP/s"
            floor_s = per_image / pk
            print(f"  measured peak ({what}{', a CPU figure' if a.device == 'cpu' else ''}): {rate}; "
                  f"compute floor at it: {floor_s * 1000:.1f} ms per image ({1 / floor_s:.2f} images/s)")
        print(f"  [issue: ~{TARGETS['floor_tflop']:.0f} TFLOP/image (74 UNet evaluations of ~0.8 TFLOP + VAE), "
              f"~{TARGETS['floor_ms']:.0f} ms at 800 TFLOP/s]")
        if n_calls != int(a.steps * a.strength):
            print(f"  note: the scheduler runs {n_calls} UNet calls, not int({a.steps} x {a.strength}) = "
                  f"{int(a.steps * a.strength)} (its timestep list is longer than the steps, as PNDM's is)")
        print("  configs (MFU of each against the measured peak of its own dtype):")
        for k, cfg in enumerate(configs, 1):
            print(f"    [{k}] {cfg or '(no flags)'}")
        print(flush=True)

        # 2. photos, 3. reference
        corpus = tmp / "photos"
        make_corpus(corpus, a.images, a.size)

        def child_env(name: str) -> dict:
            if a.shared_compile_cache:
                return env
            return {**env, "TORCHINDUCTOR_CACHE_DIR": str(tmp / f"inductor-{name}"),
                    "TRITON_CACHE_DIR": str(tmp / f"triton-{name}")}

        common = {"device": a.device, "model": str(model), "corpus": str(corpus), "steps": a.steps,
                  "strength": a.strength, "guidance": a.guidance, "sdxl": a.model == "sdxl"}
        ref_dir = tmp / "reference-out"
        n_save = min(a.images, a.latency_runs)
        print(f"(a) reference: {a.images} images ...", flush=True)
        try:
            ref = run_worker("reference", {**common, "dtype": prep["ref_dtype"], "images": a.images,
                                           "save": n_save, "save_dir": str(ref_dir)}, child_env("reference"), left())
        except BenchError as e:
            sys.exit(f"gpu.py: {e}")
        results["reference"] = ref
        ref_ips = a.images / ref["total_s"]
        ref_spi = 1.0 / ref_ips
        if ref["unet_calls"] != n_calls:
            print(f"  WARNING: the reference made {ref['unet_calls']} UNet calls per image, get_timesteps says {n_calls}")
        print(f"(a) reference: diffusers {'StableDiffusionXLImg2ImgPipeline' if a.model == 'sdxl' else 'StableDiffusionImg2ImgPipeline'}, "
              f"{prep['ref_dtype']}, SDPA, eager, 1 image per call")
        print(f"      load {ref['load_s']:.1f} s (imports excluded), warm-up call {ref['warmup_s'][0]:.2f} s; {a.images} images in {ref['total_s']:.2f} s: "
              f"{ref_ips:.3f} images/s ({ref_spi:.3f} s/image); MFU {mfu(ref_spi, prep['ref_dtype'])}")
        print(f"      peak GPU memory {gib(ref['peak_gpu_bytes'])}, peak RSS {ref['rss_mib']:.0f} MiB; process wall {ref['wall']:.1f} s",
              flush=True)

        # 4. each config: (b) single image, (c) folder
        for k, cfg in enumerate(configs, 1):
            tool_args = shlex.split(cfg)
            row = {"k": k, "config": cfg, "one": None, "fold": None, "errors": []}
            rows.append(row)
            print(f"\n[{k}] {cfg or '(no flags)'}", flush=True)
            for part in ("b", "c"):
                budget = left()
                if budget is not None and budget < 5:
                    msg = f"({part}) skipped: --budget-s used up"
                    print(f"      {msg}", flush=True)
                    row["errors"].append(msg)
                    continue
                if budget is not None and est is not None and est.get(k) and a.device == "cuda":
                    need = est[k][0 if part == "b" else 1]
                    if need > budget:
                        msg = f"({part}) skipped: ~{need:.0f} s estimated, {budget:.0f} s left of --budget-s"
                        print(f"      {msg}", flush=True)
                        row["errors"].append(msg)
                        continue
                try:
                    if part == "b":
                        print(f"(b) tool, single image: {a.latency_runs} timed calls ...", flush=True)
                        row["one"] = run_worker("tool", {**common, "tool_args": tool_args, "runs": a.latency_runs,
                                                         "warmup": a.warmup, "ref_dir": str(ref_dir),
                                                         "sync_check": a.sync_check},
                                                child_env(f"tool-{k}"), budget)
                    else:
                        print(f"(c) tool, folder of {a.images} photos ...", flush=True)
                        row["fold"] = run_folder(a, model, corpus, tmp / f"out-{k}", tool_args, child_env(f"folder-{k}"),
                                                 tmp / f"probe-{k}.json", budget)
                except BenchError as e:
                    print(f"      ({part}) FAILED: {e}", flush=True)
                    row["errors"].append(f"({part}) {e}")
                if part == "b" and row["one"]:
                    print_one(row["one"], tool_args, ref_spi, mfu, verdict)
                if part == "c" and row["fold"]:
                    print_fold(a, row["fold"], tool_args, ref_ips, row["one"]["dtype"] if row["one"] else None,
                               prep["ref_dtype"] if a.device != "cuda" else "float16", mfu, verdict, judged)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    launcher_rss = launcher_rss_mib()

    # --- the table ----------------------------------------------------------------------------
    print()
    print(f"summary ({a.images} images in (a) and (c), {a.latency_runs} timed calls in (b); x ref = images/s over (a)'s "
          f"{ref_ips:.3f}; MFU against each dtype's measured peak; |d| = pixel difference (0-255) of (b)'s outputs vs (a)'s, "
          f"same photos and seeds):")
    hdr = (f"{'cfg':>4} {'dtype':>8} | {'lat s':>7} {'b img/s':>8} {'x ref':>6} {'MFU':>6} | {'c img/s':>8} {'x ref':>6} "
           f"{'steady':>8} {'x ref':>6} {'MFU':>6} | {'start s':>7} {'comp b':>7} {'comp c':>7} | "
           f"{'GPU b':>6} {'GPU c':>6} | {'max|d|':>6} {'mean|d|':>7}")
    print(hdr)
    print("-" * len(hdr))
    rdt = prep["ref_dtype"]
    print(f"{'(a)':>4} {rdt:>8} | {ref_spi:7.3f} {ref_ips:8.3f} {1.0:6.2f} {mfu_pct(ref_spi, rdt):5.1f}% | "
          f"{ref_ips:8.3f} {1.0:6.2f} {'':>8} {'':>6} {'':>6} | {'':>7} {'':>7} {'':>7} | "
          f"{_g(ref['peak_gpu_bytes']):>6} {'':>6} |")

    def num(x, fmt: str, w: int) -> str:
        return f"{x:{w}{fmt}}" if x is not None else f"{'-':>{w}}"

    for row in rows:
        one, fold = row["one"] or {}, row["fold"] or {}
        dt = one.get("dtype") or "?"
        lat = statistics.median(one["seconds"]) if one else None
        comp_b = (max(0.0, one["warmup_s"][0] - lat) if one and one["warmup_s"] else None)
        whole = a.images / fold["wall"] if fold else None
        steady = fold.get("steady_ips")
        diff = one.get("diff") or {}
        print(f"{'[' + str(row['k']) + ']':>4} {dt:>8} | {num(lat, '.3f', 7)} {num(1 / lat if lat else None, '.3f', 8)} "
              f"{num(ref_spi / lat if lat else None, '.2f', 6)} {num(mfu_pct(lat, dt) if lat else None, '.1f', 5)}% | "
              f"{num(whole, '.3f', 8)} {num(whole / ref_ips if whole else None, '.2f', 6)} {num(steady, '.3f', 8)} "
              f"{num(steady / ref_ips if steady else None, '.2f', 6)} {num(mfu_pct(1 / steady, dt) if steady else None, '.1f', 5)}% | "
              f"{num(fold.get('startup_s'), '.1f', 7)} {num(comp_b, '.1f', 7)} {num(fold.get('compile_s'), '.1f', 7)} | "
              f"{_g(one.get('peak_gpu_bytes')):>6} {_g(fold.get('peak_gpu_bytes')):>6} | "
              f"{num(diff.get('max'), 'd', 6)} {num(diff.get('mean'), '.3f', 7)}"
              + (f"   {'; '.join(e.splitlines()[0] for e in row['errors'])}" if row["errors"] else ""))
    print("  lat s: (b) median latency; comp b: (b)'s first warm-up call - median latency; start s: (c) spawn -> "
          "model loaded; comp c: (c)'s first batch - its images at the steady rate; GPU: peak memory in GiB")
    ok = [r for r in rows if r["one"]]
    if ok:
        best = min(ok, key=lambda r: statistics.median(r["one"]["seconds"]))
        print(f"  lowest latency: [{best['k']}] {statistics.median(best['one']['seconds']):.3f} s")
    ok = [r for r in rows if r["fold"] and r["fold"].get("steady_ips")]
    if ok:
        best = max(ok, key=lambda r: r["fold"]["steady_ips"])
        print(f"  highest folder steady state: [{best['k']}] {best['fold']['steady_ips']:.3f} images/s")
    ok = [r for r in rows if r["fold"]]
    if ok:
        best = min(ok, key=lambda r: r["fold"]["wall"])
        print(f"  highest whole-command throughput: [{best['k']}] {a.images / best['fold']['wall']:.3f} images/s")
    if not judged:
        print("  (targets are for SD 1.5, 512x512, 50 steps, strength 0.75 on one H100; not judged for this configuration)")
    print(f"peak RSS figures include the launcher's own {launcher_rss:.0f} MiB (Linux counts the image a child's exec replaces)")
    print(f"benchmark took {time.perf_counter() - t_all:.0f} s")
    if a.json:
        results["configs"] = rows
        results["launcher_rss_mib"] = launcher_rss
        results["seconds"] = time.perf_counter() - t_all
        a.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"results written to {a.json}")


def _g(b) -> str:
    return "-" if b is None else f"{b / 2**30:.2f}"


def print_one(one: dict, tool_args: list[str], ref_spi: float, mfu, verdict) -> None:
    lat = statistics.median(one["seconds"])
    one_flags, skip = [], False
    for t in tool_args:  # --batch-size is for (c) only
        if not skip and not t.startswith("--batch-size=") and t not in ("--batch-size", "-b"):
            one_flags.append(t)
        skip = t in ("--batch-size", "-b")
    print(f"(b) tool, one image at a time (Python API; {' '.join(one_flags) or 'no flags'}; {one['dtype']})")
    print(f"      load {one['load_s']:.1f} s (imports excluded), warm-up calls {', '.join(f'{s:.2f}' for s in one['warmup_s'])} s; "
          f"latency median {lat:.3f} s (min {min(one['seconds']):.3f}, max {max(one['seconds']):.3f}, {len(one['seconds'])} calls): "
          f"{1 / lat:.3f} images/s = {ref_spi / lat:.2f}x reference; MFU {mfu(lat, one['dtype'])}")
    print(f"      peak GPU memory {gib(one['peak_gpu_bytes'])}, peak RSS {one['rss_mib']:.0f} MiB; process wall {one['wall']:.1f} s"
          + (f"; {one['warnings']} warning(s) logged (e.g. a non-finite fp16 decode redone in fp32)" if one["warnings"] else ""))
    d = one.get("diff")
    if d and "error" in d:
        print(f"      outputs vs the reference's: {d['error']}")
    elif d:
        print(f"      outputs vs the reference's (same photos and seeds, {d['images']} images): max |d| {d['max']}, "
              f"mean |d| {d['mean']:.3f} (0-255); {d['identical']} identical")
    if one.get("sync"):
        print_sync(one["sync"])
    print(f"      target: single-image latency <= {TARGETS['latency_s']} s: {verdict(lat <= TARGETS['latency_s'])}", flush=True)


def print_fold(a, fold: dict, tool_args: list[str], ref_ips: float, dtype, default_dtype: str, mfu, verdict, judged) -> None:
    dt = dtype or default_dtype
    whole_ips = a.images / fold["wall"]
    print(f"(c) tool, folder of {a.images} photos, whole command (`python -m img2img_cli run DIR ... "
          f"{' '.join(tool_args)}`{', through the timing probe' if not a.plain_cli else ''})")
    print(f"      wall {fold['wall']:.2f} s: {whole_ips:.3f} images/s = {whole_ips / ref_ips:.2f}x reference; MFU {mfu(1 / whole_ips, dt)}")
    if fold.get("estimated"):
        print(f"      start-up + tail, estimated as wall - sum of per-image seconds from --json: {fold['startup_s']:.2f} s")
        print(f"      compile/warm-up, estimated as sum of per-image seconds - {a.images} x their median: {fold['compile_s']:.2f} s")
        if fold.get("steady_ips"):
            ips = fold["steady_ips"]
            print(f"      steady state, estimated as 1 / median per-image seconds: {ips:.3f} images/s = "
                  f"{ips / ref_ips:.2f}x reference; MFU {mfu(1 / ips, dt)}")
    else:
        print(f"      start-up (spawn -> model loaded): {fold['startup_s']:.2f} s; then {fold['between_s']:.2f} s to the first batch")
        print(f"      first batch ({fold['first_batch_images']} images, of {fold['batches']} batches): {fold['first_batch_s']:.2f} s"
              + (f", of which ~{fold['compile_s']:.2f} s compile/warm-up" if "compile_s" in fold else ""))
        if "steady_ips" in fold:
            ips = fold["steady_ips"]
            print(f"      steady state ({fold['steady_images']} images after the first batch, {fold['steady_s']:.2f} s): "
                  f"{ips:.3f} images/s = {ips / ref_ips:.2f}x reference; MFU {mfu(1 / ips, dt)}")
        else:
            print("      steady state: n/a (all images went in one batch; use more --images)")
        print(f"      tail (last batch done -> exit): {fold['tail_s']:.2f} s")
    print(f"      peak GPU memory {gib(fold.get('peak_gpu_bytes')) if not a.plain_cli else 'n/a (--plain-cli)'}, "
          f"peak RSS {fold['rss_mib']:.0f} MiB")
    if fold.get("fp32_redecodes"):
        print(f"      WARNING: {fold['fp32_redecodes']} batch(es) decoded again in fp32 (non-finite fp16 decode): slower than it should be")
    steady = fold.get("steady_ips")
    print(f"      targets: >= {TARGETS['folder_ips']:.0f} images/s and >= {TARGETS['folder_ratio']:.0f}x reference on one H100: "
          f"whole command {verdict(whole_ips >= TARGETS['folder_ips'] and whole_ips / ref_ips >= TARGETS['folder_ratio'])}"
          + (f"; steady state {verdict(steady >= TARGETS['folder_ips'] and steady / ref_ips >= TARGETS['folder_ratio'])}"
             if steady else ""), flush=True)


if __name__ == "__main__":
    main()

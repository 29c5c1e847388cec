"""GPU speed: diffusers' img2img pipeline as its docs set it up against the tool, side by side
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

(a) reference: ``StableDiffusionImg2ImgPipeline.from_pretrained(folder, dtype=torch.float16)``
    (``StableDiffusionXLImg2ImgPipeline`` for SDXL)
    (fp32 on a CPU; ``dtype`` is diffusers 0.42's name for the deprecated ``torch_dtype``),
    ``pipe.to("cuda")``, default attention (PyTorch SDPA), eager, one image per call, the model
    loaded once, CPU generator seeded per image: 1 warm-up call, then
    images/s = N / (wall time of N calls on N photos).
(b) the tool, one image at a time, through its Python API:
    ``load_pipeline(resolve_model(folder), device=..., dtype=..., speed=Speed(...))`` then
    ``generate(pipe, [Request(...)])``, the settings parsed from ``--tool-args`` (default on CUDA
    ``--compile --channels-last --fuse-qkv --dtype fp16``; on a CPU ``--dtype fp32
    --channels-last``; ``--batch-size`` is ignored here); 2 warm-up calls with ``--compile``
    (the first compiles, the second may still record CUDA graphs under max-autotune), else 1;
    then the median latency of ``--latency-runs`` calls, each on another photo;
    images/s = 1 / median latency.
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
    compile times are cold-cache times (``--shared-compile-cache`` to use the usual caches).

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
        [--images 64] [--steps 50] [--size 512] [--tool-args "--compile --channels-last --fuse-qkv"]
    python benchmarks/gpu.py --model tiny --device cpu --images 4 --steps 8   # smoke test, ~1 min

On a GPU machine that has torch, transformers, accelerate and safetensors but not diffusers
(or typer), copy the wheels alongside and install them without dependencies, then run from
the repository root::

    pip install --no-deps diffusers-0.42.1-py3-none-any.whl   # and typer, shellingham, rich if missing
    PYTHONPATH=. python benchmarks/gpu.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"]
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
    """(a) diffusers' img2img pipeline as its docs set it up; one image per call."""
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
    seconds = []
    t_loop = time.perf_counter()
    for i, image in enumerate(images):
        t0 = time.perf_counter()
        call(image, i)
        seconds.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_loop
    return {"load_s": load_s, "warmup_s": [warmup_s], "seconds": seconds, "total_s": total,
            "unet_calls": calls[0], "peak_gpu_bytes": _peak_gpu(dev), "threads": torch.get_num_threads()}


def parse_tool_args(args: list[str]) -> argparse.Namespace:
    """The speed options of `img2img run` that the single-image run understands."""
    p = argparse.ArgumentParser(prog="--tool-args", add_help=False)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--fuse-qkv", action="store_true")
    p.add_argument("--vae-tiling", action="store_true")
    p.add_argument("--offload", choices=["model", "sequential"], default=None)
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    p.add_argument("--scheduler", "--sampler", default=None)
    p.add_argument("--batch-size", "-b", default="auto")  # used by the folder run only
    ns, rest = p.parse_known_args(args)
    if rest:
        sys.exit(f"gpu.py: --tool-args: not understood by the single-image run: {' '.join(rest)}")
    return ns


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

    def call(image, seed):
        req = Request(image, PROMPT, "", seed, c["strength"], c["steps"], c["guidance"])
        return generate(pipe, [req])[0]

    warmup = []
    for k in range(c["warmup"] if c["warmup"] is not None else (2 if ns.compile else 1)):
        t0 = time.perf_counter()
        call(images[0], k)
        warmup.append(time.perf_counter() - t0)
    seconds = []
    for i in range(c["runs"]):
        t0 = time.perf_counter()
        call(images[i % len(images)], i)
        seconds.append(time.perf_counter() - t0)
    return {"load_s": load_s, "warmup_s": warmup, "seconds": seconds, "total_s": sum(seconds),
            "peak_gpu_bytes": _peak_gpu(dev), "warnings": Count.n, "dtype": str(dtype).replace("torch.", "")}


def worker_prepare(c: dict) -> dict:
    """Device, model (built if needed), UNet calls, FLOPs and the measured peak, in a child
    process so that the launcher stays small (see ``run_measured``)."""
    import diffusers
    import torch

    from img2img_cli.models import CONFIGS_DIR, TINY_DIR, resolve_dtype

    device = c["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu.py: --device cuda: no CUDA device is available")
    ref_dtype = torch.float16 if device == "cuda" else torch.float32
    tool_dtype = resolve_dtype(c["tool_dtype"], device)
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
    peak, peak_what = measure_peak(device, tool_dtype)
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {"device": device, "device_name": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "model": str(model), "build_s": build_s, "unet_calls": n_calls, "flops": flops, "peak": peak,
            "peak_what": peak_what, "ref_dtype": str(ref_dtype).replace("torch.", ""),
            "tool_dtype": str(tool_dtype).replace("torch.", "")}


WORKERS = {"prepare": worker_prepare, "reference": worker_reference, "tool": worker_tool}


# --- running children ---------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` as a child and wait with ``os.wait4`` for its own rusage. Returns spawn time
    (``time.time()``), wall seconds, peak RSS MiB, stdout, stderr, exit code.

    Linux records the high-water RSS of the memory image that ``exec`` replaces, which for a
    child started by (v)fork is the launcher's: a child's ``ru_maxrss`` is at least the
    launcher's own peak. The launcher therefore never imports torch (the heavy work is in
    child processes) and prints its own peak RSS, the floor of every figure."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        spawn = time.time()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        end = time.time()
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    return {"spawn": spawn, "end": end, "wall": wall, "rss_mib": usage.ru_maxrss / 1024.0,
            "out": out, "err": err, "rc": os.waitstatus_to_exitcode(status)}


def _check(r: dict, what: str) -> None:
    if r["rc"]:
        sys.exit(f"gpu.py: {what} failed (exit {r['rc']}):\n{r['err'][-4000:]}")


def run_worker(name: str, config: dict, env: dict) -> dict:
    r = run_measured([sys.executable, str(Path(__file__).resolve()), "_worker", name, json.dumps(config)], env)
    _check(r, f"the {name} run")
    lines = [ln for ln in r["out"].splitlines() if ln.startswith(RESULT)]
    if not lines:
        sys.exit(f"gpu.py: the {name} run printed no result:\n{r['err'][-4000:]}")
    res = json.loads(lines[-1][len(RESULT):])
    res["rss_mib"], res["wall"] = r["rss_mib"], r["wall"]
    return res


def run_folder(a, model: Path, corpus: Path, out: Path, tool_args: list[str], env: dict, probe_file: Path) -> dict:
    """(c) the whole command on the folder; timings split with the probe (or estimated)."""
    args = ["run", str(corpus), "--model", str(model), "-p", PROMPT, "--size", f"{a.size}x{a.size}",
            "--steps", str(a.steps), "--strength", str(a.strength), "-g", str(a.guidance), "--seed", "0",
            "--quiet", "--json", "-o", str(out), "--device", a.device, *tool_args]
    if a.plain_cli:
        cmd = [sys.executable, "-m", "img2img_cli", *args]
    else:
        cmd = [sys.executable, "-c", PROBE, str(probe_file), *args]
    r = run_measured(cmd, env)
    _check(r, "the folder command")
    rows = [json.loads(ln) for ln in r["out"].splitlines() if ln.startswith("{")]
    n = len(rows)
    if n != a.images:
        sys.exit(f"gpu.py: the folder command wrote {n} images, expected {a.images}:\n{r['err'][-3000:]}")
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


# --- report -------------------------------------------------------------------------------


def flop(x: float) -> str:
    return f"{x / 1e12:.3f} TFLOP" if x >= 1e11 else f"{x / 1e9:.3f} GFLOP"


def gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "_worker":
        res = WORKERS[sys.argv[2]](json.loads(sys.argv[3]))
        print(RESULT + json.dumps(res), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--model", choices=["sd15", "sdxl", "tiny"], default="sd15")
    ap.add_argument("--sdxl", action="store_true", help="same as --model sdxl")
    ap.add_argument("--images", type=int, default=64, help="photos in the folder run and the reference loop")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=None, help="square side in px (512; 1024 for SDXL; 64 for tiny)")
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--tool-args", default=None,
                    help=f"speed flags of `img2img run` (CUDA: {DEFAULT_TOOL_ARGS['cuda']!r}; CPU: {DEFAULT_TOOL_ARGS['cpu']!r})")
    ap.add_argument("--latency-runs", type=int, default=10, help="timed single-image calls in (b)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls in (b) (default 2 with --compile, else 1)")
    ap.add_argument("--model-dir", type=Path, default=None, help="keep the built model here and reuse it")
    ap.add_argument("--plain-cli", action="store_true", help="run (c) as plain `python -m img2img_cli` (no probe)")
    ap.add_argument("--shared-compile-cache", action="store_true", help="let compiles use the usual inductor caches")
    a = ap.parse_args()
    if a.sdxl:
        a.model = "sdxl"
    if a.images < 1 or a.steps < 1 or a.latency_runs < 1:
        ap.error("--images, --steps and --latency-runs must be at least 1")
    missing = [m for m in ("torch", "diffusers", "transformers", "typer", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"gpu.py: missing {', '.join(missing)}: install them (`pip install --no-deps <wheel>`; see the docstring)")
    t_all = time.perf_counter()
    a.size = a.size or DEFAULT_SIZE[a.model]
    if a.size % 8:
        ap.error("--size must be a multiple of 8")
    # the default tool args depend on the device, known once torch has looked (in `prepare`);
    # their --dtype is "auto"-equivalent (fp16 on CUDA, fp32 on a CPU)
    ns = parse_tool_args(shlex.split(a.tool_args or ""))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    tmp = Path(tempfile.mkdtemp(prefix="img2img-bench-gpu-"))
    try:
        # 1. device, model, FLOPs, peak (a child process)
        print("preparing: device, model, FLOP count, peak matmul ...", flush=True)
        prep = run_worker("prepare", {"device": a.device, "model": a.model, "tool_dtype": ns.dtype,
                                      "model_dir": str(a.model_dir or tmp / f"{a.model}-random"),
                                      "steps": a.steps, "strength": a.strength, "size": a.size}, env)
        a.device, model = prep["device"], Path(prep["model"])
        tool_args = shlex.split(a.tool_args if a.tool_args is not None else DEFAULT_TOOL_ARGS[a.device])
        n_calls, fl, peak = prep["unet_calls"], prep["flops"], prep["peak"]
        per_image = n_calls * fl["unet_b2"] + fl["vae_encode"] + fl["vae_decode"]
        floor_s = per_image / peak
        # 2. photos
        corpus = tmp / "photos"
        make_corpus(corpus, a.images, a.size)

        def child_env(name: str) -> dict:
            if a.shared_compile_cache:
                return env
            return {**env, "TORCHINDUCTOR_CACHE_DIR": str(tmp / f"inductor-{name}"),
                    "TRITON_CACHE_DIR": str(tmp / f"triton-{name}")}

        common = {"device": a.device, "model": str(model), "corpus": str(corpus), "steps": a.steps,
                  "strength": a.strength, "guidance": a.guidance, "sdxl": a.model == "sdxl"}
        print(f"(a) reference: {a.images} images ...", flush=True)
        ref = run_worker("reference", {**common, "dtype": prep["ref_dtype"], "images": a.images}, child_env("reference"))
        print(f"(b) tool, single image: {a.latency_runs} timed calls ...", flush=True)
        one = run_worker("tool", {**common, "tool_args": tool_args, "runs": a.latency_runs, "warmup": a.warmup},
                         child_env("tool"))
        print(f"(c) tool, folder of {a.images} photos ...", flush=True)
        fold = run_folder(a, model, corpus, tmp / "out", tool_args, child_env("folder"), tmp / "probe.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import resource

    launcher_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # --- print ------------------------------------------------------------------------------
    T = 1e12
    judged = (a.model == "sd15" and a.device == "cuda" and a.size == 512 and a.steps == 50 and a.strength == 0.75
              and a.guidance == 7.5)

    def verdict(ok: bool) -> str:
        return ("met" if ok else "NOT met") if judged else "not judged here"

    def mfu(s_per_image: float) -> str:
        return f"{100.0 * per_image / s_per_image / peak:5.1f} %"

    ref_ips = a.images / ref["total_s"]
    ref_spi = 1.0 / ref_ips
    lat = statistics.median(one["seconds"])
    dev_kind = "GPU" if a.device == "cuda" else "CPU"
    print()
    print(f"{dev_kind} benchmark: {a.model} architecture "
          f"({'built-in tiny model' if a.model == 'tiny' else 'random weights'}), {a.size}x{a.size} img2img, "
          f"strength {a.strength}, {a.steps} steps -> {n_calls} UNet calls on a CFG batch of 2, guidance {a.guidance}")
    print(f"  device: {prep['device_name']}; torch {prep['torch']}, diffusers {prep['diffusers']}")
    if prep["build_s"] is not None:
        print(f"  model built on {a.device} in {prep['build_s']:.1f} s ({prep['ref_dtype']}), saved with save_pretrained")
    if ref["unet_calls"] != n_calls:
        print(f"  WARNING: the reference made {ref['unet_calls']} UNet calls per image, get_timesteps says {n_calls}")
    print(f"  FLOPs per image (torch.utils.flop_counter, meta device): UNet {flop(fl['unet_b2'])} per call (CFG batch 2) x "
          f"{n_calls} + VAE encode {flop(fl['vae_encode'])} + VAE decode {flop(fl['vae_decode'])} = "
          f"{flop(per_image)}  (text encoders {flop(fl['text_encoders'])}, not counted)")
    rate = f"{peak / T:.1f} TFLOP/s" if peak >= T else f"{peak / 1e9:.1f} GFLOP/s"
    print(f"  measured peak ({prep['peak_what']}{', a CPU figure' if a.device == 'cpu' else ''}): {rate}")
    print(f"  compute floor: {floor_s * 1000:.1f} ms per image ({1 / floor_s:.2f} images/s)"
          f"   [issue: ~{TARGETS['floor_tflop']:.0f} TFLOP/image (74 UNet evaluations of ~0.8 TFLOP + VAE), "
          f"~{TARGETS['floor_ms']:.0f} ms at 800 TFLOP/s]")
    if n_calls != int(a.steps * a.strength):
        print(f"  note: the scheduler runs {n_calls} UNet calls, not int({a.steps} x {a.strength}) = "
              f"{int(a.steps * a.strength)} (its timestep list is longer than the steps, as PNDM's is)")
    print()
    print(f"(a) reference: diffusers {'StableDiffusionXLImg2ImgPipeline' if a.model == 'sdxl' else 'StableDiffusionImg2ImgPipeline'}, "
          f"{prep['ref_dtype']}, SDPA, eager, 1 image per call")
    print(f"      load {ref['load_s']:.1f} s (imports excluded), warm-up call {ref['warmup_s'][0]:.2f} s; {a.images} images in {ref['total_s']:.2f} s: "
          f"{ref_ips:.3f} images/s ({ref_spi:.3f} s/image); MFU {mfu(ref_spi)}")
    print(f"      peak GPU memory {gib(ref['peak_gpu_bytes'])}, peak RSS {ref['rss_mib']:.0f} MiB")
    one_flags, skip = [], False
    for t in tool_args:  # --batch-size is for (c) only
        if not skip and not t.startswith("--batch-size=") and t not in ("--batch-size", "-b"):
            one_flags.append(t)
        skip = t in ("--batch-size", "-b")
    one_flags = " ".join(one_flags)
    print(f"(b) tool, one image at a time (Python API; {one_flags or 'no flags'}; {one['dtype']})")
    print(f"      load {one['load_s']:.1f} s (imports excluded), warm-up calls {', '.join(f'{s:.2f}' for s in one['warmup_s'])} s; "
          f"latency median {lat:.3f} s (min {min(one['seconds']):.3f}, max {max(one['seconds']):.3f}, {len(one['seconds'])} calls): "
          f"{1 / lat:.3f} images/s = {ref_spi / lat:.2f}x reference; MFU {mfu(lat)}")
    print(f"      peak GPU memory {gib(one['peak_gpu_bytes'])}, peak RSS {one['rss_mib']:.0f} MiB"
          + (f"; {one['warnings']} warning(s) logged (e.g. a non-finite fp16 decode redone in fp32)" if one["warnings"] else ""))
    print(f"      target: single-image latency <= {TARGETS['latency_s']} s: {verdict(lat <= TARGETS['latency_s'])}")
    whole_ips = a.images / fold["wall"]
    print(f"(c) tool, folder of {a.images} photos, whole command (`python -m img2img_cli run DIR ... "
          f"{' '.join(tool_args)}`{', through the timing probe' if not a.plain_cli else ''})")
    print(f"      wall {fold['wall']:.2f} s: {whole_ips:.3f} images/s = {whole_ips / ref_ips:.2f}x reference; MFU {mfu(1 / whole_ips)}")
    if fold.get("estimated"):
        print(f"      start-up + tail, estimated as wall - sum of per-image seconds from --json: {fold['startup_s']:.2f} s")
        print(f"      compile/warm-up, estimated as sum of per-image seconds - {a.images} x their median: {fold['compile_s']:.2f} s")
        if fold.get("steady_ips"):
            ips = fold["steady_ips"]
            print(f"      steady state, estimated as 1 / median per-image seconds: {ips:.3f} images/s = "
                  f"{ips / ref_ips:.2f}x reference; MFU {mfu(1 / ips)}")
    else:
        print(f"      start-up (spawn -> model loaded): {fold['startup_s']:.2f} s; then {fold['between_s']:.2f} s to the first batch")
        print(f"      first batch ({fold['first_batch_images']} images, of {fold['batches']} batches): {fold['first_batch_s']:.2f} s"
              + (f", of which ~{fold['compile_s']:.2f} s compile/warm-up" if "compile_s" in fold else ""))
        if "steady_ips" in fold:
            ips = fold["steady_ips"]
            print(f"      steady state ({fold['steady_images']} images after the first batch, {fold['steady_s']:.2f} s): "
                  f"{ips:.3f} images/s = {ips / ref_ips:.2f}x reference; MFU {mfu(1 / ips)}")
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
             if steady else ""))
    if not judged:
        print("      (targets are for SD 1.5, 512x512, 50 steps, strength 0.75 on one H100; not judged for this configuration)")
    print(f"peak RSS figures include the launcher's own {launcher_rss:.0f} MiB (Linux counts the image a child's exec replaces)")
    print(f"benchmark took {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()

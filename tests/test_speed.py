"""Speed settings: they keep the pictures (within a stated tolerance) and fail clearly where
they cannot apply."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app
from img2img_cli.io import target_size
from img2img_cli.models import cpu_has_native

from .conftest import EXAMPLES

runner = CliRunner()
FAST = ["--model", "tiny", "--steps", "6", "--seed", "3", "-p", "a painting"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_channels_last_and_fused_qkv_keep_the_pixels(tmp_path):
    plain, fast = tmp_path / "plain.png", tmp_path / "fast.png"
    assert invoke("run", EXAMPLES / "coffee.png", *FAST, "-o", plain).exit_code == 0
    r = invoke("run", EXAMPLES / "coffee.png", *FAST, "--channels-last", "--fuse-qkv", "-o", fast)
    assert r.exit_code == 0, r.stderr
    # same math in another memory layout / one fused matmul: float rounding only (measured: max 1/255)
    assert np.abs(pixels(plain) - pixels(fast)).max() <= 2


def test_vae_tiling_runs_and_changes_only_the_decode(tmp_path):
    plain, tiled = tmp_path / "plain.png", tmp_path / "tiled.png"
    assert invoke("run", EXAMPLES / "coffee.png", *FAST, "-o", plain).exit_code == 0
    r = invoke("run", EXAMPLES / "coffee.png", *FAST, "--vae-tiling", "-o", tiled)
    assert r.exit_code == 0, r.stderr
    # tiles (32 px for the tiny VAE) are blended at their seams: a visible but bounded change
    d = np.abs(pixels(plain) - pixels(tiled))
    assert 0 < d.mean() < 20


def test_offload_needs_cuda(tmp_path):
    r = invoke("run", EXAMPLES / "coffee.png", *FAST, "--device", "cpu", "--offload", "model", "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "--offload model: needs a CUDA device" in r.stderr


def test_emulated_bf16_is_warned_about(tmp_path):
    r = invoke("run", EXAMPLES / "coffee.png", *FAST, "--dtype", "bf16", "-o", tmp_path / "o.png")
    assert r.exit_code == 0, r.stderr
    assert ("emulated" in r.stderr) == (not cpu_has_native("bf16"))


def test_compile_buckets_sizes():
    assert target_size((451, 300), 512, multiple=64) == (512, 320)
    assert target_size((300, 451), 512, multiple=64) == (320, 512)
    assert target_size((640, 427), 1024, multiple=64) == (1024, 640)


@pytest.mark.slow
def test_compile_matches_eager_and_pads_batches(tmp_path, photos):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    args = [photos, *FAST, "--batch-size", "3"]
    r = invoke("run", *args, "--size", "64x64", "-o", eager)
    assert r.exit_code == 0, r.stderr
    r = invoke("run", *args, "--size", "64x64", "--compile", "-o", compiled)  # 4 images: a batch of 3, one padded to 3
    assert r.exit_code == 0, r.stderr
    for f in eager.iterdir():
        assert np.abs(pixels(f) - pixels(compiled / f.name)).max() <= 2


@pytest.mark.gpu
def test_cuda_fp16_matches_diffusers_fp16(tmp_path):
    """On a GPU: the default CUDA path (fp16) gives diffusers' own fp16 pixels (within 2/255)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from img2img_cli.models import TINY_DIR

    src = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").resize((64, 64)).save(src)
    out = tmp_path / "o.png"
    r = invoke("run", src, *FAST, "--device", "cuda", "-o", out)
    assert r.exit_code == 0, r.stderr
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY_DIR), torch_dtype=torch.float16).to("cuda")
    ref = pipe(prompt="a painting", image=Image.open(src).convert("RGB"), strength=0.75, num_inference_steps=6,
               guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.abs(pixels(out) - np.asarray(ref, dtype=np.int16)).max() <= 2


def test_tensor_sources_and_device_side_uint8_give_diffusers_pixels_exactly(tiny_pipe):
    """The batch runner hands the pipeline float tensors made in its reader thread and turns the
    result into 8 bits where it was computed: both must be diffusers' own pixels, bit for bit."""
    import torch

    from img2img_cli.pipeline import Request, generate, to_pil, to_tensor

    srcs = [Image.open(EXAMPLES / n).convert("RGB").resize((64, 48)) for n in ("chelsea.png", "coffee.png", "camera.png")]
    t = to_tensor(srcs[0])
    assert t.shape == (3, 48, 64) and t.dtype == torch.float32
    ref = tiny_pipe.image_processor.pil_to_numpy([srcs[0]])[0]  # diffusers' own (H, W, 3) in [0, 1]
    assert np.array_equal(t.permute(1, 2, 0).numpy(), ref)

    def batch(images):  # one pipeline call on 3 images (the layout of a batch changes the rounding)
        out = generate(tiny_pipe, [Request(i, "a painting", "", 7 + k, 0.75, 6, 7.5) for k, i in enumerate(images)])
        return [np.asarray(o) for o in out]

    direct = tiny_pipe(prompt=["a painting"] * 3, negative_prompt=[""] * 3, image=srcs, strength=0.75,
                       num_inference_steps=6, guidance_scale=7.5,
                       generator=[torch.Generator("cpu").manual_seed(7 + k) for k in range(3)]).images
    for ours in (batch([to_tensor(i) for i in srcs]), batch(srcs)):
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(ours, direct))

    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)).half()
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5 / 255])  # the ends, and a half-way rounding case
    ours = [np.asarray(i) for i in to_pil(x)]
    theirs = [np.asarray(i) for i in tiny_pipe.image_processor.numpy_to_pil(tiny_pipe.image_processor.pt_to_numpy(x))]
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_an_image_with_more_outputs_than_the_batch_is_read_once(tmp_path, photos, monkeypatch):
    import img2img_cli.runner as batch

    calls = []
    real = batch.load_image
    monkeypatch.setattr(batch, "load_image", lambda path, **k: calls.append(path.name) or real(path, **k))
    r = invoke("run", photos / "coffee.png", photos / "camera.png", *FAST, "--steps", "2", "--size", "64x64",
               "-N", "5", "--batch-size", "2", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "out").iterdir())) == 10
    assert sorted(calls) == ["camera.png", "coffee.png"]


def test_summary_says_where_the_time_went(tmp_path, photos):
    import re

    r = invoke("run", photos, *FAST, "--steps", "2", "--size", "64x64", "--batch-size", "2", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    m = re.search(r"images/s; model load ([\d.]+) s, first batch of 2 ([\d.]+) s, then ([\d.]+) images/s\)$", r.stderr.strip())
    assert m, r.stderr
    total = float(re.search(r"in ([\d.]+) s", r.stderr).group(1))
    load, first, rate = (float(g) for g in m.groups())
    assert 0 < load < total and 0 < first < total and rate > 0
    # the second batch of 2 fits in what is left after the load and the first batch
    assert load + first + 2 / rate <= total * 1.05 + 0.2  # printed to 0.1 s and 0.01 images/s
    assert len(r.stderr.strip().splitlines()) == 1  # one summary line, nothing else


@pytest.mark.parametrize("dtype, max_diff, min_psnr", [("bf16", 8, 45.0), ("fp16", 2, 55.0)])
def test_half_precision_stays_within_the_stated_tolerance(tmp_path, dtype, max_diff, min_psnr):
    """README, *Speed*: on the tiny model (64x64, 8 steps, 4 photos) bf16 is within max 4/255 of
    fp32 (PSNR 49.9 dB), fp16 within 1/255 (~60 dB); the bounds leave room for other CPUs."""
    ref, half = tmp_path / "fp32.png", tmp_path / f"{dtype}.png"
    args = [EXAMPLES / "chelsea.png", *FAST, "--steps", "8", "--size", "64x64"]
    assert invoke("run", *args, "--dtype", "fp32", "-o", ref).exit_code == 0
    r = invoke("run", *args, "--dtype", dtype, "-o", half)
    assert r.exit_code == 0, r.stderr
    d = pixels(ref).astype(np.float64) - pixels(half)
    psnr = 10 * np.log10(255.0**2 / max((d**2).mean(), 1e-12))
    assert 0 < np.abs(d).max() <= max_diff and psnr >= min_psnr


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_compile_settings_per_device(device):
    """What --compile asks of inductor (compiling itself is lazy: nothing runs here): on a CPU
    weight freezing (measured 1.4-1.9x on the SD 1.5 UNet); on CUDA max-autotune with the
    settings of diffusers' speed guide, and no freezing."""
    import torch._inductor.config as inductor
    from diffusers import StableDiffusionImg2ImgPipeline

    from img2img_cli.models import compile_modules

    from .conftest import TINY

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY), local_files_only=True)  # its own modules
    keep = ("freezing", "conv_1x1_as_mm", "coordinate_descent_tuning", "epilogue_fusion",
            "coordinate_descent_check_all_directions")
    with inductor.patch({name: getattr(inductor, name) for name in keep}):  # restored afterwards
        inductor.freezing = False
        inductor.epilogue_fusion = True
        compile_modules(pipe, device)
        assert all(type(m).__name__ == "OptimizedModule" for m in (pipe.unet, pipe.vae.decoder, pipe.vae.encoder))
        assert inductor.freezing == (device == "cpu")
        assert inductor.epilogue_fusion == (device == "cpu")
    # on CUDA (CUDA graphs) the UNet's outputs are cloned out of the graph's memory pool
    hooks = list(pipe.unet._forward_hooks.values())
    assert len(hooks) == (device == "cuda")
    if hooks:
        import torch

        out = (torch.ones(2), 3)
        copied = hooks[0](pipe.unet, (), out)
        assert torch.equal(copied[0], out[0]) and copied[0].data_ptr() != out[0].data_ptr() and copied[1] == 3


@pytest.mark.gpu
@pytest.mark.parametrize("guidance", ["7.5", "1"])
def test_cuda_compile_with_cuda_graphs_matches_eager(tmp_path, photos, guidance):
    """On a GPU: --compile (max-autotune, CUDA graphs) against eager fp16, with guidance on and
    off (off: PNDM keeps the UNet's raw outputs across steps, which graph replays would
    overwrite if they were not cloned)."""
    args = [photos, *FAST, "--device", "cuda", "--size", "64x64", "--batch-size", "3", "-g", guidance]
    assert invoke("run", *args, "-o", tmp_path / "eager").exit_code == 0
    r = invoke("run", *args, "--compile", "-o", tmp_path / "compiled")
    assert r.exit_code == 0, r.stderr
    for f in (tmp_path / "eager").iterdir():
        assert np.abs(pixels(f) - pixels(tmp_path / "compiled" / f.name)).max() <= 2

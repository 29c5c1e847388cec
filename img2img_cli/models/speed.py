"""Speed settings (:class:`~img2img_cli.config.Speed`: ``--compile``, ``--channels-last``,
``--fuse-qkv``, ``--offload``, ``--vae-tiling``) applied to a loaded pipeline."""

from __future__ import annotations

from ..config import Speed
from ..errors import UsageError


def apply_speed(pipe, speed: Speed, device: str):
    """Move ``pipe`` to ``device`` (or set up offloading) and apply ``speed``; returns ``pipe``.

    Raises:
        UsageError: ``offload`` without a CUDA device.
    """
    import torch

    if speed.offload:
        if not device.startswith("cuda"):
            raise UsageError(f"--offload {speed.offload}: needs a CUDA device (got {device})")
        if speed.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    if speed.fuse_qkv:
        pipe.fuse_qkv_projections()
    if speed.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if speed.vae_tiling:
        pipe.vae.enable_tiling()
    if speed.compile:
        compile_modules(pipe, device)
    return pipe


def compile_modules(pipe, device: str) -> None:
    """``torch.compile`` the UNet and the VAE's decoder and encoder (``fullgraph``, static shapes).

    Inductor settings, process-wide:

    - on a CPU, ``freezing``: the weights are constants at inference, so inductor folds them
      into the graph and prepacks them for oneDNN's convolutions and matmuls. Measured on our
      2-core AVX2 CPU (SD 1.5 UNet, random weights, 256x256, CFG batch 2, fp32): eager 4.54 s,
      eager channels_last 3.60 s, compiled with freezing 2.39 s per call, max difference 6e-6,
      after 115 s of compiling (``/tmp`` experiment, see the README's *Speed*).
    - on CUDA, mode ``max-autotune`` (Triton GEMM autotuning and CUDA graphs) and the settings
      of diffusers' guide "Accelerate inference of text-to-image diffusion models"
      (``docs/source/en/tutorials/fast_diffusion.md``, from the PyTorch blog "Accelerating
      Generative AI Part III: Diffusion, Fast"): ``conv_1x1_as_mm``, ``coordinate_descent_tuning``,
      ``coordinate_descent_check_all_directions``, ``epilogue_fusion=False``. Not measured by
      us: no GPU was available (``benchmarks/gpu.py --configs`` measures them).

    The encoder is called one image at a time by the pipelines (``retrieve_latents`` per
    generator), so its one shape compiles once.

    CUDA graphs reuse their output memory at the next replay. The pipelines use the UNet's
    output at once, except where a scheduler keeps it across steps (PNDM's ``ets`` history
    holds the raw output when guidance is off, ``guidance_scale <= 1``), so the compiled UNet's
    output is cloned on CUDA (one latent-sized copy per step).
    """
    import torch
    import torch._inductor.config as inductor

    mode = None
    if not device.startswith("cuda"):
        inductor.freezing = True
    else:
        mode = "max-autotune"
        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.coordinate_descent_check_all_directions = True
        inductor.epilogue_fusion = False
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True, dynamic=False)
    if mode == "max-autotune":
        pipe.unet.register_forward_hook(_own_outputs)
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=mode, fullgraph=True, dynamic=False)
    pipe.vae.encoder = torch.compile(pipe.vae.encoder, mode=mode, fullgraph=True, dynamic=False)


def _own_outputs(_module, _args, output):
    """Forward hook: the outputs cloned out of the CUDA graph's memory pool."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in output)
    return output  # a dataclass output (return_dict=True): the pipelines ask for tuples


"""Device and dtype choice: ``--device`` and ``--dtype``."""

from __future__ import annotations

import logging

from ..errors import UsageError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``mps``, else ``cpu``.

    Raises:
        UsageError: ``--device cuda`` or ``mps`` asked for but not available.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (try --device cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available (try --device cpu)")
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto`` -> ``torch.float16`` on cuda and mps, ``torch.float32`` on the CPU
    (diffusers' docs run fp16 on GPUs; its CPU default is fp32)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device in ("cuda", "mps") else torch.float32
    if device == "cpu" and dtype in ("bf16", "fp16") and not cpu_has_native(dtype):
        log.warning(
            "--dtype %s: this CPU has no native %s arithmetic (%s); it is emulated and much slower "
            "than fp32 (measured: 30x slower for the SD 1.5 UNet on an AVX2 CPU)",
            dtype, dtype, torch.backends.cpu.get_cpu_capability(),
        )
    return table[dtype]


def cpu_has_native(dtype: str) -> bool:
    """Whether oneDNN runs ``dtype`` (``bf16`` or ``fp16``) natively on this CPU (AVX512-BF16 /
    AMX / AVX512-FP16); on plain AVX2 it is emulated. Uses ``torch.ops.mkldnn._is_mkldnn_*_supported``."""
    import torch

    try:
        if dtype == "bf16":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == "fp16":
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except Exception:
        return False
    return True



#: UNets above this many parameters are "SD-size" for :func:`speed_hint` (SD 1.x: 860 M,
#: SD 2.x: 866 M, SDXL: 2.6 G; the built-in tiny model: under 2 M). Decided by parameter count,
#: not native resolution: it is what the CPU time scales with (a distilled SD model at 512 px
#: with a small UNet gains less), and it needs no config field.
SD_SIZE_UNET_PARAMS = 100_000_000

BF16_HINT = (
    "this CPU has native bf16: --dtype bf16 is about 3x faster for this model "
    "(output differs slightly from fp32)"
)


def speed_hint(device: str, dtype_option: str, pipe) -> str | None:
    """The hint to give once after loading when speed is waiting, else ``None``.

    Given (:data:`BF16_HINT`) when all hold: ``device`` is ``cpu``; ``--dtype`` was ``auto`` (so
    fp32 was chosen for the user; an explicit ``--dtype fp32`` is a choice, not missed speed);
    the CPU has native bf16 (:func:`cpu_has_native`: AVX512-BF16 or AMX); and the model is
    SD-size (its UNet has more than :data:`SD_SIZE_UNET_PARAMS` parameters). Measured on such a
    CPU: the SD 1.5 architecture at 256 px, 8 steps, 24.5-33.6 s per image in fp32 against
    10.4-10.7 s in bf16, output within 7/255.
    """
    if device != "cpu" or dtype_option != "auto":
        return None
    unet = getattr(pipe, "unet", None)
    if unet is None:
        return None
    try:
        params = sum(p.numel() for p in unet.parameters())
    except Exception:
        return None
    if params <= SD_SIZE_UNET_PARAMS or not cpu_has_native("bf16"):
        return None
    return BF16_HINT

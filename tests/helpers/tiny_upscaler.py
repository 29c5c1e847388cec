"""Tiny super-resolution networks for tests: Real-ESRGAN's Compact architecture (SRVGGNetCompact,
what spandrel calls "RealESRGAN Compact") with a handful of channels and random weights, written
as a file spandrel recognises. Built in a few milliseconds; nothing is downloaded.

Also :func:`import_spandrel`: spandrel imported the way ``img2img_cli.upscalers`` imports it
(with a stand-in for torchvision where it is missing: see ``_import_spandrel``).
"""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path


def import_spandrel():
    """spandrel, as the product imports it (a stand-in for torchvision where it is missing)."""
    from img2img_cli.upscalers import _import_spandrel

    return _import_spandrel(Path("tests"))


def compact_state_dict(scale: int = 2, num_feat: int = 8, num_conv: int = 2, seed: int = 0, identity: bool = False) -> dict:
    """The state dict of a random SRVGGNetCompact (``body.N.weight`` keys, as Real-ESRGAN's
    ``realesr-general-x4v3.pth`` after ``params`` unwrapping).

    Its receptive field is ``num_conv + 2`` 3x3 convolutions (radius ``num_conv + 2`` input
    pixels); the output is the network's residual plus the nearest-neighbour upsampled input.
    ``identity``: the last convolution zeroed, so the network is exactly a nearest-neighbour
    upscale (a constant image stays constant).
    """
    import torch

    import_spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    last = max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    if identity:
        state[f"body.{last}.weight"].zero_()
        state[f"body.{last}.bias"].zero_()
    else:  # a residual of a few percent, so outputs stay in [0, 1] and differ from nearest
        state[f"body.{last}.weight"].mul_(0.1)
    return state


def save_compact(path: Path, **kwargs) -> Path:
    """:func:`compact_state_dict` written to ``path``: ``.safetensors``, or ``.pth`` (a plain
    ``torch.save`` of ``{"params": state_dict}``, as Real-ESRGAN releases are)."""
    state = compact_state_dict(**kwargs)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        import torch

        torch.save({"params": state}, str(path))
    return path


def _payload(marker: str) -> str:
    """What the hostile pickle would run when unpickled: writes ``marker``."""
    Path(marker).write_text("the pickle ran code")
    return marker


class _Hostile:
    """Unpickles as a call to :func:`_payload` (``__reduce__``), the way a malicious .pth runs code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_payload, (self.marker,))


def save_hostile_pth(path: Path, marker: Path) -> Path:
    """A ``.pth`` holding real Compact weights and a pickled object whose unpickling writes
    ``marker``; ``torch.load(weights_only=True)`` refuses it before creating any object."""
    import torch

    torch.save({"params": compact_state_dict(), "hook": _Hostile(marker)}, str(path))
    return path


__all__ = ["compact_state_dict", "import_spandrel", "save_compact", "save_hostile_pth"]

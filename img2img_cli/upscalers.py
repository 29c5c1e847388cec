"""Super-resolution networks without diffusion: load an upscaler file, run it tiled, resize.

What ``img2img upscale`` (A1111's Extras tab) runs, and what an SD upscale reuses:

- :func:`load_upscaler`: ``lanczos`` (plain Lanczos resampling, no file), or a network file
  (Real-ESRGAN, ESRGAN, SwinIR, HAT, DAT, SPAN, Compact...) whose architecture and
  hyper-parameters spandrel (https://github.com/chaiNNer-org/spandrel, 0.4) detects from its
  weights. ``.safetensors`` holds tensors only; ``.pth``/``.pt``/``.ckpt`` are pickles and are
  read only through ``torch.load(weights_only=True)``, which refuses (and never runs) any
  pickled object other than tensors and plain containers.
- :func:`upscale_image`: one ``PIL.Image`` through the network in overlapping tiles
  (:func:`run_tiled`), blended linearly, then resized to ``factor`` with Lanczos, as A1111's
  ``modules/upscaler.py: Upscaler.upscale`` does (network passes until the target size is
  reached, at most 3, then a Lanczos resize to the exact size).

torch and spandrel are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, UsageError
from .io import display, one_line

log = logging.getLogger(__name__)

#: ``--upscaler`` value for plain Lanczos resampling (A1111's upscaler of the same name).
LANCZOS = "lanczos"
#: Weight files :func:`load_upscaler` reads: safetensors, and pickles through ``weights_only``.
SAFETENSORS = (".safetensors",)
PICKLES = (".pth", ".pt", ".ckpt")
#: Default tile side and overlap in input pixels. A1111's ESRGAN tile default is 192 px with
#: 8 px overlap (``ESRGAN_tile``, ``ESRGAN_tile_overlap`` settings); 512/32 keeps the number of
#: tiles (and seams) low while a 4x network's activations for one tile stay well under 1 GB.
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
#: A1111's ``Upscaler.upscale`` runs the network at most this many times to reach the target.
MAX_PASSES = 3
#: Smallest tile an out-of-memory retry halves down to (pixels).
MIN_TILE = 64


@dataclass
class Upscaler:
    """A loaded upscaler.

    Attributes:
        name: what the infotext records as ``Postprocess upscaler``: ``"Lanczos"``, or the
            network file's stem (``4x-UltraSharp``), as A1111 names its ESRGAN models.
        scale: the network's integer factor (1 for restoration networks); ``None`` for Lanczos.
        model: spandrel's ``ImageModelDescriptor`` (on ``device``, in ``dtype``, eval mode), or
            ``None`` for Lanczos.
        architecture: spandrel's architecture name (``"RealESRGAN Compact"``), or ``None``.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``...; dtype: the ``torch.dtype`` it runs in.
    """

    name: str
    scale: int | None = None
    model: object = None
    architecture: str | None = None
    device: str = "cpu"
    dtype: object = None

    @property
    def is_network(self) -> bool:
        return self.model is not None


def check_upscaler(value: str | None) -> Path | None:
    """Check ``--upscaler`` before anything is read: ``lanczos`` gives ``None``, a file gives
    its path.

    Raises:
        UsageError: a file that does not exist, is not a file, or has an extension other
            than :data:`SAFETENSORS` or :data:`PICKLES`.
    """
    if value is None or value.strip().lower() == LANCZOS:
        return None
    path = Path(value)
    if not path.exists():
        raise UsageError(f"--upscaler {display(path)}: no such file (a .safetensors or .pth network file, or {LANCZOS})")
    if not path.is_file():
        raise UsageError(f"--upscaler {display(path)}: not a file")
    if path.suffix.lower() not in SAFETENSORS + PICKLES:
        raise UsageError(
            f"--upscaler {display(path)}: unsupported file type {path.suffix or '(none)'!r}: "
            f"expected {', '.join(SAFETENSORS + PICKLES)}"
        )
    return path


def load_upscaler(value: str, device: str = "cpu", dtype: str = "auto") -> Upscaler:
    """Load ``--upscaler``: ``lanczos`` or a network file, ready to run on ``device``.

    Args:
        value: ``"lanczos"`` (any case) or a path to a ``.safetensors``, ``.pth``, ``.pt`` or
            ``.ckpt`` file holding a state dict spandrel recognises (wrapped in
            ``params_ema``/``params``/``state_dict``... and ``module.`` prefixes accepted:
            ``spandrel.canonicalize_state_dict``).
        device: a resolved device (:func:`img2img_cli.models.resolve_device`).
        dtype: ``--dtype``: ``auto`` is fp16 on CUDA and MPS where the network supports it
            (spandrel's ``supports_half``), else bf16 where it supports that
            (``supports_bfloat16``), else fp32; fp32 on the CPU. ``fp32``, ``fp16`` and
            ``bf16`` are taken as asked.

    Returns:
        an :class:`Upscaler`.

    Raises:
        UsageError: as :func:`check_upscaler`.
        ModelError: one line naming the file: a pickle holding objects ``weights_only=True``
            refuses (not executed), an unreadable or corrupt file, an architecture spandrel
            does not know, a network that is not an RGB image-to-image one (inpainting, face
            restoration, grayscale), a dtype the network does not support, or spandrel not
            importable.
    """
    path = check_upscaler(value)
    if path is None:
        return Upscaler(name="Lanczos")
    spandrel = _import_spandrel(path)
    name = display(path)
    state = _read_state_dict(path)
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise ModelError(f"--upscaler {name}: not a network architecture spandrel {spandrel.__version__} knows") from None
    except Exception as e:  # keys of a known architecture with wrong shapes, missing tensors...
        raise ModelError(f"--upscaler {name}: cannot build the network from its weights ({one_line(e)[:200]})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"--upscaler {name}: a {descriptor.architecture.name} inpainting network, not an upscaler")
    if descriptor.purpose == "FaceSR":
        raise ModelError(f"--upscaler {name}: a {descriptor.architecture.name} face restoration network, not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(
            f"--upscaler {name}: a network with {descriptor.input_channels} input and "
            f"{descriptor.output_channels} output channels; only RGB (3 and 3) networks are supported"
        )
    torch_dtype = _dtype(descriptor, device, dtype, name)
    descriptor.to(device).to(torch_dtype).eval()
    return Upscaler(
        name=path.stem, scale=int(descriptor.scale), model=descriptor, architecture=descriptor.architecture.name,
        device=device, dtype=torch_dtype,
    )


def _import_spandrel(path: Path):
    """spandrel, or a :class:`ModelError` saying how to install it.

    spandrel imports torchvision at module level for two architectures only (LaMa and
    RestoreFormer: inpainting and face restoration, which ``--upscaler`` refuses anyway). A CPU
    torch installed from its own wheel often has no matching torchvision (on our package index
    torchvision is a CUDA build that replaces the CPU torch), so where torchvision is missing
    spandrel is imported with a stand-in for those two imports (:func:`_torchvision_stand_in`),
    taken out of ``sys.modules`` again right after: nothing else ever sees a torchvision.

    Raises:
        ModelError: spandrel is not installed (``make install`` installs it), naming the file.
    """
    try:
        import spandrel
    except ModuleNotFoundError as e:
        if e.name != "torchvision":
            raise ModelError(
                f"--upscaler {display(path)}: needs spandrel, which cannot be imported ({one_line(e)}); "
                "install it: pip install 'img2img-cli[upscale]' (or pip install --no-deps spandrel einops next to a CPU torch)"
            ) from None
        for name in [m for m in sys.modules if m == "spandrel" or m.startswith("spandrel.")]:
            del sys.modules[name]
        stand_ins = _torchvision_stand_in()
        sys.modules.update(stand_ins)
        try:
            import spandrel
        finally:
            for name in stand_ins:
                sys.modules.pop(name, None)
    return spandrel


def _torchvision_stand_in() -> dict:
    """Module objects for ``torchvision``, ``torchvision.transforms`` and
    ``torchvision.transforms.functional`` with the three names spandrel's LaMa and
    RestoreFormer import (``normalize``, ``rotate``, ``InterpolationMode``); calling either
    function raises RuntimeError."""
    import enum
    import types

    def missing(*args, **kwargs):
        raise RuntimeError("this spandrel architecture needs torchvision, which is not installed")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.normalize = functional.rotate = missing
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    root = types.ModuleType("torchvision")
    root.transforms = transforms
    return {"torchvision": root, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def _read_state_dict(path: Path) -> dict:
    """The tensors of ``path`` on the CPU: safetensors' ``load_file``, or
    ``torch.load(weights_only=True)`` for a pickle.

    Raises:
        ModelError: naming the file: a pickle with objects other than tensors and plain
            containers (``weights_only`` refuses them before creating any, so no code in it
            runs), or a file that cannot be read as either format.
    """
    name = display(path)
    if path.suffix.lower() in SAFETENSORS:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise ModelError(f"--upscaler {name}: not a readable .safetensors file ({one_line(e)[:200]})") from None
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: our message says it all
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"a Python object ({found.group(1)})" if found else "pickle instructions"
        raise ModelError(
            f"--upscaler {name}: refused: it holds {what} beyond tensors, which torch.load(weights_only=True) "
            "does not load (nothing in it was run); use a .safetensors file"
        ) from None
    except Exception as e:
        raise ModelError(f"--upscaler {name}: not a readable PyTorch weights file ({one_line(e)[:200]})") from None
    if not isinstance(state, dict):
        raise ModelError(f"--upscaler {name}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _dtype(descriptor, device: str, dtype: str, name: str):
    """The ``torch.dtype`` to run ``descriptor`` in (see :func:`load_upscaler`).

    Raises:
        ModelError: ``fp16`` or ``bf16`` asked for a network spandrel marks as not supporting it.
    """
    import torch

    from .models import resolve_dtype

    if dtype == "auto":
        if device.startswith(("cuda", "mps")):
            if descriptor.supports_half:
                return torch.float16
            if descriptor.supports_bfloat16 and device.startswith("cuda"):
                return torch.bfloat16
        return torch.float32
    wanted = resolve_dtype(dtype, device)
    if (wanted == torch.float16 and not descriptor.supports_half) or (wanted == torch.bfloat16 and not descriptor.supports_bfloat16):
        raise ModelError(f"--dtype {dtype}: {descriptor.architecture.name} ({name}) does not support it; use fp32 or auto")
    return wanted


def target_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """``size`` ``(width, height)`` times ``factor``, rounded to the nearest pixel, at least 1.

    A1111's Extras rounds down to a multiple of 8 (``int(w * scale // 8 * 8)``, a habit from
    diffusion sizes); plain super-resolution keeps every pixel, so this does not.
    """
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def upscale_image(upscaler: Upscaler, image, factor: float | None = None, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
    """Upscale ``image`` with ``upscaler``.

    Args:
        image: an RGB ``PIL.Image``.
        factor: the output size over the input size, ``> 0``: the result is exactly
            :func:`target_size` ``(image.size, factor)``. ``None``: the network's own scale
            (one pass). Below the network's scale the network output is scaled down; above
            it the network runs again on its own output (at most :data:`MAX_PASSES` times, as
            A1111's ``Upscaler.upscale``), then Lanczos makes the exact size.
        tile: tile side in input pixels, ``0`` for none (the whole image at once); networks
            that tile internally (spandrel's ``ModelTiling.INTERNAL``) are never tiled.
        overlap: overlap between neighbouring tiles, input pixels, ``0 <= overlap < tile``.

    Returns:
        an RGB ``PIL.Image``. Out of device memory, the tile side is halved (down to
        :data:`MIN_TILE`) with a warning and the pass retried.

    Raises:
        ValueError: Lanczos without ``factor``, or ``factor <= 0``.
    """
    from PIL import Image

    if factor is not None and not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if not upscaler.is_network:
        if factor is None:
            raise ValueError("Lanczos needs a factor")
        size = target_size(image.size, factor)
        return image if size == image.size else image.resize(size, Image.LANCZOS)
    size = target_size(image.size, factor) if factor is not None else None
    out = image
    for i in range(MAX_PASSES):
        if i > 0 and (size is None or (out.width >= size[0] and out.height >= size[1]) or upscaler.scale == 1):
            break
        out, tile = _one_pass(upscaler, out, tile, overlap)
    if size is not None and out.size != size:
        out = out.resize(size, Image.LANCZOS)
    return out


def _one_pass(upscaler: Upscaler, image, tile: int, overlap: int):
    """One network pass over ``image``; returns ``(result, tile)``, ``tile`` halved after an
    out-of-memory."""
    from spandrel import ModelTiling

    from .pipeline import to_pil, to_tensor
    from .runner import free_device_memory, is_oom

    if upscaler.model.tiling == ModelTiling.INTERNAL:
        tile = 0
    x = to_tensor(image).unsqueeze(0)
    while True:
        try:
            out = run_tiled(upscaler.model, x, upscaler.scale, tile=tile, overlap=overlap, device=upscaler.device, dtype=upscaler.dtype)
            return to_pil(out)[0], tile
        except Exception as e:
            side = tile or max(image.size)
            if not is_oom(e) or side // 2 < MIN_TILE:
                raise
            free_device_memory()
            tile, overlap = side // 2, min(overlap, side // 4)
            log.warning("out of memory upscaling a %dx%d image; retrying with %d px tiles", image.width, image.height, tile)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``[0, length)`` with at least
    ``overlap`` pixels shared between neighbours: the fewest tiles that can,
    ``ceil((length - overlap) / (tile - overlap))``, spread evenly from ``0`` to
    ``length - tile`` (so every seam is about as wide, rather than a last tile overlapping
    its neighbour almost whole).

    ``tile <= 0`` or ``tile >= length``: one tile, ``[0]``.
    """
    if tile <= 0 or tile >= length:
        return [0]
    n = -(-(length - overlap) // (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def blend_weights(starts: list[int], tile: int, length: int, scale: int):
    """1-D blend weights of each tile along one axis, in output pixels: a ``float32`` tensor
    per tile, of its output length.

    Inside a tile the weight is 1, except where it overlaps a neighbour: there it rises (or
    falls) linearly, ``(i + 0.5) / n`` over the ``n`` overlapping pixels, so it is never 0. The
    caller divides by the sum of all tiles' weights, so the weights of each output pixel sum
    to exactly 1: a constant image stays constant, and a seam is a linear cross-fade.
    """
    import torch

    out = []
    for k, s in enumerate(starts):
        end = min(s + tile, length) if tile > 0 else length
        n = (end - s) * scale
        w = torch.ones(n)
        i = torch.arange(n, dtype=torch.float32) + 0.5
        if k > 0:
            lead = (min(starts[k - 1] + tile, length) - s) * scale
            if lead > 0:
                w = torch.minimum(w, i / lead)
        if k + 1 < len(starts):
            trail = (end - starts[k + 1]) * scale
            if trail > 0:
                w = torch.minimum(w, (n - i) / trail)
        out.append(w)
    return out


def run_tiled(model, image, scale: int, *, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, device: str = "cpu", dtype=None):
    """Run ``model`` on ``image`` in overlapping tiles and blend them.

    Args:
        model: a callable ``(1, 3, h, w) -> (1, 3, h * scale, w * scale)`` in ``[0, 1]`` on
            ``device`` in ``dtype`` (a spandrel ``ImageModelDescriptor``, which pads tiles to
            its size requirements and crops the result).
        image: ``(1, 3, H, W)`` float32 in ``[0, 1]``, on the CPU.
        scale: the model's integer factor.
        tile: tile side in input pixels; ``0`` or ``>= max(H, W)``: one call for the image.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
        dtype: the model's ``torch.dtype`` (default float32).

    Returns:
        ``(1, 3, H * scale, W * scale)`` float32 in ``[0, 1]`` on the CPU. Tiles are blended
        with :func:`blend_weights` (separable: a tile's weight is its row weight times its
        column weight, so the sum over the tile grid is the product of the two 1-D sums). A
        network whose receptive field fits in the overlap gives, away from the image border,
        nearly what one call on the whole image gives; the CPU accumulator costs
        ``12 * H * W * scale**2`` bytes.

    Raises:
        ValueError: ``overlap`` out of ``[0, tile)`` for ``tile > 0``.
    """
    import torch

    if tile > 0 and not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got tile={tile}, overlap={overlap}")
    dtype = dtype or torch.float32
    _, c, h, w = image.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy, wx = blend_weights(ys, tile, h, scale), blend_weights(xs, tile, w, scale)
    acc = torch.zeros(1, c, h * scale, w * scale)
    sum_y, sum_x = torch.zeros(h * scale), torch.zeros(w * scale)
    for y0, weight in zip(ys, wy):
        sum_y[y0 * scale : y0 * scale + len(weight)] += weight
    for x0, weight in zip(xs, wx):
        sum_x[x0 * scale : x0 * scale + len(weight)] += weight
    with torch.inference_mode():
        for y0, wy_t in zip(ys, wy):
            for x0, wx_t in zip(xs, wx):
                th, tw = len(wy_t) // scale, len(wx_t) // scale
                piece = image[:, :, y0 : y0 + th, x0 : x0 + tw].to(device=device, dtype=dtype)
                out = model(piece).float().cpu()
                if out.shape[-2:] != (th * scale, tw * scale):
                    raise RuntimeError(f"the network gave {tuple(out.shape[-2:])} for a {th}x{tw} tile at scale {scale}")
                acc[:, :, y0 * scale : y0 * scale + th * scale, x0 * scale : x0 * scale + tw * scale] += out * wy_t[:, None] * wx_t[None, :]
    return acc.div_(sum_y[:, None] * sum_x[None, :]).clamp_(0, 1)


__all__ = [
    "DEFAULT_OVERLAP", "DEFAULT_TILE", "LANCZOS", "Upscaler", "blend_weights", "check_upscaler", "load_upscaler",
    "run_tiled", "target_size", "tile_starts", "upscale_image",
]

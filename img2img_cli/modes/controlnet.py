"""ControlNet (Zhang & Agrawala 2023) as an add-on: ``--controlnet MODEL[:WEIGHT]`` on top of
img2img or inpainting, with diffusers' ControlNet pipelines and the options and infotext of
sd-webui-controlnet (Mikubill/sd-webui-controlnet, A1111's ControlNet extension).

Order of work:

1. before the model loads (:meth:`ControlNet.validate`): each ``--controlnet`` is resolved
   (:func:`resolve_controlnet`): a diffusers ControlNet folder (``config.json``), a single-file
   ``.safetensors`` (lllyasviel's SD 1.5 v1.1 layout ``control_model.*`` / bare
   ``input_blocks.*``, or diffusers keys as in the SDXL files), loaded offline against the
   configs shipped in ``img2img_cli/models/configs/controlnet-*`` (picked from the file's
   header: :func:`single_file_config`), or a hub repo id through the Hugging Face cache;
2. per input, in the reader thread (:meth:`ControlNet.extend`): each ControlNet's control image
   at the output size, made from the pipeline's own input (the source sized to the output,
   or the inpainting crop, before ``--masked-content fill``) by its ``--control`` preprocessor (:data:`MODULES`: ``canny``,
   ``tile``, ``lineart``), or read from ``--control-image`` (``none``: depth, pose... maps
   made elsewhere; a folder pairs them with the inputs by file stem, as ``--mask`` does);
3. once, after the model loads (:meth:`ControlNet.attach`): the ControlNets are loaded in the
   UNet's dtype, checked against the UNet (:func:`check_fits`), and the pipeline becomes its
   ControlNet counterpart (:data:`PIPELINES`) with ``from_pipe(pipe, controlnet=...)``, which
   reuses the loaded UNet, VAE, text encoders and scheduler (no second load);
4. each call gets ``control_image``, ``controlnet_conditioning_scale`` (the weights),
   ``control_guidance_start`` / ``control_guidance_end`` and ``guess_mode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import option
from ..errors import ModelError, UsageError
from ..models.resolve import CONFIGS_DIR, PICKLE_SUFFIXES
from . import Mode

#: The loaded task pipeline's class -> its ControlNet counterpart (diffusers' auto-pipeline
#: tables ``AUTO_IMAGE2IMAGE_PIPELINES_MAPPING`` / ``AUTO_INPAINT_PIPELINES_MAPPING``, key
#: ``stable-diffusion-controlnet`` / ``stable-diffusion-xl-controlnet``).
PIPELINES = {
    "StableDiffusionImg2ImgPipeline": "StableDiffusionControlNetImg2ImgPipeline",
    "StableDiffusionInpaintPipeline": "StableDiffusionControlNetInpaintPipeline",
    "StableDiffusionXLImg2ImgPipeline": "StableDiffusionXLControlNetImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline": "StableDiffusionXLControlNetInpaintPipeline",
}

#: ``--control`` -> sd-webui-controlnet's preprocessor ("module") name, written in the infotext.
MODULES = {"canny": "canny", "tile": "tile_resample", "lineart": "lineart_standard", "none": "none"}
#: ``--resize`` -> sd-webui-controlnet's ``Resize Mode`` (its ``ResizeMode`` values).
RESIZE_MODES = {"just": "Just Resize", "crop": "Crop and Resize", "fill": "Resize and Fill"}

#: A single file's cross-attention width (``attn2.to_k`` input features) -> the shipped config
#: of an SD 1.x / SD 2.x ControlNet (``scripts/build_controlnet_configs.py``).
CONFIG_BY_CROSS_ATTENTION = {768: CONFIGS_DIR / "controlnet-sd15", 1024: CONFIGS_DIR / "controlnet-sd2"}
#: The shipped config of a full-size SDXL ControlNet (``diffusers/controlnet-canny-sdxl-1.0``'s
#: architecture), for a single file with SDXL's added time-and-text embedding.
SDXL_CONFIG = CONFIGS_DIR / "controlnet-sdxl"


@dataclass(frozen=True)
class ControlNetOptions:
    """The ControlNet add-on's options (sd-webui-controlnet's unit settings)."""

    controlnet: list[str] = option(
        [], "--controlnet", show_default=False, metavar="MODEL[:WEIGHT]",
        help="ControlNet: a diffusers folder, a .safetensors file or a hub id, with its weight "
        "(default 1.0); repeatable for several. Selects ControlNet (with img2img or --mask).",
    )
    control: list[str] = option(
        [], "--control", show_default=False, metavar="canny|tile|lineart|none",
        help="Each ControlNet's control image, in order (once: for all): canny (edges of the input), "
        "tile (the input itself), lineart, none (given by --control-image). Default canny, or none "
        "with --control-image.",
    )
    control_image: list[Path] = option(
        [], "--control-image", show_default=False, metavar="FILE|DIR",
        help="Control image (depth, pose... map) for the ControlNets with --control none, in order; "
        "a folder pairs maps with inputs by file name.",
    )
    control_start: float = option(0.0, "--control-start", help="Fraction of the steps at which the ControlNets start, 0-1.")
    control_end: float = option(1.0, "--control-end", help="Fraction of the steps at which the ControlNets stop, 0-1.")
    guess_mode: bool = option(
        False, "--guess-mode",
        help="ControlNet on the conditional pass only, its outputs scaled up through the layers "
        "(sd-webui-controlnet: ControlNet is more important).",
    )
    canny_low: int = option(100, "--canny-low", help="Canny's low threshold, 1-255 (the ControlNet repo's 100).")
    canny_high: int = option(200, "--canny-high", help="Canny's high threshold, 1-255 (the ControlNet repo's 200).")


@dataclass(frozen=True)
class ControlSource:
    """Where one ControlNet comes from (nothing loaded).

    Attributes:
        spec: the ``--controlnet`` value as given (``MODEL[:WEIGHT]``), for messages.
        kind: ``"folder"``, ``"file"`` or ``"hub"``. source: the path or repo id.
        weight: ``controlnet_conditioning_scale``, a finite number (sd-webui-controlnet's
            ``Weight``, default 1.0; diffusers' own default is 0.8 for img2img).
        name: the infotext's ``Model`` (folder name, file stem or repo id).
        config: for ``"file"``, the diffusers config folder it is loaded against.
        control: the preprocessor (:data:`MODULES` key).
        image: for ``control == "none"``, the ``--control-image`` file or folder.
    """

    spec: str
    kind: str
    source: str
    weight: float
    name: str
    control: str
    config: Optional[Path] = None
    image: Optional[Path] = None


def split_weight(spec: str) -> tuple[str, float]:
    """``MODEL[:WEIGHT]`` -> ``(MODEL, WEIGHT)``, split at the last colon when what follows is
    a number (so ``C:\\cn.safetensors`` stays a path); weight 1.0 when none is given.

    Raises:
        UsageError: a weight that is not finite.
    """
    model, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight, model = float(tail), head
        except ValueError:
            pass
    if not math.isfinite(weight):
        raise UsageError(f"--controlnet {spec}: the weight must be a finite number")
    return model, weight


def safetensors_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a ``.safetensors`` file, without reading any weight
    (:func:`img2img_cli.models.resolve.tensor_shapes`).

    Raises:
        ModelError: not a readable safetensors file (naming it).
    """
    from ..models.resolve import tensor_shapes

    try:
        return tensor_shapes(path)
    except Exception as e:  # OSError, or safetensors' header error
        raise ModelError(f"--controlnet {path}: not a readable .safetensors file ({' '.join(str(e).split())})") from None


def single_file_config(path: Path, spec: str) -> Path:
    """The shipped diffusers config a single-file ControlNet is loaded against, from its keys:
    SDXL when it has the added time-and-text embedding (``add_embedding.*`` / ``label_emb.*``),
    else by the cross-attention width of its first ``attn2.to_k`` (768: SD 1.x, 1024: SD 2.x;
    :data:`CONFIG_BY_CROSS_ATTENTION`).

    Raises:
        ModelError: naming the file: no ControlNet weights in it (no ``input_hint_block`` /
            ``controlnet_cond_embedding``), a reduced SDXL ControlNet (mid / small: pass its
            diffusers folder or hub id), or a cross-attention width with no shipped config.
    """
    keys = safetensors_keys(path)
    if not any("input_hint_block." in k or "controlnet_cond_embedding." in k for k in keys):
        raise ModelError(f"--controlnet {spec}: not a ControlNet (no input_hint_block or controlnet_cond_embedding weights)")
    if any(k.split(".", 1)[-1].startswith(("add_embedding.", "label_emb.")) or k.startswith(("add_embedding.", "label_emb.")) for k in keys):
        if not any(k.endswith("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight") for k in keys):
            raise ModelError(f"--controlnet {spec}: a reduced (mid or small) SDXL ControlNet; pass its diffusers folder or hub id")
        return SDXL_CONFIG
    widths = [shape[1] for k, shape in sorted(keys.items()) if k.endswith("attn2.to_k.weight") and len(shape) == 2]
    width = widths[0] if widths else None
    if width not in CONFIG_BY_CROSS_ATTENTION:
        raise ModelError(
            f"--controlnet {spec}: a ControlNet with cross-attention width {width} has no shipped config "
            "(SD 1.x: 768, SD 2.x: 1024, SDXL); pass its diffusers folder or hub id"
        )
    return CONFIG_BY_CROSS_ATTENTION[width]


def resolve_controlnet(spec: str, control: str = "canny", image: Path | None = None) -> ControlSource:
    """Resolve one ``--controlnet`` value, loading nothing heavy (no torch): a folder with a
    ``config.json``, a ``.safetensors`` file (its config picked by :func:`single_file_config`),
    or a hub repo id (``owner/name``), cached or downloadable (as ``--model``'s hub ids:
    offline, one not in the cache is refused naming ``hf download``).

    Raises:
        ModelError: naming the value: no such file or folder, a pipeline folder, a pickle
            file, not a ControlNet, or a hub id not cached while offline.
    """
    from ..models.resolve import _REPO_ID

    model, weight = split_weight(spec)
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            raise ModelError(f"--controlnet {spec}: a whole pipeline folder (model_index.json), not a ControlNet; pass it as --model")
        if not (path / "config.json").is_file():
            raise ModelError(f"--controlnet {spec}: folder has no config.json; pass a diffusers ControlNet folder or a .safetensors file")
        return ControlSource(spec, "folder", str(path), weight, path.resolve().name, control, image=image)
    if path.suffix.lower() in PICKLE_SUFFIXES and path.exists():
        raise ModelError(f"--controlnet {spec}: pickle files ({path.suffix}) can run arbitrary code when loaded and are refused; use a .safetensors file")
    if path.is_file():
        return ControlSource(spec, "file", str(path), weight, path.stem, control, single_file_config(path, spec), image)
    if _REPO_ID.match(model) and not model.startswith((".", "/", "~")) and path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        _check_hub(model, spec)
        return ControlSource(spec, "hub", model, weight, model, control, image=image)
    raise ModelError(f"--controlnet {spec}: no such file or folder")


def _check_hub(repo_id: str, spec: str) -> None:
    """A hub ControlNet must be in the cache when offline (diffusers downloads it otherwise)."""
    from ..models.resolve import _offline

    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id, "config.json", local_files_only=True)
        return
    except Exception:
        pass
    if _offline():
        raise ModelError(
            f"--controlnet {spec}: {repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it first (`hf download {repo_id}`) or pass a local folder or .safetensors file"
        )


def sources(o: ControlNetOptions) -> list[ControlSource]:
    """The run's ControlNets, in ``--controlnet`` order, with their preprocessor and control
    image: one ``--control`` applies to all, else one per ControlNet (default ``canny``, or
    ``none`` when ``--control-image`` is given); one ``--control-image`` serves every
    ControlNet with ``none``, else one per such ControlNet, in order.

    Raises:
        UsageError / ModelError: naming the flag and the value.
    """
    n = len(o.controlnet)
    controls = list(o.control) or ["none" if o.control_image else "canny"]
    for c in controls:
        if c not in MODULES:
            raise UsageError(f"--control {c}: expected one of {', '.join(MODULES)}")
    if len(controls) == 1:
        controls *= n
    if len(controls) != n:
        raise UsageError(f"--control given {len(o.control)} times for {n} --controlnet; give it once (for all) or once per ControlNet")
    givens = controls.count("none")
    images = list(o.control_image)
    if givens and not images:
        raise UsageError("--control none needs --control-image (the control image file or folder)")
    if images and not givens:
        raise UsageError("--control-image needs a ControlNet with --control none")
    if len(images) == 1:
        images *= givens
    if len(images) != givens:
        raise UsageError(f"--control-image given {len(images)} times for {givens} ControlNets with --control none; give it once or once per such ControlNet")
    for p in images:
        if not p.exists():
            raise UsageError(f"--control-image {p}: no such file or folder")
    given = iter(images)
    return [resolve_controlnet(spec, c, next(given) if c == "none" else None) for spec, c in zip(o.controlnet, controls)]


def canny(image, low: int = 100, high: int = 200):
    """Canny edges (OpenCV's ``cv2.Canny(rgb, low, high)``, as the ControlNet repo's and
    controlnet_aux's ``CannyDetector`` call it: gradients of all three channels), white on
    black, replicated to 3 channels (their ``HWC3``).

    Args:
        image: an RGB ``PIL.Image``. low, high: hysteresis thresholds, 1-255.

    Returns:
        an RGB ``PIL.Image`` of the same size, each pixel 0 or 255.
    """
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.asarray(image.convert("RGB"), dtype=np.uint8), low, high)
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2))


def lineart(image):
    """sd-webui-controlnet's weight-free ``lineart_standard`` preprocessor (controlnet_aux's
    ``LineartStandardDetector``): dark lines where a pixel is darker than its Gaussian
    surroundings (sigma 6 px), ``min over RGB of (blur - x)``, normalised by the median of the
    values above 8 (at least 16) and scaled by 127; white lines on black, 3 channels. Run at the
    output size (sd-webui-controlnet's "pixel perfect"), not at a separate detect resolution.

    Returns:
        an RGB ``PIL.Image`` of ``image``'s size.
    """
    import cv2
    import numpy as np
    from PIL import Image

    x = np.asarray(image.convert("RGB"), dtype=np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 0.0)
    intensity *= 127
    lines = intensity.clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(lines[:, :, None], 3, axis=2))


def check_fits(net, unet, spec: str, model: str) -> None:
    """Refuse a ControlNet made for another base model: its residuals are added to the UNet's
    down and middle blocks, so cross-attention width, added embedding (SDXL's ``text_time``) and
    block widths must be the UNet's.

    Raises:
        ModelError: naming the ControlNet and the model, and what each is for.
    """
    keys = ("cross_attention_dim", "addition_embed_type", "block_out_channels")
    theirs = [_norm(net.config.get(k)) for k in keys]
    ours = [_norm(unet.config.get(k)) for k in keys]
    if theirs != ours:
        raise ModelError(f"--controlnet {spec}: a ControlNet for {_family(net.config)} does not fit --model {model}, {_family(unet.config)}")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _family(config) -> str:
    """``SD 1.x (cross-attention 768, blocks 320/640/1280/1280)``; the name only when known."""
    width = config.get("cross_attention_dim")
    if config.get("addition_embed_type") == "text_time":
        known = "SDXL" if width == 2048 else None
    else:
        known = {768: "SD 1.x", 1024: "SD 2.x"}.get(width)
    blocks = "/".join(str(c) for c in config.get("block_out_channels", ()))
    return f"{known + ' ' if known else ''}(cross-attention {width}, blocks {blocks})"


class ControlNet(Mode):
    """ControlNet (``--controlnet``), stacked on img2img or inpainting."""

    name = "controlnet"
    options = ControlNetOptions
    trigger = "controlnet"
    addon = True
    bases = ("img2img", "inpaint", "sdupscale")  # diffusers has no ControlNet InstructPix2Pix or x4 upscaler pipeline

    def __init__(self):
        self._folders: dict = {}  # control-image folder -> its images by stem, listed once per run
        self._sources: list | None = None
        self._options: ControlNetOptions | None = None

    def _units(self, config) -> list[ControlSource]:
        """The run's ControlNets (resolved once per run; see :func:`sources`)."""
        if self._sources is None:
            self._options = config.options_of(self.name)
            self._sources = sources(self._options)
        return self._sources

    def validate(self, config) -> None:
        o = config.options_of(self.name)
        for flag, v in (("--control-start", o.control_start), ("--control-end", o.control_end)):
            if not 0 <= v <= 1:
                raise UsageError(f"{flag} must be in [0, 1], got {v}")
        if o.control_start >= o.control_end:
            raise UsageError(f"--control-start ({o.control_start}) must be below --control-end ({o.control_end})")
        for flag, v in (("--canny-low", o.canny_low), ("--canny-high", o.canny_high)):
            if not 1 <= v <= 255:
                raise UsageError(f"{flag} must be in [1, 255], got {v}")
        if o.canny_low > o.canny_high:
            raise UsageError(f"--canny-low ({o.canny_low}) must not exceed --canny-high ({o.canny_high})")
        inpaint = config.options_of("inpaint")
        if config.mode == "inpaint" and inpaint is not None and inpaint.masked_content in ("latent-noise", "latent-nothing"):
            raise UsageError(f"--masked-content {inpaint.masked_content} does not work with --controlnet (diffusers' ControlNet inpainting encodes the source itself); use original or fill")
        self._units(config)

    def attach(self, pipe, config):
        """Load the ControlNets (in the UNet's dtype), check each fits the UNet, and return the
        pipeline's ControlNet counterpart made ``from_pipe`` (the loaded components reused;
        several ControlNets as diffusers' ``MultiControlNetModel``).

        Raises:
            ModelError: naming the ControlNet: it cannot be loaded or is for another base
                model; or the model's pipeline has no ControlNet counterpart.
        """
        import diffusers

        model = config.job.model
        target = PIPELINES.get(type(pipe).__name__)
        if target is None:
            raise ModelError(f"--controlnet: --model {model} ({type(pipe).__name__}) has no ControlNet pipeline")
        nets = []
        for u in self._units(config):
            net = load_controlnet(u, pipe.unet.dtype)
            check_fits(net, pipe.unet, u.spec, model)
            nets.append(net)
        controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
        return getattr(diffusers, target).from_pipe(pipe, controlnet=controlnet)

    def extend(self, item, source, prepared, size, config) -> None:
        """``prepared.extras["control"]``: one RGB control image per ControlNet at ``size``.
        Preprocessors work on the pipeline's input (``prepared.image``: the source sized to the
        output, or the inpainting crop) as it is before ``--masked-content fill`` (sd-webui-controlnet
        preprocesses A1111's init image, which the fill does not change); a given map is read (EXIF, modes and pixel limit as a
        source), sized with ``--resize`` (for ``--inpaint-area masked``: stretched to the canvas,
        cropped to the region and fitted as the crop is).

        Raises:
            InputError: naming the input: no control image for it in the folder, or an
                unreadable one.
        """
        from ..io import load_image, resize_image
        from ..masks import find_mask

        o = config.options_of(self.name)
        picture = prepared.image
        if prepared.extras.get("content") == "fill":  # inpainting's canvas, sized and cropped as the input is
            region = prepared.extras.get("region")
            picture = prepared.canvas if region is None else resize_image(prepared.canvas.crop(region), *size, "fill")
        images = []
        for u in self._units(config):
            if u.control == "canny":
                images.append(canny(picture, o.canny_low, o.canny_high))
            elif u.control == "lineart":
                images.append(lineart(picture))
            elif u.control == "tile":
                images.append(picture.convert("RGB"))
            else:
                path = find_mask(u.image, item.input.path, item.input.rel, self._folders, what="control image")
                given = load_image(path, max_pixels=config.max_pixels, background=config.background_rgb)
                region = prepared.extras.get("region")
                if region is not None:
                    given = resize_image(given.resize(prepared.canvas.size, resample=3).crop(region), *size, "fill")
                images.append(resize_image(given, *size, item.job.resize_mode))
        prepared.extras["control"] = images

    def tile_extras(self, extras, box):
        """For a tile of SD upscale (``--upscale``): each control image cropped to the tile's
        ``box``, so the tile is guided by its own part of the map (``--control tile``: the tile
        itself, the ControlNet-tile way of upscaling)."""
        return {**extras, "control": [im.crop(box) for im in extras["control"]]}

    def call_kwargs(self, pipe, requests: list) -> dict:
        """``control_image`` (a ``(B, 3, H, W)`` batch, or a list of one per ControlNet: diffusers
        takes several ControlNets' images per batch only as tensors, :func:`control_batch`),
        ``controlnet_conditioning_scale`` (the weights), ``control_guidance_start`` / ``_end``
        (fractions of the steps) and ``guess_mode``."""
        units, o = self._sources, self._options  # set by attach, before any call
        weights = [u.weight for u in units]
        per_net = [control_batch([r.extras["control"][i] for r in requests]) for i in range(len(units))]
        one = len(units) == 1
        return {
            "control_image": per_net[0] if one else per_net,
            "controlnet_conditioning_scale": weights[0] if one else weights,
            "control_guidance_start": o.control_start,
            "control_guidance_end": o.control_end,
            "guess_mode": o.guess_mode,
        }

    def infotext(self, item, config) -> dict:
        """sd-webui-controlnet's fields, one per ControlNet: ``ControlNet 0: "Module: canny,
        Model: name, Weight: 1.0, Resize Mode: Crop and Resize, Low Vram: False, Processor Res:
        512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0, Pixel
        Perfect: True, Control Mode: Balanced"`` (its ``serialize_unit`` keys and order;
        ``Processor Res`` is the output's shorter side, where the preprocessors run; the
        thresholds are Canny's, -1 for the others; guess mode is ``ControlNet is more
        important``)."""
        o = config.options_of(self.name)
        side = min(item.size) if item.size else -1
        fields = {}
        for i, u in enumerate(self._units(config)):
            thresholds = (o.canny_low, o.canny_high) if u.control == "canny" else (-1, -1)
            values = {
                "Module": MODULES[u.control],
                "Model": u.name.replace(",", "_").replace(":", "_"),
                "Weight": u.weight,
                "Resize Mode": RESIZE_MODES.get(item.job.resize_mode, item.job.resize_mode),
                "Low Vram": False,
                "Processor Res": side if u.control != "none" else -1,
                "Threshold A": thresholds[0],
                "Threshold B": thresholds[1],
                "Guidance Start": o.control_start,
                "Guidance End": o.control_end,
                "Pixel Perfect": True,
                "Control Mode": "ControlNet is more important" if o.guess_mode else "Balanced",
            }
            fields[f"ControlNet {i}"] = ", ".join(f"{k}: {v}" for k, v in values.items())
        return fields


def control_batch(images: list):
    """RGB ``PIL.Image`` s as one float32 ``(B, 3, H, W)`` tensor in ``[0, 1]``, with diffusers'
    arithmetic and memory layout for a list of PIL images (``VaeImageProcessor.pil_to_numpy``
    then ``numpy_to_pt``: a channels-last view of ``(B, H, W, 3)``), so a ControlNet computes
    exactly what it computes from the images themselves."""
    import numpy as np
    import torch

    hwc = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8).astype(np.float32) / 255.0 for im in images])
    return torch.from_numpy(hwc).permute(0, 3, 1, 2)


def load_controlnet(u: ControlSource, dtype):
    """Load one ControlNet (``ControlNetModel``) in ``dtype``: ``from_pretrained`` for a folder or
    hub id (offline when cached), ``from_single_file`` against the shipped config for a file.

    Raises:
        ModelError: naming the ``--controlnet`` value and the library's reason.
    """
    from diffusers import ControlNetModel

    try:
        if u.kind == "file":
            return ControlNetModel.from_single_file(u.source, config=str(u.config), local_files_only=True, dtype=dtype)
        cached = u.kind == "folder"
        if u.kind == "hub":
            try:
                from huggingface_hub import hf_hub_download

                hf_hub_download(u.source, "config.json", local_files_only=True)
                cached = True
            except Exception:
                cached = False
        return ControlNetModel.from_pretrained(u.source, local_files_only=cached, dtype=dtype)
    except Exception as e:
        raise ModelError(f"--controlnet {u.spec}: cannot load ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e

"""Inpainting and outpainting: diffusers' ``StableDiffusionInpaintPipeline`` and
``StableDiffusionXLInpaintPipeline``, with AUTOMATIC1111's img2img inpaint options.

Order of work for one image (A1111 ``modules/processing.py``,
``StableDiffusionProcessingImg2Img.init``, whose option names, meanings and defaults these are):

1. the mask (``--mask``; for ``--outpaint``, the grown canvas's new area plus a band of
   ``--mask-blur`` pixels inside the old edge) at the source's size; ``--invert-mask``;
2. ``--mask-blur`` (:func:`img2img_cli.masks.blur`);
3. ``--masked-content``: ``fill`` fills the masked area from its surroundings before encoding
   (:func:`img2img_cli.masks.fill`); ``latent-noise`` / ``latent-nothing`` replace the masked
   latents by the seed's noise / zeros; ``original`` leaves them;
4. ``--inpaint-area whole``: source and mask resized to the output size (``--resize``);
   ``masked``: the masked region plus ``--padding`` (:func:`img2img_cli.masks.crop_region`)
   cropped and resized to the output size, and after generation pasted back at the source's
   size (a blank mask falls back to the whole picture, with a warning, as A1111 does);
5. the pipeline, which for a 4-channel UNet blends the known latents at each step and for a
   9-channel inpainting UNet conditions on the mask and the masked image;
6. the overlay (diffusers' ``VaeImageProcessor.apply_overlay``): the result composited onto
   the source through the blurred mask, doubled and clipped in whole-picture mode as A1111
   does, so every pixel the mask leaves at 0 is the source's exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config import option
from ..errors import UsageError
from . import Mode, Prepared

log = logging.getLogger(__name__)

#: ``--masked-content`` -> A1111's name (``Masked content`` infotext value).
MASKED_CONTENT = {"fill": "fill", "original": "original", "latent-noise": "latent noise", "latent-nothing": "latent nothing"}
MAX_BLUR = 64


@dataclass(frozen=True)
class InpaintOptions:
    """The inpaint mode's options (A1111's img2img inpaint tab)."""

    mask: Optional[Path] = option(
        None, "--mask", show_default=False,
        help="Mask image (white = repaint, black = keep; a transparent layer's alpha), or a folder of masks "
        "named like the inputs. Selects inpainting.",
    )
    outpaint: Optional[str] = option(
        None, "--outpaint", show_default=False,
        help="Grow the canvas by N pixels on every side, or L,T,R,B, and paint the new area. Selects outpainting.",
    )
    mask_blur: int = option(4, "--mask-blur", help="Gaussian blur of the mask, sigma in px (A1111's mask blur), 0-64.")
    invert_mask: bool = option(False, "--invert-mask", help="Repaint the black part of the mask instead (A1111: Inpaint not masked).")
    inpaint_area: Literal["whole", "masked"] = option(
        "whole", "--inpaint-area",
        help="whole: the whole picture at the output size; masked: only the masked region plus --padding, "
        "at the output size, pasted back.",
    )
    padding: int = option(32, "--padding", help="With --inpaint-area masked: pixels around the masked region.")
    masked_content: Optional[Literal["original", "fill", "latent-noise", "latent-nothing"]] = option(
        None, "--masked-content", show_default=False,
        help="What the masked area starts from: original (default), fill (its surroundings' colours; "
        "default for --outpaint), latent-noise, latent-nothing.",
    )


class Inpaint(Mode):
    """Inpainting (``--mask``) and outpainting (``--outpaint``)."""

    name = "inpaint"
    pipelines = {
        "stable-diffusion": "StableDiffusionInpaintPipeline",
        "stable-diffusion-xl": "StableDiffusionXLInpaintPipeline",
    }
    auto_class = "AutoPipelineForInpainting"
    options = InpaintOptions
    trigger = ("mask", "outpaint")
    source_type = "compositeWithTrainedAlgorithmicMedia"
    c2pa_action = "c2pa.edited"

    def __init__(self):
        self._mask_folders: dict = {}  # mask folder -> its images by stem, listed once per run

    def validate(self, config) -> None:
        from ..masks import parse_margins

        o = config.mode_options
        if o.mask is not None and o.outpaint:
            raise UsageError("--mask and --outpaint contradict each other; --outpaint makes its own mask")
        if o.mask is not None and not o.mask.exists():
            raise UsageError(f"--mask {o.mask}: no such file or folder")
        if not 0 <= o.mask_blur <= MAX_BLUR:
            raise UsageError(f"--mask-blur must be in [0, {MAX_BLUR}], got {o.mask_blur}")
        if o.padding < 0:
            raise UsageError(f"--padding must be at least 0, got {o.padding}")
        if o.outpaint:
            try:
                parse_margins(o.outpaint)
            except ValueError as e:
                raise UsageError(f"--outpaint: {e}") from None

    def _content(self, o) -> str:
        return o.masked_content or ("fill" if o.outpaint else "original")

    def scales_source(self, config) -> bool:
        o = config.mode_options
        return not o.outpaint and o.inpaint_area == "whole"

    def canvas_size(self, item, source_size, config):
        from ..masks import parse_margins

        o = config.mode_options
        if not o.outpaint:
            return source_size
        left, top, right, bottom = parse_margins(o.outpaint)
        return (source_size[0] + left + right, source_size[1] + top + bottom)

    def _mask(self, item, source, config):
        """The mask at the canvas's size, inverted and blurred, and the canvas."""
        from PIL import ImageOps

        from ..masks import blur, find_mask, load_mask, outpaint_canvas, parse_margins

        o = config.mode_options
        if o.outpaint:
            canvas, mask = outpaint_canvas(source, parse_margins(o.outpaint), o.mask_blur)
        else:
            path = item.mask or find_mask(o.mask, item.input.path, item.input.rel, self._mask_folders)  # a jobs file's mask first
            mask = load_mask(path, max_pixels=config.max_pixels)
            canvas = source
            if mask.size != source.size:
                mask = mask.resize(source.size, resample=3)  # bicubic
        if o.invert_mask:
            mask = ImageOps.invert(mask)
        return canvas, blur(mask, o.mask_blur)

    def prepare(self, item, source, size, config) -> Prepared:
        from PIL import Image

        from ..io import resize_image
        from ..masks import crop_region, fill

        o = config.mode_options
        canvas, mask = self._mask(item, source, config)
        content = self._content(o)
        start = fill(canvas, mask) if content == "fill" else canvas
        extras = {"content": content, "region": None}
        if o.inpaint_area == "masked":
            region = crop_region(mask, *size, o.padding)
            if region is None:
                log.warning("%s: the mask is blank; inpainting the whole picture", item.input.path.name)
            else:
                extras.update(region=region, overlay=mask, mask=resize_image(mask.crop(region), *size, "fill"))
                return Prepared(resize_image(start.crop(region), *size, "fill"), extras, canvas=canvas)
        resized = resize_image(mask, *size, item.job.resize_mode)
        extras["mask"] = resized
        # whole picture: A1111 doubles the blurred mask for the overlay (np.clip(mask * 2, 0, 255))
        extras["overlay"] = Image.eval(resized, lambda v: min(255, 2 * v))
        return Prepared(resize_image(start, *size, item.job.resize_mode), extras, canvas=resize_image(canvas, *size, item.job.resize_mode))

    def call_kwargs(self, pipe, requests: list) -> dict:
        """The masks, and the size (the inpainting pipelines default to the model's native size
        instead of the image's); for ``latent-noise`` / ``latent-nothing`` the starting latents
        as ``image`` and the masked latents as ``masked_image_latents``."""
        width, height = requests[0].size
        kwargs = {"mask_image": [r.extras["mask"] for r in requests], "height": height, "width": width}
        content = requests[0].extras["content"]
        if content in ("latent-noise", "latent-nothing"):
            kwargs["image"], kwargs["masked_image_latents"] = _start_latents(pipe, requests, noise=content == "latent-noise")
        return kwargs

    def finish(self, image, prepared: Prepared):
        from ..io import image_processor

        e = prepared.extras
        return image_processor().apply_overlay(e["overlay"], prepared.canvas, image, crop_coords=e["region"])

    def infotext(self, item, config) -> dict:
        """A1111's keys: ``Mask blur`` (when > 0), ``Mask mode: Inpaint not masked`` (inverted),
        ``Masked content`` (unless original), ``Inpaint area: Only masked`` and ``Masked area
        padding``; ``Outpaint`` (ours: the margins L,T,R,B) for outpainting."""
        from ..masks import parse_margins

        o = config.mode_options
        fields: dict = {}
        if o.mask_blur > 0:
            fields["Mask blur"] = o.mask_blur
        if o.invert_mask:
            fields["Mask mode"] = "Inpaint not masked"
        content = self._content(o)
        if content != "original":
            fields["Masked content"] = MASKED_CONTENT[content]
        if o.inpaint_area == "masked":
            fields["Inpaint area"] = "Only masked"
            fields["Masked area padding"] = o.padding
        if o.outpaint:
            fields["Outpaint"] = ",".join(str(v) for v in parse_margins(o.outpaint))
        return fields


def _start_latents(pipe, requests: list, *, noise: bool):
    """The starting latents for ``latent-noise`` / ``latent-nothing`` (A1111: ``init_latent *
    mask_inverse + noise * mask`` / ``init_latent * mask_inverse``): each source VAE-encoded
    (the distribution's mean, scaled), its masked part replaced by the seed's Gaussian noise
    or zeros; passed to the pipeline as ``image``, which takes 4-channel input as latents.

    Returns:
        ``(start, masked)``: ``(B, 4, h, w)`` latents each, ``masked`` with zeros under the mask
        (the masked image a 9-channel UNet is conditioned on).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    vae = pipe.vae
    device, dtype = vae.device, vae.dtype
    latents, masked = [], []
    for r in requests:
        x = (r.image.unsqueeze(0).to(device=device, dtype=dtype) * 2 - 1)
        lat = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        m = torch.from_numpy(np.asarray(r.extras["mask"], dtype=np.float32) / 255.0)
        m = F.interpolate(m[None, None], size=lat.shape[-2:], mode="bilinear").round().to(device=device, dtype=dtype)
        filler = torch.randn(lat.shape, generator=torch.Generator("cpu").manual_seed(r.seed)).to(device=device, dtype=dtype) if noise else 0
        latents.append(lat * (1 - m) + filler * m)
        masked.append(lat * (1 - m))
    return torch.cat(latents), torch.cat(masked)

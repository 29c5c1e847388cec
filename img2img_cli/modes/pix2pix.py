"""Instruction editing: InstructPix2Pix (Brooks, Holynski & Efros 2023), diffusers'
``StableDiffusionInstructPix2PixPipeline`` and ``StableDiffusionXLInstructPix2PixPipeline``.

A model mode: chosen by the model, not by an option. A model whose ``model_index.json`` class is
one of those pipelines (a UNet with 8 input channels: 4 noisy latents + 4 latents of the source;
``timbrooks/instruct-pix2pix``, or a single file with an 8-channel ``conv_in``, loaded with the
shipped ``models/configs/sd15-pix2pix``) edits each source as the prompt tells it ("make it
winter"). The source is not noised: denoising starts from pure noise, conditioned on the source's
latents, and every one of ``--steps`` runs, so there is no denoising strength (``--strength`` and
a jobs file's ``strength`` column are refused). Two guidance scales (the paper's eq. 3):
``--guidance`` weighs the instruction, ``--image-guidance`` the source image.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import UsageError
from . import DROP, Mode, Prepared, refuse_strength

#: A1111's ``Image CFG scale`` default (img2img tab with an instruct-pix2pix model,
#: ``modules/processing.py`` ``image_cfg_scale``; also diffusers' ``image_guidance_scale``).
DEFAULT_IMAGE_GUIDANCE = 1.5
MAX_IMAGE_GUIDANCE = 100.0


@dataclass(frozen=True)
class Pix2PixOptions:
    """Options of instruction editing (they need an instruct-pix2pix model)."""

    image_guidance: float = option(
        DEFAULT_IMAGE_GUIDANCE, "--image-guidance", "--image-cfg-scale",
        help="Instruct-pix2pix models: image guidance scale (A1111's Image CFG scale), 0-100; "
        "higher keeps closer to the source, < 1 disables guidance.",
    )


class Pix2Pix(Mode):
    """Instruction editing with an instruct-pix2pix model; the prompt is the instruction."""

    name = "pix2pix"
    model_family = ("instruct-pix2pix", "instruct-pix2pix-xl")
    pipelines = {
        "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
        "instruct-pix2pix-xl": "StableDiffusionXLInstructPix2PixPipeline",
    }
    options = Pix2PixOptions
    has_strength = False
    c2pa_action = "c2pa.edited"

    def validate(self, config) -> None:
        """Refuses ``--strength`` (typed: ``config.given``), a jobs file's strength column, a
        ``strength`` plot axis, and ``--image-guidance`` outside ``[0, 100]``.

        Raises:
            UsageError: naming the flag, or the jobs file and line.
        """
        refuse_strength(config, "an instruct-pix2pix model has no denoising strength (every --steps step runs)")
        scale = config.options_of(self.name).image_guidance
        if not 0 <= scale <= MAX_IMAGE_GUIDANCE:
            raise UsageError(f"--image-guidance must be in [0, {MAX_IMAGE_GUIDANCE:g}], got {scale}")

    def prepare(self, item, source, size, config) -> Prepared:
        """The source resized to ``size`` (as img2img), and the image guidance scale."""
        prepared = super().prepare(item, source, size, config)
        prepared.extras["image_guidance_scale"] = config.options_of(self.name).image_guidance
        return prepared

    def call_kwargs(self, pipe, requests: list) -> dict:
        """``image_guidance_scale``; no ``strength``; for SDXL the size (its pipeline resizes
        the source to ``height`` x ``width``, by default the model's native size)."""
        kwargs = {"image_guidance_scale": requests[0].extras["image_guidance_scale"], "strength": DROP}
        if getattr(pipe, "text_encoder_2", None) is not None:
            width, height = requests[0].size
            kwargs.update(height=height, width=width)
        return kwargs

    def infotext(self, item, config) -> dict:
        """A1111's ``Image CFG scale`` (``modules/processing.py`` ``create_infotext``)."""
        from ..work import format_number

        return {"Image CFG scale": format_number(config.options_of(self.name).image_guidance)}

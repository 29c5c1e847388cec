"""Plain image-to-image: diffusers' ``StableDiffusionImg2ImgPipeline`` and
``StableDiffusionXLImg2ImgPipeline`` (SDEdit, Meng et al. 2021), the default mode.

It reads no extra per-image input and writes no extra infotext field: the source image, the
prompts and the generation parameters are the runner's own.
"""

from __future__ import annotations

from . import Mode


class Img2Img(Mode):
    """The default mode. The table is diffusers' ``AUTO_IMAGE2IMAGE_PIPELINES_MAPPING``
    (``pipelines/auto_pipeline.py``) for the families we support; an unknown family goes to
    ``AutoPipelineForImage2Image``."""

    name = "img2img"
    pipelines = {
        "stable-diffusion": "StableDiffusionImg2ImgPipeline",
        "stable-diffusion-xl": "StableDiffusionXLImg2ImgPipeline",
    }
    auto_class = "AutoPipelineForImage2Image"

    def pipeline_class(self, index_class: str, model: str) -> str:
        """As :meth:`Mode.pipeline_class`; an inpainting model (9-channel UNet) is refused.

        Raises:
            ModelError: the model is an inpainting model, naming ``--mask``.
        """
        if index_class in ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"):
            from ..errors import ModelError

            raise ModelError(f"--model {model}: an inpainting model ({index_class}) needs a mask: pass --mask or --outpaint")
        return super().pipeline_class(index_class, model)

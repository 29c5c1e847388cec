"""x4 upscaler models: diffusers' ``StableDiffusionUpscalePipeline`` (stabilityai's
``stable-diffusion-x4-upscaler``: a latent diffusion model whose UNet takes 7 channels, the
4 noisy latents and the low-resolution image itself, and whose VAE decodes them 4 times larger).

A model mode: a model whose ``model_index.json`` names ``StableDiffusionUpscalePipeline``
selects it (:data:`img2img_cli.modes.FAMILIES`), with no flag. The output is 4 times the
pipeline's input; the input is the source at its own size (rounded down to multiples of 8), or
a quarter of ``--width``/``--height`` (multiples of 32). Prompt-guided (``--prompt``,
``--guidance``); ``--noise-level`` (diffusers' default 20, at most the model's
``max_noise_level``, 350) is how much noise the low-resolution image gets before it conditions
the UNet (more: more invented detail). There is no denoising strength: a typed ``--strength``
is refused.

Inputs larger than the model's native input tile (``unet.sample_size`` pixels: 128 for
stabilityai's model; ``--tile-size``) are made in overlapping tiles, blended in the output
(:mod:`img2img_cli.tiles`, ``scale`` 4), tile ``k`` with seed ``+ k``; the infotext then records
``Tile size`` and ``Tile overlap`` (input pixels).

The pipeline has no ``callback_on_step_end``: :mod:`img2img_cli.pipeline` passes its per-step
function as the older ``callback`` (progress, and the final latents for the fp32 re-decode of a
NaN image), and A1111 prompt editing (``[a:b:0.5]``), which needs to switch the embeddings during
the steps, fails that image with a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MAX_SIDE, option
from ..errors import InputError, UsageError
from . import DROP, Mode, Prepared, refuse_strength

#: Output pixels per input pixel.
SCALE = 4
#: diffusers' ``StableDiffusionUpscalePipeline`` ``max_noise_level`` default (the x4 model's).
MAX_NOISE_LEVEL = 350


@dataclass(frozen=True)
class X4Options:
    """The x4 upscaler's option."""

    noise_level: int = option(
        20, "--noise-level",
        help="x4 upscaler models: noise added to the low-resolution input, 0-350 (diffusers' default 20; more invents more detail).",
    )


class X4Upscale(Mode):
    """An x4 upscaler model (``StableDiffusionUpscalePipeline``)."""

    name = "x4"
    model_family = "stable-diffusion-x4-upscaler"
    pipelines = {"stable-diffusion-x4-upscaler": "StableDiffusionUpscalePipeline"}
    options = X4Options
    tiled = True
    has_strength = False
    c2pa_action = "c2pa.edited"

    def validate(self, config) -> None:
        """Raises :class:`UsageError`: ``--noise-level`` outside ``[0, 350]``, a strength
        (:func:`~img2img_cli.modes.refuse_strength`: typed, a jobs column, a plot axis),
        ``--width``/``--height`` or a ``size`` plot axis not multiples of 32 (the input is a
        quarter of them, in multiples of 8), or an add-on."""
        n = config.options_of(self.name).noise_level
        if not 0 <= n <= MAX_NOISE_LEVEL:
            raise UsageError(f"--noise-level must be in [0, {MAX_NOISE_LEVEL}], got {n}")
        refuse_strength(config, "an x4 upscaler model has no denoising strength (--noise-level sets how much it invents)")
        from ..config import parse_size

        width, height = parse_size(config.size) if config.size else (config.job.width, config.job.height)  # --size not folded yet
        checks = [(f"--width {width}", width), (f"--height {height}", height)]
        for flag, axis in zip(("--x", "--y", "--z"), config.axes):
            if axis.name == "size":
                checks += [(f"{flag} size={w}x{h}", side) for w, h in axis.values for side in (w, h)]
        for what, value in checks:
            if value and value % (8 * SCALE):
                raise UsageError(f"{what}: an x4 upscaler's output is 4 times its input, so a multiple of 32 (try {value // 32 * 32 or 32})")
        if config.addons:
            raise UsageError(f"an x4 upscaler model does not combine with {', '.join(config.addons)}")

    def output_size(self, item, canvas, native, multiple, config):
        """4 times the input: the source rounded down to multiples of 8, or ``--width``/``--height``.

        Raises:
            InputError: naming the file, when the output would pass 8192 pixels a side.
        """
        from ..io import display, round8, target_size

        job = item.job
        if job.width or job.height:
            size = target_size(canvas, native, job.width, job.height, multiple=8 * SCALE)
        else:
            size = (round8(canvas[0]) * SCALE, round8(canvas[1]) * SCALE)
        if max(size) > MAX_SIDE:
            raise InputError(
                f"{display(item.input.path)}: {canvas[0]}x{canvas[1]} upscaled 4x is {size[0]}x{size[1]}, over {MAX_SIDE} px a side; "
                "resize it first or pass --width/--height"
            )
        return size

    def tiles(self, item, native, config):
        """``None`` when the input fits in one tile (``--tile-size``, else the native input:
        ``native / 4``); else its grid, ``--tile-overlap`` or a quarter of the tile."""
        from ..tiles import split_grid

        size = (item.size[0] // SCALE, item.size[1] // SCALE)
        tile = config.tiling.tile() or (native // SCALE, native // SCALE)
        if size[0] <= tile[0] and size[1] <= tile[1]:
            return None
        given = config.tiling.tile_overlap
        overlap = given if given is not None else min(tile) // 4
        try:
            return split_grid(size, tile, overlap, scale=SCALE)
        except ValueError:
            raise UsageError(f"--tile-overlap {overlap} must be smaller than the tile ({tile[0]}x{tile[1]})") from None

    def prepare(self, item, source, size, config):
        """The source at a quarter of the output size (``--resize``), and the noise level."""
        from ..io import resize_image

        image = resize_image(source, size[0] // SCALE, size[1] // SCALE, item.job.resize_mode)
        return Prepared(image, {"noise_level": config.options_of(self.name).noise_level})

    def batch_key(self, item):
        return ()

    def call_kwargs(self, pipe, requests):
        """``noise_level``; no ``strength`` (the pipeline has none)."""
        return {"noise_level": requests[0].extras["noise_level"], "strength": DROP}

    def infotext(self, item, config):
        """``Noise level`` (ours; no ``Denoising strength``), and the tiles when tiled."""
        fields = {"Noise level": config.options_of(self.name).noise_level}
        if item.grid is not None:
            fields.update({"Tile size": f"{item.grid.tile[0]}x{item.grid.tile[1]}", "Tile overlap": item.grid.overlap})
        return fields

"""One call that turns a batch of prepared images into generated images, via diffusers.

The work itself is diffusers' image-to-image pipeline (``StableDiffusionImg2ImgPipeline``
or ``StableDiffusionXLImg2ImgPipeline``): VAE-encode the source to latents, noise them to
``strength`` (the SDEdit recipe, Meng et al. 2021), denoise with classifier-free guidance
(Ho & Salimans 2022) for ``int(steps * strength)`` steps, VAE-decode. Nothing is
post-processed: with the defaults the pixels are exactly those of the pipeline called
directly with the same arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One image to generate.

    Attributes:
        image: the source, a ``PIL.Image`` in RGB already at the output size (multiples of 8).
        prompt, negative_prompt: text; ``""`` for none.
        seed: in ``[0, 2**32 - 1]``; seeds a ``torch.Generator`` on the CPU, so the same seed
            gives the same noise on any device.
        strength: in ``(0, 1]``; steps: ``>= 1``; guidance_scale: ``>= 0``.
    """

    image: object
    prompt: str
    negative_prompt: str
    seed: int
    strength: float
    steps: int
    guidance_scale: float

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        return (self.image.size, self.strength, self.steps, self.guidance_scale)


def generate(pipe, requests: list[Request], *, callback=None) -> list:
    """Run one diffusers pipeline call for ``requests`` and return one ``PIL.Image`` per request.

    Prompts, negative prompts, images and per-image CPU generators are passed as lists, so
    each image's noise depends only on its own seed (diffusers draws per-generator noise
    in ``prepare_latents`` and ``retrieve_latents``).

    Non-finite guard: if a decoded image holds NaN or inf (the fp16 VAE overflow that gives
    black images with SD 1.x and SDXL; see diffusers' ``force_upcast`` and the
    ``madebyollin/sdxl-vae-fp16-fix`` notes), its final latents are decoded again with the
    VAE in fp32 and a warning is logged; an image is never returned black without a word.

    Args:
        pipe: a loaded diffusers image-to-image pipeline.
        requests: 1 or more requests sharing :meth:`Request.batch_key`.
        callback: optional ``callback(step, total)`` after each denoising step.

    Returns:
        ``len(requests)`` RGB images, each of its request's image size.

    Raises:
        ValueError: the requests do not share a batch key.
        FloatingPointError: the denoised latents hold NaN or inf, or the fp32 decode does.
    """
    import torch

    if not requests:
        return []
    key = requests[0].batch_key()
    if any(r.batch_key() != key for r in requests):
        raise ValueError("requests in one batch must share size, strength, steps and guidance scale")
    first = requests[0]
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
    final = {}

    def on_step_end(_pipe, step, _timestep, tensors):
        final["latents"] = tensors["latents"]
        if callback is not None:
            callback(step + 1, getattr(_pipe, "_num_timesteps", None))
        return tensors

    with torch.inference_mode():
        out = pipe(
            prompt=[r.prompt for r in requests],
            negative_prompt=[r.negative_prompt for r in requests],
            image=[r.image for r in requests],
            strength=first.strength,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            output_type="pt",
            callback_on_step_end=on_step_end,
        )
        images = out.images  # (B, 3, H, W) in [0, 1]
        bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
        if bad.any():
            images = images.clone()
            idx = bad.nonzero().flatten().tolist()
            log.warning(
                "%d image(s) decoded with NaN/inf in %s; decoding again with the VAE in fp32",
                len(idx), str(pipe.vae.dtype).replace("torch.", ""),
            )
            latents = final.get("latents")
            if latents is None or not torch.isfinite(latents[idx]).all():
                raise FloatingPointError("the denoised latents hold NaN or inf values (try --dtype fp32 or bf16)")
            images[idx] = decode_fp32(pipe, latents[idx]).to(images.dtype).to(images.device)
            if not torch.isfinite(images).all():
                raise FloatingPointError("the decoded image holds NaN or inf values even in fp32")
    arrays = pipe.image_processor.pt_to_numpy(images.float().cpu())  # (B, H, W, 3)
    return pipe.image_processor.numpy_to_pil(arrays)


def decode_fp32(pipe, latents):
    """Decode ``latents`` ``(B, 4, h, w)`` with the pipeline's VAE upcast to fp32; returns
    ``(B, 3, 8h, 8w)`` images in ``[0, 1]`` (``vae_scale_factor`` times the latent size).

    The un-scaling is the pipelines' own: ``latents / scaling_factor``, or with
    ``latents_mean``/``latents_std`` in the VAE config ``latents * std / scaling_factor + mean``
    (``StableDiffusionXLImg2ImgPipeline.__call__``).
    """
    import torch

    vae = pipe.vae
    cfg = vae.config
    lat = latents.to(torch.float32)
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(lat.device)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(lat.device)
        lat = lat * std_t / cfg.scaling_factor + mean_t
    else:
        lat = lat / cfg.scaling_factor
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        image = vae.decode(lat.to(vae.device), return_dict=False)[0]
    finally:
        vae.to(dtype)
    return pipe.image_processor.postprocess(image, output_type="pt")

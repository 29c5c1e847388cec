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
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One image to generate.

    Attributes:
        image: the source already at the output size (multiples of 8): a ``PIL.Image`` in RGB,
            or the same as a float32 tensor ``(3, H, W)`` in ``[0, 1]`` from :func:`to_tensor`
            (the batch runner makes those in its reader thread; the pixels are the same).
        prompt, negative_prompt: text; ``""`` for none.
        seed: in ``[0, 2**32 - 1]``; seeds a ``torch.Generator`` on the CPU, so the same seed
            gives the same noise on any device.
        strength: in ``(0, 1]``, or ``None`` for a mode without strength (instruction editing:
            all ``steps`` run; its :meth:`~img2img_cli.modes.Mode.call_kwargs` drops the
            argument); steps: ``>= 1``; guidance_scale: ``>= 0``.
        extras: the mode's extra per-image inputs (:meth:`img2img_cli.modes.Mode.prepare`:
            a mask, a control image), turned into pipeline arguments by
            :meth:`~img2img_cli.modes.Mode.call_kwargs`; empty for plain img2img.
        loras: the LoRA set active for this image, ``((file, te_weight, unet_weight), ...)``
            (:class:`~img2img_cli.text.networks.TextPlan`); ``()`` for none.
        clip_skip: A1111's clip skip, ``>= 1`` (:attr:`img2img_cli.config.Job.clip_skip`).
    """

    image: object
    prompt: str
    negative_prompt: str
    seed: int
    strength: float | None
    steps: int
    guidance_scale: float
    extras: dict = field(default_factory=dict)
    loras: tuple = ()
    clip_skip: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of :attr:`image` in pixels."""
        if hasattr(self.image, "shape"):
            return (int(self.image.shape[-1]), int(self.image.shape[-2]))
        return self.image.size

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call (an empty negative prompt is
        passed as ``None``, see :func:`generate`, so it cannot share a call with a non-empty one)."""
        return (self.size, self.strength, self.steps, self.guidance_scale, not self.negative_prompt, self.loras, self.clip_skip)


def to_tensor(image, *, pin: bool = False):
    """A ``PIL.Image`` in RGB as a float32 tensor ``(3, H, W)`` in ``[0, 1]``.

    The arithmetic and the memory layout are diffusers' own for PIL inputs
    (``VaeImageProcessor.pil_to_numpy``: ``np.array(image).astype(np.float32) / 255``, then
    ``numpy_to_pt``, a channels-last view of the ``(H, W, 3)`` array): a pipeline given these
    tensors computes exactly what it computes from the images (the layout matters: convolutions
    round differently on another layout). It runs in the batch runner's reader thread, off the
    thread that drives the device.

    Args:
        pin: put the pixels in page-locked (pinned) memory, so the copy to a CUDA device can be
            asynchronous (``non_blocking=True``); needs a CUDA build of torch with a GPU.
    """
    import numpy as np
    import torch

    hwc = torch.from_numpy(np.asarray(image, dtype=np.uint8).astype(np.float32) / 255.0)  # (H, W, 3)
    if pin:
        hwc = hwc.pin_memory()
    return hwc.permute(2, 0, 1)


def _to_device_images(images: list, device):
    """Tensor sources as one ``(B, 3, H, W)`` batch on ``device``, laid out as diffusers lays out
    a batch of PIL images (a channels-last view of ``(B, H, W, 3)``); each image's copy is
    asynchronous from pinned memory. PIL sources are left to diffusers' own preprocessing."""
    import torch

    if not all(hasattr(i, "shape") for i in images):
        return images
    return torch.stack([i.permute(1, 2, 0).to(device, non_blocking=True) for i in images]).permute(0, 3, 1, 2)


def generate(pipe, requests: list[Request], *, callback=None, mode=None, text=None) -> list:
    """Run the diffusers pipeline for ``requests`` and return one ``PIL.Image`` per request.

    Prompts (or their embeddings), images and per-image CPU generators are passed as lists, so
    each image's noise depends only on its own seed (diffusers draws per-generator noise
    in ``prepare_latents`` and ``retrieve_latents``).

    With ``text`` (a :class:`~img2img_cli.text.conditioning.Conditioner`), the batch's LoRA set
    is activated and the prompts are encoded the A1111 way; requests whose prompts take a
    different number of 75-token chunks go in separate pipeline calls (one call's embeddings
    share a length, and padding one image's prompt for its neighbours would change it).

    Non-finite guard: if a decoded image holds NaN or inf (the fp16 VAE overflow that gives
    black images with SD 1.x and SDXL; see diffusers' ``force_upcast`` and the
    ``madebyollin/sdxl-vae-fp16-fix`` notes), its final latents are decoded again with the
    VAE in fp32 and a warning is logged; an image is never returned black without a word.

    Args:
        pipe: a loaded diffusers image-to-image pipeline.
        requests: 1 or more requests sharing :meth:`Request.batch_key`.
        callback: optional ``callback(step, total)`` after each denoising step.
        mode: the :class:`~img2img_cli.modes.Mode` whose :meth:`~img2img_cli.modes.Mode.call_kwargs`
            adds its arguments (``None``: plain img2img, none added).
        text: the pipeline's :class:`~img2img_cli.text.conditioning.Conditioner`, or ``None``:
            the prompts go to diffusers as text.

    Returns:
        ``len(requests)`` RGB images, each of its request's image size. They are converted to
        8 bits on the device (diffusers' ``numpy_to_pil`` arithmetic: ``round(x * 255)`` in fp32,
        the same pixels), so only uint8 pixels cross back to the host.

    Raises:
        ValueError: the requests do not share a batch key.
        FloatingPointError: the denoised latents hold NaN or inf, or the fp32 decode does.
    """
    if not requests:
        return []
    key = requests[0].batch_key()
    if any(r.batch_key() != key for r in requests):
        raise ValueError(
            "requests in one batch must share size, strength, steps, guidance scale, LoRA set and whether the negative prompt is empty"
        )
    if text is None:
        return _call(pipe, requests, None, callback, mode)
    text.activate(requests[0].loras)
    out: list = [None] * len(requests)
    for idx, call in text.plan(requests):
        for i, image in zip(idx, _call(pipe, [requests[i] for i in idx], call, callback, mode)):
            out[i] = image
    return out


def _call(pipe, requests: list[Request], text_call, callback, mode) -> list:
    """One pipeline call (see :func:`generate`); ``text_call`` a
    :class:`~img2img_cli.text.conditioning.Call` or ``None`` (text passed as it is)."""
    import torch

    first = requests[0]
    generators = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
    final = {}

    def on_step_end(_pipe, step, _timestep, tensors):
        final["latents"] = tensors["latents"]
        if text_call is not None and text_call.edits:
            current = tensors.get("prompt_embeds")
            tensors.update(text_call.on_step(step + 1, _pipe.do_classifier_free_guidance, None if current is None else current.shape[0]))
        if callback is not None:
            callback(step + 1, getattr(_pipe, "_num_timesteps", None))
        return tensors

    with torch.inference_mode():
        text_kwargs = text_call.kwargs() if text_call is not None else None
        if text_kwargs is None:
            text_kwargs = dict(
                prompt=[r.prompt for r in requests],
                # None, not "", for no negative prompt: what the pipeline called without one gets.
                # SD 1.x / 2.x encode "" either way; SDXL base (force_zeros_for_empty_prompt) then
                # uses zero negative embeddings, as diffusers and A1111 (sd_models_xl.py) do.
                negative_prompt=[r.negative_prompt for r in requests] if first.negative_prompt else None,
            )
        kwargs = dict(
            **text_kwargs,
            image=_to_device_images([r.image for r in requests], pipe._execution_device),
            strength=first.strength,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            output_type="pt",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents", *(text_call.tensor_inputs() if text_call is not None else [])],
        )
        if mode is not None:
            from .modes import DROP

            kwargs.update(mode.call_kwargs(pipe, requests))
            kwargs = {k: v for k, v in kwargs.items() if v is not DROP}
        _legacy_callback(pipe, kwargs, text_call)
        out = pipe(**kwargs)
        images = _redecode_non_finite(pipe, out.images, final.get("latents"))
    return to_pil(images)


def _legacy_callback(pipe, kwargs: dict, text_call) -> None:
    """For a diffusers pipeline without ``callback_on_step_end`` (``StableDiffusionXLInstructPix2PixPipeline``),
    our per-step function as its ``callback(i, t, latents)`` instead (progress and the final
    latents). That callback cannot replace the prompt embeddings, so prompt editing is refused.

    Raises:
        ValueError: the prompts switch during denoising (``[from:to:when]``, ``[a|b]``).
    """
    import inspect

    if "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters:
        return
    if text_call is not None and text_call.edits:
        raise ValueError(f"prompt editing ([from:to:when], [a|b]) needs callback_on_step_end, which {type(pipe).__name__} lacks")
    on_step_end = kwargs.pop("callback_on_step_end")
    kwargs.pop("callback_on_step_end_tensor_inputs")
    kwargs.update(callback=lambda i, t, latents: on_step_end(pipe, i, t, {"latents": latents}), callback_steps=1)


def _redecode_non_finite(pipe, images, latents):
    """``images`` ``(B, 3, H, W)`` in ``[0, 1]``, with any image holding NaN or inf decoded
    again from its final ``latents`` with the VAE in fp32 (:func:`decode_fp32`), with a warning.

    Raises:
        FloatingPointError: the latents themselves, or the fp32 decode, hold NaN or inf.
    """
    import torch

    bad = ~torch.isfinite(images.flatten(1)).all(dim=1)
    if not bad.any():
        return images
    images = images.clone()
    idx = bad.nonzero().flatten().tolist()
    log.warning(
        "%d image(s) decoded with NaN/inf in %s; decoding again with the VAE in fp32",
        len(idx), str(pipe.vae.dtype).replace("torch.", ""),
    )
    if latents is None or not torch.isfinite(latents[idx]).all():
        raise FloatingPointError("the denoised latents hold NaN or inf values (try --dtype fp32 or bf16)")
    images[idx] = decode_fp32(pipe, latents[idx]).to(images.dtype).to(images.device)
    if not torch.isfinite(images).all():
        raise FloatingPointError("the decoded image holds NaN or inf values even in fp32")
    return images


def to_pil(images) -> list:
    """``(B, 3, H, W)`` images in ``[0, 1]`` (any float dtype, any device) as RGB ``PIL.Image``s.

    Same pixels as diffusers' ``pt_to_numpy`` + ``numpy_to_pil`` (fp32, ``* 255``, round half
    to even, to uint8), computed where the tensor lives; one uint8 copy to the host.
    """
    import torch
    from PIL import Image

    u8 = (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(a) for a in u8]


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

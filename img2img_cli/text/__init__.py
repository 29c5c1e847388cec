"""Prompts as Stable Diffusion users write them: A1111 prompt syntax (:mod:`.syntax`), long
prompts in chunks with emphasis (:mod:`.encode`), prompt editing (:mod:`.conditioning`), LoRA
(:mod:`.lora`) and textual inversion (:mod:`.embeddings`); what each input calls on is planned
before the model loads (:mod:`.networks`)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def adapt(pipe, options, networks, *, fuse: bool = False):
    """Prepare a freshly loaded ``pipe`` for the run's prompts (before it moves to its device
    and is compiled): load every embedding of ``networks``, check every LoRA is made for this
    model, and return the :class:`~img2img_cli.text.conditioning.Conditioner`.

    Args:
        options: the run's :class:`~img2img_cli.config.PromptOptions`.
        networks: the run's :class:`~img2img_cli.text.networks.NetworkPlan`.
        fuse: fuse the run's single LoRA set into the weights (``--compile``: diffusers'
            advice is to fuse before ``torch.compile``; the set cannot switch afterwards).

    Raises:
        ModelError: a LoRA made for another base model, or ``--clip-skip`` beyond the text
            encoder's layers.
        InputError: an embedding that does not fit the text encoder.
    """
    from ..errors import ModelError
    from .conditioning import Conditioner
    from .embeddings import load_embedding
    from .lora import check_base, model_base

    family = model_base(pipe)
    clip_skip = max(networks.clip_skips, default=1)
    if clip_skip > 1:
        encoder = pipe.text_encoder if pipe.text_encoder is not None else pipe.text_encoder_2
        layers = encoder.config.num_hidden_layers
        if clip_skip > layers:
            raise ModelError(f"--clip-skip {clip_skip}: this model's text encoder has {layers} layers")
        if family.startswith("sdxl"):
            log.warning("--clip-skip %d: SDXL already uses the penultimate layer; A1111 ignores clip skip there and so do we", clip_skip)
    for info in networks.loras.values():
        check_base(info, family)
    for name, path in sorted(networks.embeddings.items()):
        load_embedding(pipe, name, path)
    conditioner = Conditioner(pipe, options, loras=bool(networks.loras))
    if fuse and networks.sets:
        (only,) = networks.sets
        conditioner.activate(only)
        if only:
            conditioner.lora_set.fuse()
    return conditioner

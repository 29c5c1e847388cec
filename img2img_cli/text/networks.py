"""Extra networks, planned before any model loads: ``<lora:NAME:WEIGHT>`` tags and ``--lora``
files resolved to LoRA sets, textual-inversion names found in prompts, and the infotext fields
they write.

Tags follow A1111's extra networks (``modules/extra_networks.py``; the LoRA handler
``extensions-builtin/Lora/extra_networks_lora.py``): ``<lora:NAME>`` (weight 1),
``<lora:NAME:W>`` (text encoder and UNet at ``W``), ``<lora:NAME:TE:UNET>``, and the named forms
``te=`` / ``unet=``. ``<lyco:...>`` (the old LyCORIS extension's tag) is read as ``<lora:...>``.
A file given with ``--lora`` applies to every image; a tag naming the same file sets its weights
for that image. Tags are removed from the text the encoder sees; the infotext keeps the prompt as
written, as A1111 does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UsageError

log = logging.getLogger(__name__)

#: Tag kinds read as LoRA (A1111's Lora extension registers ``lora``; ``lyco`` was LyCORIS's).
LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True)
class TextPlan:
    """One input's prompts as the encoder sees them, and what they call on.

    Attributes:
        prompt, negative: the text with extra-network tags removed (A1111 syntax still in it).
        loras: ``((file, text_encoder_weight, unet_weight), ...)`` sorted by file: the LoRA
            set active while this input's images are made (part of the batch key).
        fields: infotext fields (``Lora hashes``, ``TI hashes``), A1111's names and formats.
    """

    prompt: str
    negative: str
    loras: tuple = ()
    fields: dict = field(default_factory=dict, compare=False)


@dataclass
class NetworkPlan:
    """Every extra network of the run: what the loader loads once.

    Attributes:
        loras: each LoRA file used by any input, with its
            :class:`~img2img_cli.text.lora.LoraInfo` (kind, base, hash).
        embeddings: name -> file of each textual inversion to load.
        sets: the distinct LoRA sets (:attr:`TextPlan.loras`) of the run.
        clip_skips: the distinct ``--clip-skip`` values of the run (a plot axis may vary it).
    """

    loras: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)
    sets: set = field(default_factory=set)
    clip_skips: set = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.loras and not self.embeddings


def _weights(tag, name: str) -> tuple[float, float]:
    """``(te, unet)`` from a tag's arguments after the name (A1111 ``extra_networks_lora``:
    ``te`` first, ``unet`` defaulting to ``te``; named ``te=`` / ``unet=`` too)."""
    positional, named = [], {}
    for arg in tag.args[1:]:
        key, eq, value = arg.partition("=")
        if eq:
            named[key.strip()] = value
        else:
            positional.append(arg)
    te = named.get("te", positional[0] if positional else "1")
    unet = named.get("unet", positional[1] if len(positional) > 1 else te)
    try:
        return float(te), float(unet)
    except ValueError:
        raise UsageError(f"<{tag.kind}:{':'.join(tag.args)}>: the weights of {name} must be numbers") from None


def plan_text(work, options) -> NetworkPlan:
    """Give each :class:`~img2img_cli.work.WorkItem` its :class:`TextPlan` (``w.text``) and
    return the run's :class:`NetworkPlan`. Reads only file headers; no model loads.

    Args:
        work: the run's work items (prompts final: sidecars, jobs rows and styles applied).
        options: the run's :class:`~img2img_cli.config.PromptOptions`.

    Raises:
        UsageError: a tag naming a LoRA not found (naming it and the folder searched), bad tag
            weights, or a LoRA file that is not one diffusers can load (LoHa, LoKr, not a LoRA).
    """
    from .embeddings import embedding_hash, find_embeddings, names_in
    from .lora import find_lora, inspect_lora

    plan = NetworkPlan()
    base = [(path, w, w) for path, w in options.lora_specs()]
    dirs = [options.lora_dir] if options.lora_dir else []
    available = find_embeddings([options.embeddings_dir]) if options.embeddings_dir else {}
    for path in options.embedding:
        available[path.stem] = path
    given = {path.stem for path in options.embedding}
    unsupported: set[str] = set()
    hashes: dict[str, str] = {}
    found: dict[str, Path] = {}
    a1111 = options.prompt_syntax == "a1111"
    if a1111:
        from .syntax import extract_networks
    for w in work:
        prompt, negative = w.prompt, w.negative_prompt
        active = {path.resolve(): (path, te, unet) for path, te, unet in base}
        if a1111:
            prompt, tags = extract_networks(prompt)
            negative, negative_tags = extract_networks(negative)
            for tag in negative_tags:
                unsupported.add(f"<{tag.kind}:...> in a negative prompt")
            for tag in tags:
                if tag.kind not in LORA_KINDS:
                    unsupported.add(f"<{tag.kind}:...>")
                    continue
                name = tag.args[0].strip()
                if name not in found:  # one folder walk per name, not per input
                    found[name] = find_lora(name, dirs)
                path = found[name]
                te, unet = _weights(tag, name)
                active[path.resolve()] = (path, te, unet)
        loras = tuple(sorted(active.values(), key=lambda e: str(e[0])))
        fields = {}
        for path, _te, _unet in loras:
            key = path.resolve()
            if key not in plan.loras:
                try:
                    plan.loras[key] = inspect_lora(path)
                except InputError as e:  # a file the run asks for: the run cannot be what was asked
                    raise UsageError(str(e)) from None
        if loras:
            # A1111 (extra_networks_lora.py): "Lora hashes" lists each LoRA name with its addnet hash
            infos = [plan.loras[p.resolve()] for p, _, _ in loras]
            fields["Lora hashes"] = ", ".join(f"{i.name}: {i.hash}" for i in infos)
        # every --embedding file is loaded; a folder's only when a prompt names it
        in_prompts = names_in(f"{prompt}\n{negative}", available) if available else []
        for n in [*in_prompts, *given]:
            plan.embeddings[n] = available[n]
        if in_prompts:
            # A1111 (textual_inversion.py): "TI hashes" lists each embedding the prompts used
            for n in in_prompts:
                if n not in hashes:
                    hashes[n] = embedding_hash(available[n])
            fields["TI hashes"] = ", ".join(f"{n}: {hashes[n]}" for n in in_prompts)
        if w.job.clip_skip > 1:
            fields["Clip skip"] = w.job.clip_skip  # A1111 writes it when it is not 1
        plan.clip_skips.add(w.job.clip_skip)
        w.text = TextPlan(prompt, negative, loras, fields)
        plan.sets.add(loras)
    for what in sorted(unsupported):
        log.warning("%s tags are not supported and were removed from the prompt", what)
    return plan

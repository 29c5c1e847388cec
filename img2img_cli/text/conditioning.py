"""Prompts to the pipeline's text conditioning, on the loaded model: A1111 syntax parsed
(:mod:`.syntax`), encoded in chunks with emphasis (:mod:`.encode`), switched during denoising
for prompt editing, and the run's LoRA set activated (:mod:`.lora`).

Prompt editing ``[from:to:when]`` and alternation ``[a|b]`` follow A1111's schedules
(``modules/prompt_parser.py: get_learned_conditioning_prompt_schedules``) over the denoising
steps that run (``int(steps * strength)``, see :func:`steps_run`); the conditioning of step
``i`` (0-based) is the first scheduled entry whose end step is ``>= i``, as A1111's
``reconstruct_cond_batch`` picks it. The switch happens in diffusers' ``callback_on_step_end``,
which may replace ``prompt_embeds`` (and SDXL's pooled ``add_text_embeds``) for the next step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


def steps_run(steps: int, strength: float | None) -> int:
    """The denoising steps an img2img call runs: ``min(int(steps * strength), steps)``
    (diffusers ``StableDiffusionImg2ImgPipeline.get_timesteps``), at least 1; ``steps`` when
    ``strength`` is ``None`` (a mode without strength: instruction editing runs them all)."""
    if strength is None:
        return steps
    return max(1, min(int(steps * strength), steps))


@dataclass
class _Schedule:
    """One request's conditioning over the steps: ``[(end_step, hidden (1, L, D), pooled (1, D2) | None)]``."""

    entries: list

    def at(self, i: int):
        for end, hidden, pooled in self.entries:
            if i <= end:
                return hidden, pooled
        return self.entries[-1][1], self.entries[-1][2]


class Conditioner:
    """The text side of one loaded pipeline.

    Args:
        pipe: a loaded Stable Diffusion (XL) pipeline.
        options: the run's :class:`~img2img_cli.config.PromptOptions`.
        loras: whether any input uses a LoRA (then a :class:`~img2img_cli.text.lora.LoraSet`
            is kept on the pipe).

    Our encoder (:class:`~img2img_cli.text.encode.PromptEncoder`, one per clip skip) is used
    with the A1111 syntax, and with ``--clip-skip`` above 1; ``--prompt-syntax plain`` with clip
    skip 1 passes the text to diffusers as it is.
    """

    def __init__(self, pipe, options, *, loras: bool = False):
        self.pipe = pipe
        self.a1111 = options.prompt_syntax == "a1111"
        self._encoders: dict[int, object] = {}
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.lora_set = None
        if loras:
            from .lora import LoraSet

            self.lora_set = LoraSet(pipe)

    def encoder(self, clip_skip: int):
        """The encoder for ``clip_skip``, or ``None`` when the text goes to diffusers as it is."""
        if not (self.a1111 or clip_skip > 1):
            return None
        if clip_skip not in self._encoders:
            from .encode import PromptEncoder

            self._encoders[clip_skip] = PromptEncoder(self.pipe, clip_skip=clip_skip)
        return self._encoders[clip_skip]

    def activate(self, loras: tuple) -> None:
        """Make ``loras`` (``((file, te, unet), ...)``) the active LoRA set; ``()``: none."""
        if self.lora_set is not None:
            self.lora_set.apply(loras)

    def _fragments(self, text: str):
        if self.a1111:
            from .syntax import has_syntax, parse_attention

            if has_syntax(text):  # a plain prompt (most of a folder) is one fragment: no parse
                return parse_attention(text)
        return [(text, 1.0)]

    def _texts(self, text: str, steps: int) -> list[tuple[int, str]]:
        if self.a1111:
            from .syntax import prompt_schedules

            return prompt_schedules([text], steps)[0]
        return [(steps, text)]

    def plan(self, requests) -> list[tuple[list[int], "Call"]]:
        """Group ``requests`` by the chunk count their prompts take (images in one pipeline call
        share the embedding length; each image's embedding never depends on its neighbours)
        and encode them. Returns ``[(indices into requests, Call)]`` in request order of first
        appearance; without our encoder, one group whose :class:`Call` passes the text."""
        enc = self.encoder(requests[0].clip_skip)  # one clip skip per batch (Request.batch_key)
        if enc is None:
            return [(list(range(len(requests))), Call(self, None, None))]
        parsed = []
        for r in requests:
            n = steps_run(r.steps, r.strength)
            pos = [(end, self._fragments(t)) for end, t in self._texts(r.prompt, n)]
            neg = [(end, self._fragments(t)) for end, t in self._texts(r.negative_prompt, n)] if r.negative_prompt else None
            chunks = max(enc.chunks(f) for _, f in pos + (neg or []))
            parsed.append((pos, neg, chunks))
        groups: dict[int, list[int]] = {}
        for i, (_, _, chunks) in enumerate(parsed):
            groups.setdefault(chunks, []).append(i)
        out = []
        for chunks, idx in groups.items():
            cache: dict = {}

            def encode(fragments, chunks=chunks, cache=cache):
                key = tuple(fragments)
                if key not in cache:
                    e = enc.encode(fragments, chunks=chunks)
                    cache[key] = (e.hidden, e.pooled)
                return cache[key]

            empty = None
            pos_s, neg_s = [], []
            for i in idx:
                pos, neg, _ = parsed[i]
                pos_s.append(_Schedule([(end, *encode(f)) for end, f in pos]))
                if neg is None:
                    if empty is None:
                        e = enc.empty_negative(chunks)
                        empty = (e.hidden, e.pooled)
                    neg_s.append(_Schedule([(10**9, *empty)]))
                else:
                    neg_s.append(_Schedule([(end, *encode(f)) for end, f in neg]))
            out.append((idx, Call(self, pos_s, neg_s)))
        return out


class Call:
    """The text arguments of one pipeline call: ``kwargs()`` for the call and ``on_step(i)``
    for the tensors to replace before step ``i``."""

    def __init__(self, owner: Conditioner, pos: list[_Schedule] | None, neg: list[_Schedule] | None):
        self.owner, self.pos, self.neg = owner, pos, neg
        self.edits = pos is not None and any(len(s.entries) > 1 for s in pos + neg)
        self._current = None

    def _at(self, i: int):
        import torch

        pos = [s.at(i) for s in self.pos]
        neg = [s.at(i) for s in self.neg]
        key = tuple(id(h) for h, _ in pos + neg)
        hidden = torch.cat([h for h, _ in pos]), torch.cat([h for h, _ in neg])
        pooled = (torch.cat([p for _, p in pos]), torch.cat([p for _, p in neg])) if self.owner.sdxl else (None, None)
        return key, hidden, pooled

    def kwargs(self) -> dict | None:
        """Pipeline keyword arguments for the text: ``prompt_embeds`` ``(B, 77*chunks, D)`` and
        ``negative_prompt_embeds`` (and SDXL's pooled ``(B, D2)`` pair) from our encoder;
        ``None`` without it (the pipeline encodes the text itself)."""
        if self.pos is None:
            return None
        key, (pos, neg), (pooled, neg_pooled) = self._at(0)
        self._current = key
        out = dict(prompt_embeds=pos, negative_prompt_embeds=neg)
        if self.owner.sdxl:
            out.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=neg_pooled)
        return out

    def tensor_inputs(self) -> list[str]:
        """The ``callback_on_step_end_tensor_inputs`` that :meth:`on_step` may replace."""
        if not self.edits:
            return []
        return ["prompt_embeds", "add_text_embeds"] if self.owner.sdxl else ["prompt_embeds"]

    def on_step(self, i: int, guidance: bool, rows: int | None = None) -> dict:
        """Tensors to replace before step ``i`` (0-based) when a schedule switches there: the
        pipeline's concatenated ``prompt_embeds`` (``[negative, positive]`` under
        classifier-free guidance, as diffusers concatenates them; ``[positive, negative,
        negative]`` when the pipeline's current ``prompt_embeds`` has ``rows`` = 3 x batch, the
        InstructPix2Pix pipelines' text, image and unconditional branches) and SDXL's
        ``add_text_embeds``."""
        import torch

        if not self.edits:
            return {}
        key, (pos, neg), (pooled, neg_pooled) = self._at(i)
        if key == self._current:
            return {}
        self._current = key

        def join(p, n):
            if rows == 3 * p.shape[0]:
                return torch.cat([p, n, n])
            return torch.cat([n, p]) if guidance else p

        out = {"prompt_embeds": join(pos, neg)}
        if self.owner.sdxl:
            out["add_text_embeds"] = join(pooled, neg_pooled)
        return out

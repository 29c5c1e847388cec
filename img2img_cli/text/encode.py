"""Weighted prompt fragments to the embeddings diffusers' pipelines take, as A1111 makes them.

The input is a prompt already parsed into ``(text, weight)`` fragments
(:func:`img2img_cli.text.syntax.parse_attention`, A1111's ``parse_prompt_attention``; ``BREAK``
is the fragment ``("BREAK", -1.0)``). The output is what a pipeline accepts as
``prompt_embeds`` / ``negative_prompt_embeds`` and, for SDXL, ``pooled_prompt_embeds`` /
``negative_pooled_prompt_embeds``.

The rules are those of AUTOMATIC1111's stable-diffusion-webui (read there, written anew here):

* ``modules/sd_hijack_clip.py`` (``FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line``): each
  fragment is tokenized without special tokens; the tokens fill chunks of 75; a chunk that is
  full moves its tail back to the last comma when that comma is at most 20 tokens back (the
  ``comma_padding_backtrack`` option, default 20); ``BREAK`` closes the chunk at once; an empty
  prompt still gives one chunk; a textual-inversion embedding's vectors are never split
  between two chunks. Each chunk becomes ``BOS + 75 tokens + EOS`` = 77 (shorter ones padded)
  and is encoded alone (``forward`` / ``process_tokens``); the chunks' hidden states are
  concatenated on the token axis, so a prompt of ``n`` chunks gives ``77 * n`` tokens.
* ``modules/sd_emphasis.py`` (``EmphasisOriginal``, the default "Original" emphasis): per
  chunk, ``z = z * w`` (one weight per token) then ``z = z * (mean before / mean after)``.
* Padding (``process_tokens``): SD 1.x pads with the end token; SD 2.x's and SDXL's OpenCLIP
  tokenizers pad after the end token with id 0 (``!``, ``modules/sd_hijack_open_clip.py``:
  ``id_pad = 0``). Here each tokenizer pads with its own ``pad_token``, which is what the
  diffusers tokenizers of those models hold (``<|endoftext|>`` for SD 1.x, ``!`` for SD 2.x and
  SDXL's ``tokenizer_2``): the ids are A1111's, and those diffusers itself makes.
* Clip skip (``FrozenCLIPEmbedderWithCustomWords.encode_with_transformers``, the ``Clip skip``
  option ``CLIP_stop_at_last_layers``): 1 is the last layer; ``N`` takes the hidden states
  ``N - 1`` layers before the last, through the text encoder's final layer norm.
* SDXL (``FrozenCLIPEmbedderForSDXLWithCustomWords``, ``FrozenOpenCLIPEmbedder2WithCustomWords``,
  ``modules/sd_models_xl.py``): both encoders give their penultimate hidden states without
  the final norm (diffusers' ``hidden_states[-2]``), emphasised each on its own, concatenated
  on the feature axis; the pooled vector is the second encoder's projection of the first
  chunk, before emphasis; an absent negative prompt is all zeros when the model's
  ``force_zeros_for_empty_prompt`` is set. A1111 ignores clip skip for SDXL unless its
  "Clip skip SDXL" option (``sdxl_clip_l_skip``) is on; then only the first encoder (CLIP
  ViT-L) takes ``hidden_states[-N]``, with no final norm, so ``N = 1`` is the last layer
  un-normed and ``N = 2`` the default. :class:`PromptEncoder` does the same with
  ``sdxl_clip_l_skip``. (diffusers' own ``clip_skip`` for SDXL differs: it moves both encoders
  to ``hidden_states[-(clip_skip + 2)]``.)

With one chunk, weights all 1 and clip skip 1 the result is bit for bit diffusers'
``encode_prompt``: the same token ids through the same encoder call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Prompt tokens per chunk; with the start and end tokens a chunk is 77 (CLIP's context).
CHUNK_TOKENS = 75
#: A1111's ``comma_padding_backtrack`` default: a chunk's tail after its last comma moves to the
#: next chunk when that comma is at most this many tokens from the chunk's end (0: never).
COMMA_BACKTRACK = 20
#: The emphasis rescale is skipped when the weighted chunk's mean is below this fraction of its
#: mean absolute value: such a mean is rounding noise (a final layer norm with weight 1 and bias 0,
#: as in the built-in tiny model, makes every token's features sum to 0; measured: 0 in fp32,
#: 5e-7 in fp16, 2.5e-6 in bf16), and A1111's division by it gives inf or NaN, or a factor
#: that is noise. A trained CLIP's mean is orders of magnitude larger.
EMPHASIS_MEAN_EPS = 1e-4
#: The fragment ``parse_attention`` gives for ``BREAK``.
BREAK = ("BREAK", -1.0)

Fragment = tuple[str, float]


@dataclass(frozen=True, eq=False)
class Embedding:
    """A prompt's embeddings, batch size 1.

    Attributes:
        hidden: ``(1, 77 * chunks, D)``, the text encoder's dtype, on the pipeline's execution
            device; ``D`` is the text encoder's width (768 SD 1.x, 1024 SD 2.x, 768 + 1280 = 2048
            SDXL, 1280 the SDXL refiner). For ``prompt_embeds`` / ``negative_prompt_embeds``.
        pooled: SDXL: ``(1, D2)`` (1280), the second text encoder's projection of the first chunk,
            for ``pooled_prompt_embeds`` / ``negative_pooled_prompt_embeds``; ``None`` for SD 1.x / 2.x.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def chunks(self) -> int:
        """The number of 77-token chunks in :attr:`hidden`."""
        return int(self.hidden.shape[1]) // (CHUNK_TOKENS + 2)


@dataclass(frozen=True)
class Chunk:
    """One chunk's prompt tokens (at most :data:`CHUNK_TOKENS`, no start/end/padding) and their weights."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]


class _Encoder:
    """One tokenizer + text encoder pair and how its hidden states are taken.

    ``layer``: ``("normed", n)``: the last layer (``n == 1``) or ``hidden_states[-n]`` through
    the final layer norm (SD 1.x / 2.x); ``("raw", n)``: ``hidden_states[-n]``, no norm (SDXL).
    """

    def __init__(self, tokenizer, text_encoder, *, layer: tuple[str, int], pooled: bool):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.layer = layer
        self.pooled = pooled
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.comma = tokenizer.get_vocab().get(",</w>")
        self.width = int(text_encoder.config.hidden_size)
        layers = int(text_encoder.config.num_hidden_layers)
        if layer[1] > layers:
            raise ValueError(f"clip skip {layer[1]} is more than the text encoder's {layers} layers")

    def ids(self, chunk: Chunk) -> list[int]:
        """``BOS + tokens + EOS``, padded to 77 with the tokenizer's pad token."""
        return [self.bos, *chunk.tokens, self.eos] + [self.pad] * (CHUNK_TOKENS - len(chunk.tokens))

    def encode(self, chunk: Chunk, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(1, 77, width)`` hidden states with emphasis, and the pooled projection (or None)."""
        import torch

        ids = torch.tensor([self.ids(chunk)], dtype=torch.long, device=device)
        kind, n = self.layer
        if kind == "normed" and n == 1:
            out = self.text_encoder(ids)
            z = out.last_hidden_state
        else:
            out = self.text_encoder(ids, output_hidden_states=True)
            z = out.hidden_states[-n]
            if kind == "normed":
                z = _final_layer_norm(self.text_encoder)(z)
        pooled = out.text_embeds if self.pooled else None
        weights = (1.0, *chunk.weights, 1.0) + (1.0,) * (CHUNK_TOKENS - len(chunk.weights))
        return emphasis_original(z, weights), pooled


def _is_break(text: str, weight: float) -> bool:
    """Whether a fragment is ``parse_attention``'s ``BREAK`` (:data:`BREAK`)."""
    return text == BREAK[0] and weight == BREAK[1]


def _final_layer_norm(text_encoder):
    """The CLIP text encoder's final layer norm: ``text_encoder.final_layer_norm`` in
    transformers 5 (``CLIPTextModel`` has no ``text_model`` there), ``text_model.final_layer_norm`` before."""
    norm = getattr(text_encoder, "final_layer_norm", None)
    return norm if norm is not None else text_encoder.text_model.final_layer_norm


def _embedding_groups(tokenizer) -> dict[int, tuple[int, ...]]:
    """Multi-vector textual-inversion embeddings as diffusers adds them (``load_textual_inversion``:
    tokens ``t, t_1, t_2, ...``): the first token's id -> all the ids, in order."""
    added = tokenizer.get_added_vocab()
    groups = {}
    for token, first in added.items():
        ids, i = [first], 1
        while f"{token}_{i}" in added:
            ids.append(added[f"{token}_{i}"])
            i += 1
        if len(ids) > 1:
            groups[first] = tuple(ids)
    return groups


def _units(tokens: Sequence[int], groups: dict[int, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """``tokens`` cut into what may not be split between chunks: one token, or the whole run of a
    multi-vector embedding (``groups``) of at most :data:`CHUNK_TOKENS` vectors."""
    out, i = [], 0
    while i < len(tokens):
        run = groups.get(tokens[i])
        if run and len(run) <= CHUNK_TOKENS and tuple(tokens[i : i + len(run)]) == run:
            out.append(run)
            i += len(run)
        else:
            out.append((tokens[i],))
            i += 1
    return out


def split_chunks(
    tokenized: Sequence[tuple[Sequence[int] | None, float]],
    *,
    comma: int | None,
    groups: dict[int, tuple[int, ...]] | None = None,
    backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """Lay tokenized fragments out in chunks of at most :data:`CHUNK_TOKENS` tokens.

    A1111's ``FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`` (``modules/sd_hijack_clip.py``):

    * a fragment ``(None, w)`` is a ``BREAK``: the current chunk ends there (even when empty);
    * when a chunk is full and the next token is not a comma, the tokens after the chunk's last
      comma move to the next chunk if that comma is at most ``backtrack`` tokens from the end
      (the comma stays); ``backtrack=0`` never moves them;
    * a multi-vector embedding (``groups``) that does not fit in what is left of a chunk starts
      the next one;
    * a prompt without tokens is one empty chunk; the last chunk is kept only if it has tokens.

    Args:
        tokenized: ``(token ids, weight)`` per fragment, ids without start/end tokens.
        comma: the tokenizer's id of ``,</w>`` (None: no comma backtrack).
        groups: from :func:`_embedding_groups`.

    Returns:
        1 or more chunks, each with at most 75 tokens and one weight per token.
    """
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close():
        nonlocal tokens, weights, last_comma
        chunks.append(Chunk(tuple(tokens), tuple(weights)))
        tokens, weights, last_comma = [], [], -1

    for ids, weight in tokenized:
        if ids is None:
            close()
            continue
        for unit in _units(ids, groups or {}):
            if comma is not None and unit[0] == comma:
                last_comma = len(tokens)
            elif len(tokens) == CHUNK_TOKENS and last_comma >= 0 and CHUNK_TOKENS - last_comma <= backtrack:
                cut = last_comma + 1
                moved, moved_weights = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = moved, moved_weights
            if len(tokens) + len(unit) > CHUNK_TOKENS:
                close()
            tokens.extend(unit)
            weights.extend([weight] * len(unit))
    if tokens or not chunks:
        close()
    return chunks


def emphasis_original(z: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """A1111's "Original" emphasis on one chunk (``modules/sd_emphasis.py``, ``EmphasisOriginal``).

    ``z' = z * w`` (each token's features times its weight), then ``z' * (mean(z) / mean(z'))``,
    the means over the whole chunk, so the chunk's mean is kept.

    Computed in float32 (A1111's float32 multipliers promote a half-precision ``z`` too) and
    returned in ``z``'s dtype. Two guards, both leaving A1111's result unchanged where it is
    finite and meaningful: weights all 1 return ``z`` itself (bit for bit; A1111's arithmetic
    gives the same); when
    ``|mean(z')| <= EMPHASIS_MEAN_EPS * mean(|z'|)`` the rescale is skipped and ``z * w`` is
    returned (see :data:`EMPHASIS_MEAN_EPS`; A1111 would divide by ~0).

    Args:
        z: ``(1, T, D)`` hidden states of one chunk.
        weights: ``T`` per-token weights (any real; 1 is neutral).

    Returns:
        ``(1, T, D)``, ``z``'s dtype and device.

    Raises:
        ValueError: ``len(weights) != T``.
    """
    import torch

    if len(weights) != z.shape[-2]:
        raise ValueError(f"{len(weights)} weights for {z.shape[-2]} tokens")
    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=torch.float32, device=z.device).reshape(1, -1, 1)
    z32 = z.float()
    weighted = z32 * w
    mean_after = weighted.mean()
    if mean_after.abs() > EMPHASIS_MEAN_EPS * weighted.abs().mean():
        weighted = weighted * (z32.mean() / mean_after)
    return weighted.to(z.dtype)


class PromptEncoder:
    """Embeddings for weighted prompt fragments with a diffusers pipeline's text encoder(s).

    Args:
        pipe: a diffusers ``StableDiffusion[XL][Img2Img|Inpaint]Pipeline`` (anything with
            ``tokenizer``/``text_encoder`` and, for SDXL, ``tokenizer_2``/``text_encoder_2``; the
            SDXL refiner has only the second pair). Textual-inversion tokens loaded with
            ``pipe.load_textual_inversion`` work: each fragment goes through
            ``pipe.maybe_convert_prompt`` first, as in diffusers' ``encode_prompt``.
        clip_skip: A1111's "Clip skip", ``>= 1`` and at most the encoder's layer count: 1 is the
            last layer, ``N`` the hidden states ``N - 1`` layers before it through the final layer
            norm (SD 1.x / 2.x; diffusers' ``clip_skip=N - 1``). SDXL: ignored unless
            ``sdxl_clip_l_skip``, as in A1111. SD 2.x: applied here to diffusers' 23-layer
            encoder, whose last layer is already OpenCLIP's penultimate (1 is SD 2.x's own
            conditioning); A1111 ignores clip skip for SD 2.x
            (``FrozenOpenCLIPEmbedderWithCustomWords.encode_with_transformers``), so ``N > 1``
            reproduces no A1111 image there.
        sdxl_clip_l_skip: A1111's "Clip skip SDXL" option (``sdxl_clip_l_skip``, off by default):
            SDXL's first encoder takes ``hidden_states[-clip_skip]`` without final norm (1: the last
            layer, 2: the penultimate, SDXL's own); the second encoder is unchanged.

    Raises:
        ValueError: ``clip_skip`` below 1 or beyond the encoder's layers; a pipeline without text encoder.
    """

    def __init__(self, pipe, *, clip_skip: int = 1, sdxl_clip_l_skip: bool = False):
        if int(clip_skip) != clip_skip or clip_skip < 1:
            raise ValueError(f"clip skip must be an integer >= 1, not {clip_skip!r}")
        self.pipe = pipe
        self.clip_skip = int(clip_skip)
        second = getattr(pipe, "text_encoder_2", None)
        first = getattr(pipe, "text_encoder", None)
        self._encoders: list[_Encoder] = []
        if second is not None:  # SDXL (base: both encoders; refiner: the second only)
            if first is not None:
                n = self.clip_skip if sdxl_clip_l_skip else 2
                self._encoders.append(_Encoder(pipe.tokenizer, first, layer=("raw", n), pooled=False))
            self._encoders.append(_Encoder(pipe.tokenizer_2, second, layer=("raw", 2), pooled=True))
        elif first is not None:
            self._encoders.append(_Encoder(pipe.tokenizer, first, layer=("normed", self.clip_skip), pooled=False))
        else:
            raise ValueError("the pipeline has no text encoder")
        config = getattr(pipe, "config", {}) or {}
        self.zero_negative = second is not None and bool(config.get("force_zeros_for_empty_prompt", False))

    @property
    def sdxl(self) -> bool:
        """Whether the pipeline has SDXL's second text encoder (so embeddings have a pooled vector)."""
        return self._encoders[-1].pooled

    def _layouts(self, fragments: Sequence[Fragment]) -> list[list[Chunk]]:
        """Each encoder's chunks for ``fragments``; raises ValueError when the SDXL tokenizers disagree."""
        fragments = [(str(text), float(weight)) for text, weight in fragments]
        texts = [text for text, weight in fragments if not _is_break(text, weight)]
        layouts = []
        for enc in self._encoders:
            groups = _embedding_groups(enc.tokenizer)  # read each time: embeddings may be loaded later
            ids = iter(self._tokenize(enc.tokenizer, texts, expand=bool(groups)))
            tokenized = [(None if _is_break(text, weight) else next(ids), weight) for text, weight in fragments]
            layouts.append(split_chunks(tokenized, comma=enc.comma, groups=groups))
        shapes = {tuple(len(c.tokens) for c in layout) for layout in layouts}
        if len(shapes) > 1:
            raise ValueError(
                "the two SDXL tokenizers split this prompt differently (a textual-inversion embedding "
                "loaded into one tokenizer only?)"
            )
        return layouts

    def _tokenize(self, tokenizer, texts: list[str], *, expand: bool) -> list[list[int]]:
        """Token ids per text, no start/end tokens, no truncation. ``expand``: the tokenizer holds
        multi-vector embeddings, so each text goes through ``pipe.maybe_convert_prompt`` first
        (``t`` -> ``t t_1 t_2 ...``; it changes nothing otherwise, so it is skipped then)."""
        if not texts:
            return []
        convert = getattr(self.pipe, "maybe_convert_prompt", None)
        if expand and convert is not None:
            texts = [convert(text, tokenizer) for text in texts]
        return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def chunks(self, fragments: Sequence[Fragment]) -> int:
        """The number of 75-token chunks ``fragments`` take (``>= 1``; a ``BREAK`` fragment,
        ``("BREAK", -1.0)``, starts a new chunk). Prompt and negative prompt must be encoded to
        the same count (:meth:`encode` ``chunks=``) for a pipeline to take them together.

        Raises:
            ValueError: the SDXL tokenizers split the prompt differently.
        """
        return len(self._layouts(fragments)[0])

    def encode(self, fragments: Sequence[Fragment], *, chunks: int | None = None) -> Embedding:
        """Encode ``fragments`` (``(text, weight)`` pairs from ``parse_attention``; weights are
        A1111's multipliers, 1 neutral; ``("BREAK", -1.0)`` starts a new chunk).

        Args:
            chunks: pad with empty chunks (start, end, padding; weights 1: A1111's
                ``empty_chunk``) up to this many; ``None``: as many as the prompt needs.

        Returns:
            :class:`Embedding` with ``hidden`` ``(1, 77 * chunks, D)``, ``pooled`` ``(1, D2)`` for SDXL.

        Raises:
            ValueError: ``chunks`` is below 1 or below what the prompt needs (:meth:`chunks`); the
                SDXL tokenizers split the prompt differently.
        """
        import torch

        layouts = self._layouts(fragments)
        needed = len(layouts[0])
        if chunks is not None:
            if chunks < needed:
                raise ValueError(f"the prompt needs {needed} chunks of 75 tokens, more than chunks={chunks}")
            layouts = [layout + [Chunk((), ())] * (chunks - needed) for layout in layouts]
        device = self.pipe._execution_device
        hidden, pooled = [], None
        with torch.no_grad():
            for enc, layout in zip(self._encoders, layouts):
                parts = []
                for i, chunk in enumerate(layout):
                    z, p = enc.encode(chunk, device)
                    if i == 0 and p is not None:
                        pooled = p
                    parts.append(z)
                hidden.append(torch.cat(parts, dim=1))
        return Embedding(torch.cat(hidden, dim=-1), pooled)

    def empty_negative(self, chunks: int) -> Embedding:
        """What diffusers' pipelines use when there is no negative prompt, over ``chunks`` chunks.

        SD 1.x / 2.x (and SDXL without ``force_zeros_for_empty_prompt``, e.g. the refiner): the
        encoding of ``""`` (``encode([("", 1.0)], chunks=chunks)``). SDXL with
        ``pipe.config.force_zeros_for_empty_prompt`` (SDXL base): zeros, ``hidden``
        ``(1, 77 * chunks, D)`` and ``pooled`` ``(1, D2)``, as diffusers' ``encode_prompt``
        (``zero_out_negative_prompt``) and A1111 (``modules/sd_models_xl.py``,
        ``force_zero_negative_prompt``) do.

        Raises:
            ValueError: ``chunks < 1``.
        """
        import torch

        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, not {chunks}")
        if not self.zero_negative:
            return self.encode([("", 1.0)], chunks=chunks)
        device = self.pipe._execution_device
        last = self._encoders[-1].text_encoder
        width = sum(enc.width for enc in self._encoders)
        hidden = torch.zeros(1, (CHUNK_TOKENS + 2) * chunks, width, dtype=last.dtype, device=device)
        pooled = torch.zeros(1, int(last.config.projection_dim), dtype=last.dtype, device=device)
        return Embedding(hidden, pooled)

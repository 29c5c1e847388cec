"""Textual-inversion embeddings as A1111 users keep them: one file per word, the word being the
file name.

- :func:`find_embeddings` lists the embedding files of the embeddings folders by name;
- :func:`names_in` says which of them a prompt uses;
- :func:`load_embedding` adds one to a loaded pipeline's tokenizer(s) and text encoder(s),
  through diffusers' ``load_textual_inversion``;
- :func:`embedding_hash` is what A1111 writes for it in the infotext ``TI hashes`` field.

File formats read (A1111 ``modules/textual_inversion/textual_inversion.py``,
``EmbeddingDatabase.load_from_file``):

- A1111's own ``.pt``: ``{"string_to_param": {"*": tensor (n, D)}, "name": ..., "step": ...}``;
- a single-tensor dictionary: ``{"emb_params": tensor (n, D)}`` (``.safetensors`` from
  kohya-ss and others) or diffusers' ``{token: tensor (D,) or (n, D)}`` (``learned_embeds.bin``);
- SDXL: ``{"clip_l": tensor (n, 768), "clip_g": tensor (n, 1280)}``, ``clip_l`` for the first
  text encoder (CLIP ViT-L), ``clip_g`` for the second (OpenCLIP ViT-bigG), as diffusers'
  textual inversion docs load them for SDXL.

``n`` is the number of vectors (tokens) the word stands for, ``D`` the text encoder's width.
``.pt`` / ``.bin`` files are read with ``torch.load(weights_only=True)``: no code runs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import InputError
from .lora import library_messages, file_sha256, walk_files

log = logging.getLogger(__name__)

#: Embedding files A1111 reads (it also reads embeddings hidden in .png/.webp images; not these).
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def find_embeddings(dirs: list[Path]) -> dict[str, Path]:
    """The embeddings under ``dirs`` (searched recursively, following links to folders):
    name (the file name without extension, as A1111 names them) -> file.

    Empty files are skipped (A1111 does too). When two files have the same name, the first
    found (``dirs`` in order, each in sorted order) is kept and a warning names both.
    Nothing is read but the folder listings.
    """
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in walk_files(Path(folder)):
            if path.suffix.lower() not in EMBEDDING_SUFFIXES:
                continue
            try:
                if path.stat().st_size == 0:
                    continue
            except OSError:
                continue
            if path.stem in found:
                log.warning("embedding %s: %s is used, %s is ignored (same name)", path.stem, found[path.stem], path)
                continue
            found[path.stem] = path
    return found


def embedding_hash(path) -> str:
    """The short hash A1111 writes for an embedding in the infotext ``TI hashes`` field
    (``name: hash, ...``): the first 12 hex digits of the sha256 of the whole file.

    Source: A1111 ``textual_inversion.py`` (``load_from_file``: ``hashes.sha256(filename,
    "textual_inversion/" + name)``, without ``use_addnet_hash``, i.e. ``calculate_sha256`` of
    the file; ``Embedding.set_hash``: ``shorthash = hash[0:12]``) and ``sd_hijack_clip.py``
    (``TI hashes``: ``f"{name}: {embedding.shorthash}"``).
    """
    return file_sha256(Path(path))[:12]


def names_in(prompt: str, available: dict[str, Path]) -> list[str]:
    """The embedding names ``prompt`` uses, in order of first use.

    A name is used where it stands as a word of its own: not preceded nor followed by a
    letter, digit or ``_`` (``EasyNegative``, ``(EasyNegative:1.2)``, ``EasyNegative,`` use
    it; ``EasyNegativeV2``, ``my_EasyNegative`` do not). Matching is case-sensitive.

    That is how :func:`load_embedding` makes the tokenizer find it (a word-bounded, exact
    token), and close to A1111, which matches the name's CLIP token sequence in the prompt's
    tokens (``sd_hijack_clip.py``, ``find_embedding_at_position``): A1111 is case-insensitive
    (CLIP lowercases), and since CLIP splits ``_`` and punctuation into tokens of their own it
    would also find ``bad_prompt`` in ``bad_prompt_v2``; here it is not found.
    """
    positions = {}
    for name in available:
        match = re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", prompt)
        if match:
            positions[name] = match.start()
    return sorted(positions, key=lambda n: (positions[n], -len(n)))


def load_embedding(pipe, name: str, path: Path) -> None:
    """Teach ``pipe`` the word ``name``: the embedding in ``path`` becomes what its text
    encoder(s) see for it.

    Through diffusers' ``pipe.load_textual_inversion(tensor, token=name, text_encoder=...,
    tokenizer=...)`` (``loaders/textual_inversion.py``): an embedding of ``n`` vectors adds the
    tokens ``name``, ``name_1`` ... ``name_{n-1}`` to the tokenizer and their rows to the text
    encoder's token embeddings (the existing rows are unchanged, so prompts without ``name``
    encode as before); diffusers' ``maybe_convert_prompt`` (which the pipelines'
    ``encode_prompt`` calls) writes ``name`` in a prompt as ``name name_1 ...``. For an SDXL
    pipeline ``clip_l`` goes to ``text_encoder`` / ``tokenizer`` and ``clip_g`` to
    ``text_encoder_2`` / ``tokenizer_2``.

    The tokens are then registered again as exact, whole-word tokens (tokenizers'
    ``AddedToken(single_word=True, normalized=False)``). diffusers adds them as plain strings,
    which transformers 5 matches after the CLIP normaliser has lowercased the text and reports
    as lowercase strings, so for a name with capitals (``EasyNegative``) ``maybe_convert_prompt``
    never finds it and silently drops every vector but the first; a plain token also matches
    inside other words (``xEasyNegative``). Hence :func:`names_in`'s rule.

    Loading a name already loaded is a no-op. The global torch RNG is left as it was
    (transformers initialises the new rows randomly before diffusers overwrites them).

    Args:
        pipe: a diffusers Stable Diffusion (1.x/2.x) or SDXL pipeline.
        name: the word, normally the file's stem (:func:`find_embeddings`' keys).
        path: the embedding file (``.safetensors``, ``.pt``, ``.bin``).

    Raises:
        InputError: naming the file, when it cannot be read, is not an embedding, does not fit
            the model (an SDXL embedding for a one-encoder model or the reverse, or vectors of
            another size than the text encoder's width: both sizes are named), or ``name`` is
            already a word of the tokenizer's own vocabulary.
    """
    import torch

    path = Path(path)
    targets = _targets(pipe)
    if name in targets[0][2].added_tokens_encoder:
        return
    vectors = _read(path)
    widths = {key: te.get_input_embeddings().weight.shape[-1] for key, te, _ in targets}
    if ("clip_l" in vectors) != (targets[0][0] != ""):
        if "clip_l" in vectors:
            raise InputError(
                f"{path}: an SDXL embedding (clip_l {vectors['clip_l'].shape[-1]}, clip_g "
                f"{vectors['clip_g'].shape[-1]} wide); this model has one text encoder, {widths['']} wide"
            )
        needs = ", ".join(f"{key} {width}" for key, width in widths.items())
        raise InputError(
            f"{path}: vectors {vectors[''].shape[-1]} wide; this SDXL model needs clip_l and clip_g vectors ({needs})"
        )
    for key, te, tok in targets:
        vec = vectors[key]
        width = widths[key]
        if vec.shape[-1] != width:
            what = f"{key} vectors" if key else "vectors"
            raise InputError(f"{path}: {what} {vec.shape[-1]} wide; the model's text encoder takes {width}")
        vocab = tok.get_vocab()
        taken = [t for t in [name] + [f"{name}_{i}" for i in range(1, vec.shape[0])] if t in vocab]
        if taken:
            raise InputError(
                f"{path}: {taken[0]!r} is already a word of the model's vocabulary; rename the embedding file"
            )
    for key, te, tok in targets:
        vec = vectors[key]
        try:
            with torch.random.fork_rng(devices=[]), library_messages(path):
                pipe.load_textual_inversion(vec.to(te.dtype), token=name, text_encoder=te, tokenizer=tok)
        except Exception as e:
            reason = " ".join(str(e).split())[:300]
            raise InputError(f"{path}: cannot load this embedding ({type(e).__name__}: {reason})") from e
        _exact_tokens(tok, [name] + [f"{name}_{i}" for i in range(1, vec.shape[0])])


def _targets(pipe) -> list[tuple[str, object, object]]:
    """``(key in the file's vectors, text encoder, tokenizer)`` per text encoder of ``pipe``:
    ``""`` for a one-encoder model, ``clip_l`` / ``clip_g`` for SDXL (the refiner has only
    ``clip_g``)."""
    te, tok = getattr(pipe, "text_encoder", None), getattr(pipe, "tokenizer", None)
    te2, tok2 = getattr(pipe, "text_encoder_2", None), getattr(pipe, "tokenizer_2", None)
    if te2 is not None and tok2 is not None:
        return ([("clip_l", te, tok)] if te is not None and tok is not None else []) + [("clip_g", te2, tok2)]
    if te is None or tok is None:
        raise InputError("this model has no text encoder to load embeddings into")
    return [("", te, tok)]


def _read(path: Path) -> dict:
    """The file's vectors: ``{"": (n, D)}`` or ``{"clip_l": (n, D1), "clip_g": (n, D2)}``, float32."""
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = " ".join(str(e).split())[:200]
        how = "" if path.suffix.lower() == ".safetensors" else " safely with torch.load(weights_only=True)"
        raise InputError(f"{path}: cannot be read{how} ({type(e).__name__}: {reason})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not an embedding (a {type(data).__name__}, not a dictionary)")
    if "string_to_param" in data:
        params = data["string_to_param"]
        tensors = [v for v in params.values() if isinstance(v, torch.Tensor)] if isinstance(params, dict) else []
        if len(tensors) != 1:
            raise InputError(
                f"{path}: an A1111 embedding should hold one tensor in string_to_param, not {len(tensors)}"
            )
        vectors = {"": tensors[0]}
    elif "clip_l" in data and "clip_g" in data:
        vectors = {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(data) != 1 or len(tensors) != 1:
            raise InputError(
                f"{path}: not a textual inversion embedding (expected string_to_param, emb_params, "
                f"clip_l + clip_g, or one tensor; found keys {', '.join(map(str, list(data)[:5]))})"
            )
        vectors = {"": tensors[0]}
    out = {}
    for key, vec in vectors.items():
        if not (isinstance(vec, torch.Tensor) and vec.is_floating_point() and vec.ndim in (1, 2) and vec.numel()):
            raise InputError(f"{path}: {key or 'the'} embedding is not a (vectors, width) float tensor")
        out[key] = (vec.unsqueeze(0) if vec.ndim == 1 else vec).detach().float()
    if "clip_l" in out and out["clip_l"].shape[0] != out["clip_g"].shape[0]:
        raise InputError(f"{path}: clip_l has {out['clip_l'].shape[0]} vectors, clip_g {out['clip_g'].shape[0]}")
    return out


def _exact_tokens(tokenizer, tokens: list[str]) -> None:
    """Register ``tokens`` (already added) again as exact whole-word tokens: same ids,
    matched on the raw text, case-sensitively, and only where no letter, digit or ``_`` touches
    them; ``tokenize`` then returns them as written, which ``maybe_convert_prompt`` needs."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, single_word=True, normalized=False, special=False) for t in tokens])

"""Shared helpers for building CLIP BPE tokenizer files offline.

Source: the CLIP BPE merge list that ships inside the open_clip_torch wheel
(``open_clip/bpe_simple_vocab_16e6.txt.gz``, originally from openai/CLIP).
The vocabulary is rebuilt exactly as OpenAI CLIP / open_clip's
``SimpleTokenizer`` do it:

* merges: lines ``[1 : 49152 - 256 - 2 + 1]`` of the file (48894 merges; line 0
  is a ``#version`` header),
* vocab: the 256 byte-level unicode symbols (``bytes_to_unicode`` order), the
  same 256 symbols with ``</w>`` appended, ``''.join(merge)`` for every merge,
  then ``<|startoftext|>`` and ``<|endoftext|>`` (49408 entries in total).

The files written (``vocab.json``, ``merges.txt``, ``special_tokens_map.json``,
``tokenizer_config.json``) use the Hugging Face layout of
``openai/clip-vit-large-patch14`` so that ``transformers.CLIPTokenizer`` can load
them.  A smaller vocabulary can be produced by keeping only the first N merges
(used for the tiny test model).

This module does not import ``open_clip`` itself (importing that package pulls in
torchvision/timm); it only locates the data file inside the installed package.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

#: Number of merges used by the standard CLIP tokenizer (49152 - 256 - 2).
FULL_NUM_MERGES = 49152 - 256 - 2
#: Vocabulary size of the standard CLIP tokenizer.
FULL_VOCAB_SIZE = 2 * 256 + FULL_NUM_MERGES + 2  # 49408

MODEL_MAX_LENGTH = 77


def default_bpe_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open_clip package.

    Uses ``importlib.util.find_spec`` so the package is located without being
    imported.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it provides bpe_simple_vocab_16e6.txt.gz")
    for location in spec.submodule_search_locations:
        path = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise FileNotFoundError("bpe_simple_vocab_16e6.txt.gz not found in the open_clip package")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> unicode symbol table (insertion order matters)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_merges(num_merges: int = FULL_NUM_MERGES, bpe_path: Path | None = None) -> list[tuple[str, str]]:
    """The first ``num_merges`` merges of the CLIP BPE file, as ``(left, right)`` pairs."""
    if not 0 <= num_merges <= FULL_NUM_MERGES:
        raise ValueError(f"num_merges must be in [0, {FULL_NUM_MERGES}], got {num_merges}")
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : FULL_NUM_MERGES + 1]]
    if len(merges) != FULL_NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected content in {path}")
    return merges[:num_merges]


def build_vocab(merges: list[tuple[str, str]]) -> list[str]:
    """Token strings in id order: bytes, bytes + ``</w>``, merged strings, SOT, EOT."""
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + END_OF_WORD for s in byte_symbols]
    vocab += ["".join(m) for m in merges]
    vocab += [SOT_TOKEN, EOT_TOKEN]
    if len(set(vocab)) != len(vocab):
        raise ValueError("duplicate entries in the built vocabulary")
    return vocab


def _added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def special_tokens_map() -> dict:
    """Same content as openai/clip-vit-large-patch14's special_tokens_map.json."""
    return {
        "bos_token": _added_token(SOT_TOKEN),
        "eos_token": _added_token(EOT_TOKEN),
        "pad_token": EOT_TOKEN,
        "unk_token": _added_token(EOT_TOKEN),
    }


def tokenizer_config() -> dict:
    """openai/clip-vit-large-patch14's tokenizer_config.json, minus its hub-specific
    ``name_or_path`` / ``special_tokens_map_file`` entries."""
    return {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **_added_token(SOT_TOKEN)},
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **_added_token(EOT_TOKEN)},
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": EOT_TOKEN,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **_added_token(EOT_TOKEN)},
    }


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_clip_tokenizer(
    out_dir: str | Path, num_merges: int = FULL_NUM_MERGES, bpe_path: Path | None = None
) -> dict[str, int]:
    """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json.

    Only the first ``num_merges`` merges are kept (and only those appear in
    merges.txt), so the vocabulary has ``512 + num_merges + 2`` entries with
    ``<|startoftext|>`` and ``<|endoftext|>`` as the last two ids.
    Returns the vocabulary (token -> id).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merges = load_merges(num_merges, bpe_path)
    vocab = {token: i for i, token in enumerate(build_vocab(merges))}

    _write_text(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n")
    _write_text(out_dir / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    _write_text(out_dir / "special_tokens_map.json", json.dumps(special_tokens_map(), indent=2) + "\n")
    _write_text(out_dir / "tokenizer_config.json", json.dumps(tokenizer_config(), indent=2) + "\n")
    return vocab

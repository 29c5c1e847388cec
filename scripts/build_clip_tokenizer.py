"""Build the standard CLIP BPE tokenizer used by Stable Diffusion, offline.

Writes ``img2img_cli/models/clip_tokenizer/`` (vocab.json, merges.txt,
special_tokens_map.json, tokenizer_config.json) in the Hugging Face layout of
``openai/clip-vit-large-patch14``: 49408 tokens, 48894 merges, bos
``<|startoftext|>`` (49406), eos/unk/pad ``<|endoftext|>`` (49407),
model_max_length 77.

Source: ``open_clip/bpe_simple_vocab_16e6.txt.gz`` from the installed
open_clip_torch wheel (the merge list of OpenAI CLIP); see ``_clip_bpe.py``.

Usage::

    python scripts/build_clip_tokenizer.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clip_bpe import FULL_NUM_MERGES, FULL_VOCAB_SIZE, write_clip_tokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "img2img_cli" / "models" / "clip_tokenizer"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {Path(__file__).name} [OUTPUT_DIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT_DIR
    vocab = write_clip_tokenizer(out_dir, num_merges=FULL_NUM_MERGES)
    assert len(vocab) == FULL_VOCAB_SIZE, len(vocab)
    print(f"wrote CLIP tokenizer ({len(vocab)} tokens, {FULL_NUM_MERGES} merges) to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Build a tiny, randomly initialised Stable Diffusion pipeline for tests and demos.

Writes ``img2img_cli/models/tiny/``, a standard diffusers pipeline folder
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``; fp32 ``.safetensors`` weights, about 8.6 MB in total) that loads
with ``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` /
``AutoPipelineForImage2Image``.  There is no safety checker or feature
extractor (stored as null, as ``save_pretrained`` does for
``safety_checker=None, feature_extractor=None, requires_safety_checker=False``).

Sources:

* UNet, VAE and text encoder have exactly the sizes of the dummy components in
  diffusers' ``tests/pipelines/stable_diffusion/test_stable_diffusion_img2img.py``
  (``get_dummy_components``), with weights from the default random
  initialisation after ``torch.manual_seed(0)`` (so the output is deterministic:
  running the script twice gives byte-identical files).  Native resolution is
  64 px (UNet sample_size 32 x VAE scale factor 2).
* Scheduler: the PNDMScheduler configuration that Stable Diffusion v1.5 ships.
* Tokenizer: the CLIP BPE vocabulary from open_clip's
  ``bpe_simple_vocab_16e6.txt.gz`` (see ``_clip_bpe.py``) cut to 1000 entries:
  512 byte symbols, the first 486 merges, ``<|startoftext|>`` (998) and
  ``<|endoftext|>`` (999, also pad/unk).

No network access and no pretrained weights are needed.

Usage::

    python scripts/build_tiny_model.py [OUTPUT_DIR]
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _clip_bpe import EOT_TOKEN, MODEL_MAX_LENGTH, SOT_TOKEN, write_clip_tokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "img2img_cli" / "models" / "tiny"

TINY_NUM_MERGES = 486
TINY_VOCAB_SIZE = 2 * 256 + TINY_NUM_MERGES + 2  # 1000
TINY_BOS_ID = TINY_VOCAB_SIZE - 2  # <|startoftext|>
TINY_EOS_ID = TINY_VOCAB_SIZE - 1  # <|endoftext|>, also pad and unk

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _hide_broken_torchvision() -> None:
    """Keep a torchvision that cannot be imported from breaking diffusers/transformers.

    Nothing here needs torchvision, but transformers imports it whenever it is
    installed; a build that does not match the installed torch (e.g. a CUDA
    torchvision next to a CPU-only torch) then fails at import time.  In that case
    the package is hidden from this process only.
    """
    if importlib.util.find_spec("torchvision") is None:
        return
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode != 0:
        last_line = (probe.stderr.strip().splitlines() or ["?"])[-1]
        print(
            f"warning: installed torchvision cannot be imported ({last_line}); ignoring it in this script",
            file=sys.stderr,
        )
        sys.modules["torchvision"] = None  # makes `import torchvision` / find_spec report it as absent


def build_components():
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )

    # Stable Diffusion v1.5's scheduler/scheduler_config.json.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        trained_betas=None,
    )
    # Not a PNDMScheduler argument, but present in SD v1.5's config (it matters when the
    # config is reused for a DDIM-style scheduler via `from_config`); ignored silently by PNDM.
    scheduler.register_to_config(clip_sample=False)

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )

    torch.manual_seed(0)
    text_encoder_config = CLIPTextConfig(
        bos_token_id=TINY_BOS_ID,
        eos_token_id=TINY_EOS_ID,
        pad_token_id=TINY_EOS_ID,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=TINY_VOCAB_SIZE,
        max_position_embeddings=MODEL_MAX_LENGTH,
    )
    text_encoder = CLIPTextModel(text_encoder_config)
    return unet, vae, text_encoder, scheduler


def model_index(diffusers_version: str) -> dict:
    """What ``StableDiffusionPipeline.save_pretrained`` writes for these components with
    ``safety_checker=None, feature_extractor=None, requires_safety_checker=False``."""
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers_version,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {Path(__file__).name} [OUTPUT_DIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT_DIR

    _hide_broken_torchvision()
    import diffusers

    unet, vae, text_encoder, scheduler = build_components()

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:  # start clean so no stale files survive a rebuild
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)

    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    text_encoder.save_pretrained(out_dir / "text_encoder", safe_serialization=True)
    scheduler.save_pretrained(out_dir / "scheduler")
    vocab = write_clip_tokenizer(out_dir / "tokenizer", num_merges=TINY_NUM_MERGES)
    assert len(vocab) == TINY_VOCAB_SIZE
    assert vocab[SOT_TOKEN] == TINY_BOS_ID and vocab[EOT_TOKEN] == TINY_EOS_ID

    with open(out_dir / "model_index.json", "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(model_index(diffusers.__version__), indent=2, sort_keys=True) + "\n")

    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"wrote tiny Stable Diffusion pipeline to {out_dir} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

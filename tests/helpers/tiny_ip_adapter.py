"""Build a tiny IP-Adapter for the tiny models, in h94/IP-Adapter's layout, as diffusers' tests make one.

Weights: diffusers' ``create_ip_adapter_state_dict`` (``tests/models/unets/test_models_unet_2d_condition.py``):
for each cross-attention processor of the UNet, in ``unet.attn_processors`` order, the
``to_k_ip`` / ``to_v_ip`` weights of a fresh ``IPAdapterAttnProcessor(hidden_size, cross_attention_dim)``
under keys ``1, 3, 5, ...`` (the original IP-Adapter's numbering); and an ``ImageProjection``
(``image_embed_dim`` -> 4 tokens of ``cross_attention_dim``) saved as ``proj.*`` / ``norm.*``.
Initialised after ``torch.manual_seed(seed)`` (PyTorch's default ``nn.Linear`` init: random, so
the style image changes the output).

Image encoder: the ``CLIPVisionModelWithProjection`` of diffusers' IP-Adapter pipeline tests
(``get_dummy_components`` with ``image_encoder``): ``CLIPVisionConfig(hidden_size=32,
projection_dim=32, num_hidden_layers=5, num_attention_heads=4, image_size=32,
intermediate_size=37, patch_size=1)``, seeded with ``seed``.

Saved as h94/IP-Adapter ships them (``models/ip-adapter_sd15.safetensors`` next to
``models/image_encoder/``): one ``.safetensors`` whose keys are ``image_proj.*`` and
``ip_adapter.*`` (what diffusers' ``load_ip_adapter`` reads), and an ``image_encoder/`` folder
(``config.json`` + ``model.safetensors``, no preprocessor config, as h94's).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "img2img_cli" / "models" / "tiny"


def tiny_unet():
    """The built-in tiny model's UNet (cross-attention dim 32, block channels (32, 64))."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(TINY), subfolder="unet")


def ip_adapter_state_dict(unet, *, cross_attention_dim: int | None = None, image_embed_dim: int = 32, seed: int = 0) -> dict:
    """diffusers' ``create_ip_adapter_state_dict`` for ``unet``, flattened to the file's keys
    (``image_proj.proj.weight``, ``ip_adapter.1.to_k_ip.weight`` ...). ``cross_attention_dim``
    (default: the UNet's) other than the UNet's makes an adapter for another base model."""
    import torch
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection

    torch.manual_seed(seed)
    cross = cross_attention_dim or unet.config.cross_attention_dim
    channels = unet.config.block_out_channels
    out: dict = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        sd = IPAdapterAttnProcessor(hidden_size=hidden, cross_attention_dim=cross, scale=1.0).state_dict()
        out[f"ip_adapter.{key_id}.to_k_ip.weight"] = sd["to_k_ip.0.weight"]
        out[f"ip_adapter.{key_id}.to_v_ip.weight"] = sd["to_v_ip.0.weight"]
        key_id += 2
    proj = ImageProjection(cross_attention_dim=cross, image_embed_dim=image_embed_dim, num_image_text_embeds=4).state_dict()
    out.update({
        "image_proj.proj.weight": proj["image_embeds.weight"], "image_proj.proj.bias": proj["image_embeds.bias"],
        "image_proj.norm.weight": proj["norm.weight"], "image_proj.norm.bias": proj["norm.bias"],
    })
    return {k: v.contiguous() for k, v in out.items()}


def save_image_encoder(folder: Path, *, projection_dim: int = 32, seed: int = 0) -> Path:
    """Write diffusers' tiny ``CLIPVisionModelWithProjection`` to ``folder`` (``save_pretrained``)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, projection_dim=projection_dim, num_hidden_layers=5, num_attention_heads=4,
                              image_size=32, intermediate_size=37, patch_size=1)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(str(folder))
    return Path(folder)


def build_tiny_ip_adapter(folder: Path, *, name: str = "ip-adapter_tiny", unet=None, cross_attention_dim: int | None = None,
                          encoder: bool = True, seed: int = 0) -> Path:
    """Write ``folder/<name>.safetensors`` (and, with ``encoder``, ``folder/image_encoder/``) for
    ``unet`` (default: the built-in tiny model's); returns the adapter file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(ip_adapter_state_dict(unet or tiny_unet(), cross_attention_dim=cross_attention_dim, seed=seed), str(path))
    if encoder:
        save_image_encoder(folder / "image_encoder", seed=seed)
    return path

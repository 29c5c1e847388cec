"""Tiny ControlNets for tests, built the way diffusers' own tests build theirs
(``tests/pipelines/controlnet/test_controlnet_img2img.py``, ``get_dummy_components``):
``ControlNetModel.from_unet`` of the tiny UNet (its encoder weights copied) with
``conditioning_embedding_out_channels=(16, 32)`` (one stride-2 step: 64 px control images to the
tiny VAE's 32 px latents), then the zero convolutions (``controlnet_down_blocks``,
``controlnet_mid_block``) re-initialised with ``normal_`` weights and biases 1 after a manual
seed, so the ControlNet has an effect (zero convolutions add nothing). The hint encoder's last
convolution (``controlnet_cond_embedding.conv_out``) is zero-initialised too and is re-initialised
the same way (diffusers' tests leave it at zero, so their control image changes nothing): here
the control image matters.

:func:`save_original_controlnet` writes one in lllyasviel's ControlNet v1.1 single-file layout
(``control_model.`` + the UNet encoder's original names, ``input_hint_block``, ``zero_convs``,
``middle_block_out``): the inverse of diffusers' ``convert_controlnet_checkpoint``
(``loaders/single_file_utils.py``), the encoder part through the UNet tables of
:mod:`tests.helpers.ldm_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from .ldm_checkpoint import convert_unet_state_dict

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "img2img_cli" / "models" / "tiny"


def _init_zero_convs(net, seed: int):
    import torch

    torch.manual_seed(seed)

    def init(m):
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight)
            m.bias.data.fill_(1.0)

    net.controlnet_down_blocks.apply(init)
    net.controlnet_mid_block.apply(init)
    net.controlnet_cond_embedding.conv_out.apply(init)
    return net


def build_tiny_controlnet(seed: int = 0, unet=None, **overrides):
    """A ControlNet for ``unet`` (default: the built-in tiny model's UNet), zero convolutions
    re-initialised with ``seed``. ``overrides`` change the UNet config first (then the encoder
    weights are freshly initialised, not copied): ``cross_attention_dim=24`` makes a ControlNet
    for another base model."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    if unet is None:
        unet = UNet2DConditionModel.from_pretrained(str(TINY_DIR), subfolder="unet")
    if overrides:
        import torch

        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({**unet.config, **overrides})
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    return _init_zero_convs(net, seed)


def save_tiny_controlnet(folder: Path, seed: int = 0, **kwargs) -> Path:
    """:func:`build_tiny_controlnet` saved as a diffusers folder (``save_pretrained``)."""
    build_tiny_controlnet(seed, **kwargs).save_pretrained(str(folder))
    return Path(folder)


def original_state_dict(net, prefix: str = "control_model.") -> dict:
    """``net``'s weights under lllyasviel's original key names.

    ``controlnet_cond_embedding.conv_in`` -> ``input_hint_block.0``, ``blocks.i`` ->
    ``input_hint_block.{2 * (i + 1)}``, ``conv_out`` -> ``input_hint_block.14`` (where the
    real 8-block hint encoder has it, and where diffusers' converter reads it for any size);
    ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``; ``controlnet_mid_block`` ->
    ``middle_block_out.0``; the rest as the UNet's ``model.diffusion_model.`` keys.
    """
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    out, unet_part = {}, {}
    for k, v in sd.items():
        if k.startswith("controlnet_cond_embedding."):
            rest = k[len("controlnet_cond_embedding."):]
            if rest.startswith("conv_in."):
                out["input_hint_block.0." + rest[len("conv_in."):]] = v
            elif rest.startswith("conv_out."):
                out["input_hint_block.14." + rest[len("conv_out."):]] = v
            else:
                _, i, param = rest.split(".")
                out[f"input_hint_block.{2 * (int(i) + 1)}.{param}"] = v
        elif k.startswith("controlnet_down_blocks."):
            _, i, param = k.split(".")
            out[f"zero_convs.{i}.0.{param}"] = v
        elif k.startswith("controlnet_mid_block."):
            out["middle_block_out.0." + k.split(".")[-1]] = v
        else:
            unet_part[k] = v
    config = dict(net.config)
    config["up_block_types"] = [t.replace("Down", "Up") for t in reversed(config["down_block_types"])]
    # the UNet tables also map the UNet's output layers, which a ControlNet lacks: stand-ins, dropped after
    stand_ins = {k: unet_part["conv_in.bias"] for k in ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias")}
    converted = convert_unet_state_dict({**unet_part, **stand_ins}, config)
    out.update({k: v for k, v in converted.items() if not k.startswith("out.")})
    return {prefix + k: v.contiguous() for k, v in out.items()}


def save_original_controlnet(net, path: Path, prefix: str = "control_model.") -> Path:
    """Write ``net`` as a single ``.safetensors`` in lllyasviel's layout (:func:`original_state_dict`)."""
    from safetensors.torch import save_file

    save_file(original_state_dict(net, prefix), str(path))
    return Path(path)

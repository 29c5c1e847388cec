"""Write the config folder shipped for single-file x4 upscaler checkpoints
(``img2img_cli/models/configs/x4-upscaler/``: stabilityai's ``x4-upscaler-ema.safetensors``).

The UNet and VAE configs are what diffusers' own converters
(``diffusers.loaders.single_file_utils.create_unet_diffusers_config_from_ldm`` /
``create_vae_diffusers_config_from_ldm``) derive from the original training config,
Stability-AI/stablediffusion ``configs/stable-diffusion/x4-upscaling.yaml`` (its values are
reproduced in :data:`ORIGINAL_CONFIG`, as the model needs them; the trainer-only parts are left
out), completed with every default by building the model on the meta device. The schedulers are
derived from the same yaml the way diffusers' converters do it
(``pipelines/stable_diffusion/convert_from_ckpt.py`` for the DDIM scheduler,
``single_file_utils._legacy_load_scheduler`` for ``low_res_scheduler``), and the text encoder is
the shipped ``sd2`` one (the same OpenCLIP ViT-H, penultimate layer).

Checks (printed; any failure raises): parameter counts, and that diffusers' conversion of a state
dict with the original checkpoint's keys and shapes (:func:`ldm_unet_shapes`,
:func:`ldm_vae_shapes`: enumerated from the yaml the way the original ``openaimodel.UNetModel`` and
``AutoencoderKL`` build their modules, independently of diffusers) gives exactly the keys and
shapes of the models these configs build.

Run: ``python scripts/build_x4_config.py``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "img2img_cli" / "models" / "configs"
OUT = CONFIGS / "x4-upscaler"

#: Stability-AI/stablediffusion configs/stable-diffusion/x4-upscaling.yaml, the model part.
ORIGINAL_CONFIG = {
    "model": {
        "target": "ldm.models.diffusion.ddpm.LatentUpscaleDiffusion",
        "params": {
            "parameterization": "v",
            "low_scale_key": "lr",
            "linear_start": 0.0001,
            "linear_end": 0.02,
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": 1000,
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "image_size": 128,
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "hybrid-adm",
            "monitor": "val/loss_simple_ema",
            "scale_factor": 0.08333,
            "use_ema": False,
            "low_scale_config": {
                "target": "ldm.modules.diffusionmodules.upscaling.ImageConcatWithNoiseAugmentation",
                "params": {"noise_schedule_config": {"linear_start": 0.0001, "linear_end": 0.02}, "max_noise_level": 350},
            },
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "use_checkpoint": True,
                    "num_classes": 1000,
                    "image_size": 128,
                    "in_channels": 7,
                    "out_channels": 4,
                    "model_channels": 256,
                    "attention_resolutions": [2, 4, 8],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 2, 4],
                    "disable_self_attentions": [True, True, True, False],
                    "disable_middle_self_attn": False,
                    "num_heads": 8,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 1024,
                    "legacy": False,
                    "use_linear_in_transformer": True,
                },
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                "params": {"freeze": True, "layer": "penultimate"},
            },
        },
    }
}

#: The key diffusers' ``infer_diffusers_model_type`` reads to call a file ``upscale`` (its
#: ``set_image_size`` then picks 512 px, the UNet's 128 latent pixels times the VAE's 4).
_UPSCALE_KEY = "model.diffusion_model.input_blocks.10.0.skip_connection.bias"


def ldm_unet_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    """The original ``openaimodel.UNetModel``'s state-dict keys and shapes for ``params`` (a
    ``unet_config.params``), following its ``__init__`` (spatial transformers, ``legacy`` False,
    scale-shift norm off, conv resampling, an ``nn.Embedding`` class embedding)."""
    mc, ctx = params["model_channels"], params["context_dim"]
    emb = 4 * mc
    linear = params["use_linear_in_transformer"]
    shapes: dict[str, tuple[int, ...]] = {
        "time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,),
        "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,),
        "label_emb.weight": (params["num_classes"], emb),
        "input_blocks.0.0.weight": (mc, params["in_channels"], 3, 3), "input_blocks.0.0.bias": (mc,),
    }

    def conv(p, cin, cout, k):
        shapes[p + "weight"], shapes[p + "bias"] = (cout, cin, k, k), (cout,)

    def lin(p, cin, cout, bias=True):
        shapes[p + "weight"] = (cout, cin)
        if bias:
            shapes[p + "bias"] = (cout,)

    def norm(p, c):
        shapes[p + "weight"], shapes[p + "bias"] = (c,), (c,)

    def resblock(p, cin, cout):
        norm(p + "in_layers.0.", cin)
        conv(p + "in_layers.2.", cin, cout, 3)
        lin(p + "emb_layers.1.", emb, cout)
        norm(p + "out_layers.0.", cout)
        conv(p + "out_layers.3.", cout, cout, 3)
        if cin != cout:
            conv(p + "skip_connection.", cin, cout, 1)

    def transformer(p, c, disable_self_attn):
        norm(p + "norm.", c)
        (lin if linear else lambda q, i, o: conv(q, i, o, 1))(p + "proj_in.", c, c)
        for d in range(params["transformer_depth"]):
            b = f"{p}transformer_blocks.{d}."
            for attn, kv in (("attn1", ctx if disable_self_attn else c), ("attn2", ctx)):
                lin(f"{b}{attn}.to_q.", c, c, bias=False)
                lin(f"{b}{attn}.to_k.", kv, c, bias=False)
                lin(f"{b}{attn}.to_v.", kv, c, bias=False)
                lin(f"{b}{attn}.to_out.0.", c, c)
            lin(b + "ff.net.0.proj.", c, 4 * c * 2)  # GEGLU
            lin(b + "ff.net.2.", 4 * c, c)
            for n in (1, 2, 3):
                norm(f"{b}norm{n}.", c)
        (lin if linear else lambda q, i, o: conv(q, i, o, 1))(p + "proj_out.", c, c)

    chans, ch, ds, n = [mc], mc, 1, 1
    mults = params["channel_mult"]
    for level, mult in enumerate(mults):
        for _ in range(params["num_res_blocks"]):
            resblock(f"input_blocks.{n}.0.", ch, mult * mc)
            ch = mult * mc
            if ds in params["attention_resolutions"]:
                transformer(f"input_blocks.{n}.1.", ch, params["disable_self_attentions"][level])
            chans.append(ch)
            n += 1
        if level != len(mults) - 1:
            conv(f"input_blocks.{n}.0.op.", ch, ch, 3)
            chans.append(ch)
            ds, n = ds * 2, n + 1
    resblock("middle_block.0.", ch, ch)
    transformer("middle_block.1.", ch, params["disable_middle_self_attn"])
    resblock("middle_block.2.", ch, ch)
    n = 0
    for level, mult in list(enumerate(mults))[::-1]:
        for i in range(params["num_res_blocks"] + 1):
            resblock(f"output_blocks.{n}.0.", ch + chans.pop(), mc * mult)
            ch, j = mc * mult, 1
            if ds in params["attention_resolutions"]:
                transformer(f"output_blocks.{n}.1.", ch, params["disable_self_attentions"][level])
                j = 2
            if level and i == params["num_res_blocks"]:
                conv(f"output_blocks.{n}.{j}.conv.", ch, ch, 3)
                ds //= 2
            n += 1
    norm("out.0.", ch)
    conv("out.2.", mc, params["out_channels"], 3)
    return shapes


def ldm_vae_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    """The original ``AutoencoderKL``'s state-dict keys and shapes for ``params`` (a
    ``first_stage_config.params``: ``Encoder`` / ``Decoder`` of ``ldm.modules.diffusionmodules.model``,
    ``attn_resolutions`` empty: attention in the mid blocks only, as 1x1 convolutions)."""
    dd = params["ddconfig"]
    ch, mults, z, nres = dd["ch"], dd["ch_mult"], dd["z_channels"], dd["num_res_blocks"]
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(p, cin, cout, k):
        shapes[p + "weight"], shapes[p + "bias"] = (cout, cin, k, k), (cout,)

    def norm(p, c):
        shapes[p + "weight"], shapes[p + "bias"] = (c,), (c,)

    def resblock(p, cin, cout):
        norm(p + "norm1.", cin)
        conv(p + "conv1.", cin, cout, 3)
        norm(p + "norm2.", cout)
        conv(p + "conv2.", cout, cout, 3)
        if cin != cout:
            conv(p + "nin_shortcut.", cin, cout, 1)

    def mid(p, c):
        resblock(p + "mid.block_1.", c, c)
        norm(p + "mid.attn_1.norm.", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{p}mid.attn_1.{part}.", c, c, 1)
        resblock(p + "mid.block_2.", c, c)

    assert not dd["attn_resolutions"]
    conv("encoder.conv_in.", dd["in_channels"], ch, 3)
    block_in = ch
    for i, m in enumerate(mults):
        for j in range(nres):
            resblock(f"encoder.down.{i}.block.{j}.", block_in, ch * m)
            block_in = ch * m
        if i != len(mults) - 1:
            conv(f"encoder.down.{i}.downsample.conv.", block_in, block_in, 3)
    mid("encoder.", block_in)
    norm("encoder.norm_out.", block_in)
    conv("encoder.conv_out.", block_in, 2 * z if dd["double_z"] else z, 3)
    block_in = ch * mults[-1]
    conv("decoder.conv_in.", z, block_in, 3)
    mid("decoder.", block_in)
    for i in reversed(range(len(mults))):
        for j in range(nres + 1):
            resblock(f"decoder.up.{i}.block.{j}.", block_in, ch * mults[i])
            block_in = ch * mults[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv.", block_in, block_in, 3)
    norm("decoder.norm_out.", block_in)
    conv("decoder.conv_out.", block_in, dd["out_ch"], 3)
    conv("quant_conv.", 2 * z, 2 * params["embed_dim"], 1)
    conv("post_quant_conv.", params["embed_dim"], z, 1)
    return shapes


def _meta_checkpoint(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict:
    import torch

    return {prefix + k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _check_conversion(what: str, converted: dict, model) -> None:
    """Raise unless ``converted`` has exactly ``model``'s keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(f"{what}: converted original keys differ: missing {missing[:5]}, extra {extra[:5]}, shapes {wrong[:5]}")


def _full_config(cls, config: dict) -> tuple[dict, object]:
    """``config`` with every default filled in (the model built on the meta device), and the model."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config)
    full = {k: v for k, v in model.config.items() if not k.startswith("_")}
    return {"_class_name": cls.__name__, "_diffusers_version": diffusers.__version__, **full}, model


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def derive() -> tuple[dict[str, dict], dict[str, object]]:
    """The config files (``{path inside x4-upscaler/: JSON}``) derived from :data:`ORIGINAL_CONFIG`,
    and the UNet and VAE they build (meta device).

    Raises:
        ValueError: diffusers' conversion of the original keys does not give the models' keys
            and shapes.
    """
    import diffusers
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = ORIGINAL_CONFIG
    params = original["model"]["params"]
    probe = {_UPSCALE_KEY: None}
    unet_config, unet = _full_config(UNet2DConditionModel, create_unet_diffusers_config_from_ldm(original, probe))
    vae_config, vae = _full_config(AutoencoderKL, create_vae_diffusers_config_from_ldm(original, probe))
    files = {"unet/config.json": unet_config, "vae/config.json": vae_config}

    # convert_from_ckpt.py: DDIM over the yaml's betas ("linear" in LDM is sqrt-spaced, diffusers'
    # "scaled_linear"), v-prediction from parameterization "v".
    scheduler = DDIMScheduler(
        num_train_timesteps=params["timesteps"], beta_start=params["linear_start"], beta_end=params["linear_end"],
        beta_schedule="scaled_linear", steps_offset=1, clip_sample=False, set_alpha_to_one=False,
        prediction_type="v_prediction" if params["parameterization"] == "v" else "epsilon",
    )
    # _legacy_load_scheduler's low_res_scheduler (ImageConcatWithNoiseAugmentation's schedule).
    noise = params["low_scale_config"]["params"]["noise_schedule_config"]
    low_res = DDPMScheduler(
        num_train_timesteps=1000, beta_start=noise["linear_start"], beta_end=noise["linear_end"],
        beta_schedule="scaled_linear", clip_sample=True, prediction_type="epsilon", variance_type="fixed_small",
    )
    for name, sched in (("scheduler", scheduler), ("low_res_scheduler", low_res)):
        config = {"_class_name": type(sched).__name__, "_diffusers_version": diffusers.__version__}
        config.update({k: v for k, v in sched.config.items() if not k.startswith("_")})
        files[f"{name}/scheduler_config.json"] = config

    files["text_encoder/config.json"] = json.loads((CONFIGS / "sd2" / "text_encoder" / "config.json").read_text())
    files["model_index.json"] = {
        "_class_name": "StableDiffusionUpscalePipeline",
        "_diffusers_version": diffusers.__version__,
        "low_res_scheduler": ["diffusers", "DDPMScheduler"],
        "max_noise_level": params["low_scale_config"]["params"]["max_noise_level"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }

    unet_ckpt = _meta_checkpoint(ldm_unet_shapes(params["unet_config"]["params"]), "model.diffusion_model.")
    _check_conversion("UNet", convert_ldm_unet_checkpoint(unet_ckpt, unet_config), unet)
    vae_ckpt = _meta_checkpoint(ldm_vae_shapes(params["first_stage_config"]["params"]), "first_stage_model.")
    _check_conversion("VAE", convert_ldm_vae_checkpoint(vae_ckpt, vae_config), vae)
    return files, {"UNet": unet, "VAE": vae}


def main() -> None:
    files, models = derive()
    for name, data in files.items():
        if name == "text_encoder/config.json":  # the sd2 file itself, byte for byte
            (OUT / "text_encoder").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CONFIGS / "sd2" / "text_encoder" / "config.json", OUT / name)
        else:
            write_json(OUT / name, data)
    for what, model in models.items():
        print(f"{what}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    print("UNet and VAE: diffusers' conversion of the original keys gives the models' keys and shapes")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

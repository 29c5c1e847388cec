"""Write the ControlNet configs shipped for single-file ControlNets
(``img2img_cli/models/configs/controlnet-*/config.json``).

A ControlNet is a copy of its base model's UNet encoder (Zhang & Agrawala 2023), so its diffusers
config is ``ControlNetModel.from_unet(unet).config`` of the base model's UNet: that is how the
hub conversions were made (``lllyasviel/control_v11p_sd15_canny``, ``thibaud/controlnet-sd21``,
``diffusers/controlnet-canny-sdxl-1.0``). The UNet configs are the shipped ``sd15``, ``sd2`` and
``sdxl`` ones; the models are built on the meta device (no weights, no memory).

Run: ``python scripts/build_controlnet_configs.py``
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "img2img_cli" / "models" / "configs"
#: shipped ControlNet config folder -> the base model's config folder
BASES = {"controlnet-sd15": "sd15", "controlnet-sd2": "sd2", "controlnet-sdxl": "sdxl"}


def main() -> None:
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, UNet2DConditionModel

    for name, base in BASES.items():
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(CONFIGS / base / "unet")))
            controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
        config = {k: v for k, v in controlnet.config.items() if not k.startswith("_")}
        import diffusers

        config = {"_class_name": "ControlNetModel", "_diffusers_version": diffusers.__version__, **config}
        out = CONFIGS / name
        out.mkdir(exist_ok=True)
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        print(out / "config.json", f"{sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()

"""The reference for ``benchmarks/folder.py``: diffusers' ``StableDiffusionImg2ImgPipeline``
called once per image in a plain loop, the model loaded once; same images, sizes and seeds
as the tool. Prints one JSON line of timings on stdout.

    python benchmarks/reference_loop.py IN_DIR OUT_DIR --model DIR --steps 20 --strength 0.75 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

T0 = time.perf_counter()

import torch  # noqa: E402
from diffusers import StableDiffusionImg2ImgPipeline  # noqa: E402
from pathlib import Path  # noqa: E402

from img2img_cli.io import load_image, resize_image, target_size  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--prompt", default="a watercolor painting")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t_import = time.perf_counter()
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(a.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    t_load = time.perf_counter()
    a.output.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in a.inputs.iterdir() if p.is_file())
    for f in files:
        src = load_image(f)
        image = resize_image(src, *target_size(src.size, native), "crop")
        out = pipe(
            prompt=a.prompt,
            image=image,
            strength=a.strength,
            num_inference_steps=a.steps,
            guidance_scale=a.guidance,
            generator=torch.Generator("cpu").manual_seed(a.seed),
        ).images[0]
        out.save(a.output / (f.stem + ".png"))
    t_end = time.perf_counter()
    print(json.dumps({"images": len(files), "import_s": t_import - T0, "load_s": t_load - t_import, "loop_s": t_end - t_load}))


if __name__ == "__main__":
    main()

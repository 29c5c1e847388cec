"""Adding a ControlNet or an IP-Adapter to a model already in memory, against loading it.

Side by side in one process, each timed ``--repeat`` times (median kept), on the built-in tiny
model and the tiny ControlNet and IP-Adapter the tests build (``tests/helpers/``):

- ``load``: the model's img2img pipeline (``img2img_cli.models.load_pipeline``);
- ``controlnet attach``: ``modes.controlnet.ControlNet.attach`` on that loaded pipeline (the
  ControlNet read from its folder, then ``from_pipe``: the UNet, VAE and text encoder reused);
- ``controlnet from_pretrained``: what not reusing costs: ``StableDiffusionControlNetImg2ImgPipeline
  .from_pretrained`` of the model with the ControlNet (every component read again);
- ``ip-adapter attach``: ``modes.ip_adapter.IpAdapter.attach`` (image encoder and adapter
  weights read, ``load_ip_adapter``) on a freshly loaded pipeline.

Each attach also checks that the attached pipeline's UNet and VAE are the loaded objects.

    python benchmarks/attach.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    import torch
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    from img2img_cli.config import RunConfig
    from img2img_cli.models import TINY_DIR, load_pipeline, resolve_model
    from img2img_cli.modes import for_config
    from tests.helpers.tiny_controlnet import save_tiny_controlnet
    from tests.helpers.tiny_ip_adapter import build_tiny_ip_adapter

    tmp = Path(tempfile.mkdtemp(prefix="attach-bench-"))
    cn = save_tiny_controlnet(tmp / "cn", seed=1)
    adapter = build_tiny_ip_adapter(tmp / "h94" / "models")
    style = tmp / "style.png"
    from PIL import Image

    Image.open(ROOT / "examples" / "chelsea.png").convert("RGB").resize((64, 64)).save(style)
    base = {"inputs": [ROOT / "examples" / "chelsea.png"], "model": "tiny", "device": "cpu"}
    cn_config = RunConfig.from_values({**base, "controlnet": [str(cn)]})
    ip_config = RunConfig.from_values({**base, "ip_adapter": str(adapter), "style_image": style})
    spec = resolve_model("tiny")

    def load():
        return load_pipeline(spec, device="cpu", dtype=torch.float32)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    times: dict[str, list[float]] = {k: [] for k in ("load", "controlnet attach", "controlnet from_pretrained", "ip-adapter attach")}
    load()  # warm-up: imports and first-call set-up are not counted
    for _ in range(args.repeat):
        t, pipe = timed(load)
        times["load"].append(t)
        unet, vae = pipe.unet, pipe.vae
        t, attached = timed(lambda: for_config(cn_config).attach(pipe, cn_config))
        times["controlnet attach"].append(t)
        assert attached.unet is unet and attached.vae is vae, "from_pipe must reuse the loaded components"
        from diffusers import ControlNetModel

        t, _ = timed(lambda: StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
            str(TINY_DIR), controlnet=ControlNetModel.from_pretrained(str(cn)), safety_checker=None,
            requires_safety_checker=False, local_files_only=True))
        times["controlnet from_pretrained"].append(t)
        pipe = load()
        unet = pipe.unet
        t, attached = timed(lambda: for_config(ip_config).attach(pipe, ip_config))
        times["ip-adapter attach"].append(t)
        assert attached.unet is unet
    print(f"tiny model, torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), median of {args.repeat}")
    for name, ts in times.items():
        print(f"  {name:28s} {1000 * statistics.median(ts):7.1f} ms  (min {1000 * min(ts):.1f})")


if __name__ == "__main__":
    main()

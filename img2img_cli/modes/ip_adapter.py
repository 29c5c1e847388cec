"""IP-Adapter: a style image as a prompt (Ye et al. 2023, "IP-Adapter: Text Compatible Image
Prompt Adapter for Text-to-Image Diffusion Models"), an add-on to img2img and inpainting.

The style image is encoded by a CLIP image encoder, projected into a few extra context tokens
and attended to by the UNet's cross-attention layers beside the prompt's tokens, weighted by
the IP-Adapter scale. All of it is diffusers': ``load_ip_adapter`` (``loaders/ip_adapter.py``)
puts the adapter's image projection and attention processors into the loaded UNet,
``set_ip_adapter_scale`` sets the weight, and the pipelines' ``ip_adapter_image`` argument
encodes the image (``encode_image``, ``prepare_ip_adapter_image_embeds``). Any pipeline class
with diffusers' ``IPAdapterMixin`` takes it: SD 1.x / 2.x and SDXL img2img and inpainting, and
their ControlNet variants (``from_pipe`` keeps the image encoder and the UNet with its
IP-Adapter processors).

Files, as h94/IP-Adapter ships them: ``models/ip-adapter_sd15.safetensors`` (keys
``image_proj.*`` and ``ip_adapter.*``) with the CLIP ViT-H image encoder in
``models/image_encoder/`` beside it; ``sdxl_models/ip-adapter_sdxl.safetensors`` with ViT-bigG
in ``sdxl_models/image_encoder/``. ``--image-encoder DIR`` names another encoder folder (the
``_vit-h`` SDXL adapters use SD 1.5's ViT-H). Everything loads offline. An encoder folder
without a ``preprocessor_config.json`` (h94's have none) gets OpenAI CLIP's preprocessing,
shipped in ``img2img_cli/models/clip_image_processor/`` (what diffusers builds when a pipeline
has no feature extractor).

Batching: diffusers repeats one IP-Adapter image for every prompt of a call (its
``prepare_ip_adapter_image_embeds`` repeats the embeddings ``batch_size`` times, so per-prompt
embeddings of a batch would be mixed), so images share a call only when they share a style
image: one ``--style-image`` file keeps full batches; a folder paired by stem makes one call
per style image (the batch key). Each image's result is the one it gets alone.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import option
from ..errors import InputError, ModelError, UsageError
from ..io import display
from . import Mode

#: OpenAI CLIP's image preprocessing, for encoder folders without their own.
PROCESSOR_DIR = Path(__file__).resolve().parents[1] / "models" / "clip_image_processor"
#: sd-webui-controlnet's weight range (its "Control Weight" slider, 0-2).
MAX_SCALE = 2.0
#: Text-conditioning width -> the base model it belongs to (for messages).
_BASES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_CACHED_STYLES = 8  # preprocessed style images kept (one --style-image file is read once)


@dataclass(frozen=True)
class IpAdapterOptions:
    """The IP-Adapter add-on's options."""

    ip_adapter: Optional[str] = option(
        None, "--ip-adapter", show_default=False,
        help="IP-Adapter .safetensors file (h94's ip-adapter_sd15.safetensors...), optionally FILE:SCALE. "
        "Its CLIP image encoder: --image-encoder, or the image_encoder/ folder beside it. Needs --style-image.",
    )
    style_image: Optional[Path] = option(
        None, "--style-image", show_default=False,
        help="The IP-Adapter's image prompt (style, subject), or a folder of them named like the inputs.",
    )
    ip_adapter_scale: Optional[float] = option(
        None, "--ip-adapter-scale", show_default=False,
        help="Weight of the style image, 0-2 (default 1; 0 = no effect). Same as --ip-adapter FILE:SCALE.",
    )
    image_encoder: Optional[Path] = option(
        None, "--image-encoder", show_default=False,
        help="Folder of the CLIP image encoder (CLIPVisionModelWithProjection) for --ip-adapter "
        "(default: image_encoder/ beside the adapter file).",
    )


def parse_adapter(text: str) -> tuple[Path, float | None]:
    """``--ip-adapter``: ``FILE`` or ``FILE:SCALE`` -> ``(path, scale or None)``. A value that
    names an existing file is a file, even with a colon in its name.

    Raises:
        UsageError: ``SCALE`` is not a number in ``[0, 2]``.
    """
    path = Path(text)
    head, sep, tail = text.rpartition(":")
    if path.is_file() or not sep or not head or "/" in tail or "\\" in tail:
        return path, None
    try:
        scale = float(tail)
    except ValueError:
        return path, None
    return Path(head), _checked_scale(scale, f"--ip-adapter {text}")


def _checked_scale(scale: float, flag: str) -> float:
    if not 0 <= scale <= MAX_SCALE:  # NaN fails too
        raise UsageError(f"{flag}: the scale must be in [0, {MAX_SCALE:g}], got {scale:g}")
    return scale


def adapter_scale(o: IpAdapterOptions) -> float:
    """The IP-Adapter scale: ``FILE:SCALE``, else ``--ip-adapter-scale``, else 1.0 (diffusers'
    and the IP-Adapter authors' default). Raises :class:`UsageError` when both are given and differ."""
    _, scale = parse_adapter(o.ip_adapter)
    if o.ip_adapter_scale is not None:
        _checked_scale(o.ip_adapter_scale, "--ip-adapter-scale")
        if scale is not None and scale != o.ip_adapter_scale:
            raise UsageError(f"--ip-adapter {o.ip_adapter} and --ip-adapter-scale {o.ip_adapter_scale:g} contradict each other; pass one")
        return o.ip_adapter_scale
    return 1.0 if scale is None else scale


def encoder_dir(o: IpAdapterOptions) -> Path:
    """The CLIP image encoder folder: ``--image-encoder``, else ``image_encoder/`` beside the adapter."""
    return o.image_encoder or parse_adapter(o.ip_adapter)[0].parent / "image_encoder"


def read_shapes(path: Path) -> dict[str, tuple]:
    """The tensor shapes of a ``.safetensors`` file by key, from its header (no tensor read;
    :func:`img2img_cli.models.resolve.tensor_shapes`).

    Raises:
        UsageError: naming the file, when it cannot be read or is not a safetensors file.
    """
    from ..models.resolve import tensor_shapes

    try:
        return tensor_shapes(path)
    except OSError as e:
        raise UsageError(f"--ip-adapter {display(path)}: cannot read ({e.strerror or e})") from None
    except Exception:  # safetensors' error for a file without a valid header
        raise UsageError(f"--ip-adapter {display(path)}: not a .safetensors file (no valid header)") from None


@functools.lru_cache(maxsize=8)
def _hash(path: str, _mtime_ns: int, _size: int) -> str:
    from ..text.lora import addnet_hash

    return addnet_hash(path)


def adapter_hash(path: Path) -> str:
    """A1111's short "addnet" hash of the adapter file (12 hex digits of the sha256 of its
    tensor data, :func:`img2img_cli.text.lora.addnet_hash`, as for LoRAs), once per file."""
    st = path.stat()
    return _hash(str(path), st.st_mtime_ns, st.st_size)


class IpAdapter(Mode):
    """``--ip-adapter FILE[:SCALE] --style-image FILE|DIR``: an add-on that loads an IP-Adapter
    into the task mode's pipeline and gives each image its style image."""

    name = "ip-adapter"
    options = IpAdapterOptions
    trigger = "ip_adapter"
    addon = True

    def __init__(self):
        self._folders: dict = {}  # style image folder -> its images by stem, listed once per run
        self._lock = threading.Lock()
        self._processor = None
        self._pixels: dict = {}  # style image path -> preprocessed pixels (1, 3, S, S)
        self._config = None  # the run's config (configure), for batch_key

    def validate(self, config) -> None:
        """Files and flags, before any model loads.

        Raises:
            UsageError: ``--ip-adapter`` without ``--style-image``; a missing or non-IP-Adapter
                adapter file, a ``.bin``, a FaceID adapter (it needs InsightFace face
                embeddings); a missing style image or encoder folder; a scale outside
                ``[0, 2]`` or given twice differently; ``--fuse-qkv`` (fusing replaces the
                IP-Adapter's attention processors: diffusers' ``fuse_qkv_projections``).
        """
        o = config.options_of(self.name)
        if o.style_image is None:
            raise UsageError("--ip-adapter needs --style-image FILE or DIR (the image prompt)")
        path, _ = parse_adapter(o.ip_adapter)
        adapter_scale(o)
        flag = f"--ip-adapter {display(path)}"
        if not path.is_file():
            raise UsageError(f"{flag}: no such file")
        if path.suffix.lower() != ".safetensors":
            raise UsageError(f"{flag}: expected a .safetensors file (h94/IP-Adapter ships each adapter as one)")
        keys = read_shapes(path)
        if not any(k.startswith("image_proj.") for k in keys) or not any(k.startswith("ip_adapter.") for k in keys):
            raise UsageError(f"{flag}: not an IP-Adapter file (no image_proj.* and ip_adapter.* tensors)")
        if any("lora" in k for k in keys) or any(k.startswith("image_proj.perceiver_resampler.") for k in keys):
            raise UsageError(f"{flag}: a FaceID adapter (it needs InsightFace face embeddings, which this tool does not make)")
        if not o.style_image.exists():
            raise UsageError(f"--style-image {display(o.style_image)}: no such file or folder")
        enc = encoder_dir(o)
        if not (enc / "config.json").is_file():
            if o.image_encoder is not None:
                raise UsageError(f"--image-encoder {display(enc)}: no config.json in it (expected a CLIP image encoder folder)")
            raise UsageError(
                f"{flag}: no image encoder: no {display(enc / 'config.json')}; pass "
                "--image-encoder DIR (h94/IP-Adapter: models/image_encoder/ for SD 1.5 and the _vit-h SDXL adapters, "
                "sdxl_models/image_encoder/ for ip-adapter_sdxl)"
            )
        if config.speed.fuse_qkv:
            raise UsageError("--fuse-qkv and --ip-adapter contradict each other: fusing replaces the IP-Adapter's attention processors")

    def processor(self, config):
        """The style images' CLIP preprocessing (a transformers ``CLIPImageProcessor``): the
        encoder folder's ``preprocessor_config.json``, else :data:`PROCESSOR_DIR`'s (OpenAI
        CLIP's) at the encoder's ``image_size``. Built once; thread-safe."""
        with self._lock:
            if self._processor is None:
                from transformers import CLIPImageProcessor

                from ..models.resolve import read_json

                enc = encoder_dir(config.options_of(self.name))
                if (enc / "preprocessor_config.json").is_file():
                    self._processor = CLIPImageProcessor.from_pretrained(str(enc), local_files_only=True)
                else:
                    cfg = read_json(enc / "config.json")
                    size = int(cfg.get("image_size") or cfg.get("vision_config", {}).get("image_size") or 224)
                    self._processor = CLIPImageProcessor.from_pretrained(
                        str(PROCESSOR_DIR), local_files_only=True,
                        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                    )
            return self._processor

    def attach(self, pipe, config):
        """Load the CLIP image encoder (``CLIPVisionModelWithProjection.from_pretrained``, in the
        pipeline's dtype) and the adapter (``pipe.load_ip_adapter(folder, subfolder="",
        weight_name=file, image_encoder_folder=None)``) into ``pipe``, set the scale
        (``set_ip_adapter_scale``). The pipeline's own components are reused; ``pipe`` is returned.

        Raises:
            ModelError: naming the adapter: the pipeline takes no IP-Adapter; it is made for a
                base model of another text-conditioning width (an SDXL adapter on SD 1.5,
                naming both widths); the encoder's embeddings do not fit it; loading fails.
        """
        o = config.options_of(self.name)
        path, _ = parse_adapter(o.ip_adapter)
        flag = f"--ip-adapter {display(path)}"
        if not hasattr(pipe, "load_ip_adapter"):
            raise ModelError(f"{flag}: the {type(pipe).__name__} pipeline takes no IP-Adapter")
        shapes = read_shapes(path)
        model_dim = pipe.unet.config.cross_attention_dim
        k = next((s for key, s in shapes.items() if key.endswith(".to_k_ip.weight")), None)
        if k is not None and len(k) == 2 and k[1] != model_dim:
            raise ModelError(
                f"{flag}: made for a model with {_width(k[1])} text conditioning; "
                f"--model {config.job.model} has {_width(model_dim)}"
            )
        try:
            from transformers import CLIPVisionModelWithProjection

            enc = encoder_dir(o)
            encoder = CLIPVisionModelWithProjection.from_pretrained(str(enc), local_files_only=True, dtype=pipe.dtype)
        except Exception as e:
            raise ModelError(f"--image-encoder {display(encoder_dir(o))}: cannot load ({type(e).__name__}: {_short(e)})") from None
        _check_encoder(shapes, encoder.config, flag, enc)
        pipe.register_modules(image_encoder=encoder, feature_extractor=self.processor(config))
        try:
            pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
                                 local_files_only=True)
            pipe.set_ip_adapter_scale(adapter_scale(o))
        except Exception as e:
            raise ModelError(f"{flag}: cannot load into --model {config.job.model} ({type(e).__name__}: {_short(e)})") from None
        return pipe

    def style_path(self, item, config) -> Path:
        """``item``'s style image: the ``--style-image`` file, or its pair by stem in the folder
        (:func:`img2img_cli.masks.find_mask`'s rules: subfolder first, a folder's only image).

        Raises:
            InputError: no style image in the folder for this input, naming both.
        """
        from ..masks import find_mask

        style = config.options_of(self.name).style_image
        return find_mask(style, item.input.path, item.input.rel, self._folders, what="style image")

    def configure(self, config) -> None:
        """Keep the run's config: :meth:`batch_key` pairs each input with its style image."""
        self._config = config

    def batch_key(self, item) -> tuple:
        """``item``'s style image, when ``--style-image`` is a folder: one pipeline call's prompts
        share one (see the module's notes on batching). An input without one gets a key of its
        own; it fails alone in :meth:`extend`."""
        config = self._config
        if config is None or not config.options_of(self.name).style_image.is_dir():
            return ()
        try:
            return (str(self.style_path(item, config)),)
        except InputError:
            return ("missing",)

    def extend(self, item, source, prepared, size, config) -> None:
        """Read and preprocess ``item``'s style image (reader thread) into
        ``prepared.extras["ip_adapter_image"]``: CLIP pixels ``(1, 3, S, S)``, float32,
        normalised (S = the encoder's image size, 224). A style image is read once per run
        while it is the recent one (one file for all inputs).

        Raises:
            InputError: no style image for this input, or it cannot be read (naming it).
        """
        path = self.style_path(item, config)
        key = str(path)
        with self._lock:
            pixels = self._pixels.get(key)
        if pixels is None:
            from ..io import load_image

            image = load_image(path, max_pixels=config.max_pixels, background=config.background_rgb)
            pixels = self.processor(config)(image, return_tensors="pt").pixel_values
            with self._lock:
                if len(self._pixels) >= _CACHED_STYLES:
                    self._pixels.pop(next(iter(self._pixels)))
                self._pixels[key] = pixels
        prepared.extras["ip_adapter_image"] = pixels
        prepared.extras["ip_adapter_key"] = key

    def call_kwargs(self, pipe, requests: list) -> dict:
        """``ip_adapter_image=[pixels]``: the batch's one style image (the batch key makes it one),
        encoded by the pipeline (``encode_image`` takes preprocessed pixels as they are)."""
        keys = {r.extras["ip_adapter_key"] for r in requests}
        if len(keys) != 1:
            raise ValueError(f"one IP-Adapter style image per pipeline call, got {len(keys)}")
        return {"ip_adapter_image": [requests[0].extras["ip_adapter_image"]]}

    def infotext(self, item, config) -> dict:
        """``IP-Adapter`` (the file's stem), ``IP-Adapter hash`` (:func:`adapter_hash`),
        ``IP-Adapter scale`` and ``IP-Adapter image`` (the style image's file name)."""
        from ..work import format_number

        o = config.options_of(self.name)
        path, _ = parse_adapter(o.ip_adapter)
        fields = {"IP-Adapter": path.stem, "IP-Adapter hash": adapter_hash(path), "IP-Adapter scale": format_number(adapter_scale(o))}
        try:
            fields["IP-Adapter image"] = self.style_path(item, config).name
        except InputError:
            pass
        return fields


def _width(dim: int) -> str:
    base = _BASES.get(dim)
    return f"{dim}-wide ({base})" if base else f"{dim}-wide"


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _check_encoder(shapes: dict, cfg, flag: str, enc: Path) -> None:
    """Refuse an image encoder whose output does not fit the adapter's image projection: the
    projected embedding (``projection_dim``) for the base adapters (``image_proj.proj.weight``),
    the penultimate hidden states (``hidden_size``) for Plus (``proj_in``) and Full (``proj.0``).

    Raises:
        ModelError: naming both files and both widths.
    """
    for key, attr in (("image_proj.proj.weight", "projection_dim"), ("image_proj.proj_in.weight", "hidden_size"),
                      ("image_proj.proj.0.weight", "hidden_size")):
        shape = shapes.get(key)
        if shape is not None and len(shape) == 2:
            have = getattr(cfg, attr, None)
            if have is not None and have != shape[1]:
                raise ModelError(
                    f"--image-encoder {display(enc)}: gives {have}-wide image features; {flag} expects {shape[1]} "
                    "(pass the encoder it was trained with: --image-encoder DIR)"
                )
            return

"""The typed, validated description of one ``img2img run``: options declared once.

Every command-line option of ``img2img run`` is a field of one of the frozen dataclasses
here (:class:`Job`: what each image is made with; :class:`Speed`: how fast; :class:`RunConfig`:
the run as a whole, holding the other two), declared once with :func:`option`: its type, its
default, its flags and its help. ``cli.py`` builds the Typer signature from these fields
(:func:`cli_fields`) and :meth:`RunConfig.from_values` builds the config back from the parsed
values, so adding an option is adding one field. A mode's own options are one more dataclass
of the same kind (:attr:`img2img_cli.modes.Mode.options`).

:meth:`RunConfig.from_values` checks every option and every cross-flag rule before any image
is read or model loaded (habit 3 of the project's architecture note, after diffusers'
``check_inputs``) and raises :class:`~img2img_cli.errors.UsageError` naming the flag and the
value. No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from .errors import UsageError

#: Defaults. strength 0.75 and CFG scale 7.5 are AUTOMATIC1111's img2img defaults
#: (``modules/ui.py``: denoising strength 0.75, CFG scale 7.0 in newer versions, 7.5 is
#: diffusers' ``StableDiffusionImg2ImgPipeline.__call__`` default); 30 steps is a common
#: SD 1.5 choice (A1111 uses 20). See the README's option table.
DEFAULT_STRENGTH = 0.75
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: A1111's three resize modes (``modules/images.py: resize_image``):
#: ``just`` = "Just resize", ``crop`` = "Crop and resize", ``fill`` = "Resize and fill".
RESIZE_MODES = ("crop", "just", "fill")
FORMATS = ("png", "jpg", "webp")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")

#: Seeds are 32-bit like A1111's (``modules/processing.py`` draws ``int(random.randrange(4294967294))``).
MAX_SEED = 2**32 - 1
MAX_SIDE = 8192
#: ``--steps`` limit: one less than the ``num_train_timesteps`` of every SD scheduler config
#: (1000). More steps than training timesteps is meaningless, and a huge value would spend
#: minutes in the scheduler's ``set_timesteps`` before the first step. At exactly 1000, the SD
#: configs' ``steps_offset=1`` with "leading" spacing makes diffusers' PNDM, DDIM and DDPM
#: index timestep 1000 of 0..999 (an IndexError), so 999 is the most that runs everywhere.
MAX_STEPS = 999
#: Default ``--max-pixels``: 2.5x Pillow's own decompression-bomb limit (89,478,485 px) would
#: still be ~850 MB as RGB; inputs above 100 MP are refused.
DEFAULT_MAX_PIXELS = 100_000_000

#: ``--clip-skip`` range: A1111's slider goes to 12 (the layers of SD 1.x's CLIP ViT-L/14 text
#: encoder); a model with fewer layers is checked when it loads.
MAX_CLIP_SKIP = 12

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def option(default=None, *flags: str, help: str, argument: bool = False, **extra) -> dataclasses.Field:
    """A dataclass field that is also a command-line option of ``img2img run``.

    Args:
        default: the default value (a list default becomes a ``default_factory``).
        flags: ``"--name"`` and its short forms, as Typer takes them.
        help: the ``--help`` text.
        argument: a positional argument instead of an option.
        extra: more ``typer.Option`` keywords (``envvar``, ``show_default``...).
    """
    meta = {"cli": {"flags": flags, "help": help, "argument": argument, **extra}}
    if isinstance(default, list):
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


def nested(cls) -> dataclasses.Field:
    """A field holding another options dataclass, whose fields are options too."""
    return field(default_factory=cls, metadata={"nested": True})


def option_like(cls, name: str, **changes) -> dataclasses.Field:
    """A new field declaring the same option as field ``name`` of the options dataclass
    ``cls`` (its default, flags and help), for another command's options: e.g.
    ``option_like(RunConfig, "output")``. ``changes`` replace ``typer.Option`` keywords
    (``help=...``) or, with ``default=``, the default."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = {"cli": {**f.metadata["cli"], **{k: v for k, v in changes.items() if k != "default"}}}
    if "default" in changes:
        return field(default=changes["default"], metadata=meta)
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=meta)
    return field(default=f.default, metadata=meta)


def random_seed() -> int:
    """A fresh seed in ``[0, 2**32 - 1]`` from the OS's entropy source."""
    return secrets.randbelow(MAX_SEED + 1)


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """Parse ``"WxH"`` (``x``, ``X`` or ``×``; spaces allowed) into ``(width, height)`` in pixels.

    Raises:
        UsageError: if the text is not two positive integers separated by ``x``, naming ``flag``.
            Range and multiple-of-8 checks are :meth:`Job.validate`'s.
    """
    m = _SIZE_RE.match(text or "")
    if not m:
        raise UsageError(f"{flag}: expected WIDTHxHEIGHT such as 512x768, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_colour(text: str, flag: str = "--background") -> tuple[int, int, int]:
    """``white``, ``#ffffff``, ``#fff`` or ``255,255,255`` -> ``(255, 255, 255)`` (0-255 each).

    Names and hex forms are Pillow's ``ImageColor.getrgb``.

    Raises:
        UsageError: naming ``flag`` and the value.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    from PIL import ImageColor

    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        raise UsageError(f"{flag}: not a colour: {text!r} (try white, #808080 or 128,128,128)") from None
    return tuple(rgb[:3])


@dataclass(frozen=True)
class Job:
    """What each image is made with, validated by :meth:`validate`. A jobs file's row
    overrides some of these per input (:mod:`img2img_cli.jobs`).

    Attributes:
        prompt: text prompt (may be empty: unconditional img2img).
        negative_prompt: text the classifier-free guidance steers away from ("" for none).
        strength: denoising strength in ``(0, 1]``; the source image is noised to the timestep
            ``strength * T`` and ``int(steps * strength)`` denoising steps run (diffusers
            ``StableDiffusionImg2ImgPipeline.get_timesteps``; SDEdit, Meng et al. 2021).
        steps: number of scheduler steps for a full denoise, in ``[1, MAX_STEPS]``.
        guidance_scale: classifier-free guidance scale ``w`` (Ho & Salimans 2022), in
            ``[0, 100]``; values ``<= 1`` disable guidance, as in diffusers.
        seed: base seed in ``[0, 2**32 - 1]``, or ``None`` to draw one per image.
        num_images: images per input, ``>= 1``; image ``k`` uses seed ``seed + k``.
        scheduler: an A1111 sampler name from :data:`img2img_cli.schedulers.SCHEDULERS`, or
            ``None`` for the model's own scheduler.
        clip_skip: A1111's "Clip skip" in ``[1, MAX_CLIP_SKIP]``: 1 is the text encoder's last
            layer, N the layer N-1 before it (diffusers' ``clip_skip`` is N-1).
        width, height: output size in pixels (multiples of 8 in ``[8, 8192]``), or ``None``
            for the default (aspect ratio kept, longer side at the model's native resolution).
        resize_mode: one of :data:`RESIZE_MODES`.
        fmt: output format, one of :data:`FORMATS`, or ``None`` to take it from ``-o FILE``
            (``png`` otherwise).
        quality: JPEG/WebP quality in ``[1, 100]``.
        model, device, dtype: see :mod:`img2img_cli.models`.
    """

    prompt: str = option("", "--prompt", "-p", help="Text prompt.")
    negative_prompt: str = option("", "--negative-prompt", "-n", help="Negative prompt (what to steer away from).")
    strength: float = option(
        DEFAULT_STRENGTH, "--strength", "-s",
        help="Denoising strength, 0 < s <= 1: how far the image is noised before denoising.",
    )
    steps: int = option(DEFAULT_STEPS, "--steps", help="Scheduler steps for a full denoise (>= 1); int(steps * strength) run.")
    guidance_scale: float = option(
        DEFAULT_GUIDANCE, "--guidance", "-g", "--cfg-scale",
        help="Classifier-free guidance scale (CFG), 0-100; <= 1 disables guidance.",
    )
    seed: Optional[int] = option(
        None, "--seed", show_default=False,
        help="Seed in [0, 2^32-1]; image k of -N uses seed+k. Default: random, recorded in metadata.",
    )
    num_images: int = option(1, "--num-images", "-N", help="Images per input (>= 1).")
    scheduler: Optional[str] = option(
        None, "--scheduler", "--sampler", show_default=False,
        help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (see `img2img schedulers`). Default: the model's own.",
    )
    clip_skip: int = option(1, "--clip-skip", help="A1111 Clip skip, 1-12: 1 = the text encoder's last layer, 2 = the one before.")
    width: Optional[int] = option(None, "--width", "-W", show_default=False, help="Output width in px (multiple of 8).")
    height: Optional[int] = option(None, "--height", "-H", show_default=False, help="Output height in px (multiple of 8).")
    resize_mode: Literal["crop", "just", "fill"] = option(
        "crop", "--resize",
        help="How the input meets another aspect ratio: crop (crop and resize), just (stretch), fill (resize and fill).",
    )
    fmt: Optional[Literal["png", "jpg", "webp"]] = option(
        None, "--format", "-f", show_default=False, help="Output format (default: from -o FILE, else png).",
    )
    quality: int = option(95, "--quality", help="JPEG/WebP quality, 1-100.")
    model: str = option(
        DEFAULT_MODEL, "--model", "-m", envvar="IMG2IMG_MODEL",
        help="`tiny`, a diffusers folder, a .safetensors checkpoint or a hub repo id.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = option(
        "auto", "--device", envvar="IMG2IMG_DEVICE", help="auto: cuda, then mps, then cpu.",
    )
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = option("auto", "--dtype", help="auto: fp16 on cuda/mps, fp32 on cpu.")

    def replace(self, **changes) -> "Job":
        """A copy with ``changes`` applied (not validated)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Job":
        """Check every field; return ``self`` so calls chain.

        Raises:
            UsageError: naming the flag and the bad value, for the first bad field found.
        """
        if not (0.0 < self.strength <= 1.0):
            raise UsageError(f"--strength must be in (0, 1], got {self.strength}")
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if self.steps > MAX_STEPS:
            raise UsageError(
                f"--steps must be at most {MAX_STEPS} (the schedulers have 1000 training timesteps), got {self.steps}"
            )
        if not (self.guidance_scale >= 0.0) or self.guidance_scale > 100:
            raise UsageError(f"--guidance must be in [0, 100], got {self.guidance_scale}")
        if self.seed is not None and not (0 <= self.seed <= MAX_SEED):
            raise UsageError(f"--seed must be in [0, {MAX_SEED}], got {self.seed}")
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise UsageError(f"--seed {self.seed} + --num-images {self.num_images} passes {MAX_SEED}")
        if self.num_images < 1:
            raise UsageError(f"--num-images must be at least 1, got {self.num_images}")
        if not (1 <= self.clip_skip <= MAX_CLIP_SKIP):
            raise UsageError(f"--clip-skip must be in [1, {MAX_CLIP_SKIP}], got {self.clip_skip}")
        for flag, value in (("--width", self.width), ("--height", self.height)):
            if value is None:
                continue
            if value < 8 or value > MAX_SIDE:
                raise UsageError(f"{flag} must be in [8, {MAX_SIDE}], got {value}")
            if value % 8:
                raise UsageError(f"{flag} must be a multiple of 8, got {value} (try {value // 8 * 8 or 8})")
        _one_of("--resize", self.resize_mode, RESIZE_MODES)
        if self.fmt is not None:
            _one_of("--format", self.fmt, FORMATS)
        if not (1 <= self.quality <= 100):
            raise UsageError(f"--quality must be in [1, 100], got {self.quality}")
        _one_of("--device", self.device, DEVICES)
        _one_of("--dtype", self.dtype, DTYPES)
        if self.scheduler is not None:
            from .schedulers import canonical_name

            canonical_name(self.scheduler)  # raises UsageError naming --scheduler
        if not self.model:
            raise UsageError("--model must not be empty")
        if int(self.steps * self.strength) < 1:  # last: RunConfig.validate may defer it (NoDenoisingStep)
            raise NoDenoisingStep(
                f"--steps {self.steps} with --strength {self.strength} runs no denoising step "
                f"(int(steps * strength) = 0); raise --steps or --strength"
            )
        return self

    def seed_for(self, base_seed: int, k: int) -> int:
        """Seed of image ``k`` (0-based) of ``--num-images``: ``base_seed + k``."""
        return base_seed + k


class NoDenoisingStep(UsageError):
    """``int(steps * strength) < 1``: no denoising step would run (diffusers' img2img
    ``get_timesteps``). The last check of :meth:`Job.validate`; :meth:`RunConfig.validate`
    defers it to the core (:attr:`RunConfig.steps_error`), which raises it once the model is
    known to have a strength (an InstructPix2Pix or x4 upscaler model runs every step)."""


def _one_of(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class Speed:
    """Speed settings applied after loading (all off by default: the plain path is diffusers'
    own, bit for bit); :func:`img2img_cli.models.speed.apply_speed` applies them.

    Attributes:
        compile: ``torch.compile`` the UNet and the VAE (static shapes: the runner pads batches
            to a fixed size and buckets sizes so a folder does not recompile after warm-up).
        channels_last: UNet and VAE in ``torch.channels_last`` memory format.
        fuse_qkv: diffusers' ``fuse_qkv_projections()`` (one matmul for Q, K and V).
        offload: ``"model"`` (``enable_model_cpu_offload``: one component on the GPU at a time)
            or ``"sequential"`` (``enable_sequential_cpu_offload``: layer by layer, slowest,
            least memory); ``None`` keeps everything on the device. CUDA only.
        vae_tiling: decode and encode the VAE in tiles (``vae.enable_tiling()``): large images
            in little memory.
    """

    compile: bool = option(
        False, "--compile",
        help="torch.compile the UNet and VAE decoder (static shapes: batches padded, short side bucketed to a multiple of 64).",
    )
    channels_last: bool = option(False, "--channels-last", help="UNet and VAE in channels_last memory format.")
    fuse_qkv: bool = option(False, "--fuse-qkv", help="Fuse the attention Q, K, V projections into one matmul.")
    offload: Optional[Literal["model", "sequential"]] = option(
        None, "--offload", show_default=False,
        help="CPU offload for small GPUs: model (one component on the GPU at a time) or sequential (layer by layer).",
    )
    vae_tiling: bool = option(False, "--vae-tiling", help="Decode/encode the VAE in tiles (large images in little GPU memory).")


PROMPT_SYNTAXES = ("a1111", "plain")


@dataclass(frozen=True)
class PromptOptions:
    """How prompts are read and what they call on (:mod:`img2img_cli.text`).

    Attributes:
        prompt_syntax: ``"a1111"``: AUTOMATIC1111's prompt syntax (attention ``(word:1.3)``,
            ``BREAK``, prompt editing ``[from:to:when]``, alternation ``[a|b]``, ``<lora:...>``
            tags) and its long-prompt chunking; ``"plain"``: the text goes to diffusers as it is
            (77 tokens at most, the rest truncated by diffusers).
        lora: ``FILE[:WEIGHT]`` specs, weight 1 by default (any float, negative included).
        lora_dir: where ``<lora:NAME:...>`` finds ``NAME.safetensors`` (searched recursively).
        embedding: textual-inversion files (A1111 ``.pt`` / ``.safetensors``), each named by
            its file stem in prompts.
        embeddings_dir: a folder of such files; a name in a prompt that matches one is used.
    """

    prompt_syntax: Literal["a1111", "plain"] = option(
        "a1111", "--prompt-syntax",
        help="a1111: (word:1.3), [word], BREAK, [from:to:when], [a|b], <lora:name:w>, prompts over 75 tokens in chunks; plain: text as is.",
    )
    lora: list[str] = option(
        [], "--lora", show_default=False, metavar="FILE[:WEIGHT]", help="LoRA file, FILE or FILE:WEIGHT (default weight 1); repeatable.",
    )
    lora_dir: Optional[Path] = option(
        None, "--lora-dir", envvar="IMG2IMG_LORA_DIR", show_default=False,
        help="Folder where <lora:NAME:WEIGHT> in a prompt finds NAME.safetensors (searched recursively).",
    )
    embedding: list[Path] = option(
        [], "--embedding", show_default=False, metavar="FILE", help="Textual-inversion file (A1111 .pt/.safetensors), used as its file stem in prompts; repeatable.",
    )
    embeddings_dir: Optional[Path] = option(
        None, "--embeddings-dir", envvar="IMG2IMG_EMBEDDINGS_DIR", show_default=False,
        help="Folder of textual-inversion files; a prompt word equal to a file stem uses it.",
    )

    def lora_specs(self) -> list[tuple[Path, float]]:
        """``--lora`` values as ``(file, weight)``: ``FILE:WEIGHT`` splits at the last colon
        when what follows is a number (so ``C:\\x.safetensors`` stays a path).

        Raises:
            UsageError: a weight that is not finite, or a file that does not exist.
        """
        out = []
        for spec in self.lora:
            path, weight = spec, 1.0
            head, sep, tail = spec.rpartition(":")
            if sep and head:
                try:
                    weight = float(tail)
                    path = head
                except ValueError:
                    pass
            if not math.isfinite(weight):
                raise UsageError(f"--lora {spec}: the weight must be a finite number")
            if not Path(path).is_file():
                raise UsageError(f"--lora {spec}: no such file {path}")
            out.append((Path(path), weight))
        return out

    def validate(self) -> "PromptOptions":
        """Raises :class:`UsageError` naming the flag, for the first bad value."""
        _one_of("--prompt-syntax", self.prompt_syntax, PROMPT_SYNTAXES)
        self.lora_specs()
        for flag, folder in (("--lora-dir", self.lora_dir), ("--embeddings-dir", self.embeddings_dir)):
            if folder is not None and not folder.is_dir():
                raise UsageError(f"{flag} {folder}: no such folder")
        for path in self.embedding:
            if not path.is_file():
                raise UsageError(f"--embedding {path}: no such file")
        return self


#: ``--max-cells`` default: a 10x10 plot at most unless asked (A1111's X/Y/Z plot has no limit;
#: a typo like ``steps=1-1000`` would queue a thousand images).
DEFAULT_MAX_CELLS = 100


@dataclass(frozen=True)
class PlotOptions:
    """The X/Y/Z plot and the contact sheet (:mod:`img2img_cli.plot`).

    Attributes:
        x, y, z: ``AXIS=V1,V2,...`` (:func:`img2img_cli.plot.axes.parse_axis`), or ``None``.
        save_cells: write each cell as its own image too, ``<stem>-x<i>-y<j>[-z<k>]``.
        max_cells: refuse a plot with more cells per input, ``>= 1``.
        grid: write one contact sheet of the run's images (A1111's batch grid).
    """

    x: Optional[str] = option(
        None, "--x", show_default=False, metavar="AXIS=V1,V2,...",
        help="X/Y/Z plot: strength, guidance, steps, seed, scheduler, prompt-sr, negative-prompt-sr, size, clip-skip; ranges like 0.2-0.8 (+0.2).",
    )
    y: Optional[str] = option(None, "--y", show_default=False, metavar="AXIS=V1,V2,...", help="The plot's Y axis (needs --x).")
    z: Optional[str] = option(None, "--z", show_default=False, metavar="AXIS=V1,V2,...", help="The plot's Z axis: one grid per value (needs --y).")
    save_cells: bool = option(False, "--save-cells", help="With --x: also write each cell as its own image with its infotext.")
    max_cells: int = option(DEFAULT_MAX_CELLS, "--max-cells", help="Refuse a plot with more cells than this per input.")
    grid: bool = option(False, "--grid", help="Also write a contact sheet of the run's images, captioned with file name and seed.")

    def axes(self) -> list:
        """The parsed axes, X first (:class:`img2img_cli.plot.axes.Axis`); ``[]`` without ``--x``.

        Raises:
            UsageError: a bad axis or value (naming the flag), ``--y`` without ``--x`` or ``--z``
                without ``--y``, two axes of the same parameter, or more than ``max_cells`` cells.
        """
        if self.max_cells < 1:
            raise UsageError(f"--max-cells must be at least 1, got {self.max_cells}")
        if self.y and not self.x:
            raise UsageError("--y needs --x")
        if self.z and not self.y:
            raise UsageError("--z needs --y")
        if not self.x:
            if self.save_cells:
                raise UsageError("--save-cells needs --x")
            return []
        from .plot.axes import count, parse_axis

        axes = [parse_axis(text, flag) for flag, text in (("--x", self.x), ("--y", self.y), ("--z", self.z)) if text]
        names = [a.name for a in axes]
        if len(set(names)) < len(names):
            raise UsageError(f"--x/--y/--z: each axis must be another parameter, got {', '.join(names)}")
        n = count(axes)
        if n > self.max_cells:
            raise UsageError(f"--x/--y/--z: {n} cells per input, more than --max-cells {self.max_cells}")
        return axes


@dataclass(frozen=True)
class TileOptions:
    """How a tiled mode cuts its pictures (SD upscale, an x4 upscaler model's large inputs;
    :mod:`img2img_cli.tiles`). Refused for other modes.

    Attributes:
        tile_size: ``WxH`` of a tile in the pipeline's input pixels (multiples of 8), or ``None``
            for the model's native size (A1111's SD upscale takes the img2img width and height).
        tile_overlap: pixels neighbouring tiles share, ``>= 0``, or ``None`` for the mode's
            default (64 for SD upscale, A1111's; a quarter of the tile for x4).
    """

    tile_size: Optional[str] = option(
        None, "--tile-size", show_default=False,
        help="With --upscale or an x4 upscaler model: tile size WxH (default: the model's native size).",
    )
    tile_overlap: Optional[int] = option(
        None, "--tile-overlap", show_default=False,
        help="Pixels neighbouring tiles overlap and blend (default 64 for --upscale, as A1111; a quarter tile for x4).",
    )

    def tile(self) -> tuple[int, int] | None:
        """``--tile-size`` as ``(width, height)``, or ``None``.

        Raises:
            UsageError: not ``WxH``, a side not a multiple of 8 or outside ``[8, MAX_SIDE]``, a
                negative ``--tile-overlap``, or one not smaller than the tile.
        """
        if self.tile_overlap is not None and self.tile_overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.tile_size is None:
            return None
        w, h = parse_size(self.tile_size, "--tile-size")
        for side in (w, h):
            if side % 8 or not 8 <= side <= MAX_SIDE:
                raise UsageError(f"--tile-size sides must be multiples of 8 in [8, {MAX_SIDE}], got {self.tile_size}")
        if self.tile_overlap is not None and self.tile_overlap >= min(w, h):
            raise UsageError(f"--tile-overlap {self.tile_overlap} must be smaller than the tile ({w}x{h})")
        return w, h


@dataclass(frozen=True)
class RunConfig:
    """One ``img2img run``: its inputs, its :class:`Job`, how outputs are written and reported,
    its :class:`Speed` settings and its mode's options. Build it with :meth:`from_values`,
    which validates it; the core takes it whole.

    Attributes (beyond the nested ones):
        inputs: image files and folders; empty with ``jobs``.
        output: ``-o``: a folder (default ``outputs/``) or one file.
        size: ``--size WxH``, folded into ``job.width``/``job.height`` by :meth:`from_values`.
        batch_size: images per pipeline call: ``"auto"`` or a positive integer as text
            (:attr:`batch` gives it as ``int | None``).
        background: colour transparent areas are composited onto (:attr:`background_rgb`).
        max_pixels: inputs with more pixels (width x height) are refused, ``>= 1``.
        mode: the name of the selected task mode (:mod:`img2img_cli.modes`), set by
            :meth:`from_values`; mode_options: its options dataclass instance.
        addons: the names of the selected add-on modes (ControlNet, IP-Adapter), in order.
        mode_values: ``(name, options)`` of every registered mode with options (read them
            with :meth:`options_of`).
        given: the names of the options given explicitly (see :meth:`from_values`).
        steps_error: the message of :class:`NoDenoisingStep` for the run's job, or ``""``:
            raised by the core unless the model's mode has no strength.
        axes: the X/Y/Z plot's parsed axes (:class:`img2img_cli.plot.axes.Axis`), set by
            :meth:`validate`; ``()`` without ``--x``.
    """

    inputs: list[Path] = option(
        [], argument=True, show_default=False, help="Image files or folders (a folder's images, sorted).",
    )
    job: Job = nested(Job)
    model_config: Optional[str] = option(
        None, "--model-config", show_default=False,
        help="For a .safetensors file: sd15, sd2, sd2-base, sdxl, sdxl-refiner, sd15-inpaint, sd2-inpaint, sdxl-inpaint, sd15-pix2pix, x4-upscaler or a diffusers folder (default: inferred).",
    )
    size: Optional[str] = option(None, "--size", show_default=False, help="Output size WxH, e.g. 512x768.")
    output: Optional[Path] = option(
        None, "--output", "-o", show_default=False,
        help="Output folder (default outputs/), or a file when there is one input and one image.",
    )
    overwrite: bool = option(False, "--overwrite", help="Replace existing outputs (inputs are never written).")
    skip_existing: bool = option(False, "--skip-existing", help="Skip inputs whose outputs exist (resume a run).")
    recursive: bool = option(False, "--recursive", "-r", help="Include images in subfolders (output keeps the relative path).")
    json_out: bool = option(False, "--json", help="Print one JSON object per written file to stdout.")
    quiet: bool = option(False, "--quiet", "-q", help="No progress bars or summary.")
    style: Optional[str] = option(None, "--style", show_default=False, help="Style preset from prompts/ (see `img2img styles`).")
    prompt_file: Optional[Path] = option(
        None, "--prompt-file", show_default=False, help="Style preset file (prompt: / negative: lines with {prompt}).",
    )
    styles_file: Optional[Path] = option(
        None, "--styles-file", show_default=False,
        help="AUTOMATIC1111 styles.csv (name,prompt,negative_prompt) for --style; a prompts/*.txt preset of the same name wins.",
    )
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse inputs with more pixels than this (decompression bombs).")
    batch_size: str = option(
        "auto", "--batch-size", "-b",
        help="Images per pipeline call, or auto (8 on CUDA for SD 1.x, 1 for SD-size models on CPU; see README).",
    )
    report: Optional[Path] = option(
        None, "--report", show_default=False,
        help="Append one JSON line per input (status, outputs, seed, parameters, error, seconds) to this file.",
    )
    jobs: Optional[Path] = option(
        None, "--jobs", show_default=False,
        help="CSV or JSONL file of inputs with per-row prompt, negative_prompt, seed, strength, steps, guidance_scale, output.",
    )
    prompt_from_sidecar: bool = option(
        False, "--prompt-from-sidecar", help="Use photo.txt next to photo.jpg as its prompt (falls back to --prompt).",
    )
    background: str = option(
        "white", "--background", help="Colour that transparent areas are composited onto: a name, #RRGGBB or R,G,B.",
    )
    color_correction: bool = option(
        False, "--color-correction",
        help="Match the result's colours to the source's (A1111's img2img colour correction: LAB histograms, the result's luminosity kept).",
    )
    colorize: bool = option(
        False, "--colorize",
        help="Keep the source's luminance and take only the colour from the result (for black-and-white or faded photos).",
    )
    no_provenance: bool = option(
        False, "--no-provenance",
        help="Do not write the XMP label (IPTC digital source type: made by a trained model) into outputs.",
    )
    c2pa_cert: Optional[Path] = option(
        None, "--c2pa-cert", envvar="IMG2IMG_C2PA_CERT", show_default=False,
        help="PEM certificate chain to sign C2PA Content Credentials into each output (with --c2pa-key).",
    )
    c2pa_key: Optional[Path] = option(
        None, "--c2pa-key", envvar="IMG2IMG_C2PA_KEY", show_default=False,
        help="PEM private key of --c2pa-cert.",
    )
    speed: Speed = nested(Speed)
    text: PromptOptions = nested(PromptOptions)
    plot: PlotOptions = nested(PlotOptions)
    tiling: TileOptions = nested(TileOptions)
    mode: str = "img2img"
    mode_options: object = None
    addons: tuple = ()
    mode_values: tuple = ()
    given: frozenset = frozenset()
    steps_error: str = ""
    axes: tuple = ()

    def options_of(self, mode: str):
        """The options instance of the registered mode ``mode`` (its defaults when none of its
        flags was given), or ``None`` for a mode without options."""
        return dict(self.mode_values).get(mode)

    @property
    def batch(self) -> int | None:
        """``--batch-size`` as a positive integer, or ``None`` for ``auto``.

        Raises:
            UsageError: neither ``auto`` nor a positive integer.
        """
        text = str(self.batch_size).strip().lower()
        if text == "auto":
            return None
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise UsageError(f"--batch-size must be a positive integer or auto, got {self.batch_size!r}")
        return value

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        """``--background`` as ``(R, G, B)``, 0-255 each (raises :class:`UsageError`)."""
        return parse_colour(self.background)

    @classmethod
    def from_values(cls, values: dict) -> "RunConfig":
        """Build and validate a config from flat option values keyed by field name (what the
        Typer command receives: :func:`cli_fields` names), nested fields included.

        The mode is chosen by :func:`img2img_cli.modes.select` from the values (a mode's own
        trigger option, e.g. a mask for inpainting); options that belong to another mode are
        refused. ``--size`` is folded into the job's width and height, and the scheduler
        name is made canonical.

        Raises:
            UsageError: the first bad option or contradiction, naming the flags.

        ``values["_given"]``, when present, names the options given on the command line (or by
        their environment variable), not left at their defaults: :attr:`given`, for the rules
        that refuse a flag a mode has no use for (``--strength`` for instruction editing).
        """
        from . import modes

        mode = modes.select(values)
        base = getattr(mode, "base", mode)
        built = _build(cls, values, skip={"mode", "mode_options", "addons", "mode_values", "given", "axes"})
        mode_options = _build(base.options, values) if base.options is not None else None
        every = tuple((n, _build(m.options, values)) for n, m in ((n, modes.get(n)) for n in modes.MODES) if m.options is not None)
        config = dataclasses.replace(
            built, mode=base.name, mode_options=mode_options, mode_values=every,
            addons=tuple(a.name for a in getattr(mode, "addons", ())), given=frozenset(values.get("_given", ())),
        )
        return config.validate()

    def validate(self) -> "RunConfig":
        """Check every option and the cross-flag rules; return the normalised config.

        Raises:
            UsageError: naming the flag(s) and the bad value.
        """
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.jobs is not None and self.inputs:
            raise UsageError("--jobs and INPUT arguments contradict each other; list the inputs in the jobs file")
        if not self.inputs and self.jobs is None:
            raise UsageError("no inputs: give one or more image files or folders (or --jobs FILE)")
        if self.overwrite and self.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other; pass one")
        self.background_rgb
        self.batch
        job = self.job
        if self.size:
            if job.width or job.height:
                raise UsageError("--size and --width/--height contradict each other; pass one")
            width, height = parse_size(self.size)
            job = job.replace(width=width, height=height)
        if self.style and self.prompt_file:
            raise UsageError("--style and --prompt-file contradict each other; pass one")
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise UsageError("--c2pa-cert and --c2pa-key go together; pass both (or neither)")
        for flag, path in (("--c2pa-cert", self.c2pa_cert), ("--c2pa-key", self.c2pa_key)):
            if path is not None and not path.is_file():
                raise UsageError(f"{flag} {path}: no such file")
        if self.color_correction and self.colorize:
            raise UsageError("--color-correction and --colorize contradict each other; pass one")
        if self.styles_file is not None and not self.style:
            raise UsageError("--styles-file needs --style NAME")
        try:
            job.validate()
            steps_error = ""
        except NoDenoisingStep as e:  # an error unless the model has no strength: known later
            steps_error = str(e)
        self.text.validate()
        self.tiling.tile()
        axes = tuple(self.plot.axes())  # parsed once: a seed axis's -1 draws its seed here
        if axes and job.num_images > 1:
            raise UsageError("--x and --num-images contradict each other: a plot makes one image per cell (use a seed axis)")
        if job.scheduler:
            from .schedulers import canonical_name

            job = job.replace(scheduler=canonical_name(job.scheduler))
        from . import modes

        config = dataclasses.replace(self, job=job, axes=axes, steps_error=steps_error)
        modes.for_config(config).validate(config)  # with its axes: a mode may refuse one (--upscale: size)
        return config


def cli_fields(cls) -> list[tuple[str, object, object, dict]]:
    """The command-line options of ``cls`` and of its nested dataclasses, in declaration order:
    ``(name, type, default, cli_metadata)``, with types resolved (``typing.get_type_hints``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            out.extend(cli_fields(hints[f.name]))
        elif "cli" in f.metadata:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out.append((f.name, hints[f.name], default, f.metadata["cli"]))
    return out


def _build(cls, values: dict, skip=frozenset()):
    """An instance of ``cls`` from flat ``values`` (missing names keep their defaults)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if f.metadata.get("nested"):
            kwargs[f.name] = _build(hints[f.name], values)
        elif f.name in values and not (values[f.name] is None and f.default is dataclasses.MISSING):
            value = values[f.name]
            kwargs[f.name] = list(value) if isinstance(value, tuple) else value
    return cls(**kwargs)

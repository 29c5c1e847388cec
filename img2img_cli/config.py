"""The validated description of one ``img2img run`` job.

One frozen dataclass, :class:`Job`, holds every generation option; :meth:`Job.validate`
checks them all before any image is read or model loaded (habit 3 of ``STYLE.md``,
after diffusers' ``check_inputs``). No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass

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

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


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


@dataclass(frozen=True)
class Job:
    """Every option of one run, validated by :meth:`validate`.

    Attributes:
        prompt: text prompt (may be empty: unconditional img2img).
        negative_prompt: text the classifier-free guidance steers away from ("" for none).
        strength: denoising strength in ``(0, 1]``; the source image is noised to the timestep
            ``strength * T`` and ``int(steps * strength)`` denoising steps run (diffusers
            ``StableDiffusionImg2ImgPipeline.get_timesteps``; SDEdit, Meng et al. 2021).
        steps: number of scheduler steps for a full denoise, ``>= 1``.
        guidance_scale: classifier-free guidance scale ``w`` (Ho & Salimans 2022), ``>= 0``;
            values ``<= 1`` disable guidance, as in diffusers.
        seed: base seed in ``[0, 2**32 - 1]``, or ``None`` to draw one per image.
        num_images: images per input, ``>= 1``; image ``k`` uses seed ``seed + k``.
        scheduler: an A1111 sampler name from :data:`img2img_cli.schedulers.SCHEDULERS`, or
            ``None`` for the model's own scheduler.
        width, height: output size in pixels (multiples of 8), or ``None`` for the default
            (aspect ratio kept, longer side at the model's native resolution).
        resize_mode: one of :data:`RESIZE_MODES`.
        fmt: output format, one of :data:`FORMATS`, or ``None`` to take it from ``-o FILE``
            (``png`` otherwise).
        quality: JPEG/WebP quality in ``[1, 100]``.
        model, device, dtype: see :mod:`img2img_cli.models`.
    """

    prompt: str = ""
    negative_prompt: str = ""
    strength: float = DEFAULT_STRENGTH
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    seed: int | None = None
    num_images: int = 1
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    resize_mode: str = "crop"
    fmt: str | None = None
    quality: int = 95
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"

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
        if int(self.steps * self.strength) < 1:
            raise UsageError(
                f"--steps {self.steps} with --strength {self.strength} runs no denoising step "
                f"(int(steps * strength) = 0); raise --steps or --strength"
            )
        if not (self.guidance_scale >= 0.0) or self.guidance_scale > 100:
            raise UsageError(f"--guidance must be in [0, 100], got {self.guidance_scale}")
        if self.seed is not None and not (0 <= self.seed <= MAX_SEED):
            raise UsageError(f"--seed must be in [0, {MAX_SEED}], got {self.seed}")
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise UsageError(f"--seed {self.seed} + --num-images {self.num_images} passes {MAX_SEED}")
        if self.num_images < 1:
            raise UsageError(f"--num-images must be at least 1, got {self.num_images}")
        for flag, value in (("--width", self.width), ("--height", self.height)):
            if value is None:
                continue
            if value < 8 or value > MAX_SIDE:
                raise UsageError(f"{flag} must be in [8, {MAX_SIDE}], got {value}")
            if value % 8:
                raise UsageError(f"{flag} must be a multiple of 8, got {value} (try {value // 8 * 8 or 8})")
        if self.resize_mode not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if not (1 <= self.quality <= 100):
            raise UsageError(f"--quality must be in [1, 100], got {self.quality}")
        if self.device not in DEVICES:
            raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.scheduler is not None:
            from .schedulers import canonical_name

            canonical_name(self.scheduler)  # raises UsageError naming --scheduler
        if not self.model:
            raise UsageError("--model must not be empty")
        return self

    def seed_for(self, base_seed: int, k: int) -> int:
        """Seed of image ``k`` (0-based) of ``--num-images``: ``base_seed + k``."""
        return base_seed + k

"""Work: each input with its job, final prompts, seeds and output paths (:func:`plan_work`),
the units the runner batches, what happened to each input, and its infotext parameters.

Reproducibility: image ``k`` of an input uses seed ``base_seed + k``, drawn here when ``--seed``
is not given, so every seed is known (and recorded) before anything runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .config import Job, random_seed
from .inputs import InputItem
from .io import display
from .outputs import OutputPlan

log = logging.getLogger(__name__)


def format_number(x: float) -> str:
    """``7.0`` -> ``"7"``, ``7.5`` -> ``"7.5"`` (how A1111 infotext shows numbers)."""
    return format(x, "g")


def infotext_params(job: Job, *, seed: int, size: tuple[int, int], sampler: str, model_name: str, extra: dict | None = None) -> dict:
    """The A1111 parameter line for one image (``modules/processing.py: create_infotext``):
    ``extra`` (a mode's fields, :meth:`~img2img_cli.modes.Mode.infotext`) goes after
    ``Denoising strength`` and before ``Version``, where A1111 puts its scripts' fields.
    ``Denoising strength`` is left out when ``job.strength`` is ``None`` (a mode without one,
    :attr:`~img2img_cli.modes.Mode.has_strength`: instruction editing)."""
    strength = {"Denoising strength": format_number(job.strength)} if job.strength is not None else {}
    return {
        "Steps": job.steps,
        "Sampler": sampler,
        "CFG scale": format_number(job.guidance_scale),
        "Seed": seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model": model_name,
        **strength,
        **(extra or {}),
        "Version": f"img2img-cli {__version__}",
    }


@dataclass
class Outcome:
    """What happened to one input: ``status`` is ``ok``, ``skipped`` or ``failed``."""

    input: Path
    status: str
    outputs: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class WorkItem:
    """One input with everything needed to make its images.

    Attributes:
        job: the job for this input (jobs-file overrides applied), validated.
        prompt, negative_prompt: final text (sidecar / jobs row / style applied).
        outputs: planned output paths, one per image (``job.num_images``).
        base_seed: image ``k`` uses ``base_seed + k``.
        size: output ``(width, height)`` in pixels, set by the runner's header scan.
        outcome: what happened to it, set by the runner; pending: its images not yet done.
        mode_key: the mode's part of the batch key (:meth:`~img2img_cli.modes.Mode.batch_key`).
        mask: the jobs file's mask for this input (inpainting), or ``None``.
        text: its prompts as the encoder sees them and its LoRA set
            (:class:`~img2img_cli.text.networks.TextPlan`), set by the core's plan.
        grid: its tiles (:class:`~img2img_cli.tiles.Grid`, from the mode's
            :meth:`~img2img_cli.modes.Mode.tiles`), set by the runner's plan; ``None``: untiled.
        steps_error: for a job whose ``int(steps * strength)`` is 0 (a jobs row, a plot cell),
            the :class:`~img2img_cli.config.NoDenoisingStep` message naming the line or cell,
            raised by the core unless the model's mode has no strength; ``""`` otherwise.
    """

    index: int
    input: InputItem
    job: Job
    prompt: str
    negative_prompt: str
    outputs: list[Path]
    base_seed: int
    size: tuple[int, int] | None = None
    outcome: Outcome | None = None
    pending: int = 0
    mode_key: tuple = ()
    mask: Path | None = None
    text: object = None
    grid: object = None
    steps_error: str = ""

    @property
    def parts(self) -> int:
        """Pipeline inputs per image: its tiles, or 1."""
        return len(self.grid) if self.grid is not None else 1

    @property
    def loras(self) -> tuple:
        """The LoRA set of this input (``()`` for none)."""
        return self.text.loras if self.text is not None else ()


@dataclass(frozen=True)
class Unit:
    """One pipeline input: image ``k`` of ``item``, or its tile ``part`` when the item is
    tiled (:attr:`WorkItem.grid`)."""

    item: WorkItem
    k: int
    part: int = 0

    @property
    def seed(self) -> int:
        """``base_seed + k``, plus the tile index for a tile (A1111's SD upscale at batch size 1:
        each tile's seed one more than the last's)."""
        return self.item.base_seed + self.k + self.part

    @property
    def dest(self) -> Path:
        return self.item.outputs[self.k]

    def key(self) -> tuple:
        """Units with equal keys can share one pipeline call."""
        j = self.item.job
        size = ("tile", self.item.grid.tile) if self.item.grid is not None else self.item.size
        return (size, j.strength, j.steps, j.guidance_scale, not self.item.negative_prompt, self.item.mode_key, self.item.loras, j.clip_skip)


def plan_work(
    job: Job,
    inputs: list[InputItem],
    plan: OutputPlan,
    *,
    rows=None,
    style=None,
    prompt_from_sidecar: bool = False,
    mode=None,
) -> list[WorkItem]:
    """Turn inputs (or jobs-file rows) into :class:`WorkItem` s: per-input job, final prompts,
    seeds (drawn now when ``--seed`` is not given, so they can be recorded) and output names.

    Two inputs that would share an output name (``cat.jpg`` and ``cat.png``) are told apart by
    their source extension (``cat.png``, ``cat-png.png``).

    Args:
        rows: :class:`~img2img_cli.jobs.JobRow` list, one per input, or ``None``.
        style: a :class:`~img2img_cli.styles.Style` wrapping every prompt, or ``None``.
        prompt_from_sidecar: use ``<stem>.txt`` next to an image as its prompt when present.
        mode: the run's :class:`~img2img_cli.modes.Mode`, for its batch key; ``None``: img2img.
    """
    work: list[WorkItem] = []
    taken: set[Path] = set()
    for i, item in enumerate(inputs):
        row = rows[i] if rows is not None else None
        item_job = job.replace(**row.overrides) if row is not None else job
        prompt, negative = item_job.prompt, item_job.negative_prompt
        if prompt_from_sidecar and not (row is not None and "prompt" in row.overrides):
            sidecar = item.path.with_suffix(".txt")
            try:
                prompt = sidecar.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                log.info("%s: no sidecar prompt, using --prompt", display(item.path))
            except (OSError, UnicodeDecodeError) as e:
                log.warning("%s: cannot read sidecar prompt (%s), using --prompt", display(sidecar), e)
        if style is not None:
            prompt, negative = style.apply(prompt, negative)
        n = item_job.num_images
        paths = plan.claim(item, n, taken, row.output if row is not None else None)
        base = item_job.seed if item_job.seed is not None else random_seed()
        w = WorkItem(i, item, item_job, prompt, negative, paths, base, mask=row.mask if row is not None else None,
                     steps_error=row.steps_error if row is not None else "")
        if mode is not None:
            w.mode_key = mode.batch_key(w)
        work.append(w)
    return work

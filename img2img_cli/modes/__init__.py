"""Modes: the seam through which image-to-image, inpainting, ControlNet, instruction editing
and upscaling plug into one runner.

A :class:`Mode` says, for one kind of job:

- which diffusers pipeline class it loads for a model family (:attr:`Mode.pipelines`, a table
  like diffusers' ``AUTO_IMAGE2IMAGE_PIPELINES_MAPPING`` in ``pipelines/auto_pipeline.py``);
- which options are its own (:attr:`Mode.options`, a dataclass of :func:`~img2img_cli.config.option`
  fields, added to ``img2img run``'s flags) and which of them selects it (:attr:`Mode.trigger`);
- what it feeds the pipeline and which extra per-image inputs it reads (:meth:`Mode.prepare`:
  a mask, a control image), what goes in its batch key (:meth:`Mode.batch_key`), which
  pipeline arguments they become (:meth:`Mode.call_kwargs`), what it does to the result
  (:meth:`Mode.finish`: an overlay) and which infotext fields it writes (:meth:`Mode.infotext`).

The runner, batching, output naming, report, metadata and multi-process code call these hooks
and nothing else, so a new mode is one module here plus one line in :data:`MODES` (after
A1111's ``modules/scripts.py``, where each script declares its UI, its processing hooks and
its infotext fields).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ModelError, UsageError

#: ``model_index.json`` ``_class_name`` -> model family (diffusers' auto-pipeline keys).
FAMILIES: Mapping[str, str] = {
    "StableDiffusionPipeline": "stable-diffusion",
    "StableDiffusionImg2ImgPipeline": "stable-diffusion",
    "StableDiffusionInpaintPipeline": "stable-diffusion",
    "StableDiffusionXLPipeline": "stable-diffusion-xl",
    "StableDiffusionXLImg2ImgPipeline": "stable-diffusion-xl",
    "StableDiffusionXLInpaintPipeline": "stable-diffusion-xl",
}


@dataclass
class Prepared:
    """One item's pipeline input, made in the reader thread by :meth:`Mode.prepare`.

    Attributes:
        image: the pipeline's source image, RGB ``PIL.Image`` at the output size.
        extras: the mode's extra per-image inputs (a mask...), handed to
            :meth:`Mode.call_kwargs` through :attr:`img2img_cli.pipeline.Request.extras` and to
            :meth:`Mode.finish`.
        canvas: the picture the final output is aligned with, pixel for pixel (the colour
            steps compare against it): :attr:`image` unless the mode says otherwise.
    """

    image: object
    extras: dict = field(default_factory=dict)
    canvas: object = None

    def __post_init__(self):
        if self.canvas is None:
            self.canvas = self.image


class Mode:
    """One kind of job. Subclass it, override what differs, register it in :data:`MODES`.

    Attributes:
        name: the mode's name (recorded in ``--report`` lines).
        pipelines: model family (:data:`FAMILIES` values) -> diffusers pipeline class name.
        auto_class: the diffusers ``AutoPipelineFor...`` class used for a model whose family
            is not in :data:`FAMILIES` (it raises if diffusers has no pipeline for it).
        options: a frozen dataclass of the mode's own options (:func:`~img2img_cli.config.option`
            fields), or ``None``.
        trigger: the field (or a tuple of fields) of :attr:`options` whose value selects this
            mode (``None``: the default mode).
        source_type: the IPTC digital source type of its outputs (:mod:`img2img_cli.provenance`):
            ``trainedAlgorithmicMedia`` when the whole picture is regenerated,
            ``compositeWithTrainedAlgorithmicMedia`` when a mask keeps part of the source.
        c2pa_action: the C2PA action recorded when signing: ``c2pa.created`` or ``c2pa.edited``.
    """

    name: str = ""
    source_type: str = "trainedAlgorithmicMedia"
    c2pa_action: str = "c2pa.created"
    pipelines: Mapping[str, str] = {}
    auto_class: str = ""
    options: type | None = None
    trigger: str | None = None

    def pipeline_class(self, index_class: str, model: str) -> str:
        """The diffusers class name to load for a model whose ``model_index.json`` names
        ``index_class``; :attr:`auto_class` when the family is unknown.

        Raises:
            ModelError: the model's family is known but this mode has no pipeline for it.
        """
        family = FAMILIES.get(index_class)
        if family is None:
            return self.auto_class
        if family not in self.pipelines:
            raise ModelError(f"--model {model}: a {family} model ({index_class}) has no {self.name} pipeline")
        return self.pipelines[family]

    def validate(self, config) -> None:
        """Cross-flag checks of this mode's options against the whole
        :class:`~img2img_cli.config.RunConfig`. Raises :class:`UsageError`."""

    def scales_source(self, config) -> bool:
        """Whether the source is only ever used scaled down to the output size, so a JPEG may be
        decoded at a reduced scale (Pillow's draft). ``False`` when the mode needs it whole."""
        return True

    def canvas_size(self, item, source_size: tuple[int, int], config) -> tuple[int, int]:
        """The size ``(width, height)`` of the picture the mode works on, from the source's
        (read from its header); the output size is derived from it. Outpainting grows it."""
        return source_size

    def prepare(self, item, source, size: tuple[int, int], config) -> "Prepared":
        """The pipeline's input for ``item`` (a :class:`~img2img_cli.work.WorkItem`) and the
        mode's extra inputs, in the runner's reader thread.

        Args:
            source: the source photo, an RGB ``PIL.Image`` at its own size.
            size: the output size ``(width, height)``, multiples of 8.

        Returns:
            a :class:`Prepared`: by default the source resized to ``size`` with the job's resize
            mode (``--resize``), no extras.

        Raises:
            InputError: naming the file (a missing mask, say); the item then fails alone.
        """
        from ..io import resize_image

        return Prepared(resize_image(source, *size, item.job.resize_mode))

    def batch_key(self, item) -> tuple:
        """What, beyond size, strength, steps and guidance scale, must be equal for two
        images of this mode to share one pipeline call."""
        return ()

    def call_kwargs(self, pipe, requests: list) -> dict:
        """Keyword arguments of the pipeline call for a batch of
        :class:`~img2img_cli.pipeline.Request` (from their ``extras``), added to or replacing
        the plain img2img ones (``image``, ``prompt``...). Runs on the device thread."""
        return {}

    def finish(self, image, prepared: "Prepared"):
        """The output from the pipeline's ``image`` (an RGB ``PIL.Image`` at the output size),
        in the writer thread: inpainting composites it onto the source here. Returns an RGB
        image of ``prepared.canvas``'s size."""
        return image

    def infotext(self, item, config) -> dict:
        """Extra A1111 infotext fields for ``item``'s images (``{"Mask blur": 4}``)."""
        return {}


def _img2img() -> Mode:
    from .img2img import Img2Img

    return Img2Img()


def _inpaint() -> Mode:
    from .inpaint import Inpaint

    return Inpaint()


#: name -> factory of the registered modes; the first is the default.
MODES = {"img2img": _img2img, "inpaint": _inpaint}


def get(name: str) -> Mode:
    """The registered mode ``name``.

    Raises:
        KeyError: no such mode.
    """
    return MODES[name]()


def select(values: dict) -> Mode:
    """The mode chosen by option ``values`` (flat, by field name): the one whose trigger
    option is set, else the default (the first of :data:`MODES`).

    Raises:
        UsageError: two modes' triggers are set, or an option of an unselected mode is set
            (naming the flag and what it needs).
    """
    modes = [get(n) for n in MODES]
    chosen = [m for m in modes if any(_is_set(values.get(t)) for t in _triggers(m))]
    if len(chosen) > 1:
        flags = " and ".join(_flag(m.options, next(t for t in _triggers(m) if _is_set(values.get(t)))) for m in chosen)
        raise UsageError(f"{flags} contradict each other; pass one")
    mode = chosen[0] if chosen else modes[0]
    for other in modes:
        if other is mode or other.options is None:
            continue
        for f in dataclasses.fields(other.options):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in values and values[f.name] not in (None, default):
                needs = " or ".join(_flag(other.options, t) for t in _triggers(other))
                raise UsageError(f"{_flag(other.options, f.name)} needs {needs}")
    return mode


def _triggers(mode: Mode) -> tuple[str, ...]:
    if not mode.trigger:
        return ()
    return (mode.trigger,) if isinstance(mode.trigger, str) else tuple(mode.trigger)


def _is_set(value) -> bool:
    """Whether an option value was given: not ``None``, ``False`` or ``""`` (``0`` is a value)."""
    return value is not None and value is not False and value != ""


def _flag(options: type, name: str) -> str:
    for f in dataclasses.fields(options):
        if f.name == name:
            return f.metadata["cli"]["flags"][0]
    return name

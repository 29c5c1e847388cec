"""Modes: the seam through which image-to-image, inpainting, ControlNet, instruction editing
and upscaling plug into one runner.

A :class:`Mode` says, for one kind of job:

- which diffusers pipeline class it loads for a model family (:attr:`Mode.pipelines`, a table
  like diffusers' ``AUTO_IMAGE2IMAGE_PIPELINES_MAPPING`` in ``pipelines/auto_pipeline.py``);
- which options are its own (:attr:`Mode.options`, a dataclass of :func:`~img2img_cli.config.option`
  fields, added to ``img2img run``'s flags) and which of them selects it (:attr:`Mode.trigger`);
- which extra per-image inputs it reads (:meth:`Mode.read_extras`: a mask, a control image),
  what goes in its batch key (:meth:`Mode.batch_key`), which pipeline arguments they become
  (:meth:`Mode.call_kwargs`) and which infotext fields it writes (:meth:`Mode.infotext`).

The runner, batching, output naming, report, metadata and multi-process code call these hooks
and nothing else, so a new mode is one module here plus one line in :data:`MODES` (after
A1111's ``modules/scripts.py``, where each script declares its UI, its processing hooks and
its infotext fields).
"""

from __future__ import annotations

import dataclasses
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


class Mode:
    """One kind of job. Subclass it, override what differs, register it in :data:`MODES`.

    Attributes:
        name: the mode's name (recorded in ``--report`` lines).
        pipelines: model family (:data:`FAMILIES` values) -> diffusers pipeline class name.
        auto_class: the diffusers ``AutoPipelineFor...`` class used for a model whose family
            is not in :data:`FAMILIES` (it raises if diffusers has no pipeline for it).
        options: a frozen dataclass of the mode's own options (:func:`~img2img_cli.config.option`
            fields), or ``None``.
        trigger: the field of :attr:`options` whose value selects this mode (``None``: the
            default mode).
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

    def read_extras(self, item, size: tuple[int, int], config) -> dict:
        """Extra per-image inputs for ``item`` (a :class:`~img2img_cli.work.WorkItem`) at the
        output ``size`` ``(width, height)``, read in the runner's reader thread. Raises
        :class:`~img2img_cli.errors.InputError` naming the file; the item then fails alone."""
        return {}

    def batch_key(self, item) -> tuple:
        """What, beyond size, strength, steps and guidance scale, must be equal for two
        images of this mode to share one pipeline call."""
        return ()

    def call_kwargs(self, requests: list) -> dict:
        """Extra keyword arguments of the pipeline call for a batch of
        :class:`~img2img_cli.pipeline.Request` (their ``extras``)."""
        return {}

    def infotext(self, item) -> dict:
        """Extra A1111 infotext fields for ``item``'s images (``{"Mask blur": 4}``)."""
        return {}


def _img2img() -> Mode:
    from .img2img import Img2Img

    return Img2Img()


#: name -> factory of the registered modes; the first is the default.
MODES = {"img2img": _img2img}


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
    chosen = [m for m in modes if m.trigger and _is_set(values.get(m.trigger))]
    if len(chosen) > 1:
        flags = " and ".join(_flag(m.options, m.trigger) for m in chosen)
        raise UsageError(f"{flags} contradict each other; pass one")
    mode = chosen[0] if chosen else modes[0]
    for other in modes:
        if other is mode or other.options is None:
            continue
        for f in dataclasses.fields(other.options):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in values and values[f.name] not in (None, default):
                raise UsageError(f"{_flag(other.options, f.name)} needs {_flag(other.options, other.trigger)}")
    return mode


def _is_set(value) -> bool:
    """Whether an option value was given: not ``None``, ``False`` or ``""`` (``0`` is a value)."""
    return value is not None and value is not False and value != ""


def _flag(options: type, name: str) -> str:
    for f in dataclasses.fields(options):
        if f.name == name:
            return f.metadata["cli"]["flags"][0]
    return name

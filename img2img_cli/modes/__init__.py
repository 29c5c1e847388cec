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

Three ways a mode is chosen:

- **task modes** (img2img, inpainting) by their trigger option (``--mask``); one at a time;
- **add-ons** (:attr:`Mode.addon`: ControlNet, IP-Adapter) by their trigger option, on top of
  the task mode: the run's mode is then a :class:`Stack`, whose hooks call the task mode's and
  then each add-on's; an add-on turns the loaded pipeline into its own with
  :meth:`Mode.attach` (diffusers' ``from_pipe``, the loaded components reused);
- **model modes** (:attr:`Mode.model_family`: instruction editing, the x4 upscaler) by the
  model: a model of that family replaces the default task mode (:func:`for_model`), once the
  model is resolved and before it loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ModelError, UsageError

#: A value of :meth:`Mode.call_kwargs` that removes the plain argument of that name from the
#: pipeline call (instruction editing has no ``strength``).
DROP = object()

#: ``model_index.json`` ``_class_name`` -> model family (diffusers' auto-pipeline keys).
FAMILIES: Mapping[str, str] = {
    "StableDiffusionPipeline": "stable-diffusion",
    "StableDiffusionImg2ImgPipeline": "stable-diffusion",
    "StableDiffusionInpaintPipeline": "stable-diffusion",
    "StableDiffusionXLPipeline": "stable-diffusion-xl",
    "StableDiffusionXLImg2ImgPipeline": "stable-diffusion-xl",
    "StableDiffusionXLInpaintPipeline": "stable-diffusion-xl",
    "StableDiffusionInstructPix2PixPipeline": "instruct-pix2pix",
    "StableDiffusionXLInstructPix2PixPipeline": "instruct-pix2pix-xl",
    "StableDiffusionUpscalePipeline": "stable-diffusion-x4-upscaler",
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
        addon: ``True`` for an add-on (ControlNet, IP-Adapter) that stacks on the task mode
            instead of replacing it (see :class:`Stack`).
        model_family: for a model mode, the model family (:data:`FAMILIES` value), or a tuple
            of them, that selects it (``"instruct-pix2pix"``); such a mode has no trigger option.
        bases: for an add-on, the task and model modes it works with (``("img2img",
            "inpaint")``), or ``None`` for any; others are refused by :func:`for_model`.
        has_strength: ``False`` for a mode whose pipeline has no denoising strength
            (instruction editing): the core then sets each job's ``strength`` to ``None``, so all
            ``steps`` run (:func:`~img2img_cli.text.conditioning.steps_run`) and neither the
            infotext (``Denoising strength``) nor the report claims one; the mode refuses
            ``--strength`` itself and drops the pipeline argument (:data:`DROP`).
        tiled: whether :meth:`tiles` may cut its work into tiles (``--tile-size`` and
            ``--tile-overlap`` are refused for a mode that does not).
    """

    name: str = ""
    source_type: str = "trainedAlgorithmicMedia"
    c2pa_action: str = "c2pa.created"
    pipelines: Mapping[str, str] = {}
    auto_class: str = ""
    options: type | None = None
    trigger: str | None = None
    addon: bool = False
    bases: tuple | None = None
    model_family: str | tuple[str, ...] | None = None
    has_strength: bool = True
    tiled: bool = False

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
        """Cross-flag checks of this mode's options (``config.options_of(self.name)``) against
        the whole :class:`~img2img_cli.config.RunConfig`. Raises :class:`UsageError`."""

    def configure(self, config) -> None:
        """Called once with the run's :class:`~img2img_cli.config.RunConfig` when the run's mode
        is made (:func:`for_config`), before any hook, for a mode whose :meth:`batch_key` needs
        its options (IP-Adapter: the style image paired with each input). Default: nothing."""

    def attach(self, pipe, config):
        """An add-on's change to the loaded pipeline, before LoRAs and the speed options:
        ControlNet returns its pipeline class made ``from_pipe(pipe, controlnet=...)`` (no
        component loaded twice), IP-Adapter loads its weights into ``pipe``. Returns the
        pipeline to use. The task mode's default returns ``pipe``.

        Raises:
            ModelError: naming the add-on's file when it cannot be loaded or does not fit.
        """
        return pipe

    def extend(self, item, source, prepared: "Prepared", size: tuple[int, int], config) -> None:
        """An add-on's extra per-image inputs, added to ``prepared.extras`` after the task
        mode's :meth:`prepare` (same arguments; ``prepared.image`` is the pipeline's source at
        ``size``). Raises :class:`~img2img_cli.errors.InputError` to fail that input alone."""

    def scales_source(self, config) -> bool:
        """Whether the source is only ever used scaled down to the output size, so a JPEG may be
        decoded at a reduced scale (Pillow's draft). ``False`` when the mode needs it whole."""
        return True

    def canvas_size(self, item, source_size: tuple[int, int], config) -> tuple[int, int]:
        """The size ``(width, height)`` of the picture the mode works on, from the source's
        (read from its header); the output size is derived from it. Outpainting grows it."""
        return source_size

    def output_size(self, item, canvas: tuple[int, int], native: int, multiple: int, config) -> tuple[int, int]:
        """The output size ``(width, height)`` from the canvas's (:meth:`canvas_size`), the
        model's native resolution in pixels and the rounding ``multiple`` (8, or 64 with
        ``--compile``): by default :func:`img2img_cli.io.target_size` (``--width``/``--height``,
        else the longer side at ``native``). SD upscale multiplies the canvas instead, the x4
        upscaler outputs 4 times its input. Raises :class:`~img2img_cli.errors.InputError`
        to fail that input alone."""
        from ..io import target_size

        return target_size(canvas, native, item.job.width, item.job.height, multiple=multiple)

    def tiles(self, item, native: int, config):
        """``None`` (the default): each image is one pipeline call's input. A
        :class:`~img2img_cli.tiles.Grid` (in the coordinates of :meth:`prepare`'s image, ``item.size``
        known): each tile of that image is a unit of work of its own, batched like images, with
        seed ``image seed + tile index``; the writer blends the results
        (:func:`~img2img_cli.tiles.combine`) into one output, written only when every tile is
        made (a failed tile fails the image). Runs once per item after the model loads.

        Raises:
            UsageError: the tile options do not fit the model (a run-level error).
        """
        return None

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

    def tile_extras(self, extras: dict, box: tuple[int, int, int, int]) -> dict:
        """The extras (:attr:`Prepared.extras`, made for the whole picture) for one tile of a
        tiled item (:meth:`tiles`), ``box`` its ``(left, top, right, bottom)`` in the picture's
        pixels, in the reader thread. ControlNet crops its control images to the box; the
        default keeps every extra whole (an IP-Adapter style image is for the whole picture)."""
        return extras

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


class Stack(Mode):
    """A task mode with add-ons on top (``--mask`` with ``--controlnet``): each hook is the task
    mode's, then each add-on's in order (:meth:`prepare` then :meth:`Mode.extend`, batch keys
    concatenated, call arguments and infotext fields merged). The pipeline class is the task
    mode's; the add-ons change the loaded pipeline (:meth:`Mode.attach`).

    Attributes:
        base: the task mode. addons: the add-ons, in registration order.
    """

    def __init__(self, base: Mode, addons: list):
        self.base, self.addons = base, list(addons)
        self.name = "+".join([base.name, *(a.name for a in self.addons)])
        self.source_type, self.c2pa_action = base.source_type, base.c2pa_action
        self.pipelines, self.auto_class = base.pipelines, base.auto_class
        self.options, self.trigger, self.model_family = base.options, base.trigger, base.model_family
        self.has_strength = base.has_strength
        self.tiled = base.tiled

    def _all(self):
        return [self.base, *self.addons]

    def pipeline_class(self, index_class, model):
        return self.base.pipeline_class(index_class, model)

    def validate(self, config):
        for m in self._all():
            m.validate(config)

    def attach(self, pipe, config):
        for m in self._all():
            pipe = m.attach(pipe, config)
        return pipe

    def scales_source(self, config):
        return all(m.scales_source(config) for m in self._all())

    def canvas_size(self, item, source_size, config):
        return self.base.canvas_size(item, source_size, config)

    def output_size(self, item, canvas, native, multiple, config):
        return self.base.output_size(item, canvas, native, multiple, config)

    def tiles(self, item, native, config):
        return self.base.tiles(item, native, config)

    def prepare(self, item, source, size, config):
        prepared = self.base.prepare(item, source, size, config)
        for m in self.addons:
            m.extend(item, source, prepared, size, config)
        return prepared

    def tile_extras(self, extras, box):
        for m in self._all():
            extras = m.tile_extras(extras, box)
        return extras

    def batch_key(self, item):
        return tuple(k for m in self._all() for k in m.batch_key(item))

    def call_kwargs(self, pipe, requests):
        kwargs: dict = {}
        for m in self._all():
            kwargs.update(m.call_kwargs(pipe, requests))
        return kwargs

    def finish(self, image, prepared):
        return self.base.finish(image, prepared)

    def infotext(self, item, config):
        fields: dict = {}
        for m in self._all():
            fields.update(m.infotext(item, config))
        return fields


def stack(base: Mode, addons: list) -> Mode:
    """``base`` alone, or a :class:`Stack` of it and ``addons``."""
    return Stack(base, addons) if addons else base


def for_config(config) -> Mode:
    """The mode of a built :class:`~img2img_cli.config.RunConfig` (its task mode and add-ons),
    each given ``config`` (:meth:`Mode.configure`)."""
    chosen = [get(config.mode), *(get(n) for n in config.addons)]
    for m in chosen:
        m.configure(config)
    return stack(chosen[0], chosen[1:])


def for_model(mode: Mode, index_class: str | None, model: str, config) -> Mode:
    """The run's mode once ``--model`` is resolved: a model mode whose :attr:`Mode.model_family`
    is the model's family (:data:`FAMILIES` of its ``model_index.json`` class ``index_class``)
    replaces the default task mode and is validated; the add-ons stay.

    Raises:
        UsageError: a model mode's option is given for a model of another family (naming the
            flag and what it needs), or a trigger-selected task mode (``--mask``) is asked of a
            model that only does its own mode, or an add-on that does not work with the
            model's mode (:attr:`Mode.bases`).
    """
    family = FAMILIES.get(index_class or "")
    base = mode.base if isinstance(mode, Stack) else mode
    addons = mode.addons if isinstance(mode, Stack) else []
    claimed = None
    for name in MODES:
        m = get(name)
        if m.model_family is None:
            continue
        if family in _families(m):
            claimed = m
            continue
        if m.options is None:
            continue
        given = [f.name for f in dataclasses.fields(m.options)  # typed, or (no command line) not the default
                 if f.name in config.given or getattr(config.options_of(m.name), f.name) != f.default]
        if given:
            flag = _flag(m.options, given[0])
            raise UsageError(f"{flag} needs {_a(_families(m)[0])} model; --model {model} is {_a(family or 'other')} model")
    if claimed is None:
        return mode
    if base.name != next(iter(MODES)):
        flags = " or ".join(_flag(base.options, t) for t in _triggers(base)) if base.options else base.name
        raise UsageError(f"--model {model} is {_a(family)} model, which does not do {base.name} ({flags})")
    for a in addons:
        if a.bases is not None and claimed.name not in a.bases:
            trigger = _flag(a.options, _triggers(a)[0]) if a.options else a.name
            raise UsageError(f"{trigger}: --model {model} is {_a(family)} model, which has no {a.name} pipeline")
    claimed.configure(config)
    chosen = stack(claimed, addons)
    chosen.validate(config)
    return chosen


def _families(mode: Mode) -> tuple[str, ...]:
    f = mode.model_family
    return () if f is None else (f,) if isinstance(f, str) else tuple(f)


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def refuse_strength(config, why: str) -> None:
    """For a mode without a denoising strength (:attr:`Mode.has_strength` ``False``): refuse a
    typed ``--strength`` (``config.given``), a jobs file's ``strength`` column and a ``strength``
    plot axis, each of which would be silently ignored. ``why`` says what the model has instead.

    Raises:
        UsageError: naming the flag, or the jobs file and its line.
    """
    if "strength" in config.given:
        raise UsageError(f"--strength: {why}; drop it")
    if config.jobs is not None:
        from ..io import display
        from ..jobs import load_jobs

        row = next((r for r in load_jobs(config.jobs, config.job) if "strength" in r.overrides), None)
        if row is not None:
            raise UsageError(f"--jobs {display(config.jobs)} line {row.line}: strength: {why}; drop the column")
    if any(axis.name == "strength" for axis in config.axes):
        raise UsageError(f"--x/--y/--z strength: {why}")


def _img2img() -> Mode:
    from .img2img import Img2Img

    return Img2Img()


def _inpaint() -> Mode:
    from .inpaint import Inpaint

    return Inpaint()


def _controlnet() -> Mode:
    from .controlnet import ControlNet

    return ControlNet()


def _ip_adapter() -> Mode:
    from .ip_adapter import IpAdapter

    return IpAdapter()


def _pix2pix() -> Mode:
    from .pix2pix import Pix2Pix

    return Pix2Pix()


def _sdupscale() -> Mode:
    from .sdupscale import SDUpscale

    return SDUpscale()


def _x4() -> Mode:
    from .x4 import X4Upscale

    return X4Upscale()


#: name -> factory of the registered modes; the first is the default.
MODES = {"img2img": _img2img, "inpaint": _inpaint, "controlnet": _controlnet, "ip-adapter": _ip_adapter, "pix2pix": _pix2pix, "sdupscale": _sdupscale, "x4": _x4}


def get(name: str) -> Mode:
    """The registered mode ``name``.

    Raises:
        KeyError: no such mode.
    """
    return MODES[name]()


def select(values: dict) -> Mode:
    """The mode chosen by option ``values`` (flat, by field name): the task mode whose trigger
    option is set, else the default (the first of :data:`MODES`), with the add-ons whose
    trigger is set on top (a :class:`Stack`). Model modes are chosen later (:func:`for_model`).

    Raises:
        UsageError: two task modes' triggers are set, or an option of an unselected mode is
            set (naming the flag and what it needs).
    """
    modes = [get(n) for n in MODES]
    triggered = [m for m in modes if any(_is_set(values.get(t)) for t in _triggers(m))]
    chosen = [m for m in triggered if not m.addon]
    if len(chosen) > 1:
        flags = " and ".join(_flag(m.options, next(t for t in _triggers(m) if _is_set(values.get(t)))) for m in chosen)
        raise UsageError(f"{flags} contradict each other; pass one")
    base = chosen[0] if chosen else modes[0]
    addons = [m for m in triggered if m.addon]
    mode = stack(base, addons)
    active = {base.name, *(a.name for a in addons)}
    for other in modes:
        if other.name in active or other.options is None or other.model_family is not None:
            continue
        for f in dataclasses.fields(other.options):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in values and values[f.name] not in (None, default) and _is_set(values[f.name]):
                needs = " or ".join(_flag(other.options, t) for t in _triggers(other))
                raise UsageError(f"{_flag(other.options, f.name)} needs {needs}")
    return mode


def _triggers(mode: Mode) -> tuple[str, ...]:
    if not mode.trigger:
        return ()
    return (mode.trigger,) if isinstance(mode.trigger, str) else tuple(mode.trigger)


def _is_set(value) -> bool:
    """Whether an option value was given: not ``None``, ``False``, ``""`` or an empty list
    (a repeatable option not given; ``0`` is a value)."""
    return value is not None and value is not False and value != "" and not (isinstance(value, (list, tuple)) and not value)


def _flag(options: type, name: str) -> str:
    for f in dataclasses.fields(options):
        if f.name == name:
            return f.metadata["cli"]["flags"][0]
    return name

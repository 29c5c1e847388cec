"""The axes of an X/Y/Z plot: ``--x AXIS=V1,V2,...`` parsed, checked and applied to a job.

An axis names one option of the :class:`~img2img_cli.config.Job` (or a prompt search and
replace) and the values it takes across the plot. Every value is parsed and checked here,
before any model is loaded; a plot then renders :func:`cells` in order and builds each
cell's job with :meth:`Axis.apply`.

The rules follow AUTOMATIC1111's X/Y/Z plot script, ``scripts/xyz_grid.py`` of
AUTOMATIC1111/stable-diffusion-webui (read at commit 02d5a43c4b3302505dc58d0c8e2f3a40e3e766b8);
this is our own code, written from those facts:

- Values are one CSV row (Python's :mod:`csv`, rows joined, each value stripped of spaces):
  ``scheduler="DPM++ 2M Karras","Euler a"``. One difference: spaces after a comma are
  skipped before a quote (``skipinitialspace``), so ``"a, b", "c"`` is two values; A1111
  would keep the quotes of ``"c"`` as part of the value.
- Integer and float axes take ranges (A1111's ``re_range`` and ``re_range_count``):
  ``1-5`` is 1..5 (step 1), ``1-5 (+2)`` is 1, 3, 5, ``10-30 [3]`` is 3 values spread evenly
  from 10 to 30 (numpy ``linspace``; integer axes truncate each to an int as A1111 does),
  ``0.2-0.8 (+0.2)`` and ``0.2-0.8 [4]`` likewise for floats. Numbers may be negative
  (``-5--1`` is -5..-1) and the step's sign may be left out (``1-5 (2)``). The end is
  included when the step reaches it within rounding and never passed (A1111's float ranges,
  ``numpy.arange(start, end + step, step)``, can add a value past the end), float range
  values are rounded to 8 decimals (A1111 shows floats rounded to 8), and a
  descending range needs a negative step (``5-1 (-1)`` is 5..1; A1111 drops the last value
  of a descending integer range, ``range(5, 2, -1)``, which we do not copy). A range that
  yields nothing, or a zero step, is an error where A1111 would give an empty axis.
- ``seed`` value ``-1`` draws a random seed (A1111's ``fix_axis_seeds``) when the axis is
  parsed, with :func:`img2img_cli.config.random_seed`, so the seed is known and recorded.
- Prompt S/R (``apply_prompt``): the first value is the search string; cell ``i`` replaces
  every occurrence of it by value ``i`` (``str.replace``) in the prompt *and* in the negative
  prompt, so the first cell keeps the prompts as written; the search string must occur in
  one of them (:func:`check_prompt_sr`). ``negative-prompt-sr`` (not in A1111) does the same
  in the negative prompt only.
- Cells are numbered with x fastest, then y, then z: image ``ix + iy*nx + iz*nx*ny`` of
  A1111's ``draw_xyz_grid`` (A1111 may *render* them in another order, slow axes outermost,
  but stores them in this one).
- Infotext: A1111 writes ``X Type`` (the axis label, e.g. ``CFG Scale``) and ``X Values``
  (the values as typed; with seeds, the drawn ones also as ``Fixed X Values``) on the grid,
  plus ``Script: X/Y/Z plot``. :meth:`Axis.infotext` writes the parsed values instead, so a
  drawn seed is in ``X Values`` and parsing them again gives the same axis.

Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass
from io import StringIO

from ..config import MAX_STEPS, Job, parse_size, random_seed
from ..errors import UsageError
from ..schedulers import SCHEDULERS, canonical_name

__all__ = [
    "AXES",
    "AXIS_NAMES",
    "MAX_VALUES",
    "Axis",
    "AxisType",
    "check_prompt_sr",
    "cells",
    "count",
    "parse_axis",
]

#: Most values one axis may have (a range is measured before it is expanded): a plot of
#: ``seed=0-4294967295`` is refused at once instead of filling memory.
MAX_VALUES = 10_000

#: Float values from ranges are rounded to this many decimals; the same rounding shows floats
#: on the grid (A1111's ``format_value``: ``round(x, 8)``).
FLOAT_DECIMALS = 8


@dataclass(frozen=True)
class AxisType:
    """One kind of axis.

    Attributes:
        name: the canonical name used in ``--x NAME=...``.
        type: the type of each value: ``int``, ``float``, ``str``, or ``tuple`` for a size
            ``(width, height)`` in pixels.
        label: the name A1111 gives the axis, written as the infotext ``X Type``.
        aliases: other accepted names.
        labelled: grid labels read ``"Label: value"`` (A1111's ``format_value_add_label``),
            else the bare value (A1111's ``format_value``, used for Sampler and Prompt S/R).
        help: what the values are, with their range.
    """

    name: str
    type: type
    label: str
    aliases: tuple[str, ...] = ()
    labelled: bool = True
    help: str = ""


_TYPES = (
    AxisType("strength", float, "Denoising", help="denoising strength in (0, 1]"),
    AxisType("guidance", float, "CFG Scale", ("cfg-scale",), help="classifier-free guidance scale in [0, 100]"),
    AxisType("steps", int, "Steps", help=f"scheduler steps in [1, {MAX_STEPS}]"),
    AxisType("seed", int, "Seed", help="seed in [0, 2^32-1]; -1 draws one"),
    AxisType("scheduler", str, "Sampler", ("sampler",), labelled=False, help="A1111 sampler name"),
    AxisType(
        "prompt-sr", str, "Prompt S/R", labelled=False,
        help="search string, then its replacements (prompt and negative prompt)",
    ),
    AxisType(
        "negative-prompt-sr", str, "Negative prompt S/R", labelled=False,
        help="search string, then its replacements (negative prompt only)",
    ),
    AxisType("size", tuple, "Size", help="WIDTHxHEIGHT in pixels, multiples of 8"),
    AxisType("clip-skip", int, "Clip skip", help="A1111 clip skip in [1, 12]"),
)

#: Every accepted axis name, aliases included, to its :class:`AxisType` (an alias maps to the
#: same object as its canonical name: ``AXES["cfg-scale"].name == "guidance"``).
AXES: dict[str, AxisType] = {n: t for t in _TYPES for n in (t.name, *t.aliases)}

#: The canonical axis names, in the order they are listed in help and errors.
AXIS_NAMES: tuple[str, ...] = tuple(t.name for t in _TYPES)

# The Job field each simple axis sets.
_FIELDS = {
    "strength": "strength",
    "guidance": "guidance_scale",
    "steps": "steps",
    "seed": "seed",
    "scheduler": "scheduler",
    "clip-skip": "clip_skip",
}

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
# A1111's re_range / re_range_count (and their _float twins), with the '.' escaped and the
# step's sign optional: "1-5", "1-5 (+2)", "10-30 [3]".
_RANGE = {
    int: re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*(?:\(\s*({_INT})\s*\))?\s*"),
    float: re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*(?:\(\s*({_FLOAT})\s*\))?\s*"),
}
_COUNT = {
    int: re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[\s*(\d+)\s*\]\s*"),
    float: re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*"),
}


def _known() -> str:
    return ", ".join(f"{t.name} ({', '.join(t.aliases)})" if t.aliases else t.name for t in _TYPES)


def _number(text: str, kind: type):
    return kind(re.sub(r"\s+", "", text))


def _format(kind: type, value) -> str:
    if kind is float:
        return str(round(value, FLOAT_DECIMALS))
    if kind is tuple:
        return f"{value[0]}x{value[1]}"
    return str(value)


@dataclass(frozen=True)
class Axis:
    """One parsed axis: its canonical name, its values and its A1111 label.

    Attributes:
        name: a canonical name from :data:`AXIS_NAMES`.
        values: the values in order, of the axis type's :attr:`AxisType.type`: floats for
            ``strength`` and ``guidance``, ints for ``steps`` and ``seed`` (drawn seeds
            included), canonical A1111 sampler names for ``scheduler``, strings for the S/R
            axes (the first is the search string), ``(width, height)`` for ``size``.
        label: the infotext ``X Type`` (A1111's label: ``Denoising``, ``CFG Scale`` ...).
    """

    name: str
    values: tuple
    label: str

    @property
    def type(self) -> AxisType:
        """The :class:`AxisType` of this axis."""
        return AXES[self.name]

    @property
    def text_values(self) -> list[str]:
        """Each value as shown on the grid and in ``X Values``: floats rounded to 8 decimals
        (``0.5``, ``7.0``, as A1111's ``format_value``), ints as digits (seeds the drawn
        number), strings as they are, sizes as ``512x768``."""
        kind = self.type.type
        return [_format(kind, v) for v in self.values]

    @property
    def grid_labels(self) -> list[str]:
        """The grid's label for each value, as A1111 draws them: ``"CFG Scale: 7.0"`` for the
        numeric axes and size, the bare value for Sampler and the S/R axes."""
        if not self.type.labelled:
            return self.text_values
        return [f"{self.label}: {t}" for t in self.text_values]

    def infotext(self, letter: str) -> dict[str, str]:
        """The infotext fields of this axis as axis ``letter`` (``"X"``, ``"Y"`` or ``"Z"``):
        ``{"X Type": label, "X Values": values}``, the values one CSV row (A1111's
        ``list_to_csv_string``: quoted only where needed) that :func:`parse_axis` reads back
        to the same axis."""
        out = StringIO()
        csv.writer(out).writerow(self.text_values)
        return {f"{letter} Type": self.label, f"{letter} Values": out.getvalue().strip()}

    def apply(self, job: Job, prompt: str, negative: str, i: int) -> tuple[Job, str, str]:
        """The job, prompt and negative prompt of cell value ``i`` (``0 <= i < len(values)``).

        ``strength``, ``guidance``, ``steps``, ``seed`` and ``scheduler`` set that field of the
        job (``guidance_scale`` for guidance), ``size`` sets ``width`` and ``height``; the
        prompts come back unchanged. ``prompt-sr`` replaces every occurrence of the search
        string (value 0) by value ``i`` in ``prompt`` and in ``negative`` (A1111's
        ``apply_prompt``), ``negative-prompt-sr`` in ``negative`` only; value 0 keeps them as
        written. The prompts travel beside the job: ``job.prompt`` and
        ``job.negative_prompt`` are not changed by the S/R axes. A1111 applies S/R to the
        prompt before styles are added, so pass the prompt as typed.

        The returned job is not validated: a combination of axes can still fail
        :meth:`Job.validate` (e.g. ``steps`` times ``strength`` under one step); validate
        each cell's job before loading a model.

        Raises:
            IndexError: ``i`` out of range.
        """
        value = self.values[i]
        if self.name in _FIELDS:
            return job.replace(**{_FIELDS[self.name]: value}), prompt, negative
        if self.name == "size":
            return job.replace(width=value[0], height=value[1]), prompt, negative
        if i == 0:
            return job, prompt, negative
        search = self.values[0]
        if self.name == "prompt-sr":
            prompt = prompt.replace(search, value)
        return job, prompt, negative.replace(search, value)


def _split_values(text: str) -> list[str]:
    """One or more CSV rows -> the stripped values (A1111's ``csv_string_to_list_strip``)."""
    rows = csv.reader(StringIO(text), skipinitialspace=True)
    return [v.strip() for v in itertools.chain.from_iterable(rows)]


def _expand(raw: str, kind: type, where: str) -> list:
    """One typed-in value of an int or float axis -> its values (a range gives several)."""
    m = _RANGE[kind].fullmatch(raw)
    if m:
        start, end = _number(m.group(1), kind), _number(m.group(2), kind)
        step = _number(m.group(3), kind) if m.group(3) else kind(1)
        if step == 0:
            raise UsageError(f"{where}: the range's step must not be 0")
        n = math.floor((end - start) / step + 1e-9) + 1
        if n < 1:
            hint = " (a descending range needs a negative step such as (-1))" if end < start else ""
            raise UsageError(f"{where}: the range is empty{hint}")
        _check_count(n, where)
        if kind is int:
            return [start + k * step for k in range(n)]
        return [round(start + k * step, FLOAT_DECIMALS) for k in range(n)]
    m = _COUNT[kind].fullmatch(raw)
    if m:
        start, end, n = _number(m.group(1), kind), _number(m.group(2), kind), int(m.group(3))
        if n < 1:
            raise UsageError(f"{where}: the range is empty ([{n}] values)")
        _check_count(n, where)
        # numpy.linspace(start, end, n): k * step + start, the last value exactly `end`.
        if n == 1:
            spread = [float(start)]
        else:
            step = (end - start) / (n - 1)
            spread = [k * step + start for k in range(n - 1)] + [float(end)]
        if kind is int:
            return [int(x) for x in spread]  # truncated toward zero, as A1111's int(x)
        return [round(x, FLOAT_DECIMALS) for x in spread]
    try:
        return [_number(raw, kind)]
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{where}: not {what} or a range such as 1-5, 1-5 (+2) or 10-30 [3]") from None


def _check_count(n: int, where: str) -> None:
    if n > MAX_VALUES:
        raise UsageError(f"{where}: {n} values; an axis takes at most {MAX_VALUES}")


# A Job in which only the axis field can fail: the partner of the steps x strength check is set
# to the value that lets every other value pass, so a value refused here runs nowhere.
_CHECK_BASE = {
    "strength": Job(steps=MAX_STEPS),
    "steps": Job(strength=1.0),
}


def _validate(kind: AxisType, value, where: str) -> None:
    if kind.name == "strength" and 0 < value and int(MAX_STEPS * value) < 1:
        raise UsageError(
            f"{where}: runs no denoising step even at --steps {MAX_STEPS} (int(steps * strength) = 0)"
        )
    base = _CHECK_BASE.get(kind.name, Job())
    if kind.name == "size":
        job = base.replace(width=value[0], height=value[1])
    else:
        job = base.replace(**{_FIELDS[kind.name]: value})
    try:
        job.validate()
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None


def parse_axis(text: str, flag: str) -> Axis:
    """Parse ``AXIS=V1,V2,...`` (the value of ``flag``: ``"--x"``, ``"--y"`` or ``"--z"``).

    ``AXIS`` is a name or alias of :data:`AXES` (case and ``_``/``-`` insensitive). The values
    are one CSV row (quote a value holding a comma: ``scheduler="DPM++ 2M Karras","Euler a"``),
    each stripped of spaces; int and float axes also take ranges (see the module docstring).
    Each value is checked as the matching option would be: ``strength`` in ``(0, 1]``,
    ``guidance`` in ``[0, 100]``, ``steps`` in ``[1, 999]``, ``seed`` in ``[0, 2^32-1]`` or
    ``-1`` (replaced by a drawn seed, distinct from the axis's other seeds), ``scheduler`` a
    known sampler (made canonical), ``size`` ``WxH`` with sides multiples of 8 in
    ``[8, 8192]``, the S/R axes a non-empty search string first (later values may be empty:
    the search string is then removed).

    Raises:
        UsageError: one line naming ``flag`` and the value, when the text has no ``=``, the
            axis is unknown (the known ones are listed), there are no values or a value is
            empty, a value is not of the axis type, a range is empty or has a zero step or
            over :data:`MAX_VALUES` values, a value fails the job's own validation (``--x
            strength=1.5: --strength must be in (0, 1], got 1.5``), a scheduler is unknown or
            a size is malformed.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep:
        raise UsageError(f"{flag}: expected AXIS=V1,V2,... such as strength=0.3,0.5,0.7, got {text!r}")
    kind = AXES.get(name.lower().replace("_", "-"))
    if kind is None:
        raise UsageError(f"{flag} {text}: unknown axis {name!r}; choose one of: {_known()}")
    try:
        raws = _split_values(rest)
    except csv.Error as e:
        raise UsageError(f"{flag} {text}: cannot read the values as CSV: {e}") from None
    if not any(raws):
        raise UsageError(f"{flag} {text}: no values; give one or more, separated by commas")

    values: list = []
    for raw in raws:
        where = f"{flag} {name}={raw}"
        if kind.type in (int, float):
            if not raw:
                raise UsageError(f"{flag} {text}: empty value")
            values.extend(_expand(raw, kind.type, where))
        elif kind.type is tuple:
            values.append(parse_size(raw, where))
        elif kind.name == "scheduler":
            try:
                values.append(canonical_name(raw))
            except UsageError:
                raise UsageError(
                    f"{where}: unknown scheduler {raw!r}; choose one of: {', '.join(SCHEDULERS)}"
                ) from None
        else:
            values.append(raw)
        _check_count(len(values), f"{flag} {text}")

    if kind.name == "seed":
        values = _draw_seeds(values)
    if kind.name in ("prompt-sr", "negative-prompt-sr") and not values[0]:
        raise UsageError(f"{flag} {text}: the first value (the search string) must not be empty")
    if kind.name in _FIELDS or kind.name == "size":
        for value in values:
            _validate(kind, value, f"{flag} {name}={_format(kind.type, value)}")
    return Axis(kind.name, tuple(values), kind.label)


def _draw_seeds(values: list[int]) -> list[int]:
    """Replace each ``-1`` by a random seed not otherwise on the axis (A1111: ``fix_axis_seeds``)."""
    taken = {v for v in values if v != -1}
    out = []
    for v in values:
        if v == -1:
            while (v := random_seed()) in taken:
                pass
            taken.add(v)
        out.append(v)
    return out


def check_prompt_sr(axis: Axis, prompt: str, negative: str, flag: str) -> None:
    """Refuse an S/R axis whose search string (its first value) cannot be found.

    ``prompt-sr`` needs it in ``prompt`` or ``negative`` (A1111's ``apply_prompt``: "Prompt
    S/R did not find {x} in prompt or negative prompt."), ``negative-prompt-sr`` in
    ``negative``. The match is case-sensitive, as ``str.replace`` is. Other axes pass.

    Raises:
        UsageError: naming ``flag`` and the search string.
    """
    if axis.name not in ("prompt-sr", "negative-prompt-sr"):
        return
    search = axis.values[0]
    if axis.name == "prompt-sr":
        if search in prompt or search in negative:
            return
        where = "prompt or negative prompt"
    else:
        if search in negative:
            return
        where = "negative prompt"
    raise UsageError(f"{flag} {axis.name}={search}: {axis.label} did not find {search!r} in the {where}")


def cells(axes: list[Axis]) -> list[tuple[int, ...]]:
    """Every cell of the plot as value indices ``(ix, iy, iz)`` (one per axis), in A1111's
    order: the first axis fastest, then the second, then the third (image
    ``ix + iy*nx + iz*nx*ny`` of ``draw_xyz_grid``). No axes give one cell ``()``."""
    ranges = [range(len(a.values)) for a in reversed(axes)]
    return [tuple(reversed(t)) for t in itertools.product(*ranges)]


def count(axes: list[Axis]) -> int:
    """The number of cells: the product of the axes' value counts (1 for no axes)."""
    return math.prod(len(a.values) for a in axes)

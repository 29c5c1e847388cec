"""Per-image jobs: a CSV or JSONL file listing inputs with per-row overrides.

Columns (CSV header) or keys (JSONL objects), all but ``input`` optional; an empty cell
means "use the command-line value":

=================  ==========================================================
``input``          image path, relative to the jobs file's folder
``prompt``         prompt (a ``--style`` still wraps it)
``negative_prompt`` negative prompt
``seed``           seed, 0 .. 2**32-1
``strength``       denoising strength, 0 < s <= 1
``steps``          scheduler steps, >= 1
``guidance_scale`` CFG scale (also ``guidance``, ``cfg_scale``)
``output``         output name, relative to the output folder (no ``..``, not absolute)
``mask``           inpainting mask, relative to the jobs file's folder (needs ``--mask``)
=================  ==========================================================

Every row is validated before the model loads; an error names the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from .config import Job, NoDenoisingStep
from .errors import UsageError
from .io import display

COLUMNS = {
    "input": "input",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "negative": "negative_prompt",
    "seed": "seed",
    "strength": "strength",
    "denoising_strength": "strength",
    "steps": "steps",
    "guidance_scale": "guidance_scale",
    "guidance": "guidance_scale",
    "cfg_scale": "guidance_scale",
    "output": "output",
    "mask": "mask",
}
_CASTS = {"seed": int, "strength": float, "steps": int, "guidance_scale": float}


@dataclass(frozen=True)
class JobRow:
    """One validated row: its input file, its overrides, optional output name, and line number."""

    input: Path
    overrides: dict = field(default_factory=dict)
    output: PurePath | None = None
    line: int = 0
    mask: Path | None = None
    steps_error: str = ""


def safe_relative(name: str, where: str) -> PurePath:
    """``name`` as a relative path that stays inside the output folder.

    Raises:
        UsageError: empty, absolute (``/x``, ``C:\\x``), or containing ``..``.
    """
    text = name.replace("\\", "/")
    p = PurePath(text)
    if not text.strip() or p.is_absolute() or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UsageError(f"{where}: output {name!r} must be a relative path inside the output folder")
    if any(part in ("..", "") for part in text.split("/")) or p.name in (".", ""):
        raise UsageError(f"{where}: output {name!r} must not contain '..' or empty parts")
    return p


def _row(raw: dict, where: str, base: Path, job: Job) -> JobRow:
    values: dict = {}
    for key, value in raw.items():
        if key is None:
            raise UsageError(f"{where}: more cells than header columns")
        norm = COLUMNS.get(str(key).strip().lower().replace(" ", "_").replace("-", "_"))
        if norm is None:
            raise UsageError(f"{where}: unknown column {key!r} (known: {', '.join(sorted(set(COLUMNS.values())))})")
        if value is None or (isinstance(value, str) and value.strip() == "" and norm not in ("prompt", "negative_prompt")):
            continue
        if norm in _CASTS:
            try:
                cast = _CASTS[norm]
                if isinstance(value, bool) or (cast is int and isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = cast(value.strip() if isinstance(value, str) else value)
            except (TypeError, ValueError):
                raise UsageError(f"{where}: {norm} {value!r} is not a number") from None
        elif not isinstance(value, str):
            raise UsageError(f"{where}: {norm} must be text, got {value!r}")
        values[norm] = value
    if "input" not in values:
        raise UsageError(f"{where}: no input")
    path = Path(values.pop("input"))
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise UsageError(f"{where}: input {display(path)}: no such file")
    output = values.pop("output", None)
    out = safe_relative(output, where) if output is not None else None
    mask = values.pop("mask", None)
    if mask is not None:
        mask = Path(mask) if Path(mask).is_absolute() else base / mask
        if not mask.is_file():
            raise UsageError(f"{where}: mask {display(mask)}: no such file")
    steps_error = ""
    try:
        job.replace(**values).validate()
    except NoDenoisingStep as e:  # an error unless the model has no strength: the core decides
        steps_error = f"{where}: {e}"
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    return JobRow(path, values, out, mask=mask, steps_error=steps_error)


def load_jobs(path: Path, job: Job) -> list[JobRow]:
    """Read and validate every row of a ``.csv`` or ``.jsonl`` jobs file.

    Both are read as UTF-8 (a leading byte order mark is ignored) and the text of every cell
    or JSON string is kept exactly, line breaks included:

    - CSV (``.csv``): the :mod:`csv` module over the file opened with ``newline=""`` (as the
      module's documentation requires), excel dialect, ``strict=True``. A quoted cell may
      span several lines (``"a cat\non a mat"``) and may hold any character (U+2028 LINE
      SEPARATOR, U+0085, form feed...); rows end only at an unquoted ``\n``, ``\r\n`` or ``\r``.
      The first row is the header; rows with only empty cells are skipped. An error names
      the line on which the row *starts* (a multi-line row spans more).
    - JSONL (``.jsonl``, ``.ndjson``, ``.json``): one JSON object per line, lines split on
      ``\n`` only (a trailing ``\r`` is dropped), so U+2028 and the other characters
      :meth:`str.splitlines` would split on stay inside their string; blank lines are skipped.

    Args:
        job: the command-line job; each row's overrides are validated against it.

    Raises:
        UsageError: unreadable file, unknown extension, malformed CSV (e.g. a quote that is
            never closed) or JSON, or a bad row; the message names the file and line
            (``--jobs FILE line N: ...``).
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, job)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(path, job)
    else:
        raise UsageError(f"--jobs {display(path)}: expected a .csv or .jsonl file")
    if not rows:
        raise UsageError(f"--jobs {display(path)}: no rows")
    return rows


def _cannot_read(path: Path, e: Exception) -> UsageError:
    return UsageError(f"--jobs {display(path)}: cannot read ({e.__class__.__name__}: {e})")


def _csv_rows(path: Path, job: Job) -> list[JobRow]:
    base = path.parent
    rows: list[JobRow] = []
    start = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            try:
                # A plain csv.reader, not DictReader: DictReader skips blank lines inside
                # __next__, which would hide where a row starts. Every reader row (blank
                # ones included, as []) covers the lines after the previous row's last one,
                # so a row starts on line (reader.line_num before reading it) + 1 and ends on
                # reader.line_num after. Messages give the start line.
                header = next(reader, None)
                if not header or "input" not in [h.strip().lower() for h in header]:
                    raise UsageError(f"--jobs {display(path)} line 1: the header must have an 'input' column")
                while True:
                    start = reader.line_num + 1
                    cells = next(reader, None)
                    if cells is None:
                        break
                    if not any(c.strip() for c in cells):
                        continue
                    where = f"--jobs {display(path)} line {start}"
                    # What csv.DictReader builds: missing cells None, extra cells under key None.
                    raw: dict = dict(zip(header, cells))
                    for name in header[len(cells) :]:
                        raw.setdefault(name, None)
                    if len(cells) > len(header):
                        raw[None] = cells[len(header) :]
                    r = _row(raw, where, base, job)
                    rows.append(JobRow(r.input, r.overrides, r.output, start, r.mask, r.steps_error))
            except csv.Error as e:
                raise UsageError(f"--jobs {display(path)} line {start}: {_csv_error(e, start, reader.line_num)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _cannot_read(path, e) from None
    return rows


def _csv_error(e: csv.Error, start: int, end: int) -> str:
    """A csv.Error as message text; a row read past its start line hints at an open quote."""
    if end > start:
        return f"bad CSV ({e}) in the row read from this line to line {end}; is a quote left open?"
    return f"bad CSV ({e})"


def _jsonl_rows(path: Path, job: Job) -> list[JobRow]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise _cannot_read(path, e) from None
    base = path.parent
    rows: list[JobRow] = []
    for line, raw_line in enumerate(text.split("\n"), 1):
        raw_line = raw_line.removesuffix("\r")
        if not raw_line.strip():
            continue
        where = f"--jobs {display(path)} line {line}"
        try:
            raw = json.loads(raw_line)
        except ValueError as e:
            raise UsageError(f"{where}: not JSON ({e})") from None
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a JSON object")
        r = _row(raw, where, base, job)
        rows.append(JobRow(r.input, r.overrides, r.output, line, r.mask, r.steps_error))
    return rows

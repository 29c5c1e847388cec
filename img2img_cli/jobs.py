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
=================  ==========================================================

Every row is validated before the model loads; an error names the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from .config import Job
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
}
_CASTS = {"seed": int, "strength": float, "steps": int, "guidance_scale": float}


@dataclass(frozen=True)
class JobRow:
    """One validated row: its input file, its overrides, optional output name, and line number."""

    input: Path
    overrides: dict = field(default_factory=dict)
    output: PurePath | None = None
    line: int = 0


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
    try:
        job.replace(**values).validate()
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    return JobRow(path, values, out)


def load_jobs(path: Path, job: Job) -> list[JobRow]:
    """Read and validate every row of a ``.csv`` or ``.jsonl`` jobs file.

    Args:
        job: the command-line job; each row's overrides are validated against it.

    Raises:
        UsageError: unreadable file, unknown extension, or a bad row (``FILE line N: ...``).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--jobs {display(path)}: cannot read ({e})") from None
    base = path.parent
    rows: list[JobRow] = []
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "input" not in [f.strip().lower() for f in reader.fieldnames]:
            raise UsageError(f"--jobs {display(path)} line 1: the header must have an 'input' column")
        for raw in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue
            r = _row(raw, f"--jobs {display(path)} line {line}", base, job)
            rows.append(JobRow(r.input, r.overrides, r.output, line))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        for line, raw_line in enumerate(text.splitlines(), 1):
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
            rows.append(JobRow(r.input, r.overrides, r.output, line))
    else:
        raise UsageError(f"--jobs {display(path)}: expected a .csv or .jsonl file")
    if not rows:
        raise UsageError(f"--jobs {display(path)}: no rows")
    return rows

"""Style presets: text files and AUTOMATIC1111 ``styles.csv`` files that wrap the user's prompt.

Preset file format (``NAME.txt``; one ``key: value`` per line; ``#`` starts a comment line;
a value may continue on following indented lines)::

    # watercolor.txt
    prompt: watercolor painting of {prompt}, soft washes, visible paper texture
    negative: photo, photorealistic, harsh lines

``{prompt}`` is replaced by the user's ``--prompt`` (and, in ``negative``, by the user's
``--negative-prompt``). A template without the placeholder gets the user's text joined in
front with ``", "``, as AUTOMATIC1111's styles do (``modules/styles.py: merge_prompts``).

``styles.csv`` format, as AUTOMATIC1111's stable-diffusion-webui (A1111) reads and writes it
(repository AUTOMATIC1111/stable-diffusion-webui, ``modules/styles.py``, ``StyleDatabase``,
commit 04b4508a66de58c9f3a422fdcad4dd2ec3ad39ce: ``open(path, "r", encoding="utf-8-sig",
newline='')``, ``csv.DictReader(file, skipinitialspace=True)``, ``row["prompt"] if "prompt"
in row else row["text"]``, ``row.get("negative_prompt", "")``, later rows replacing earlier
ones of the same name)::

    name,prompt,negative_prompt
    Cinematic,"cinematic still of {prompt}, shallow depth of field","cartoon, drawing"
    Film grain,"film grain, 35mm",

A header row naming the columns ``name``, ``prompt`` (or A1111's old ``text``) and
optionally ``negative_prompt``, in any order; other columns are ignored. Cells are CSV
(excel dialect, spaces after a comma skipped, quoted cells may span lines); each row is
one style; a blank row or one with an empty name is skipped; a row with fewer cells than
the header has empty ones. The prompt and negative prompt are templates exactly like a
preset file's ``prompt`` and ``negative``.

Where ``--style NAME`` looks, first match wins:

1. ``NAME.txt`` in the folders of :func:`styles_dirs`, in that order;
2. a row of the ``--styles-file`` CSV (``styles_file``), if given;
3. a row of a ``styles.csv`` in the folders of :func:`styles_dirs`, in that order.

So a ``.txt`` preset takes precedence over a CSV row of the same name (with a warning when
the row is in the ``--styles-file``), and within one CSV the last row of a name wins, as in
A1111.
"""

from __future__ import annotations

import csv
import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .io import display

PLACEHOLDER = "{prompt}"
STYLES_CSV = "styles.csv"
_FLAG_FILE = "--styles-file"
_FLAG_STYLE = "--style"
_MAX_LISTED = 30  # names an "unknown style" message lists before "... and N more"

log = logging.getLogger("img2img_cli")


def styles_dirs() -> list[Path]:
    """Folders searched for ``--style NAME``, in order (later duplicates dropped):

    1. ``$IMG2IMG_PROMPTS_DIR``, when set;
    2. ``./prompts`` (the current directory's);
    3. the prompts shipped with the package (``importlib.resources``: the package
       ``img2img_cli.prompts``, which the wheel and an editable install build from the
       project's top-level ``prompts/``); when that package cannot be imported, as when
       running from a source checkout put on ``sys.path`` without installing it, the
       checkout's ``prompts/`` next to ``img2img_cli/`` instead.
    """
    dirs = []
    env = os.environ.get("IMG2IMG_PROMPTS_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "prompts")
    packaged = _packaged_prompts()
    if packaged is not None:
        dirs.append(packaged)
    else:
        root = Path(__file__).resolve().parent.parent
        if (root / "pyproject.toml").is_file() and (root / "prompts").is_dir():
            dirs.append(root / "prompts")
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _packaged_prompts() -> Path | None:
    """The folder of the ``img2img_cli.prompts`` package, or ``None`` if not importable or
    not a plain folder (a zip import)."""
    from importlib.resources import files

    try:
        where = files("img2img_cli.prompts")
    except ImportError:  # ModuleNotFoundError: a source checkout on sys.path
        return None
    return where if isinstance(where, Path) and where.is_dir() else None


@dataclass(frozen=True)
class Style:
    """A parsed preset: ``prompt`` and ``negative`` templates (may contain ``{prompt}``)."""

    name: str
    prompt: str = PLACEHOLDER
    negative: str = ""

    def apply(self, prompt: str, negative_prompt: str) -> tuple[str, str]:
        """The user's ``(prompt, negative_prompt)`` put through the templates."""
        return _merge(self.prompt, prompt), _merge(self.negative, negative_prompt)


def _merge(template: str, text: str) -> str:
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, text)
    if not template:
        return text
    if not text:
        return template
    return f"{text}, {template}"


def parse_style(text: str, name: str, flag: str) -> Style:
    """Parse a preset file's text.

    Raises:
        UsageError: a line that is not ``key: value`` or an unknown key, naming ``flag``
            and the line number.
    """
    fields: dict[str, str] = {}
    last = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if raw[:1] in (" ", "\t") and last is not None:
            fields[last] = f"{fields[last]} {line.strip()}".strip()
            continue
        key, sep, value = line.partition(":")
        key = key.strip().lower().replace(" ", "_")
        if key in ("negative_prompt", "negative"):
            key = "negative"
        if not sep or key not in ("prompt", "negative"):
            raise UsageError(f"{flag} {name}: line {n}: expected `prompt: ...` or `negative: ...`, got {line!r}")
        fields[key] = value.strip()
        last = key
    return Style(name=name, prompt=fields.get("prompt", PLACEHOLDER), negative=fields.get("negative", ""))


# A parsed styles.csv by (resolved path, mtime_ns, size): `img2img styles` loads every
# style by name, and an A1111 styles.csv may hold hundreds.
_CSV_CACHE: dict[tuple, dict[str, Style]] = {}


def read_styles_csv(path: Path, flag: str = _FLAG_FILE) -> dict[str, Style]:
    """The styles of an A1111 ``styles.csv`` (format in the module docstring), name -> style,
    in file order.

    Args:
        flag: what error messages start with (``--styles-file`` for the explicit file,
            ``--style`` for a ``styles.csv`` found in :func:`styles_dirs`).

    Raises:
        UsageError: one line, ``{flag} FILE[ line N]: ...``: the file cannot be read or is
            not UTF-8; the header has no ``name`` or no ``prompt``/``text`` column; bad CSV
            (a quote left open or text after a closing quote), naming the line where the
            row starts.
    """
    where = f"{flag} {display(path)}"
    try:
        st = path.stat()
        key = (path.resolve(), st.st_mtime_ns, st.st_size)
        if key in _CSV_CACHE:
            return _CSV_CACHE[key]
        styles: dict[str, Style] = {}
        start = 1
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, skipinitialspace=True, strict=True)
            try:
                header = [h.strip().lower() for h in next(reader, None) or []]
                if "name" not in header or not ({"prompt", "text"} & set(header)):
                    raise UsageError(f"{where} line 1: the header must name the columns name,prompt,negative_prompt (A1111 styles.csv)")
                col_name = header.index("name")
                col_prompt = header.index("prompt" if "prompt" in header else "text")
                col_negative = header.index("negative_prompt") if "negative_prompt" in header else None
                while True:
                    # As in jobs.py: a plain csv.reader yields every row, blank ones as [], so
                    # a row starts on (reader.line_num before reading it) + 1. Messages give
                    # the start line.
                    start = reader.line_num + 1
                    cells = next(reader, None)
                    if cells is None:
                        break
                    name = _cell(cells, col_name)
                    if not name.strip():
                        continue
                    styles[name] = Style(name=name, prompt=_cell(cells, col_prompt), negative=_cell(cells, col_negative))
            except csv.Error as e:
                hint = f" in the row read from this line to line {reader.line_num}; is a quote left open?" if reader.line_num > start else ""
                raise UsageError(f"{where} line {start}: bad CSV ({e}){hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: cannot read ({e.__class__.__name__}: {e})") from None
    _CSV_CACHE[key] = styles
    return styles


def _cell(cells: list[str], i: int | None) -> str:
    return cells[i] if i is not None and i < len(cells) else ""


def _txt_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in styles_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.txt")):
                found.setdefault(f.stem, f)
    return found


def _csv_sources(styles_file: Path | None) -> list[tuple[Path, str]]:
    """The CSV files to consult, in order, with the flag their errors name."""
    sources = [(Path(styles_file), _FLAG_FILE)] if styles_file is not None else []
    sources += [(d / STYLES_CSV, _FLAG_STYLE) for d in styles_dirs() if (d / STYLES_CSV).is_file()]
    return sources


def list_styles(styles_file: Path | None = None) -> dict[str, Path]:
    """Every style ``--style`` can name, name -> the file defining it (a ``NAME.txt`` preset,
    the ``styles_file`` CSV or a ``styles.csv``), first match in the order of the module
    docstring; sorted by name.

    Raises:
        UsageError: ``styles_file`` or a ``styles.csv`` found cannot be read or is not an
            A1111 styles CSV (see :func:`read_styles_csv`).
    """
    found: dict[str, Path] = dict(_txt_presets())
    for path, flag in _csv_sources(styles_file):
        for name in read_styles_csv(path, flag):
            found.setdefault(name, path)
    return dict(sorted(found.items(), key=lambda kv: (kv[0].casefold(), kv[0])))


def load_style(name: str, styles_file: Path | None = None) -> Style:
    """The style ``name``, looked up as the module docstring says: ``NAME.txt`` in
    :func:`styles_dirs`, then a row of ``styles_file`` (``--styles-file``), then a row of a
    ``styles.csv`` in :func:`styles_dirs`.

    ``styles_file`` is always read, so that an unreadable or malformed file is an error
    even when a ``.txt`` preset answers; a row of it shadowed by a ``.txt`` preset of the
    same name logs a warning.

    Raises:
        UsageError: unknown name (the message lists the styles found, closest first), a
            malformed preset, or a bad ``styles_file`` or ``styles.csv``.
    """
    explicit = read_styles_csv(Path(styles_file), _FLAG_FILE) if styles_file is not None else {}
    txt = _txt_presets().get(name)
    if txt is not None:
        if name in explicit:
            log.warning("%s %s: style %r is shadowed by %s (a .txt preset wins)", _FLAG_FILE, display(styles_file), name, display(txt))
        try:
            text = txt.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{_FLAG_STYLE} {name}: {display(txt)}: cannot read ({e.__class__.__name__}: {e})") from None
        return parse_style(text, name, _FLAG_STYLE)
    if name in explicit:
        return explicit[name]
    for path, flag in _csv_sources(None):
        styles = read_styles_csv(path, flag)
        if name in styles:
            return styles[name]
    raise UsageError(f"{_FLAG_STYLE}: unknown style {name!r}; {_available(name, list_styles(styles_file))}")


def _available(name: str, styles: dict[str, Path]) -> str:
    if not styles:
        return "no styles found (see `img2img styles`)"
    names = list(styles)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    ordered = close + [n for n in names if n not in close]
    shown = ", ".join(ordered[:_MAX_LISTED])
    more = f" ... and {len(ordered) - _MAX_LISTED} more (see `img2img styles`)" if len(ordered) > _MAX_LISTED else ""
    return f"available: {shown}{more}"


def load_prompt_file(path: Path) -> Style:
    """A preset from an explicit file (``--prompt-file``).

    Raises:
        UsageError: missing or unreadable file, or bad syntax.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompt-file {path}: cannot read ({e.__class__.__name__}: {e})") from None
    return parse_style(text, str(path), "--prompt-file")

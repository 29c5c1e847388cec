"""Style presets: small text files in ``prompts/`` that wrap the user's prompt.

Format (one ``key: value`` per line; ``#`` starts a comment line; a value may continue on
following indented lines)::

    # watercolor.txt
    prompt: watercolor painting of {prompt}, soft washes, visible paper texture
    negative: photo, photorealistic, harsh lines

``{prompt}`` is replaced by the user's ``--prompt`` (and, in ``negative``, by the user's
``--negative-prompt``). A template without the placeholder gets the user's text joined in
front with ``", "``, as AUTOMATIC1111's styles do (``modules/styles.py: apply_styles_to_prompt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

PLACEHOLDER = "{prompt}"


def styles_dirs() -> list[Path]:
    """Folders searched for ``--style NAME``: ``$IMG2IMG_PROMPTS_DIR``, ``./prompts``, and the
    project's ``prompts/`` next to the package."""
    dirs = []
    env = os.environ.get("IMG2IMG_PROMPTS_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "prompts")
    dirs.append(Path(__file__).resolve().parent.parent / "prompts")
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


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


def list_styles() -> dict[str, Path]:
    """Every preset found, name -> file (the first folder of :func:`styles_dirs` wins)."""
    found: dict[str, Path] = {}
    for d in styles_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.txt")):
                found.setdefault(f.stem, f)
    return found


def load_style(name: str) -> Style:
    """The preset ``name`` (file ``<name>.txt`` in :func:`styles_dirs`).

    Raises:
        UsageError: unknown name (the message lists the presets found).
    """
    styles = list_styles()
    if name not in styles:
        raise UsageError(f"--style: unknown style {name!r}; available: {', '.join(sorted(styles)) or 'none'}")
    return parse_style(styles[name].read_text(encoding="utf-8"), name, "--style")


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

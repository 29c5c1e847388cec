"""Generation parameters in and out of image files, in AUTOMATIC1111's *infotext* format.

An infotext is the text AUTOMATIC1111's stable-diffusion-webui (A1111) stores in every
image it writes and shows in its "PNG Info" tab::

    a watercolor painting of a cat
    Negative prompt: blurry
    Steps: 30, Sampler: PNDM, CFG scale: 7.5, Seed: 42, Size: 512x336, Model: tiny

The prompt (possibly several lines), then a ``Negative prompt:`` line only when there is
a negative prompt (it may continue on the following lines), then one line of
``Key: value`` pairs joined by ``", "``.

Sources followed here (repository AUTOMATIC1111/stable-diffusion-webui):

- ``modules/processing.py``, ``create_infotext`` (commit 0027ce1f6e58c5f4279173e468a60aef420babfe):
  ``", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in generation_params.items()
  if v is not None])``; ``negative_prompt_text = f"\\nNegative prompt: {negative_prompt}"
  if negative_prompt else ""``; ``return f"{prompt_text}{negative_prompt_text}\\n
  {generation_params_text}".strip()``.
- ``modules/infotext_utils.py`` (commit 036500223de0a3caaa86360a8ad3ed301e4367b0; the
  module was ``modules/generation_parameters_copypaste.py`` before, and still registers
  itself under that name): ``quote``, ``unquote``, ``re_param_code`` and
  ``parse_generation_parameters``.

The file side (PNG text chunk, EXIF UserComment) is :mod:`img2img_cli.metadata`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

__all__ = ["RE_PARAM_CODE", "append_params", "format_infotext", "parse_infotext"]

#: A1111's ``re_param_code`` (``modules/infotext_utils.py``), verbatim: one ``Key: value``
#: pair of the parameters line. :func:`parse_infotext` does not run it (``re.findall`` with
#: it takes quadratic time on long lines without a colon, about 17 s for 40,000 letters)
#: but finds exactly the pairs ``re.findall(RE_PARAM_CODE, line)`` would, in linear time;
#: the tests check the two against each other.
RE_PARAM_CODE = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'

# A1111's re_imagesize: a value like "512x768" also yields "<key>-1" and "<key>-2".
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
# What re_param_code accepts as a key; format_infotext only writes keys that match it whole.
_RE_KEY = re.compile(r"\w[\w \-/]+")
# Building blocks of the linear-time scanner (same classes as re_param_code).
_RE_SPACES = re.compile(r"\s*")
_RE_KEY_RUN = re.compile(r"\w[\w \-/]*")
# Characters format_infotext quotes in values beyond A1111's ",", "\n" and ":".
_RE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_NEGATIVE_MARKER = "Negative prompt:"
# Parameters-line keys that carry the exact prompt / negative prompt (see format_infotext).
_PROMPT_KEY = "Prompt"
_NEGATIVE_KEY = "Negative prompt"
_RESERVED_KEYS = frozenset({_PROMPT_KEY, _NEGATIVE_KEY, "prompt", "negative_prompt"})
_MIN_PARAMS = 3  # parse_generation_parameters: `if len(re_param.findall(lastline)) < 3`


def _a1111_quote(value: str) -> str:
    """A value as written in the parameters line.

    A1111's ``quote()``: a value containing ``,``, ``\\n`` or ``:`` becomes
    ``json.dumps(value, ensure_ascii=False)``. We also JSON-quote the values A1111 would
    write bare but could not read back unchanged: the empty string (A1111's parser drops
    an empty value), a value with leading or trailing whitespace (``:\\s*`` and the final
    ``strip()`` eat it) and one starting with ``"`` (A1111 would ``json.loads`` it); and,
    so that no raw control character ends up in the parameters line, one containing a
    control character. A1111 reads all of these back correctly, since its parser unquotes
    any value in double quotes.
    """
    if (
        "," in value
        or "\n" in value
        or ":" in value
        or value == ""
        or value != value.strip()
        or value.startswith('"')
        or _RE_CONTROL.search(value)
    ):
        return json.dumps(value, ensure_ascii=False)
    return value


def _a1111_unquote(text: str) -> str:
    """A1111's ``unquote()``: ``json.loads`` a value in double quotes, else keep it."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _quote_stops(line: str) -> list[int]:
    """``stops[p]``: where ``(?:\\\\.|[^\\\\"])*`` matching from ``p`` stops (no backtracking needed)."""
    n = len(line)
    stops = [n] * (n + 2)
    for p in range(n - 1, -1, -1):
        c = line[p]
        if c == '"':
            stops[p] = p
        elif c == "\\":
            stops[p] = stops[p + 2] if p + 1 < n else p
        else:
            stops[p] = stops[p + 1]
    return stops


def _find_params(line: str) -> list[tuple[str, str]]:
    """``re.findall(RE_PARAM_CODE, line)`` for a ``line`` without ``"\\n"``, in linear time.

    How the regex behaves, and why this is the same: at a start position, ``\\s*`` skips
    whitespace; the key must then start with a word character, and ``[\\w \\-/]+`` runs to
    the end E of the run of key characters, which must be followed by ``:`` (no shorter key
    can be, since ``:`` is not a key character). If not, no start inside that run can match
    either (a start there ends its key at the same E, or, from trailing spaces, behaves
    like a start at E), so scanning resumes at E. After the colon and ``\\s*``, a value
    starting with ``"`` is taken whole if its closing quote is followed by ``,`` or the end
    of the line; otherwise ``[^,]*`` takes everything up to the next comma, which always
    succeeds. Precomputed stop positions of the quoted-string scan keep that linear too.
    """
    n = len(line)
    out: list[tuple[str, str]] = []
    stops: list[int] | None = None
    pos = 0
    while pos < n:
        q = _RE_SPACES.match(line, pos).end()
        m = _RE_KEY_RUN.match(line, q)
        if m is None:
            pos = q + 1
            continue
        e = m.end()
        if e - q < 2 or e >= n or line[e] != ":":
            pos = e
            continue
        vs = _RE_SPACES.match(line, e + 1).end()
        value = None
        if vs < n and line[vs] == '"':
            if stops is None:
                stops = _quote_stops(line)
            close = stops[vs + 1]
            if vs + 1 < close < n and line[close] == '"' and (close + 1 == n or line[close + 1] == ","):
                value = line[vs : close + 1]
                end = close + 2
        if value is None:
            comma = line.find(",", vs)
            if comma < 0:
                value, end = line[vs:], n
            else:
                value, end = line[vs:comma], comma + 1
        out.append((line[q:e], value))
        pos = end
    return out


def _split_infotext(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Prompt, negative prompt and raw ``(key, value)`` pairs, exactly as A1111 splits them.

    ``parse_generation_parameters``: ``*lines, lastline = x.strip().split("\\n")``; the last
    line is the parameters line only if it holds at least 3 pairs. Every other line is
    stripped; the first one starting with ``Negative prompt:`` (and any later one, minus
    that prefix) goes to the negative prompt; lines are joined with ``"\\n"``, except that
    empty lines before the first non-empty one are dropped.
    """
    *lines, lastline = text.strip().split("\n")
    pairs = _find_params(lastline)
    if len(pairs) < _MIN_PARAMS:
        lines.append(lastline)
        pairs = []
    prompt: list[str] = []
    negative: list[str] = []
    done_with_prompt = False
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE_MARKER):
            done_with_prompt = True
            line = line[len(_NEGATIVE_MARKER) :].strip()
        target = negative if done_with_prompt else prompt
        if target or line:
            target.append(line)
    return "\n".join(prompt), "\n".join(negative), pairs


def _format_params(params: Mapping[str, object]) -> tuple[list[str], int]:
    """The ``Key: value`` texts of ``params`` as :func:`format_infotext` writes them, and how
    many are pairs (bare keys and ``None`` values do not count).

    Raises:
        ValueError: a key A1111's parser cannot read back (see :func:`format_infotext`).
    """
    parts: list[str] = []
    pairs = 0
    for key, value in params.items():
        if not isinstance(key, str) or _RE_KEY.fullmatch(key) is None:
            raise ValueError(
                f"infotext key {key!r}: must be 2 or more letters, digits, '_', ' ', '-' or '/', "
                "starting with a letter, digit or '_'"
            )
        if key in _RESERVED_KEYS:
            raise ValueError(f"infotext key {key!r} is reserved for the prompt")
        if value is None:
            continue
        if isinstance(value, str) and key == value:  # A1111: `k if k == v else ...`
            parts.append(key)
            continue
        parts.append(f"{key}: {_a1111_quote(str(value))}")
        pairs += 1
    return parts, pairs


def append_params(text: str, params: Mapping[str, object]) -> str | None:
    """``text`` with ``params`` added at the end of its parameters line, or ``None`` when
    ``text`` has no parameters line (fewer than 3 ``Key: value`` pairs on its last line).

    What A1111's Extras tab does to a generated image's parameters (``modules/postprocessing.py``
    keeps the source's infotext and adds its own ``Postprocess ...`` keys): everything already
    in ``text`` is kept byte for byte (trailing whitespace aside), so :func:`parse_infotext`
    reads back the same prompt, negative prompt and parameters, plus ``params``; a key already
    there takes the new value.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: a key of ``params`` A1111 cannot read back (see :func:`format_infotext`).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    parts, _ = _format_params(params)
    if not _split_infotext(text)[2]:
        return None
    return f"{text.rstrip()}, {', '.join(parts)}" if parts else text.rstrip()


def format_infotext(prompt: str, negative_prompt: str | None, params: Mapping[str, object]) -> str:
    """The A1111 infotext for one image, as ``modules/processing.py: create_infotext`` writes it.

    Args:
        prompt: the prompt, any text (several lines allowed, may be empty).
        negative_prompt: the negative prompt; ``None`` or ``""`` for none, in which case no
            ``Negative prompt:`` line is written (A1111: ``if negative_prompt``).
        params: the parameters line, in this order, e.g. ``{"Steps": 30, "Sampler": "Euler a",
            "Schedule type": "Karras", "CFG scale": "7", "Seed": 42, "Size": "512x512",
            "Model": "v1-5", "Denoising strength": 0.75}``. Values are written with ``str()``
            (A1111 formats the object with an f-string, the same for numbers, strings and
            booleans); a ``None`` value is left out and a value equal to its key is written
            as the bare key, both as A1111 does. Values are quoted with A1111's ``quote()``
            rule (JSON string when they contain ``,``, ``\\n`` or ``:``), extended to the few
            values A1111 could not read back (see below).

    Returns:
        ``f"{prompt}{negative_line}\\n{params_line}".strip()``, byte for byte what A1111
        writes for the same prompt, negative prompt and parameters whenever A1111 itself
        could read them back (see "Exact round trip" for the other cases).

    Raises:
        TypeError: ``prompt`` is not a ``str``, ``negative_prompt`` neither ``str`` nor
            ``None``, or ``params`` not a mapping.
        ValueError: a key A1111's parser cannot read back: one that does not match
            ``\\w[\\w \\-/]+`` as a whole (at least 2 characters; letters, digits, ``_``,
            space, ``-``, ``/``; starting with a letter, digit or ``_``), or a reserved key
            (``Prompt``, ``Negative prompt``, ``prompt``, ``negative_prompt``); or fewer than
            3 ``Key: value`` pairs (after dropping ``None`` values and bare keys): A1111's
            parser takes the last line as the parameters line only with at least 3 pairs
            and would read a shorter one back as part of the prompt.

    Exact round trip: ``parse_infotext(format_infotext(p, n, params))`` gives back ``p`` and
    ``n or ""`` exactly, for every string, and every parameter value as ``str(value)``,
    except the ``None`` values and the bare keys (value equal to key) that A1111's format
    drops. A1111's plain format loses some prompts, because its parser strips the whole
    text and every line, drops empty lines before the first non-empty one, and starts the
    negative prompt at any line starting with ``Negative prompt:``. Exactly when the plain
    text would not parse back (this function checks, with the same parser), the exact
    strings are added at the end of the parameters line as JSON-quoted pairs:

    - ``Prompt: "..."`` when a line of the prompt has leading or trailing whitespace
      (``str.strip``: spaces, tabs, the ``"\\r"`` of CRLF line ends, whitespace-only lines...),
      when the prompt starts with an empty line (``"\\nabc"``), or when a line of it, once
      stripped, starts with ``Negative prompt:``;
    - ``Negative prompt: "..."`` in the same three cases for the negative prompt, except
      that its first line may start with ``Negative prompt:`` (it is written after that
      prefix, which the parser removes once); and also when a prompt line starts with
      ``Negative prompt:`` and that line or a later one of the prompt holds more than
      whitespace and such line-leading markers (the parser would move that text into the
      negative prompt).

    A1111's own parser also reads these pairs: its ``parse_generation_parameters`` stores
    ``res["Prompt"]`` and ``res["Negative prompt"]`` before the parameter pairs, so a pair of
    that name replaces them with the exact text. The human-readable lines stay as A1111
    would write them. Parameter values A1111 would write bare but could not read back
    unchanged (empty, leading or trailing whitespace, starting with ``"``), and values
    containing a control character, are JSON-quoted too; A1111 reads those back correctly.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a str or None, not {type(negative_prompt).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping, not {type(params).__name__}")
    negative = negative_prompt or ""

    parts, pairs = _format_params(params)
    if pairs < _MIN_PARAMS:
        raise ValueError(
            f"infotext needs at least {_MIN_PARAMS} 'Key: value' parameters (A1111 reads a shorter "
            f"parameters line as part of the prompt), got {pairs}"
        )

    negative_text = f"\n{_NEGATIVE_MARKER} {negative}" if negative else ""
    text = f"{prompt}{negative_text}\n{', '.join(parts)}".strip()

    parsed_prompt, parsed_negative, _ = _split_infotext(text)
    exact = []
    if parsed_prompt != prompt:
        exact.append(f"{_PROMPT_KEY}: {json.dumps(prompt, ensure_ascii=False)}")
    if parsed_negative != negative:
        exact.append(f"{_NEGATIVE_KEY}: {json.dumps(negative, ensure_ascii=False)}")
    if exact:
        text = f"{text}, {', '.join(exact)}"
    return text


def parse_infotext(text: str) -> dict[str, object]:
    """The prompt, negative prompt and parameters of an infotext (A1111's ``parse_generation_parameters``).

    Args:
        text: any text; normally an infotext from :func:`read_infotext`.

    Returns:
        ``{"prompt": str, "negative_prompt": str, <key>: str, ...}``: the parameters in the
        order of the line, values unquoted (a value in double quotes is ``json.loads``-ed,
        as A1111's ``unquote()`` does) and left as strings. Like A1111, a value of the form
        ``WxH`` (``^(\\d+)x(\\d+)$``) also gives ``"<key>-1": W`` and ``"<key>-2": H``
        (``Size`` -> ``Size-1``, ``Size-2``); unlike A1111, the key itself is kept, and a
        key written explicitly in the line wins over a derived one. ``Prompt`` and
        ``Negative prompt`` pairs replace the prompt and negative prompt (see
        :func:`format_infotext`; A1111 does the same) and are not returned as parameters;
        pairs named ``prompt`` or ``negative_prompt`` are ignored so they cannot replace
        those entries. A1111's defaults for missing keys (``Clip skip: 1``...) are not
        added, and an empty value is kept as ``""`` (A1111 drops it).

    Splitting follows A1111 exactly: the text is stripped; its last line is the
    parameters line only if it holds at least 3 ``Key: value`` pairs (otherwise it belongs
    to the prompt); every other line is stripped, and the first one starting with
    ``Negative prompt:`` starts the negative prompt. Never raises for a ``str``, and runs
    in time linear in the length of the text.

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    prompt, negative, pairs = _split_infotext(text)
    result: dict[str, object] = {"prompt": prompt, "negative_prompt": negative}
    explicit: set[str] = set()
    for key, raw in pairs:
        value = _a1111_unquote(raw)
        if key == _PROMPT_KEY:
            result["prompt"] = value
        elif key == _NEGATIVE_KEY:
            result["negative_prompt"] = value
        elif key not in _RESERVED_KEYS:
            result[key] = value
            explicit.add(key)
            m = _RE_IMAGESIZE.match(value)
            if m is not None:
                for derived_key, number in ((f"{key}-1", m.group(1)), (f"{key}-2", m.group(2))):
                    if derived_key not in explicit:
                        result[derived_key] = number
    return result

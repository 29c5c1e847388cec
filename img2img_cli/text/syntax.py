r"""AUTOMATIC1111 prompt syntax, read without a model: attention weights, prompt editing,
alternation, ``BREAK`` and extra-network tags.

The behaviour is that of AUTOMATIC1111's stable-diffusion-webui (A1111; repository
AUTOMATIC1111/stable-diffusion-webui, ``modules/prompt_parser.py`` at commit
28bd8e142d5f77b71ae8d7d7140b5da1b3a49906, and ``modules/extra_networks.py``), checked against
its doctests in ``tests/test_prompt_syntax.py``; the code is ours. Pure Python, no torch.

====================  ===============================================================
``(text)``            attention x1.1; ``[text]`` /1.1; nested brackets multiply
``(text:1.3)``        attention x1.3
``\(`` ``\]`` ...     literal brackets; ``\\`` a literal backslash
``BREAK``             start a new 75-token chunk (:func:`parse_attention`)
``[from:to:when]``    prompt editing: ``from`` up to step ``when``, then ``to``
``[to:when]``         nothing, then ``to``; ``[from::when]``: ``from``, then nothing
``[a|b|c]``           alternation: ``a`` at step 1, ``b`` at step 2, ... (:func:`prompt_schedules`)
``<lora:name:0.8>``   extra-network tag (:func:`extract_networks`)
====================  ===============================================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Union

import lark

__all__ = [
    "Fragment",
    "NetworkTag",
    "extract_networks",
    "has_syntax",
    "parse_attention",
    "prompt_schedules",
]

Fragment = tuple[str, float]
"""A run of prompt text and its attention weight; ``("BREAK", -1.0)`` marks a chunk break."""

BREAK = "BREAK"

# ---------------------------------------------------------------------------------------------
# Attention: (text), [text], (text:w), escapes, BREAK

_UP = 1.1  # "(text)" multiplier; "[text]" divides by it
_ATTENTION_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\]?)            # \( \) \[ \] \\ or a lone backslash
    | (?P<weight>:\s*(?P<w>[+-]?[.\d]+)\s*\))  # ":1.3)" closes a round bracket with a weight
    | [()\[\]]
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


def parse_attention(text: str) -> list[Fragment]:
    r"""Split a prompt into runs of text and their attention weights.

    As A1111's ``modules/prompt_parser.py: parse_prompt_attention``: ``(text)`` multiplies the
    weight by 1.1, ``[text]`` divides it by 1.1, ``(text:w)`` multiplies it by ``w``; nested
    brackets multiply. ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are literal characters; a lone ``\``
    before any other character is dropped. An opening bracket left unclosed applies its
    multiplier to everything after it; a closing bracket without an opening one, and a ``:w)``
    without an open ``(``, are literal text. The word ``BREAK`` (whitespace around it is
    swallowed) becomes the fragment ``("BREAK", -1.0)``; like A1111, a ``BREAK`` inside brackets
    has that -1.0 multiplied too (``"(a BREAK b)"`` gives ``("BREAK", -1.1)``). Adjacent
    fragments of exactly equal weight are merged.

    Args:
        text: the prompt, any string (``AND`` and prompt-editing brackets are not special here:
            run :func:`prompt_schedules` first).

    Returns:
        At least one fragment; ``[("", 1.0)]`` for a prompt with no text. Weights are products
        of 1.1, 1/1.1 and the written weights, so any float (negative or zero if written so);
        the text of a fragment may be empty (e.g. before a leading ``BREAK``).

    Raises:
        ValueError: a written weight is not a number, e.g. ``"(a:1.2.3)"`` (A1111 raises too).
    """
    fragments: list[list] = []  # [text, weight], weights multiplied in place as brackets close
    open_round: list[int] = []  # index of the first fragment inside each open "("
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for m in _ATTENTION_TOKEN.finditer(text):
        token = m.group()
        if m["escape"]:
            fragments.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(fragments))
        elif token == "[":
            open_square.append(len(fragments))
        elif m["weight"] and open_round:
            try:
                weight = float(m["w"])
            except ValueError:
                message = f"attention weight {m['w']!r} in {token!r} is not a number"
                raise ValueError(message) from None
            scale(open_round.pop(), weight)
        elif token == ")" and open_round:
            scale(open_round.pop(), _UP)
        elif token == "]" and open_square:
            scale(open_square.pop(), 1 / _UP)
        else:  # plain text, ":" or an unmatched closing bracket
            for i, part in enumerate(_BREAK_SPLIT.split(token)):
                if i:
                    fragments.append([BREAK, -1.0])
                fragments.append([part, 1.0])

    for start in open_round:  # unclosed brackets, outermost first, as A1111
        scale(start, _UP)
    for start in open_square:
        scale(start, 1 / _UP)

    merged: list[Fragment] = []
    for part, weight in fragments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + part, weight)
        else:
            merged.append((part, weight))
    return merged or [("", 1.0)]


# ---------------------------------------------------------------------------------------------
# Prompt editing and alternation: [from:to:when], [to:when], [from::when], [a|b]

# The language of A1111's ``schedule_parser``: text, bracket groups kept verbatim, edits and
# alternations; stray brackets and colons at the top level are text, one character each.
# Many prompts have several readings; lark's Earley parser picks the same one as A1111's
# grammar does (compared on 30,000 random prompts when this was written).
_GRAMMAR = r"""
start: (seq | STRAY+)*
seq: (group | edit | alt | TEXT | SPACE)*
!group: "(" seq ")" | "(" seq ":" seq ")" | "[" seq "]"
edit: "[" (seq ":")? seq ":" SPACE? NUMBER SPACE? "]"
alt: "[" seq ("|" [seq])+ "]"
STRAY: /[][():]/
SPACE: /\s+/
TEXT: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@dataclass(frozen=True)
class _Edit:
    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str  # as written: "3", ".5", "1.5"


@dataclass(frozen=True)
class _Alt:
    options: tuple[tuple[_Node, ...], ...]


_Node = Union[str, _Edit, _Alt]


def _nodes(tree: lark.Tree) -> tuple[_Node, ...]:
    """The parse tree as text, edits and alternations (bracket groups become their text)."""
    out: list[_Node] = []
    for child in tree.children:
        if isinstance(child, lark.Token):
            out.append(str(child))
        elif child.data == "edit":
            parts = [_nodes(c) for c in child.children if isinstance(c, lark.Tree)]
            number = next(c for c in child.children if getattr(c, "type", None) == "NUMBER")
            before = parts[0] if len(parts) == 2 else ()
            out.append(_Edit(before, parts[-1], str(number)))
        elif child.data == "alt":
            # An empty option ("[a|]") is None.
            out.append(_Alt(tuple(_nodes(c) if c is not None else () for c in child.children)))
        else:  # seq, group
            out.extend(_nodes(child))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _parse(prompt: str) -> tuple[_Node, ...] | None:
    """The prompt's nodes, or None where the grammar cannot read it. Earley parsing takes
    seconds for a prompt of a thousand characters full of brackets (as in A1111), so parses
    are kept for the next image of a run."""
    if "[" not in prompt:  # no edit or alternation: every reading gives the text back
        return (prompt,)
    try:
        return _nodes(_parser().parse(prompt))
    except lark.exceptions.LarkError:
        return None


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR)  # Earley, lark's default; built on first use


def _walk(nodes: tuple[_Node, ...]):
    for node in nodes:
        yield node
        if isinstance(node, _Edit):
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alt):
            for option in node.options:
                yield from _walk(option)


def _render(nodes: tuple[_Node, ...], step: int, when: Callable[[str], int]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            out.append(_render(node.before if step <= when(node.when) else node.after, step, when))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, when))
    return "".join(out)


def prompt_schedules(
    prompts: list[str],
    steps: int,
    *,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[tuple[int, str]]]:
    """The prompt in effect at each sampling step, for prompt editing and alternation.

    As A1111's ``modules/prompt_parser.py: get_learned_conditioning_prompt_schedules``.
    ``[from:to:when]`` uses ``from`` up to and including step ``when``, then ``to``;
    ``[to:when]`` and ``[from::when]`` leave one side empty; ``[a|b|c]`` cycles through its
    options, one per step (``[a|]`` alternates ``a`` and nothing); these nest, and bracket
    groups and weights (``(a:1.2)``) are kept verbatim for :func:`parse_attention`.

    ``when`` is a step number when written without a ``.`` (``3``), else a fraction of
    ``steps`` (``.5``, ``0.25``; ``1.0`` means all of them), truncated to an integer and
    capped at ``steps``; below 1 the edit shows ``to`` from the first step.

    ``use_old_scheduling=True`` is A1111's "use old prompt editing timelines" option: there
    ``when`` is a fraction only when below 1, whatever its spelling (``1.0`` is step 1, ``1.5``
    step 1), and ``hires_steps`` is ignored. ``hires_steps`` is the second pass of A1111's
    hires fix: steps count ``hires_steps``, an integer ``when`` counts from the end of the
    first pass (``when - steps``) and a fraction from 1.0 (``1.5`` is half the second pass).

    Args:
        prompts: prompts, any strings; a repeated prompt is parsed once.
        steps: sampling steps, >= 1.
        hires_steps: steps of a hires-fix second pass, >= 1, or None (img2img).
        use_old_scheduling: A1111's pre-1.6 reading of ``when``.

    Returns:
        One schedule per prompt: ``(end_at_step, text)`` pairs, ``end_at_step`` >= 1 and
        rising, the last one ``steps`` (``hires_steps`` when given and not
        ``use_old_scheduling``); ``text`` is the prompt for the steps (1-based) after the
        previous pair's up to and including ``end_at_step``. A prompt without editing or
        alternation, or one the grammar cannot read (e.g. ``"a [unbalanced"``, ``"a | b"``),
        gives ``[(steps, prompt)]`` with the prompt unchanged.

    Raises:
        ValueError: ``steps`` (or ``hires_steps``) below 1.
    """
    if steps < 1 or (hires_steps is not None and hires_steps < 1):
        raise ValueError(f"steps must be >= 1, got steps={steps}, hires_steps={hires_steps}")
    second_pass = hires_steps is not None and not use_old_scheduling
    total = hires_steps if second_pass else steps

    def when(written: str) -> int:
        value = float(written)
        if use_old_scheduling:
            value = value * total if value < 1 else value
        elif "." in written:
            value = (value - (1.0 if second_pass else 0.0)) * total
        else:
            value = value - (steps if second_pass else 0)
        return min(total, int(value))

    def schedule(prompt: str) -> list[tuple[int, str]]:
        nodes = _parse(prompt)
        if nodes is None:
            return [(total, prompt)]
        ends = {total}
        for node in _walk(nodes):
            if isinstance(node, _Edit) and when(node.when) >= 1:
                ends.add(when(node.when))
            elif isinstance(node, _Alt):
                ends.update(range(1, total + 1))
        return [(end, _render(nodes, end, when)) for end in sorted(ends)]

    cache: dict[str, list[tuple[int, str]]] = {}
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = schedule(prompt)
    return [list(cache[prompt]) for prompt in prompts]


# ---------------------------------------------------------------------------------------------
# Extra networks: <lora:name:0.8>

_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class NetworkTag:
    """An extra-network tag ``<kind:arg1:arg2...>``, e.g. ``<lora:name:0.8>``.

    ``kind`` is a word (``lora``, ``hypernet``, ...); ``args`` the text between the colons as
    written (``"0.8"``, not a float): at least one, and an argument may be empty
    (``<lora:a::1>``).
    """

    kind: str
    args: tuple[str, ...]


def extract_networks(text: str) -> tuple[str, list[NetworkTag]]:
    """Remove the extra-network tags from a prompt.

    As A1111's ``modules/extra_networks.py: parse_prompt``: every ``<kind:args>`` (``kind`` a
    word of letters, digits and ``_``; ``args`` anything up to ``>``, split on ``:``) is
    replaced by nothing, so the spaces around it stay (``"a <lora:x:1> b"`` -> ``"a  b"``).

    Returns:
        The text without tags, and the tags in the order written (repeats kept). Never raises.
    """
    tags: list[NetworkTag] = []

    def take(m: re.Match) -> str:
        tags.append(NetworkTag(m[1], tuple(m[2].split(":"))))
        return ""

    return _NETWORK_TAG.sub(take, text), tags


# ---------------------------------------------------------------------------------------------

_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b|<\w+:[^>]+>")


def has_syntax(text: str) -> bool:
    """Whether the prompt uses anything beyond plain text: brackets (weights, editing,
    alternation), backslash escapes, ``BREAK`` or extra-network tags.

    A cheap regex test; when False, :func:`parse_attention` gives ``[(text, 1.0)]``,
    :func:`prompt_schedules` ``[(steps, text)]`` and :func:`extract_networks` no tags.
    ``AND`` (composable diffusion) is not counted.
    """
    return _SYNTAX.search(text) is not None

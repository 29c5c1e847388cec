"""Tests for img2img_cli.metadata: A1111 infotext text format and its storage in PNG/JPEG/WebP.

Reference behaviour is AUTOMATIC1111/stable-diffusion-webui: ``modules/processing.py``
``create_infotext``, ``modules/infotext_utils.py`` ``quote``/``unquote``/``re_param_code``/
``parse_generation_parameters`` and ``modules/images.py`` (see the module docstring of
``img2img_cli.metadata`` for the commits read).
"""

from __future__ import annotations

import io
import json
import re
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from img2img_cli import infotext, metadata
from img2img_cli.metadata import RE_PARAM_CODE, format_infotext, parse_infotext, read_infotext, write_image

PARAMS = {
    "Steps": 30,
    "Sampler": "PNDM",
    "CFG scale": "7.5",
    "Seed": 42,
    "Size": "512x336",
    "Model": "stable-diffusion-v1-5",
    "Denoising strength": 0.75,
    "Version": "img2img-cli 0.1.0",
}
PARAMS_LINE = (
    "Steps: 30, Sampler: PNDM, CFG scale: 7.5, Seed: 42, Size: 512x336, Model: stable-diffusion-v1-5, "
    "Denoising strength: 0.75, Version: img2img-cli 0.1.0"
)
UNICODE_PROMPT = 'a café at night\nstyle: 水彩, "quoted"'
FORMATS = ["png", "jpg", "webp"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Fragments that exercise every rule of the format; mixed with arbitrary text below.
FRAGMENTS = [
    "Negative prompt:",
    "Negative prompt: ",
    "\n",
    "\r\n",
    " ",
    "\t",
    "\u00a0",
    ",",
    ", ",
    ":",
    ": ",
    '"',
    "\\",
    "\\\"",
    "\ufeff",
    "Steps: 20, Sampler: Euler a, CFG scale: 7",
    "Size: 512x512",
    'Prompt: "x"',
    'Negative prompt: ""',
    "prompt: y",
    "a cat",
    "水彩",
    "\x00",
]
nasty_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=12).map("".join)
any_text = st.one_of(st.text(), nasty_text)


def a1111_create_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """The last lines of A1111's create_infotext (modules/processing.py), with its quote()."""

    def quote(text):
        if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
            return text
        return json.dumps(text, ensure_ascii=False)

    generation_params_text = ", ".join([k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None])
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_prompt_text}\n{generation_params_text}".strip()


def small_image(mode: str = "RGB") -> Image.Image:
    im = Image.new("RGB", (16, 12), (200, 120, 40))
    im.putpixel((3, 4), (10, 20, 250))
    return im.convert(mode)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [PNG_SIGNATURE]
    for ctype, body in chunks:
        out.append(struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body)))
    return b"".join(out)


def user_comment_entry(exif: bytes) -> tuple[str, int, bytes]:
    """(byte order, EXIF type, value) of the UserComment entry, walking the TIFF structure."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    bo = {b"MM": ">", b"II": "<"}[exif[:2]]

    def entries(offset):
        (count,) = struct.unpack(bo + "H", exif[offset : offset + 2])
        for i in range(count):
            e = offset + 2 + 12 * i
            tag, typ, n = struct.unpack(bo + "HHI", exif[e : e + 8])
            yield tag, typ, n, exif[e + 8 : e + 12]

    (ifd0,) = struct.unpack(bo + "I", exif[4:8])
    (exif_ifd,) = [struct.unpack(bo + "I", raw)[0] for tag, _, _, raw in entries(ifd0) if tag == 0x8769]
    for tag, typ, n, raw in entries(exif_ifd):
        if tag == 0x9286:
            (offset,) = struct.unpack(bo + "I", raw)
            value = raw[:n] if n <= 4 else exif[offset : offset + n]
            return bo, typ, value
    raise AssertionError("no UserComment")


def tiff_with_user_comment(value: bytes, byteorder: str) -> bytes:
    """A minimal EXIF block (as a third-party writer would make it) holding one UserComment."""
    bo = {"big": ">", "little": "<"}[byteorder]
    head = (b"MM\x00\x2a" if bo == ">" else b"II\x2a\x00") + struct.pack(bo + "I", 8)
    ifd0 = struct.pack(bo + "HHHII", 1, 0x8769, 4, 1, 26) + struct.pack(bo + "I", 0)
    exif_ifd = struct.pack(bo + "HHHII", 1, 0x9286, 7, len(value), 44) + struct.pack(bo + "I", 0)
    return b"Exif\x00\x00" + head + ifd0 + exif_ifd + value


# --------------------------------------------------------------------------- format_infotext


def test_format_with_negative_prompt():
    text = format_infotext("a watercolor painting of a cat", "blurry", PARAMS)
    assert text == f"a watercolor painting of a cat\nNegative prompt: blurry\n{PARAMS_LINE}"


@pytest.mark.parametrize("negative", [None, ""])
def test_format_without_negative_prompt(negative):
    text = format_infotext("a watercolor painting of a cat", negative, PARAMS)
    assert text == f"a watercolor painting of a cat\n{PARAMS_LINE}"


def test_format_quotes_values_like_a1111():
    params = {
        "Steps": 20,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 7,
        "Seed": 1,
        "Size": "512x512",
        "Model": "sd_xl:base",  # colon
        "Lora hashes": "add_detail: 7c6bad76eb54, other: 0123",  # comma and colon
        "Note": 'say "hi"',  # quotes alone: A1111 writes it bare
        "Multi": "line1\nline2",  # newline
        "Skipped": None,  # None values are left out
        "Tiling": "Tiling",  # value == key: A1111 writes the bare key
    }
    text = format_infotext('a cat, "wearing" a hat: yes', None, params)
    assert text == (
        'a cat, "wearing" a hat: yes\n'
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
        'Model: "sd_xl:base", Lora hashes: "add_detail: 7c6bad76eb54, other: 0123", Note: say "hi", '
        'Multi: "line1\\nline2", Tiling'
    )
    assert text == a1111_create_infotext('a cat, "wearing" a hat: yes', "", params)
    parsed = parse_infotext(text)
    assert parsed["Model"] == "sd_xl:base"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54, other: 0123"
    assert parsed["Note"] == 'say "hi"'
    assert parsed["Multi"] == "line1\nline2"
    assert "Skipped" not in parsed and "Tiling" not in parsed


def test_format_quotes_values_a1111_could_not_read_back():
    params = {"Steps": 20, "Empty": "", "Lead": " x", "Trail": "x ", "Quoted": '"q"', "Ctl": "a\rb"}
    text = format_infotext("p", None, params)
    assert text == 'p\nSteps: 20, Empty: "", Lead: " x", Trail: "x ", Quoted: "\\"q\\"", Ctl: "a\\rb"'
    parsed = parse_infotext(text)
    assert {k: parsed[k] for k in params} == {k: str(v) for k, v in params.items()}


def test_format_adds_exact_prompt_only_when_needed():
    text = format_infotext(" leading space", None, PARAMS)
    assert text == f'leading space\n{PARAMS_LINE}, Prompt: " leading space"'
    assert parse_infotext(text)["prompt"] == " leading space"

    text = format_infotext("a\nNegative prompt: b", "", PARAMS)
    assert text == f'a\nNegative prompt: b\n{PARAMS_LINE}, Prompt: "a\\nNegative prompt: b", Negative prompt: ""'
    parsed = parse_infotext(text)
    assert (parsed["prompt"], parsed["negative_prompt"]) == ("a\nNegative prompt: b", "")

    text = format_infotext("cat", "ugly\r\nblurry", PARAMS)
    assert text == f'cat\nNegative prompt: ugly\r\nblurry\n{PARAMS_LINE}, Negative prompt: "ugly\\r\\nblurry"'
    assert parse_infotext(text)["negative_prompt"] == "ugly\r\nblurry"


def test_format_rejects_what_cannot_be_read_back():
    with pytest.raises(ValueError, match="at least 3"):
        format_infotext("p", None, {"Steps": 20, "Seed": 1, "Size": None, "Tiling": "Tiling"})
    for key in ["x", "Bad:key", "a,b", " lead", "new\nline", "Prompt", "Negative prompt", "prompt", "negative_prompt", 5]:
        with pytest.raises(ValueError):
            format_infotext("p", None, {key: "v", **PARAMS})
    with pytest.raises(TypeError):
        format_infotext(None, None, PARAMS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_infotext("p", 3, PARAMS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_infotext("p", None, [("Steps", 1)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parse_infotext

# The example in the docstring of parse_generation_parameters, modules/infotext_utils.py
# (AUTOMATIC1111/stable-diffusion-webui commit 036500223de0a3caaa86360a8ad3ed301e4367b0).
A1111_EXAMPLE = """girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"""


def test_parse_a1111_example():
    assert parse_infotext(A1111_EXAMPLE) == {
        "prompt": "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, "
        "by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate",
        "negative_prompt": "ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, "
        "mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing",
        "Steps": "20",
        "Sampler": "Euler a",
        "CFG scale": "7",
        "Seed": "965400086",
        "Size": "512x512",
        "Size-1": "512",
        "Size-2": "512",
        "Model hash": "45dee52b",
    }


def test_parse_multiline_and_quoted_values():
    text = (
        "line one,\n  line two  \n\nNegative prompt:   bad\nworse\n"
        'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, Lora hashes: "style: abc, detail: def", '
        'Hires resize: 1024x1536, Size-1: 7, Size: 512x768, Model: "model, custom"'
    )
    assert parse_infotext(text) == {
        "prompt": "line one,\nline two\n",
        "negative_prompt": "bad\nworse",
        "Steps": "28",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "Lora hashes": "style: abc, detail: def",
        "Hires resize": "1024x1536",
        "Hires resize-1": "1024",
        "Hires resize-2": "1536",
        "Size-1": "7",  # written explicitly: wins over the one derived from Size
        "Size": "512x768",
        "Size-2": "768",
        "Model": "model, custom",
    }


def test_parse_without_parameters_line():
    # Fewer than 3 pairs on the last line: A1111 reads it as part of the prompt.
    assert parse_infotext("a cat\nSteps: 20, Seed: 1") == {"prompt": "a cat\nSteps: 20, Seed: 1", "negative_prompt": ""}
    assert parse_infotext("") == {"prompt": "", "negative_prompt": ""}
    assert parse_infotext("Negative prompt: x") == {"prompt": "", "negative_prompt": "x"}


def test_parse_prompt_keys():
    text = 'shown\nSteps: 1, Seed: 2, Size: 3x4, Prompt: "exact ", prompt: ignored, negative_prompt: ignored'
    assert parse_infotext(text) == {
        "prompt": "exact ",
        "negative_prompt": "",
        "Steps": "1",
        "Seed": "2",
        "Size": "3x4",
        "Size-1": "3",
        "Size-2": "4",
    }
    with pytest.raises(TypeError):
        parse_infotext(None)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list('ab_1 -/:,"\\\t\r\u00a0é\u3000x')), max_size=40).map("".join))
@example('k:"x\\"y", a: 1')
@example('ab \tcd: 1, "q": "a\\\\", x')
@example('-foo: 1, bar : "x" y, baz: ""')
def test_param_scanner_matches_a1111_regex(line):
    assert infotext._find_params(line) == re.findall(RE_PARAM_CODE, line)


@settings(max_examples=200, deadline=None)
@given(st.text().map(lambda s: s.replace("\n", "")))
def test_param_scanner_matches_a1111_regex_any_text(line):
    assert infotext._find_params(line) == re.findall(RE_PARAM_CODE, line)


def test_parse_is_linear_on_long_lines():
    # re.findall(RE_PARAM_CODE, ...) needs ~17 s for 40,000 letters; the scanner is linear.
    for line in ["a" * 200_000, '"' + "a" * 200_000, 'k:"x, ' * 30_000, "a " * 100_000]:
        start = time.perf_counter()
        parse_infotext("prompt\n" + line)
        assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------- property tests


@settings(max_examples=300, deadline=None)
@given(prompt=any_text, negative=st.one_of(st.none(), any_text))
def test_prompt_round_trip_for_every_text(prompt, negative):
    parsed = parse_infotext(format_infotext(prompt, negative, PARAMS))
    assert parsed["prompt"] == prompt
    assert parsed["negative_prompt"] == (negative or "")
    assert {k: parsed[k] for k in PARAMS} == {k: str(v) for k, v in PARAMS.items()}


def _unclean(text: str) -> bool:
    lines = text.split("\n")
    return any(line != line.strip() for line in lines) or (len(lines) > 1 and lines[0] == "")


def _marker(lines: list[str]) -> bool:
    return any(line.strip().startswith("Negative prompt:") for line in lines)


def _moves_text_to_negative(prompt: str) -> bool:
    lines = [line.strip() for line in prompt.split("\n")]
    starts = [i for i, line in enumerate(lines) if line.startswith("Negative prompt:")]
    if not starts:
        return False
    for line in lines[starts[0] :]:
        if line.startswith("Negative prompt:"):
            line = line[len("Negative prompt:") :].strip()
        if line:
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(prompt=any_text, negative=any_text)
@example("Negative prompt:", "")
@example("a\nNegative prompt: \n\nNegative prompt:", "x")
@example("a\n Negative prompt:\nb", "")
@example("a\nNegative prompt: b", "c")
@example("x", "Negative prompt: y")
@example("x", "y\nNegative prompt: z")
@example("", "\n")
@example("\nx", "x\n")
def test_exact_prompt_pairs_exactly_when_documented(prompt, negative):
    """The cases listed in format_infotext's docstring, and no others, get the exact pairs."""
    keys = [k for k, _ in infotext._split_infotext(format_infotext(prompt, negative, PARAMS))[2]]
    assert ("Prompt" in keys) == (_unclean(prompt) or _marker(prompt.split("\n")))
    assert ("Negative prompt" in keys) == (
        _unclean(negative) or _marker(negative.split("\n")[1:]) or _moves_text_to_negative(prompt)
    )


ordinary_line = st.text(min_size=1).filter(
    lambda s: "\n" not in s and s == s.strip() and not s.startswith("Negative prompt:")
)


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.lists(ordinary_line, max_size=3).map("\n".join),
    negative=st.lists(ordinary_line, max_size=3).map("\n".join),
)
def test_ordinary_prompts_are_written_exactly_as_a1111(prompt, negative):
    text = format_infotext(prompt, negative, PARAMS)
    assert text == a1111_create_infotext(prompt, negative, PARAMS)
    parsed = parse_infotext(text)
    assert (parsed["prompt"], parsed["negative_prompt"]) == (prompt, negative)


word_char = st.one_of(st.characters(categories=("L", "Nd", "Nl", "No")), st.just("_"))
keys = st.builds(
    str.__add__, word_char, st.text(st.one_of(word_char, st.sampled_from(" -/")), min_size=1, max_size=12)
).filter(lambda k: infotext._RE_KEY.fullmatch(k) is not None and k not in infotext._RESERVED_KEYS)
values = st.one_of(any_text, st.integers(), st.floats(), st.booleans())


@settings(max_examples=150, deadline=None)
@given(params=st.dictionaries(keys, values, min_size=3, max_size=6), prompt=any_text)
def test_params_round_trip(params, prompt):
    assume(all(k != v for k, v in params.items()))  # bare keys are dropped, as in A1111
    parsed = parse_infotext(format_infotext(prompt, None, params))
    assert parsed["prompt"] == prompt
    assert {k: parsed[k] for k in params} == {k: str(v) for k, v in params.items()}


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_parse_never_raises(text):
    parsed = parse_infotext(text)
    assert isinstance(parsed["prompt"], str) and isinstance(parsed["negative_prompt"], str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())


# --------------------------------------------------------------------------- image files


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_round_trip(tmp_path, fmt):
    text = format_infotext(UNICODE_PROMPT, "blurry, ugly\nlow quality", PARAMS)
    path = tmp_path / f"out.{fmt}.tmp"  # the suffix does not decide the format
    write_image(small_image(), path, fmt, text)
    with Image.open(path) as im:
        assert im.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
        assert im.size == (16, 12)
    assert read_infotext(path) == text
    parsed = parse_infotext(read_infotext(path))
    assert parsed["prompt"] == UNICODE_PROMPT
    assert parsed["negative_prompt"] == "blurry, ugly\nlow quality"
    assert parsed["Size"] == "512x336" and parsed["Seed"] == "42"


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_exif_user_comment_is_a1111s(tmp_path, fmt):
    text = format_infotext(UNICODE_PROMPT, None, PARAMS)
    path = tmp_path / f"out.{fmt}"
    write_image(small_image(), path, fmt, text, quality=90)
    with Image.open(path) as im:
        raw = im.getexif().get_ifd(0x8769)[0x9286]
        byteorder, typ, value = user_comment_entry(im.info["exif"])
    # piexif.helper.UserComment.dump(text, encoding="unicode"), in a big-endian TIFF like piexif.dump
    assert raw.startswith(b"UNICODE\x00")
    assert raw == value == b"UNICODE\x00" + text.encode("utf-16-be")
    assert typ == 7  # UNDEFINED, as EXIF requires for UserComment
    assert byteorder == ">"


def test_png_text_chunk_types(tmp_path):
    latin = format_infotext("a café", None, PARAMS)
    wide = format_infotext("水彩", None, PARAMS)
    for text, ctype, body in [
        (latin, b"tEXt", b"parameters\x00" + latin.encode("latin-1")),
        (wide, b"iTXt", b"parameters\x00\x00\x00\x00\x00" + wide.encode("utf-8")),
    ]:
        path = tmp_path / "out.png"
        write_image(small_image(), path, "png", text)
        chunks = png_chunks(path.read_bytes())
        assert (ctype, body) in chunks
        assert [c for c, _ in chunks].index(ctype) < [c for c, _ in chunks].index(b"IDAT")
        assert read_infotext(path) == text


def test_png_reads_ztxt_and_text_after_image_data(tmp_path):
    text = format_infotext("a cat", None, PARAMS)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text, zip=True)
    buf = io.BytesIO()
    small_image().save(buf, format="PNG", pnginfo=info)
    path = tmp_path / "z.png"
    path.write_bytes(buf.getvalue())
    assert b"zTXt" in [c for c, _ in png_chunks(path.read_bytes())]
    assert read_infotext(path) == text

    write_image(small_image(), path, "png", UNICODE_PROMPT)
    chunks = png_chunks(path.read_bytes())
    text_chunk = next(c for c in chunks if c[0] == b"iTXt")
    chunks.remove(text_chunk)
    chunks.insert(len(chunks) - 1, text_chunk)  # just before IEND
    path.write_bytes(png_from_chunks(chunks))
    assert read_infotext(path) == UNICODE_PROMPT


def test_exif_comment_wins_over_png_text_as_in_a1111(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "from text chunk")
    path = tmp_path / "both.png"
    small_image().save(path, pnginfo=info, exif=tiff_with_user_comment(b"UNICODE\x00" + "from exif".encode("utf-16-be"), "big"))
    assert read_infotext(path) == "from exif"
    # An empty UserComment does not hide the text chunk.
    small_image().save(path, pnginfo=info, exif=tiff_with_user_comment(b"UNICODE\x00", "big"))
    assert read_infotext(path) == "from text chunk"


@pytest.mark.parametrize(
    ("comment", "byteorder", "expected"),
    [
        (b"UNICODE\x00" + "Steps: 20, 水彩".encode("utf-16-be"), "big", "Steps: 20, 水彩"),  # A1111/piexif
        (b"UNICODE\x00" + "Steps: 20, 水彩".encode("utf-16-be"), "little", "Steps: 20, 水彩"),  # Pillow-style II
        (b"UNICODE\x00" + "Steps: 20, 水彩".encode("utf-16-le"), "little", "Steps: 20, 水彩"),  # ExifTool-style
        (b"UNICODE\x00\xff\xfe" + "Steps: 20".encode("utf-16-le"), "big", "Steps: 20"),  # byte order mark
        (b"UNICODE\x00\xfe\xff" + "Steps: 20".encode("utf-16-be"), "little", "Steps: 20"),
        (b"ASCII\x00\x00\x00Steps: 20", "big", "Steps: 20"),
        (b"\x00" * 8 + "caf\u00e9".encode("utf-8"), "big", "café"),
        (b"no prefix: caf\xc3\xa9\xff", "big", "no prefix: café"),  # A1111: decode("utf8", errors="ignore")
    ],
)
def test_user_comment_encodings(tmp_path, comment, byteorder, expected):
    path = tmp_path / "c.jpg"
    small_image().save(path, format="JPEG", exif=tiff_with_user_comment(comment, byteorder))
    assert read_infotext(path) == expected


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
@pytest.mark.parametrize("text", ["\ufeffstarts with a BOM", "\ufffeodd", "Ā", "", "ends with NUL\x00"])
def test_exif_edge_texts_round_trip(tmp_path, fmt, text):
    path = tmp_path / f"e.{fmt}"
    write_image(small_image(), path, fmt, text)
    assert read_infotext(path) == text


def test_lone_surrogates_become_replacement_characters(tmp_path):
    for fmt in FORMATS:
        path = tmp_path / f"s.{fmt}"
        write_image(small_image(), path, fmt, "bad \udcff byte")
        assert read_infotext(path) == "bad \ufffd byte"


@pytest.mark.parametrize(("fmt", "mode"), [("jpg", "RGBA"), ("jpg", "P"), ("jpg", "I;16"), ("webp", "P"), ("webp", "LA"), ("png", "RGBA")])
def test_image_modes(tmp_path, fmt, mode):
    path = tmp_path / f"m.{fmt}"
    write_image(small_image(mode), path, fmt, "x", quality=80)
    assert read_infotext(path) == "x"


def test_write_image_arguments(tmp_path):
    path = tmp_path / "a.img"
    for fmt in ["gif", "", ".png", "tiff", None]:
        with pytest.raises(ValueError, match="format"):
            write_image(small_image(), path, fmt, "x")  # type: ignore[arg-type]
    for quality in [-1, 101, 9.5, True, "95"]:
        with pytest.raises(ValueError, match="quality"):
            write_image(small_image(), path, "jpg", "x", quality=quality)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_image(small_image(), path, "png", None)  # type: ignore[arg-type]
    assert not path.exists()
    write_image(small_image(), path, "JPEG", "x", quality=0)
    write_image(small_image(), str(path), "Jpeg", "x", quality=100)
    assert read_infotext(str(path)) == "x"


def test_jpeg_exif_size_limit(tmp_path):
    path = tmp_path / "long.jpg"
    write_image(small_image(), path, "jpg", "x" * 32_737)
    assert read_infotext(path) == "x" * 32_737
    path.unlink()
    with pytest.raises(ValueError, match="too long"):
        write_image(small_image(), path, "jpg", "x" * 32_738)
    assert not path.exists()
    write_image(small_image(), tmp_path / "long.webp", "webp", "x" * 100_000)
    assert read_infotext(tmp_path / "long.webp") == "x" * 100_000


def test_read_infotext_without_metadata(tmp_path):
    plain = tmp_path / "plain.png"
    small_image().save(plain)
    assert read_infotext(plain) is None
    small_image().save(tmp_path / "plain.jpg")
    assert read_infotext(tmp_path / "plain.jpg") is None
    (tmp_path / "notes.txt").write_text("Steps: 20, Sampler: Euler, CFG scale: 7")
    assert read_infotext(tmp_path / "notes.txt") is None
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_infotext(tmp_path / "empty.png") is None
    write_image(small_image(), tmp_path / "good.png", "png", "x")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:40])
    assert read_infotext(tmp_path / "cut.png") is None


def test_read_infotext_unreadable_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_infotext(tmp_path / "missing.png")
    with pytest.raises(OSError):
        read_infotext(tmp_path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), nasty_text), fmt=st.sampled_from(FORMATS))
def test_file_round_trip_for_every_text(tmp_path, text, fmt):
    path = tmp_path / f"p.{fmt}"
    write_image(small_image(), path, fmt, text)
    assert read_infotext(path) == text


sampler_names = st.sampled_from(["Euler a", "Euler", "DPM++ 2M Karras", "DPM++ SDE", "DDIM", "PNDM", "UniPC", "LMS"])
numbers = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda x: f"{x:g}")


@st.composite
def generation(draw):
    """(prompt, negative prompt, params) as ``img2img run`` makes them, with arbitrary prompts,
    model names and extra parameters."""
    params = {
        "Steps": draw(st.integers(1, 1000)),
        "Sampler": draw(sampler_names),
        "CFG scale": draw(numbers),
        "Seed": draw(st.integers(0, 2**32 - 1)),
        "Size": "{}x{}".format(draw(st.integers(1, 1024)) * 8, draw(st.integers(1, 1024)) * 8),
        "Model": draw(st.one_of(st.sampled_from(["stable-diffusion-v1-5", "tiny", "C:\\models\\a, b.safetensors"]), any_text)),
        "Denoising strength": draw(st.floats(min_value=0, max_value=1, exclude_min=True).map(lambda x: f"{x:g}")),
    }
    extra = draw(st.dictionaries(keys, values, max_size=2))
    params.update({k: v for k, v in extra.items() if k not in params and k != v})
    params["Version"] = "img2img-cli 0.1.0"
    return draw(any_text), draw(st.one_of(st.none(), any_text)), params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gen=generation(), fmt=st.sampled_from(FORMATS))
def test_written_infotext_reads_back_and_parses(tmp_path, gen, fmt):
    """Every infotext ``img2img run`` can write (format_infotext + write_image, PNG/JPEG/WebP)
    must read back identical and parse back to the same values: a ``None`` from read_infotext
    (which swallows every decoding error) fails here."""
    prompt, negative, params = gen
    text = format_infotext(prompt, negative, params)
    path = tmp_path / f"gen.{fmt}"
    write_image(small_image(), path, fmt, text)
    assert read_infotext(path) == text
    parsed = parse_infotext(read_infotext(path))
    assert (parsed["prompt"], parsed["negative_prompt"]) == (prompt, negative or "")
    assert {k: parsed[k] for k in params} == {k: str(v) for k, v in params.items()}


def _valid_files() -> list[bytes]:
    out = []
    for fmt, pil in [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]:
        buf = io.BytesIO()
        im = small_image()
        if pil == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", UNICODE_PROMPT)
            im.save(buf, format=pil, pnginfo=info)
        else:
            im.save(buf, format=pil, exif=metadata._user_comment_exif(UNICODE_PROMPT))
        out.append(buf.getvalue())
    return out


VALID_FILES = _valid_files()
SIGNATURES = [b"", PNG_SIGNATURE, b"\xff\xd8\xff\xe1", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"GIF89a", b"II*\x00", b"BM"]


def _metadata_span(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the bytes that hold the infotext in one of VALID_FILES: the PNG text
    chunk, the JPEG APP1 (EXIF) segment or the WebP EXIF chunk, headers included."""
    if data.startswith(PNG_SIGNATURE):
        pos = 8
        while True:
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            if data[pos + 4 : pos + 8] in (b"tEXt", b"iTXt", b"zTXt"):
                return pos, pos + 12 + length
            pos += 12 + length
    if data.startswith(b"\xff\xd8"):
        start = data.index(b"\xff\xe1")
        (length,) = struct.unpack(">H", data[start + 2 : start + 4])
        return start, start + 2 + length
    start = data.index(b"EXIF")
    (length,) = struct.unpack("<I", data[start + 4 : start + 8])
    return start, start + 8 + length + (length & 1)


def test_valid_files_carry_the_prompt():
    for data in VALID_FILES:
        start, end = _metadata_span(data)
        assert 0 < start < end <= len(data)
        with Image.open(io.BytesIO(data)) as im:
            im.load()


def _pillow_opens(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:
        return False


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(st.binary(max_size=512), st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=512)).map(b"".join)),
    valid=st.sampled_from(VALID_FILES),
)
def test_read_infotext_on_arbitrary_bytes(tmp_path, data, valid):
    """Garbage gives ``None`` or a ``str``, never an exception, and ``None`` whenever Pillow
    cannot open it; the same garbage after a valid file (trailing bytes) leaves its text exact."""
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    result = read_infotext(path)
    assert result is None or isinstance(result, str)
    if not _pillow_opens(data):
        assert result is None
    path.write_bytes(valid + data)
    assert read_infotext(path) == UNICODE_PROMPT


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    original=st.sampled_from(VALID_FILES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
@example(original=VALID_FILES[0], edits=[(0, VALID_FILES[0][0])], cut=None)  # undamaged
@example(original=VALID_FILES[1], edits=[(0, VALID_FILES[1][0])], cut=None)
@example(original=VALID_FILES[2], edits=[(0, VALID_FILES[2][0])], cut=None)
@example(original=VALID_FILES[1], edits=[(len(VALID_FILES[1]) - 3, 0)], cut=None)  # in the image data
@example(original=VALID_FILES[0], edits=[(0, 0)], cut=_metadata_span(VALID_FILES[0])[0])  # cut before the text
def test_read_infotext_on_damaged_images(tmp_path, original, edits, cut):
    """A damaged file gives ``None`` or a ``str``, never an exception. Damage outside the bytes
    that hold the infotext gives the exact text or ``None``, never another text; a file cut
    before them gives ``None``; an undamaged file gives the exact text."""
    start, end = _metadata_span(original)
    data = bytearray(original)
    for offset, byte in edits:
        data[offset % len(data)] = byte
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / "damaged.img"
    path.write_bytes(bytes(data))
    result = read_infotext(path)
    assert result is None or isinstance(result, str)
    metadata_intact = bytes(data[start:end]) == original[start:end]
    if bytes(data) == original:
        assert result == UNICODE_PROMPT
    elif len(data) <= start:
        assert result is None
    elif metadata_intact:
        assert result in (None, UNICODE_PROMPT)

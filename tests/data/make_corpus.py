"""Build the "hostile inputs" corpus: awkward images the tool must process, hostile files it
must refuse (one stderr line each, the rest of the folder processed, exit code 1), and files
it must skip silently.

Usage::

    python tests/data/make_corpus.py            # (re)writes tests/data/corpus/ and tests/data/README.md

As a module (``tests/test_corpus.py`` loads it by path)::

    manifest = build(folder)                      # the static files (what lives in git)
    manifest = build(folder, runtime_only=True)   # adds what git cannot hold well

``build`` returns a manifest ``{relative path: kind}``, with kind one of

- ``"good"``: must be processed, output ``<stem>.png``;
- ``"bad:<keyword>|<keyword>..."``: must be refused with one stderr line naming the file
  and containing one of the keywords (case-insensitive);
- ``"skip"``: must be skipped silently (no output, no message).

Everything is generated from the photos in ``examples/`` with Pillow, or from raw bytes
(``zlib``/``struct``, valid CRCs) where Pillow cannot or must not write the file. The static
files are deterministic: two runs give byte-identical files.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLES = ROOT / "examples"
CORPUS = HERE / "corpus"
README = HERE / "README.md"

#: The non-UTF-8 file name created at run time (bytes: git and many file systems can't hold it).
BAD_NAME = b"bad-\xff\xfe.png"

#: Reason keywords (any one, case-insensitive) expected in the refusal line.
NOT_AN_IMAGE = "bad:empty|not an image|cannot identify|unidentified"
TRUNCATED = "bad:truncat|decode|corrupt"
PIXELS = "bad:pixels"
LOOP = "bad:symbolic link|loop"
MISSING = "bad:no such file|not found|does not exist|dangling"
DENIED = "bad:permission|denied|unreadable"

#: Static corpus: relative path -> (kind, what it is). Order = README order.
STATIC: dict[str, tuple[str, str]] = {
    # -- awkward images: must be processed
    "gray16.png": ("good", "16-bit grayscale PNG (mode I;16), 120x80"),
    "rgb48.png": ("good", "48-bit RGB PNG (16 bits per channel, written by hand: Pillow cannot), 90x60"),
    "cmyk.jpg": ("good", "CMYK JPEG (Adobe marker), 160x107"),
    "palette-trns.png": ("good", "palette PNG with a tRNS chunk (one fully transparent index), 120x80"),
    "gray.png": ("good", "8-bit grayscale PNG (mode L), 96x96"),
    "gray-alpha.png": ("good", "grayscale + alpha PNG (mode LA), 80x120"),
    "rgba-transparent.png": ("good", "RGBA PNG, transparent and half-transparent areas, 150x100"),
    "animated.gif": ("good", "animated GIF, 3 frames of 100x60 (first frame used)"),
    "multipage.tif": ("good", "2-page TIFF: page 1 landscape 120x80, page 2 portrait 60x120 (first page used: 64x40 out)"),
    "tiny-3x2.png": ("good", "an RGB image of 3x2 pixels (64x40 out)"),
    "large-6000x4000.jpg": ("good", "6000x4000 JPEG (24 MP), a smooth gradient so the file stays small"),
    "exif-rotated.jpg": ("good", "landscape JPEG 160x107 stored with EXIF orientation 6 (displayed portrait: 40x64 out)"),
    "café au lait.png": ("good", "file name with spaces and a non-ASCII letter (NFC), 150x100"),
    "写真 1.jpg": ("good", "file name in CJK with a space, JPEG 160x107"),
    "UPPER.JPG": ("good", "upper-case extension, JPEG 107x160"),
    "sub/inner.png": ("good", "image in a subfolder (with --recursive: sub/inner.png out), 100x100"),
    # -- hostile files: must be refused, one stderr line each
    "empty.png": (NOT_AN_IMAGE, "zero-byte file"),
    "truncated.png": (TRUNCATED, "PNG cut in the middle of its IDAT data (header intact)"),
    "truncated.jpg": (TRUNCATED, "JPEG cut in the middle of its entropy-coded data (header intact)"),
    "text.jpg": (NOT_AN_IMAGE, "a text file named .jpg"),
    "bomb.png": (PIXELS, "decompression bomb: PNG whose IHDR claims 100000x100000 (10 GP), a few hundred bytes"),
    "bomb-120mp.png": (PIXELS, "PNG claiming 12000x10000 (120 MP): over the default --max-pixels (100 MP) but under Pillow's own hard limit, so the tool's check must catch it"),
    # -- skipped silently
    ".secret.png": ("skip", "hidden file (a valid PNG)"),
    ".hidden/inside.png": ("skip", "valid PNG inside a hidden folder (with --recursive)"),
    "notes.txt": ("skip", "text file, no image extension"),
    "README": ("skip", "text file without an extension"),
}

#: Runtime-only cases (``build(folder, runtime_only=True)``): relative path -> (kind, what it is).
RUNTIME: dict[str, tuple[str, str]] = {
    os.fsdecode(BAD_NAME): ("good", "valid PNG (90x120) whose file name bytes are not UTF-8 (b'bad-\\xff\\xfe.png')"),
    "loop.png": (LOOP, "symlink loop: loop.png -> loop.png"),
    "dangling.png": (MISSING, "symlink to a file that does not exist"),
    "sub/again": ("skip", "directory symlink loop sub/again -> .. (with --recursive: must not recurse forever)"),
    "unreadable.png": (DENIED, "valid PNG with mode 000 (not created when running as root, who can read it anyway)"),
}


# --- helpers -------------------------------------------------------------------------------


def _photo(name: str) -> Image.Image:
    with Image.open(EXAMPLES / name) as im:
        im.load()
        return im.copy()


def _small(name: str, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Photo ``name`` centre-cropped to the aspect of ``size`` and resized to it."""
    im = _photo(name).convert(mode)
    w, h = im.size
    tw, th = size
    if w * th > h * tw:  # too wide
        nw = h * tw // th
        im = im.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
    else:
        nh = w * th // tw
        im = im.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))
    return im.resize(size, Image.Resampling.LANCZOS)


def _png_bytes(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG", **kw)
    return b.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG from its parts: signature, IHDR, one IDAT (``idat`` compressed as it is), IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _rgb48_png(im: Image.Image) -> bytes:
    """A 16-bit-per-channel RGB PNG (colour type 2, depth 16) of ``im``, built by hand."""
    a = np.asarray(im.convert("RGB"), dtype=np.uint16)
    a16 = (a * 257).astype(">u2")  # 0..255 -> 0..65535, big-endian
    h, w, _ = a16.shape
    rows = b"".join(b"\x00" + a16[y].tobytes() for y in range(h))  # filter type 0 per row
    return _raw_png(w, h, 16, 2, zlib.compress(rows, 9))


def _bomb_png(width: int, height: int) -> bytes:
    """PNG whose IHDR claims ``width x height`` (8-bit gray) with the data of one row only:
    a few hundred bytes; decoding it would need ``width * height`` bytes."""
    return _raw_png(width, height, 8, 0, zlib.compress(b"\x00" * (1 + width), 9))


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    r = np.broadcast_to(60 + 120 * x, (height, width))
    g = np.broadcast_to(80 + 100 * y, (height, width))
    b = 200 - 100 * x * y
    arr = np.stack([r, g, b], axis=-1).round().astype(np.uint8)
    return Image.fromarray(arr)


def _write(folder: Path, rel: str, data: bytes) -> None:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


# --- the corpus ----------------------------------------------------------------------------


def _static_files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}

    g16 = np.asarray(_small("camera.png", (120, 80), "L"), dtype=np.uint16) * 257
    g16 = g16 + np.arange(120, dtype=np.uint16)[None, :]  # low bits used: really 16-bit
    files["gray16.png"] = _png_bytes(Image.fromarray(g16.astype(np.uint16)))

    files["rgb48.png"] = _rgb48_png(_small("coffee.png", (90, 60)))

    files["cmyk.jpg"] = _jpeg_bytes(_small("rocket.jpg", (160, 107)).convert("CMYK"), quality=85)

    pal = _small("chelsea.png", (120, 80)).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pa = np.asarray(pal).copy()
    pa[:20, :30] = 63  # a fully transparent corner, index 63
    pal_t = Image.frombytes("P", (pa.shape[1], pa.shape[0]), pa.tobytes())
    pal_t.putpalette(pal.getpalette())
    files["palette-trns.png"] = _png_bytes(pal_t, transparency=63)

    files["gray.png"] = _png_bytes(_small("camera.png", (96, 96), "L"))

    la = _small("camera.png", (80, 120), "L")
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 80).astype(np.uint8), (120, 1)))
    files["gray-alpha.png"] = _png_bytes(Image.merge("LA", (la, alpha)))

    rgba = _small("chelsea.png", (150, 100)).convert("RGBA")
    ra = np.asarray(rgba).copy()
    ra[:, :40, 3] = 0  # fully transparent left band
    ra[:, 40:80, 3] = 128  # half transparent
    ra[:, :40, :3] = 0  # hidden colour under transparency: black
    files["rgba-transparent.png"] = _png_bytes(Image.fromarray(ra))

    src = _small("chelsea.png", (100, 60))
    frames = [src, src.transpose(Image.Transpose.FLIP_LEFT_RIGHT), src.convert("L").convert("RGB")]
    b = io.BytesIO()
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = b.getvalue()

    b = io.BytesIO()
    _small("coffee.png", (120, 80)).save(b, "TIFF", save_all=True, append_images=[_small("rocket.jpg", (60, 120))], compression="tiff_deflate")
    files["multipage.tif"] = b.getvalue()

    files["tiny-3x2.png"] = _png_bytes(Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[255, 255, 0], [0, 255, 255], [255, 0, 255]]], dtype=np.uint8)))

    files["large-6000x4000.jpg"] = _jpeg_bytes(_gradient(6000, 4000), quality=50, optimize=True)

    files["exif-rotated.jpg"] = _jpeg_bytes(_small("rocket.jpg", (160, 107)), quality=85, exif=_exif_orientation(6))

    files["café au lait.png"] = _png_bytes(_small("coffee.png", (150, 100)))
    files["写真 1.jpg"] = _jpeg_bytes(_small("rocket.jpg", (160, 107)), quality=85)
    files["UPPER.JPG"] = _jpeg_bytes(_small("chelsea.png", (107, 160)), quality=85)
    files["sub/inner.png"] = _png_bytes(_small("coffee.png", (100, 100)))

    files["empty.png"] = b""
    whole = _png_bytes(_small("chelsea.png", (150, 100)))
    files["truncated.png"] = whole[: len(whole) * 6 // 10]
    whole = _jpeg_bytes(_small("rocket.jpg", (160, 107)), quality=85)
    files["truncated.jpg"] = whole[: len(whole) * 6 // 10]
    files["text.jpg"] = b"This is not a JPEG.\nJust some text with a .jpg name.\n"
    files["bomb.png"] = _bomb_png(100_000, 100_000)
    files["bomb-120mp.png"] = _bomb_png(12_000, 10_000)

    files[".secret.png"] = _png_bytes(_small("chelsea.png", (60, 40)))
    files[".hidden/inside.png"] = _png_bytes(_small("chelsea.png", (60, 40)))
    files["notes.txt"] = b"Notes: none of this is an image.\n"
    files["README"] = b"A README without extension; not an image.\n"

    assert set(files) == set(STATIC), set(files) ^ set(STATIC)
    return files


def _runtime(folder: Path) -> dict[str, str]:
    manifest: dict[str, str] = {}
    # a name whose bytes are not valid UTF-8, holding a valid PNG
    fd = os.open(os.fsencode(folder) + b"/" + BAD_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, _png_bytes(_small("chelsea.png", (90, 120))))
    finally:
        os.close(fd)
    manifest[os.fsdecode(BAD_NAME)] = RUNTIME[os.fsdecode(BAD_NAME)][0]
    # symlink loop to itself
    os.symlink("loop.png", folder / "loop.png")
    manifest["loop.png"] = RUNTIME["loop.png"][0]
    # dangling symlink
    os.symlink("no-such-target.png", folder / "dangling.png")
    manifest["dangling.png"] = RUNTIME["dangling.png"][0]
    # a directory symlink loop, sub/again -> ..
    (folder / "sub").mkdir(exist_ok=True)
    os.symlink("..", folder / "sub" / "again", target_is_directory=True)
    manifest["sub/again"] = RUNTIME["sub/again"][0]
    # unreadable file (root can read anything: not created then)
    if os.geteuid() != 0:
        p = folder / "unreadable.png"
        p.write_bytes(_png_bytes(_small("chelsea.png", (60, 40))))
        p.chmod(0)
        manifest["unreadable.png"] = RUNTIME["unreadable.png"][0]
    return manifest


def build(folder: Path, *, runtime_only: bool = False) -> dict[str, str]:
    """Write the corpus into ``folder`` (created if needed) and return its manifest
    ``{relative path (str, "/"-separated): "good" | "bad:<keyword>|..." | "skip"}``.

    ``runtime_only=False``: the static files (what lives in ``tests/data/corpus/``).
    ``runtime_only=True``: only the cases git cannot hold well, added to ``folder`` (usually
    a copy of the static corpus): a non-UTF-8 file name, symlink loops (file and folder),
    a dangling symlink and, unless running as root, a chmod-000 file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if runtime_only:
        return _runtime(folder)
    for rel, data in _static_files().items():
        _write(folder, rel, data)
    return {rel: kind for rel, (kind, _) in STATIC.items()}


def expected_size(native: int, width: int, height: int) -> tuple[int, int]:
    """The tool's output size for a source displayed at ``width x height``: aspect kept,
    longer side ``native``, the other rounded down to a multiple of 8, at least 8."""

    def r8(x: int) -> int:
        return max(8, x // 8 * 8)

    if width >= height:
        return r8(native), r8(native * height // width)
    return r8(native * width // height), r8(native)


def _readme(sizes: dict[str, int]) -> str:
    def outcome(kind: str) -> str:
        if kind == "good":
            return "processed: `<stem>.png` written"
        if kind == "skip":
            return "skipped silently"
        return "refused: one stderr line, reason containing " + " / ".join(f"`{k}`" for k in kind[4:].split("|"))

    lines = [
        "# Hostile-inputs corpus",
        "",
        "Files for `tests/test_corpus.py`: awkward images `img2img run` must process, hostile",
        "files it must refuse (one `img2img: error: <path>: <reason>` line each on stderr, the",
        "rest of the folder processed, exit code 1), and files it must skip without a word.",
        "Whatever happens: no traceback, no temporary or partial file left in the output folder,",
        "every input byte-identical afterwards.",
        "",
        "Generated by `python tests/data/make_corpus.py` from the photos in `examples/` (and raw",
        "bytes where Pillow cannot or must not write the file); deterministic, so running it again",
        "gives the same bytes. Do not edit the files by hand: edit the script and rerun it.",
        "",
        "## Static files (`corpus/`)",
        "",
        "| file | bytes | what it is | expected outcome |",
        "|---|---:|---|---|",
    ]
    for rel, (kind, what) in STATIC.items():
        lines.append(f"| `{rel}` | {sizes[rel]:,} | {what} | {outcome(kind)} |")
    lines += [
        "",
        f"Total: {sum(sizes.values()):,} bytes.",
        "",
        "## Created at test time (`build(folder, runtime_only=True)`)",
        "",
        "| file | what it is | expected outcome |",
        "|---|---|---|",
    ]
    for rel, (kind, what) in RUNTIME.items():
        shown = "bad-\\xff\\xfe.png" if rel == os.fsdecode(BAD_NAME) else rel
        lines.append(f"| `{shown}` | {what} | {outcome(kind)} |")
    lines += [
        "",
        "The test runs `img2img run <copy of corpus> --recursive --model tiny --steps 4 --seed 1 -o OUT`",
        "and checks every row above; output sizes follow the tool's rule (aspect ratio kept, longer",
        "side 64 px for the tiny model, the other rounded down to a multiple of 8, at least 8; EXIF",
        "orientation applied first).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    build(CORPUS)
    sizes = {rel: (CORPUS / rel).stat().st_size for rel in STATIC}
    README.write_text(_readme(sizes), encoding="utf-8")
    for rel in STATIC:
        print(f"{sizes[rel]:>9,}  {rel}")
    print(f"{sum(sizes.values()):>9,}  total in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

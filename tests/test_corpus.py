"""Hostile inputs: the corpus of ``tests/data/`` (see its README) run through ``img2img run``.

Awkward images are processed, hostile files are refused one stderr line each while the rest
of the folder is processed (exit code 1), hidden and non-image files are skipped silently;
whatever happens: no traceback, no temporary or partial file in the output folder, every
input byte-identical afterwards, every output a complete PNG of the expected size.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app

from .conftest import EXAMPLES, ROOT

DATA = ROOT / "tests" / "data"
CORPUS = DATA / "corpus"
NATIVE = 64  # the tiny model's native resolution
FAST = ["--model", "tiny", "--steps", "4", "--seed", "1"]
ERROR = "img2img: error: "
SUMMARY = re.compile(r"^\d+ written, \d+ skipped, \d+ failed in ")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

runner = CliRunner()


def _load_make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", DATA / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_corpus", mod)
    spec.loader.exec_module(mod)
    return mod


mc = _load_make_corpus()

#: Output sizes worked out by hand (the rest are computed from the input's header).
KNOWN_SIZES = {
    "exif-rotated.jpg": (40, 64),  # 160x107 stored, orientation 6: displayed 107x160
    "multipage.tif": (64, 40),  # page 1 is 120x80; page 2 (60x120) would give 32x64
    "tiny-3x2.png": (64, 40),  # 64 x 42.7 -> 40
    "large-6000x4000.jpg": (64, 40),
    "gray.png": (64, 64),
    "gray-alpha.png": (40, 64),  # 80x120: 42.7 x 64 -> 40
    "animated.gif": (64, 32),  # 100x60: 64 x 38.4 -> 32
    "UPPER.JPG": (40, 64),
    os.fsdecode(mc.BAD_NAME): (48, 64),  # 90x120
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def one_torch_thread():
    """The machine is shared: one intra-op thread avoids oversubscription (and is faster here)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (symlinks not followed): kind, mode, size, mtime, content hash."""
    res: dict[str, tuple] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb, followlinks=False):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.fsdecode(os.path.relpath(p, rootb))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                res[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                res[rel] = ("dir", st.st_mode)
            else:
                try:
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                except PermissionError:
                    digest = None
                res[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return res


def expected_size(path: Path) -> tuple[int, int]:
    """Output size for the input at ``path`` by the tool's rule, from the file itself: first
    frame, EXIF orientation applied, longer side 64, other side rounded down to 8 (>= 8)."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:
            orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return mc.expected_size(NATIVE, w, h)


def keywords(kind: str) -> list[str]:
    assert kind.startswith("bad:"), kind
    return [k.lower() for k in kind[4:].split("|")]


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def refusal_reason(line: str, rel: str) -> str | None:
    """The reason part of ``line`` if it is ``img2img: error: <path>: <reason>`` with ``<path>``
    ending in ``rel``'s file name; ``None`` otherwise."""
    if not line.startswith(ERROR):
        return None
    name = Path(rel).name
    rest = line[len(ERROR) :]
    if is_utf8(name):
        i = rest.find(name + ": ")
        if i < 0 or (i > 0 and rest[i - 1] != "/"):
            return None
        return rest[i + len(name) + 2 :]
    # a non-UTF-8 name is printed escaped one way or another: match its ASCII parts
    stem, ext = "bad-", ".png"
    m = re.search(re.escape(stem) + r".{1,40}?" + re.escape(ext) + ": ", rest)
    return rest[m.end() :] if m else None


def output_files(out: Path) -> dict[str, Path]:
    """Every non-directory entry under ``out`` (names may not be UTF-8), by relative path."""
    res = {}
    outb = os.fsencode(out)
    for dirpath, dirnames, filenames in os.walk(outb, followlinks=False):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.fsdecode(os.path.relpath(p, outb))
            if not os.path.isdir(p) or os.path.islink(p):
                res[rel] = Path(os.fsdecode(p))
            else:
                res[rel + "/"] = Path(os.fsdecode(p))
    return res


def make_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "in"
    shutil.copytree(CORPUS, src, symlinks=True)
    manifest = {rel: kind for rel, (kind, _) in mc.STATIC.items()}
    manifest.update(mc.build(src, runtime_only=True))
    return src, manifest


# --- the corpus itself ------------------------------------------------------------------------


def test_corpus_is_complete_small_and_deterministic(tmp_path):
    committed = {rel for rel, kind in snapshot(CORPUS).items() if kind[0] != "dir"}
    assert committed == set(mc.STATIC), "tests/data/corpus is out of date: run python tests/data/make_corpus.py"
    total = sum((CORPUS / rel).stat().st_size for rel in committed)
    assert total < 1_500_000
    a = mc.build(tmp_path / "a")
    b = mc.build(tmp_path / "b")
    assert a == b == {rel: kind for rel, (kind, _) in mc.STATIC.items()}
    for rel in mc.STATIC:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), f"{rel}: not deterministic"
    # what is committed is what the script makes (format, mode, size, frames; bytes may differ
    # with another Pillow or zlib)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the bombs' headers only are read
    try:
        for rel in mc.STATIC:
            if not rel.endswith((".png", ".jpg", ".JPG", ".gif", ".tif")) or (CORPUS / rel).stat().st_size == 0 or rel == "text.jpg":
                assert (CORPUS / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes(), rel
                continue
            with Image.open(CORPUS / rel) as x, Image.open(tmp_path / "a" / rel) as y:
                assert (x.format, x.mode, x.size, getattr(x, "n_frames", 1)) == (y.format, y.mode, y.size, getattr(y, "n_frames", 1)), rel
    finally:
        Image.MAX_IMAGE_PIXELS = limit


# --- the whole folder -------------------------------------------------------------------------


def test_hostile_corpus(tmp_path, one_torch_thread):
    src, manifest = make_folder(tmp_path)
    before = snapshot(src)
    entries = {rel for rel, kind in before.items() if kind[0] != "dir"}
    assert entries == set(manifest), "every corpus entry needs a manifest line"
    good = sorted(rel for rel, kind in manifest.items() if kind == "good")
    bad = sorted(rel for rel, kind in manifest.items() if kind.startswith("bad:"))
    sizes = {rel: expected_size(src / rel) for rel in good}
    for rel, size in KNOWN_SIZES.items():
        assert sizes[rel] == size, f"test's own size rule disagrees for {rel}"

    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = invoke("run", src, "--recursive", *FAST, "-o", out)
    seconds = time.perf_counter() - t0
    after = snapshot(src)

    problems: list[str] = []
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        problems.append(f"the command raised {type(r.exception).__name__}: {r.exception}")
    if r.exit_code != 1:
        problems.append(f"exit code {r.exit_code}, expected 1")
    for stream, text in (("stderr", r.stderr), ("stdout", r.stdout)):
        if "Traceback" in text:
            problems.append(f"a traceback on {stream}")
    if "internal error" in r.stderr:
        problems.append("an internal error on stderr")

    # -- stderr: one refusal line per bad file, with a reason; nothing about the others
    lines = r.stderr.splitlines()
    error_lines = [line for line in lines if line.startswith(ERROR)]
    claimed: set[int] = set()
    for rel in bad:
        hits = [(i, reason) for i, line in enumerate(error_lines) if (reason := refusal_reason(line, rel)) is not None]
        if len(hits) != 1:
            problems.append(f"{rel}: {len(hits)} refusal lines on stderr, expected 1: {[error_lines[i] for i, _ in hits]}")
        for i, reason in hits:
            claimed.add(i)
            if not any(k in reason.lower() for k in keywords(manifest[rel])):
                problems.append(f"{rel}: reason {reason!r} contains none of {keywords(manifest[rel])}")
    for i, line in enumerate(error_lines):
        if i not in claimed:
            problems.append(f"unexpected error line (a good or skipped file refused?): {line!r}")
    for line in lines:
        if not line.startswith("img2img: ") and not SUMMARY.match(line) and line.strip():
            problems.append(f"unexpected stderr line: {line!r}")
    summary = [line for line in lines if SUMMARY.match(line)]
    if not summary or not summary[-1].startswith(f"{len(good)} written, 0 skipped, {len(bad)} failed"):
        problems.append(f"summary {summary!r}, expected '{len(good)} written, 0 skipped, {len(bad)} failed ...'")

    # -- outputs: exactly one complete PNG per good file, of the expected size; no leftovers
    written = output_files(out) if out.exists() else {}
    expected = {str(Path(rel).with_suffix(".png")) for rel in good}
    got = {rel for rel in written if not rel.endswith("/")}
    for rel in sorted(expected - got):
        problems.append(f"missing output {rel!r}")
    for rel in sorted(got - expected):
        problems.append(f"unexpected file in the output folder: {rel!r}")
    for rel in written:
        parts = rel.rstrip("/").split("/")
        if any(p.startswith(".") for p in parts) or rel.endswith((".tmp", ".tmp/")) or ".tmp" in parts[-1]:
            problems.append(f"temporary or hidden file left in the output folder: {rel!r}")
    for rel in good:
        orel = str(Path(rel).with_suffix(".png"))
        if orel not in written:
            continue
        try:
            with Image.open(written[orel]) as im:
                fmt, mode, size = im.format, im.mode, im.size
                im.load()
        except Exception as e:
            problems.append(f"{orel}: not a complete image ({type(e).__name__}: {e})")
            continue
        if fmt != "PNG" or mode != "RGB":
            problems.append(f"{orel}: {fmt} {mode}, expected PNG RGB")
        if size != sizes[rel]:
            problems.append(f"{orel}: size {size[0]}x{size[1]}, expected {sizes[rel][0]}x{sizes[rel][1]}")
    # the non-UTF-8 name is printed (somehow) on stdout
    if not any("bad-" in line and line.endswith(".png") for line in r.stdout.splitlines()):
        problems.append(f"the output of {os.fsencode(mc.BAD_NAME)!r} is not printed on stdout: {r.stdout!r}")

    # -- inputs untouched
    for rel in sorted(set(before) | set(after)):
        if before.get(rel) != after.get(rel):
            problems.append(f"input {rel!r} changed: {before.get(rel)} -> {after.get(rel)}")

    report = "\n".join(f"  - {p}" for p in problems)
    assert not problems, (
        f"{len(problems)} contract violations ({seconds:.1f} s):\n{report}\n"
        f"--- exit code {r.exit_code}\n--- stderr:\n{r.stderr}\n--- stdout:\n{r.stdout}"
    )


# --- focused cases ----------------------------------------------------------------------------

_PROBE = r"""
import json, resource, sys, time
from pathlib import Path
import numpy, PIL.Image, PIL.PngImagePlugin  # imported before the limit
from img2img_cli.errors import InputError
from img2img_cli.io import load_image, probe_size
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
limit = vm + 64 * 2**20  # 64 MiB more than now: far less than either bomb would need
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
for arg in sys.argv[1:]:
    for fn in (probe_size, load_image):
        t0 = time.perf_counter()
        try:
            fn(Path(arg))
            res = "accepted"
        except InputError as e:
            res = "refused: " + str(e)
        except BaseException as e:
            res = "crashed: %s: %s" % (type(e).__name__, e)
        print(json.dumps({"file": Path(arg).name, "fn": fn.__name__, "result": res, "seconds": time.perf_counter() - t0}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
def test_bombs_are_refused_fast_without_allocating():
    """Both bombs are refused by the pixel limit in well under 2 s, in a process that could not
    allocate even the 120 MB the smaller one would need."""
    files = [CORPUS / "bomb.png", CORPUS / "bomb-120mp.png"]
    p = subprocess.run([sys.executable, "-c", _PROBE, *map(str, files)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 4, p.stdout + p.stderr
    for row in rows:
        where = f"{row['fn']}({row['file']})"
        assert row["result"].startswith("refused: "), f"{where}: {row['result']}"
        assert row["file"] in row["result"], f"{where}: {row['result']}"
        assert "pixels" in row["result"], f"{where}: {row['result']}"
        assert row["seconds"] < 2, f"{where}: {row['seconds']:.2f} s"


def test_bomb_alone_refused_by_the_cli(tmp_path, one_torch_thread):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(CORPUS / "bomb.png", d / "bomb.png")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = invoke("run", d, *FAST, "-o", out)
    seconds = time.perf_counter() - t0
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1 and "bomb.png: " in errors[0] and "pixels" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.iterdir())
    assert seconds < 30, f"{seconds:.1f} s to refuse one bomb"


def test_max_pixels_refuses_an_ordinary_photo(tmp_path, one_torch_thread):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(EXAMPLES / "chelsea.png", d / "chelsea.png")  # 451x300 = 135,300 px
    shutil.copy(CORPUS / "tiny-3x2.png", d / "tiny-3x2.png")  # 6 px
    before = snapshot(d)
    out = tmp_path / "out"
    r = invoke("run", d, *FAST, "--max-pixels", "1000", "-o", out)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1, r.stderr
    assert "chelsea.png: " in errors[0] and "--max-pixels" in errors[0], errors[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny-3x2.png"]
    with Image.open(out / "tiny-3x2.png") as im:
        im.load()
        assert im.size == (64, 40)
    assert snapshot(d) == before


def test_symlinked_folder_loop_does_not_recurse(tmp_path, one_torch_thread):
    """``sub/again -> ..`` with --recursive: each image once, no ``again/`` in the output."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(CORPUS / "tiny-3x2.png", d / "top.png")
    shutil.copy(CORPUS / "tiny-3x2.png", d / "sub" / "inner.png")
    os.symlink("..", d / "sub" / "again", target_is_directory=True)
    out = tmp_path / "out"
    r = invoke("run", d, "--recursive", *FAST, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(output_files(out)) == ["sub/", "sub/inner.png", "top.png"]


def test_real_process_stderr_is_clean(tmp_path):
    """The console script in a real process (Python warnings are not swallowed by pytest there):
    stderr holds only ``img2img:`` lines and the summary, the non-UTF-8 name is printed."""
    d = tmp_path / "in"
    d.mkdir()
    for rel in ("bomb-120mp.png", "bomb.png", "truncated.jpg", "empty.png", "tiny-3x2.png"):
        shutil.copy(CORPUS / rel, d / rel)
    mc.build(d, runtime_only=True)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "img2img_cli", "run", str(d), *FAST, "-o", str(out)]
    p = subprocess.run(cmd, capture_output=True, env={**ENV, "OMP_NUM_THREADS": "1"}, cwd=ROOT, timeout=300)
    err = p.stderr.decode("utf-8", "replace")
    outp = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    stray = [line for line in err.splitlines() if line.strip() and not line.startswith("img2img: ") and not SUMMARY.match(line)]
    assert not stray, f"stray stderr lines: {stray}\n{err}"
    refused = {name for name in ("bomb-120mp.png", "bomb.png", "truncated.jpg", "empty.png", "loop.png", "dangling.png") if any(refusal_reason(line, name) is not None for line in err.splitlines())}
    assert refused == {"bomb-120mp.png", "bomb.png", "truncated.jpg", "empty.png", "loop.png", "dangling.png"}, err
    assert any("bad-" in line for line in outp.splitlines()), outp
    assert sorted(os.listdir(os.fsencode(out))) == sorted([mc.BAD_NAME, b"tiny-3x2.png"])


def test_unreadable_file_is_refused(tmp_path, one_torch_thread, monkeypatch):
    """A file that cannot be opened (EACCES, as a mode 000 file gives a user other than root;
    raised here by ``open`` for that one path, so that it runs as root too): one stderr line
    naming the file, the rest of the folder processed, exit code 1."""
    import builtins
    import errno
    import io

    d = tmp_path / "in"
    d.mkdir()
    p = d / "unreadable.png"
    shutil.copy(CORPUS / "tiny-3x2.png", p)
    shutil.copy(CORPUS / "tiny-3x2.png", d / "readable.png")
    real_open = builtins.open
    opened = []

    def refuse(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) == str(p):
            opened.append(file)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)  # Pillow's Image.open
    monkeypatch.setattr(io, "open", refuse)  # Path.open, Path.read_bytes
    r = invoke("run", d, *FAST, "-o", tmp_path / "out")
    monkeypatch.undo()
    assert opened, "the unreadable file was never opened"
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith(ERROR)]
    assert errors == [f"{ERROR}{p}: permission denied"], r.stderr
    assert any(k in errors[0].lower() for k in keywords(mc.DENIED)), errors[0]
    assert sorted(output_files(tmp_path / "out")) == ["readable.png"]
    assert p.read_bytes() == (CORPUS / "tiny-3x2.png").read_bytes()

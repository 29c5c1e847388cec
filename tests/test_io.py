"""Reading, sizing, A1111 resize modes, naming, atomic writes, styles, job validation."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img2img_cli.inputs import InputItem, collect_inputs
from img2img_cli.outputs import OutputPlan
from img2img_cli.config import Job, parse_size
from img2img_cli.errors import InputError, OutputError, UsageError
from img2img_cli import writing as writing_module
from img2img_cli.io import load_image, resize_image, target_size
from img2img_cli.writing import atomic_save, free_name, remove_stale_temp_files, temp_prefix
from img2img_cli.metadata import read_infotext
from img2img_cli.styles import Style, parse_style

from .conftest import EXAMPLES


def two_colour(w=100, h=50):
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize(
    "src, native, w, h, expected",
    [
        ((451, 300), 64, None, None, (64, 40)),
        ((300, 451), 512, None, None, (336, 512)),
        ((640, 427), 512, None, None, (512, 336)),
        ((512, 512), 768, None, None, (768, 768)),
        ((640, 427), 1024, None, None, (1024, 680)),
        ((451, 300), 512, 256, None, (256, 168)),
        ((451, 300), 512, None, 256, (384, 256)),
        ((451, 300), 512, 320, 320, (320, 320)),
        ((3, 2000), 512, None, None, (8, 512)),
    ],
)
def test_target_size(src, native, w, h, expected):
    assert target_size(src, native, w, h) == expected


PALETTE = {
    "red": (255, 0, 0),
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


def framed(w=120, h=60, border=6):
    """Quadrants red, blue / green, yellow (the left and right halves differ, and so do the top
    and bottom), framed by edge stripes: cyan left, magenta right, white top, black bottom."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = PALETTE["red"]
    a[: h // 2, w // 2 :] = PALETTE["blue"]
    a[h // 2 :, : w // 2] = PALETTE["green"]
    a[h // 2 :, w // 2 :] = PALETTE["yellow"]
    a[:, :border] = PALETTE["cyan"]
    a[:, -border:] = PALETTE["magenta"]
    a[:border] = PALETTE["white"]
    a[-border:] = PALETTE["black"]
    return Image.fromarray(a)


def colour(a, x, y):
    """The palette colour of pixel ``(x, y)`` of array ``a`` (within 40 per channel), or None."""
    for name, rgb in PALETTE.items():
        if max(abs(int(v) - c) for v, c in zip(a[y, x], rgb)) <= 40:
            return name
    return None


def test_resize_modes_follow_a1111():
    im = two_colour(100, 50)
    crop = np.asarray(resize_image(im, 50, 50, "crop"))
    # crop keeps the centre 50x50: 25 red columns then 25 blue
    assert tuple(crop[25, 5]) == (255, 0, 0) and tuple(crop[25, 45]) == (0, 0, 255)
    just = np.asarray(resize_image(im, 50, 50, "just"))
    # stretched: the full width is kept, squeezed
    assert tuple(just[25, 5]) == (255, 0, 0) and tuple(just[25, 45]) == (0, 0, 255)
    fill = np.asarray(resize_image(im, 50, 50, "fill"))
    # fitted inside (50x25 at y=12..37), the bands above and below filled with the edge rows
    assert tuple(fill[0, 5]) == (255, 0, 0) and tuple(fill[49, 45]) == (0, 0, 255)
    tall = np.asarray(resize_image(Image.fromarray(np.full((10, 10, 3), 200, np.uint8)), 40, 20, "fill"))
    assert (tall == 200).all()  # no black bars
    assert resize_image(im, 100, 50, "crop") is im  # already the size: untouched
    with pytest.raises(ValueError, match="resize mode 'stretch'"):
        resize_image(im, 50, 50, "stretch")


@pytest.mark.parametrize("size", [(40, 40), (90, 30), (30, 60), (64, 24), (200, 40)])
def test_resize_modes_are_diffusers_vae_image_processor(size):
    """``just``/``crop``/``fill`` are diffusers' ``VaeImageProcessor.resize`` modes
    ``default``/``crop``/``fill`` (LANCZOS), pixel for pixel; on a target whose aspect ratio
    differs from the source's the three differ, so two modes swapped (or width and height
    swapped: ``resize`` takes ``height, width``) fail here."""
    from diffusers.image_processor import VaeImageProcessor

    w, h = size
    im = framed(120, 60)
    processor = VaeImageProcessor(resample="lanczos")
    ours = {mode: np.asarray(resize_image(im, w, h, mode)) for mode in ("just", "crop", "fill")}
    for mode, theirs in [("just", "default"), ("crop", "crop"), ("fill", "fill")]:
        expected = np.asarray(processor.resize(im, h, w, resize_mode=theirs))
        assert ours[mode].shape == (h, w, 3)
        np.testing.assert_array_equal(ours[mode], expected, err_msg=mode)
    np.testing.assert_array_equal(ours["just"], np.asarray(im.resize((w, h), Image.Resampling.LANCZOS)))
    assert not np.array_equal(ours["crop"], ours["fill"])
    assert not np.array_equal(ours["fill"], ours["just"])
    assert not np.array_equal(ours["crop"], ours["just"])


def test_resize_modes_by_hand():
    """What each mode keeps of the framed 120x60 (2:1) source, visibly."""
    im = framed(120, 60)
    # wider target, 90x30 (3:1)
    just, crop, fill = (np.asarray(resize_image(im, 90, 30, m)) for m in ("just", "crop", "fill"))
    # just: the whole frame, squeezed: white top row, cyan left edge, red at x=12
    assert [colour(just, x, 0) for x in (3, 30, 60, 87)] == ["white"] * 4
    assert [colour(just, x, 9) for x in (0, 12, 60, 89)] == ["cyan", "red", "blue", "magenta"]
    assert [colour(just, x, 22) for x in (0, 12, 60, 89)] == ["cyan", "green", "yellow", "magenta"]
    assert colour(just, 45, 29) == "black"
    # crop: scaled to 90x45, 7 rows cut at the top and bottom: no white or black stripe left
    assert [colour(crop, x, 0) for x in (0, 12, 60, 89)] == ["cyan", "red", "blue", "magenta"]
    assert [colour(crop, x, 29) for x in (0, 12, 60, 89)] == ["cyan", "green", "yellow", "magenta"]
    # fill: scaled to 60x30 at x=15..74, side bands repeat the edge columns (cyan, magenta)
    assert [colour(fill, x, 0) for x in (3, 30, 60, 87)] == ["white"] * 4
    assert [colour(fill, x, 9) for x in (0, 12, 24, 60, 80, 89)] == ["cyan", "cyan", "red", "blue", "magenta", "magenta"]
    assert colour(fill, 45, 29) == "black"

    # taller target, 30x60 (1:2)
    just, crop, fill = (np.asarray(resize_image(im, 30, 60, m)) for m in ("just", "crop", "fill"))
    assert [colour(just, x, 15) for x in (0, 9, 24)] == ["cyan", "red", "blue"]
    assert [colour(just, y=y, x=12) for y in (0, 15, 45, 59)] == ["white", "red", "green", "black"]
    # crop: the middle 30 of 120 columns: no cyan or magenta stripe, left meets right at x=15
    assert [colour(crop, x, 15) for x in (0, 9, 24, 29)] == ["red", "red", "blue", "blue"]
    assert [colour(crop, x, 45) for x in (0, 29)] == ["green", "yellow"]
    assert colour(crop, 12, 0) == "white" and colour(crop, 12, 59) == "black"
    # fill: scaled to 30x15 at y=22..36, bands above and below repeat the white and black rows
    assert [colour(fill, 12, y) for y in (0, 15, 45, 59)] == ["white", "white", "black", "black"]
    assert [colour(fill, x, 27) for x in (6, 24)] == ["red", "blue"]


def test_load_image_modes_and_orientation(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # alpha onto white
    Image.new("L", (8, 4), 77).save(tmp_path / "grey.png")
    im = load_image(tmp_path / "grey.png")
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (77, 77, 77)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)
    frames = [Image.new("RGB", (6, 6), c) for c in ((0, 255, 0), (255, 0, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").getpixel((0, 0)) == (0, 255, 0)


def test_load_image_errors_name_the_file(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(InputError, match=r"text\.jpg: not an image"):
        load_image(tmp_path / "text.jpg")
    data = (EXAMPLES / "rocket.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"cut\.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(InputError, match="over the limit"):
        load_image(EXAMPLES / "chelsea.png", max_pixels=1000)


def test_atomic_save_never_overwrites_and_leaves_no_temp(tmp_path):
    im = Image.new("RGB", (16, 8), (1, 2, 3))
    dest = tmp_path / "sub" / "a.png"
    assert atomic_save(im, dest, "png", "p\nSteps: 1, Seed: 2, Size: 16x8") == dest
    assert atomic_save(im, dest, "png", "q\nSteps: 1, Seed: 3, Size: 16x8") == tmp_path / "sub" / "a-0001.png"
    assert read_infotext(dest).startswith("p\n")
    assert atomic_save(im, dest, "png", "r\nSteps: 1, Seed: 4, Size: 16x8", overwrite=True) == dest
    assert read_infotext(dest).startswith("r\n")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a-0001.png", "a.png"]
    assert free_name(dest) == tmp_path / "sub" / "a-0002.png"


def test_atomic_save_unwritable_folder(tmp_path, monkeypatch):
    """A folder that refuses new files (EACCES from ``open(O_CREAT)``, as a mode 0500 folder
    gives a user other than root): one line naming the file, ``errno`` kept, nothing left."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if Path(os.fsdecode(path)).parent == ro:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)  # what tempfile.mkstemp calls
    with pytest.raises(OutputError) as e:
        atomic_save(Image.new("RGB", (8, 8)), ro / "a.png", "png", "x\nSteps: 1, Seed: 1, Size: 8x8")
    message = str(e.value)
    assert message.startswith(f"{ro / 'a.png'}: cannot write (") and "Permission denied" in message
    assert "\n" not in message
    assert e.value.errno == errno.EACCES and e.value.exit_code == 1
    assert list(ro.iterdir()) == []


def _dead_pid() -> int:
    """The pid of a child process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("host", [None, "build-7"])  # this host's name, or a name with dashes and digits
def test_remove_stale_temp_files(tmp_path, monkeypatch, host):
    if host is not None:
        monkeypatch.setattr(writing_module, "_HOST", host)
    here = writing_module._HOST
    assert temp_prefix() == f".img2img-{here}-{os.getpid()}-"
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = sleeper.pid
        names = {
            f".img2img-{here}-{dead}-abc123_x.tmp": False,  # a dead process of this host: removed
            f".img2img-{here}-{dead}-q.tmp": False,
            f"{temp_prefix()}mine.tmp": True,  # this process
            f".img2img-{here}-{alive}-abc.tmp": True,  # a live process
            f".img2img-other-host-{dead}-abc.tmp": True,  # another host (a shared folder)
            f".img2img-{here}x-{dead}-abc.tmp": True,
            f".img2img-{here}-{dead}-abc.png": True,  # not a temporary file
            f"img2img-{here}-{dead}-abc.tmp": True,  # not hidden
            f".img2img-{here}-{dead}.tmp": True,
            f".img2img-{here}--abc.tmp": True,
            "notes.tmp": True,
            "a.png": True,
        }
        for name in names:
            (tmp_path / name).write_bytes(b"x")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / f".img2img-{here}-{dead}-abc.tmp").write_bytes(b"x")  # subfolders: not looked at
        assert remove_stale_temp_files(tmp_path) == 2
        kept = {name for name, keep in names.items() if keep}
        assert {p.name for p in tmp_path.iterdir()} == kept | {"sub"}
        assert (tmp_path / "sub" / f".img2img-{here}-{dead}-abc.tmp").exists()
        # a live process of another user: os.kill(pid, 0) raises PermissionError, the file stays
        real_kill = os.kill

        def kill(pid, sig):
            if pid == dead:
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
            return real_kill(pid, sig)

        (tmp_path / f".img2img-{here}-{dead}-other-user.tmp").write_bytes(b"x")
        monkeypatch.setattr(os, "kill", kill)
        assert remove_stale_temp_files(tmp_path) == 0
        assert (tmp_path / f".img2img-{here}-{dead}-other-user.tmp").exists()
        monkeypatch.setattr(os, "kill", real_kill)
        # once the live process has gone, its file goes too
        sleeper.kill()
        sleeper.wait()
        assert remove_stale_temp_files(tmp_path) == 2
        assert not (tmp_path / f".img2img-{here}-{alive}-abc.tmp").exists()
        assert remove_stale_temp_files(tmp_path / "missing") == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_output_plan():
    plan = OutputPlan.make(Path("out.jpg"), None, 1)
    assert plan.file == Path("out.jpg") and plan.fmt == "jpg"
    with pytest.raises(UsageError, match="-o out.jpg"):
        OutputPlan.make(Path("out.jpg"), None, 2)
    with pytest.raises(UsageError, match="--format png"):
        OutputPlan.make(Path("out.jpg"), "png", 1)
    plan = OutputPlan.make(None, "webp", 3)
    item = InputItem(Path("in/a/b.JPG"), Path("a/b.JPG"))
    assert plan.paths_for(item, 1) == [Path("outputs/a/b.webp")]
    assert plan.paths_for(item, 2) == [Path("outputs/a/b-0.webp"), Path("outputs/a/b-1.webp")]


def test_collect_inputs(tmp_path):
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.JPG").write_bytes(b"")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.webp").write_bytes(b"")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    flat = collect_inputs([tmp_path])
    assert [i.rel for i in flat] == [Path("a.JPG"), Path("b.png")]
    deep = collect_inputs([tmp_path], recursive=True)
    assert [i.rel for i in deep] == [Path("a.JPG"), Path("b.png"), Path("sub/c.webp")]
    with pytest.raises(UsageError, match="no such file"):
        collect_inputs([tmp_path / "nope"])


def test_job_validation_messages():
    Job(model="tiny").validate()
    for kwargs, text in [
        ({"strength": 0.0}, "--strength must be in (0, 1], got 0.0"),
        ({"steps": 1, "strength": 0.5}, "int(steps * strength) = 0"),
        ({"width": 100}, "--width must be a multiple of 8, got 100"),
        ({"height": 4}, "--height must be in [8, 8192], got 4"),
        ({"seed": 2**32}, "--seed must be in"),
        ({"scheduler": "Euler z"}, "--scheduler: unknown scheduler 'Euler z'"),
    ]:
        with pytest.raises(UsageError) as e:
            Job(**kwargs).validate()
        assert text in str(e.value)
    assert parse_size("512x768") == (512, 768) and parse_size(" 64 X 32 ") == (64, 32)
    with pytest.raises(UsageError, match="--size"):
        parse_size("512")


def test_style_templates():
    s = parse_style("# c\nprompt: oil painting of {prompt}, impasto\nnegative: blurry\n", "oil", "--style")
    assert s.apply("a cat", "") == ("oil painting of a cat, impasto", "blurry")
    assert s.apply("a cat", "text") == ("oil painting of a cat, impasto", "text, blurry")
    assert Style("x", prompt="masterpiece").apply("a cat", "") == ("a cat, masterpiece", "")
    with pytest.raises(UsageError, match="line 2"):
        parse_style("prompt: a\ncolour: red\n", "bad", "--prompt-file")

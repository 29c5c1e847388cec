"""X/Y/Z plots and contact sheets end to end with the built-in tiny model (CPU, no network)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import cat_face
from .test_cli import invoke, pixels

FAST = ["--model", "tiny", "--steps", "4", "--seed", "9", "--size", "64x64"]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return cat_face(tmp_path_factory.mktemp("src") / "cat.png")


def test_each_saved_cell_equals_its_single_run_and_the_grid_holds_them(tmp_path, src):
    out = tmp_path / "plot"
    r = invoke("run", src, *FAST, "-p", "a cat", "--x", "strength=0.5,1.0", "--y", "guidance=3,7.5", "--save-cells", "-o", out)
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cat-x0-y0.png", "cat-x0-y1.png", "cat-x1-y0.png", "cat-x1-y1.png", "cat.png"]
    grid = Image.open(out / "cat.png")
    text = grid.info["parameters"]
    assert "X Type: Denoising" in text and 'X Values: "0.5,1.0"' in text
    assert "Y Type: CFG Scale" in text and 'Y Values: "3.0,7.5"' in text
    assert "Seed: 9" in text
    from img2img_cli.plot.grid import grid_margins

    m = grid_margins((64, 64), ["Denoising: 0.5", "Denoising: 1.0"], ["CFG Scale: 3.0", "CFG Scale: 7.5"])
    left, top = m.left, m.top
    assert left > 0 and top > 0
    assert grid.size == (left + 2 * 64, top + 2 * 64)
    g = np.asarray(grid.convert("RGB"), dtype=np.int16)
    for i, strength in enumerate(["0.5", "1.0"]):
        for j, guidance in enumerate(["3", "7.5"]):
            cell = pixels(out / f"cat-x{i}-y{j}.png")
            single = tmp_path / f"single-{i}{j}.png"
            r = invoke("run", src, *FAST, "-p", "a cat", "-s", strength, "-g", guidance, "-o", single)
            assert r.exit_code == 0, r.stderr
            assert np.array_equal(cell, pixels(single)), (strength, guidance)
            # the grid holds the cell where its labels say
            assert np.array_equal(g[top + j * 64 : top + (j + 1) * 64, left + i * 64 : left + (i + 1) * 64], cell)
            info = Image.open(out / f"cat-x{i}-y{j}.png").info["parameters"]
            assert f"Denoising strength: {float(strength):g}" in info and f"CFG scale: {float(guidance):g}" in info


def test_seed_axis_cells_share_a_batch_and_equal_single_runs(tmp_path, src, monkeypatch):
    import img2img_cli.pipeline as pipeline

    calls = []
    real = pipeline.generate

    def counting(pipe, requests, **kw):
        calls.append(len(requests))
        return real(pipe, requests, **kw)

    monkeypatch.setattr(pipeline, "generate", counting)
    out = tmp_path / "plot"
    r = invoke("run", src, *FAST, "-p", "a cat", "--x", "seed=1-3", "--save-cells", "--batch-size", "3", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert calls == [3]  # one batch: the cells share a batch key
    for i, seed in enumerate((1, 2, 3)):
        single = tmp_path / f"s{seed}.png"
        monkeypatch.setattr(pipeline, "generate", real)
        r = invoke("run", src, "--model", "tiny", "--steps", "4", "--size", "64x64", "-p", "a cat", "--seed", seed, "-o", single)
        assert r.exit_code == 0, r.stderr
        assert np.abs(pixels(out / f"cat-x{i}.png") - pixels(single)).max() <= 1
        assert f"Seed: {seed}" in Image.open(out / f"cat-x{i}.png").info["parameters"]


def test_without_save_cells_only_the_grid_is_written_and_printed(tmp_path, src):
    out = tmp_path / "plot"
    r = invoke("run", src, *FAST, "-p", "a cat", "--x", "steps=2,4", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert [p.name for p in out.iterdir()] == ["cat.png"]  # no cells, no hidden folder left
    assert r.stdout.strip() == str(out / "cat.png")


def test_three_axes_and_prompt_sr(tmp_path, src):
    out = tmp_path / "plot"
    r = invoke("run", src, *FAST, "-p", "a cat in snow", "--x", "prompt-sr=cat,dog", "--y", "strength=0.5,0.75",
               "--z", "guidance=4,8", "--save-cells", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert len(list(out.glob("cat-x*-y*-z*.png"))) == 8
    assert Image.open(out / "cat-x1-y0-z0.png").info["parameters"].startswith("a dog in snow\n")
    assert Image.open(out / "cat-x0-y0-z0.png").info["parameters"].startswith("a cat in snow\n")
    grid = Image.open(out / "cat.png")
    assert grid.width > 4 * 64 and grid.height > 2 * 64  # two Z grids side by side
    assert "Z Type" in grid.info["parameters"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--x", "colour=1,2"], "--x"),
        (["--x", "strength=0.5,1.5"], "1.5"),
        (["--x", "steps=1-200", "--y", "seed=1-2"], "--max-cells"),
        (["--x", "prompt-sr=horse,zebra"], "horse"),
        (["--y", "steps=2,4"], "--y needs --x"),
        (["--x", "steps=2,4", "-N", "2"], "--num-images"),
    ],
)
def test_plot_errors_are_usage_errors_before_the_model_loads(tmp_path, src, args, message):
    r = invoke("run", src, "--model", str(tmp_path / "no-such-model"), "-p", "a cat", *args, "-o", tmp_path / "o")
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_contact_sheet_for_num_images_and_for_a_folder(tmp_path, src, photos):
    out = tmp_path / "n4"
    r = invoke("run", src, *FAST, "-p", "a cat", "-N", "4", "--grid", "-o", out)
    assert r.exit_code == 0, r.stderr
    sheet = out / "contact-sheet.png"
    assert sheet.exists() and str(sheet) in r.stdout
    with Image.open(sheet) as im:
        assert im.width >= 2 * 64 and im.height >= 2 * 64
    out = tmp_path / "folder"
    r = invoke("run", photos, *FAST, "-p", "a photo", "--grid", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert len(list(out.glob("*.png"))) == 5  # 4 photos + the sheet


def test_clip_skip_axis_cells_equal_single_runs(tmp_path, src):
    out = tmp_path / "plot"
    r = invoke("run", src, *FAST, "-p", "a cat", "--x", "clip-skip=1,2", "--save-cells", "-o", out)
    assert r.exit_code == 0, r.stderr
    for i, n in enumerate((1, 2)):
        single = tmp_path / f"c{n}.png"
        r = invoke("run", src, *FAST, "-p", "a cat", "--clip-skip", n, "-o", single)
        assert r.exit_code == 0, r.stderr
        assert np.array_equal(pixels(out / f"cat-x{i}.png"), pixels(single))
    assert not np.array_equal(pixels(out / "cat-x0.png"), pixels(out / "cat-x1.png"))
    assert "X Type: Clip skip" in Image.open(out / "cat.png").info["parameters"]


def test_a_size_axis_centres_smaller_cells_in_the_largest(tmp_path, src):
    """Cells of different sizes (a size axis): the grid's cell is the largest; a smaller cell
    sits centred in it, unscaled, on white."""
    from img2img_cli.plot.grid import grid_margins

    out = tmp_path / "plot"
    fast = [a for a in FAST if a not in ("--size", "64x64")]
    r = invoke("run", src, *fast, "-p", "a cat", "--x", "size=64x64,96x96", "--save-cells", "-o", out)
    assert r.exit_code == 0, r.stderr
    small, big = pixels(out / "cat-x0.png"), pixels(out / "cat-x1.png")
    assert small.shape[:2] == (64, 64) and big.shape[:2] == (96, 96)
    g = pixels(out / "cat.png")
    m = grid_margins((96, 96), ["Size: 64x64", "Size: 96x96"], [])
    assert g.shape[:2] == (m.top + 96, m.left + 2 * 96)
    cell0 = g[m.top : m.top + 96, m.left : m.left + 96]
    assert np.array_equal(cell0[16:80, 16:80], small)
    assert (cell0[:16] == 255).all() and (cell0[80:] == 255).all()
    assert np.array_equal(g[m.top : m.top + 96, m.left + 96 : m.left + 192], big)

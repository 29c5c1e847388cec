"""SD upscale (``--upscale``): A1111's tile layout and blend, then end to end with the tiny model
(native 64 px, so a 48x40 input enlarged 2x to 96x80 is 2x2 tiles of 64 overlapping by >= 16)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from img2img_cli.metadata import parse_infotext, read_infotext
from img2img_cli.tiles import combine, split_grid

from .conftest import EXAMPLES
from .helpers.cli import invoke, pixels

ARGS = ["--model", "tiny", "--steps", "4", "--seed", "7", "-s", "0.5", "-g", "6", "-p", "a red ball", "-n", "blurry"]


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.png"
    Image.open(EXAMPLES / "chelsea.png").convert("RGB").crop((120, 20, 360, 220)).resize((48, 40), Image.LANCZOS).save(path)
    return path


# -- layout and blend


def test_split_grid_is_a1111s_layout():
    # A1111 split_grid(1000x600, 512, 512, 64): cols ceil(936/448)=3 at int(i*244), rows ceil(536/448)=2 at int(i*88)
    g = split_grid((1000, 600), (512, 512), 64)
    assert g.rows == ((0, (0, 244, 488)), (88, (0, 244, 488))) and g.tile == (512, 512) and len(g) == 6
    assert g.boxes[4] == (244, 88, 756, 600)
    g = split_grid((96, 80), (64, 64), 16)
    assert g.rows == ((0, (0, 32)), (16, (0, 32)))
    # a picture smaller than the tile is one tile of its own size
    assert split_grid((40, 200), (64, 64), 16).tile == (40, 64)
    assert split_grid((64, 64), (64, 64), 64).rows == ((0, (0,)),)
    with pytest.raises(ValueError, match="overlap 64 must be smaller than the tile 64x64"):
        split_grid((96, 64), (64, 64), 64)


@pytest.mark.parametrize("size,tile,overlap", [((96, 80), (64, 64), 16), ((1000, 600), (512, 384), 64), ((300, 70), (64, 64), 0), ((130, 130), (48, 40), 39)])
def test_blend_weights_sum_to_one_and_a_constant_stays_constant(size, tile, overlap):
    g = split_grid(size, tile, overlap)
    ones = [np.ones((g.tile[1], g.tile[0], 3), np.float32) for _ in g.boxes]
    total = combine(g, ones)
    assert total.shape == (size[1], size[0], 3)
    assert np.abs(total - 1).max() < 1e-6
    grey = [Image.new("RGB", g.tile, (97, 180, 3)) for _ in g.boxes]
    assert (np.asarray(combine(g, grey)) == (97, 180, 3)).all()


def test_blend_is_a1111s_linear_ramp_and_tiles_keep_their_own_pixels():
    g = split_grid((112, 64), (64, 64), 16)  # xs 0, 48: the band is x 48..63
    assert g.rows == ((0, (0, 48)),)
    out = np.asarray(combine(g, [Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64), (160, 160, 160))]))
    assert (out[:, :48] == 0).all() and (out[:, 64:] == 160).all()
    assert out[0, 48:64, 0].tolist() == [round(160 * i / 16) for i in range(16)]
    g = split_grid((64, 100), (64, 64), 16, scale=2)  # rows at 0 and 36, band y 36..51 -> 72..103 at scale 2
    top, bottom = np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 64, np.uint8)
    out = np.asarray(combine(g, [top, bottom]))
    assert out.shape == (200, 128, 3)
    assert (out[:72] == 0).all() and (out[104:] == 64).all()
    assert out[72:104, 5, 1].tolist() == [int(np.rint(64 * i / 32)) for i in range(32)]


# -- end to end


def test_tiled_upscale_size_infotext_and_tile_seeds(tmp_path, src, tiny_pipe):
    """2x on 48x40 is 96x80 in 2x2 tiles; where only tile k covers the result, it is the img2img
    pipeline on that crop of the Lanczos-enlarged input with seed 7 + k."""
    out = tmp_path / "up.png"
    r = invoke("run", src, *ARGS, "--upscale", 2, "--tile-overlap", 16, "-o", out)
    assert r.exit_code == 0, r.stderr
    ours = pixels(out)
    assert ours.shape == (80, 96, 3)
    fields = parse_infotext(read_infotext(out))
    assert fields["Size"] == "64x64" and fields["Seed"] == "7" and fields["SD upscale overlap"] == "16"
    assert fields["SD upscale upscaler"] == "Lanczos" and fields["SD upscale factor"] == "2"

    enlarged = Image.open(src).convert("RGB").resize((96, 80), Image.LANCZOS)
    # tiles at x 0/32, y 0/16 with 16 px bands: where each tile alone covers the result (y, x)
    alone = {0: (slice(0, 16), slice(0, 32)), 1: (slice(0, 16), slice(48, 96)),
             2: (slice(32, 80), slice(0, 32)), 3: (slice(32, 80), slice(48, 96))}
    for k, box in enumerate([(0, 0, 64, 64), (32, 0, 96, 64), (0, 16, 64, 80), (32, 16, 96, 80)]):
        expected = tiny_pipe(prompt="a red ball", negative_prompt="blurry", image=enlarged.crop(box), strength=0.5,
                             num_inference_steps=4, guidance_scale=6, generator=torch.Generator("cpu").manual_seed(7 + k)).images[0]
        ys, xs = alone[k]
        theirs = pixels(expected)[ys.start - box[1] : ys.stop - box[1], xs.start - box[0] : xs.stop - box[0]]
        assert np.abs(ours[ys, xs] - theirs).max() <= 1, k
    # the seams: no jump across the band edges larger than inside the tiles
    rows = np.abs(np.diff(ours, axis=0)).mean(axis=(1, 2))
    assert rows[[15, 31]].max() < 3 * np.median(rows)


def test_controlnet_tile_guides_each_tile_with_its_own_crop(tmp_path, src):
    """SD upscale with a ControlNet (the "ControlNet tile" way of upscaling): each tile's control
    image is its own crop of the map (``Mode.tile_extras``). Where only tile k covers the result,
    it equals a ControlNet run on that crop of the enlarged input with seed 7 + k, and the
    ControlNet changes the result."""
    from .helpers.tiny_controlnet import save_tiny_controlnet

    cn = save_tiny_controlnet(tmp_path / "cn", seed=1)
    out = tmp_path / "up.png"
    r = invoke("run", src, *ARGS, "--upscale", 2, "--tile-overlap", 16, "--controlnet", cn, "--control", "tile", "-o", out)
    assert r.exit_code == 0, r.stderr
    ours = pixels(out)
    assert ours.shape == (80, 96, 3)
    assert 'ControlNet 0: "Module: tile_resample' in read_infotext(out)
    plain = tmp_path / "plain.png"
    assert invoke("run", src, *ARGS, "--upscale", 2, "--tile-overlap", 16, "-o", plain).exit_code == 0
    assert np.abs(ours - pixels(plain)).max() > 8

    enlarged = Image.open(src).convert("RGB").resize((96, 80), Image.LANCZOS)
    alone = {0: (slice(0, 16), slice(0, 32)), 3: (slice(32, 80), slice(48, 96))}
    for k, box in ((0, (0, 0, 64, 64)), (3, (32, 16, 96, 80))):
        crop = tmp_path / f"crop{k}.png"
        enlarged.crop(box).save(crop)
        single = tmp_path / f"single{k}.png"
        r = invoke("run", crop, *ARGS[:4], "--seed", 7 + k, *ARGS[6:], "--controlnet", cn, "--control", "tile", "-o", single)
        assert r.exit_code == 0, r.stderr
        ys, xs = alone[k]
        theirs = pixels(single)[ys.start - box[1] : ys.stop - box[1], xs.start - box[0] : xs.stop - box[0]]
        assert np.abs(ours[ys, xs] - theirs).max() <= 1, k


def test_one_tile_equals_a_plain_run_on_the_enlarged_image(tmp_path, src):
    small = tmp_path / "small.png"
    Image.open(src).convert("RGB").resize((32, 32), Image.LANCZOS).save(small)
    big = tmp_path / "big.png"
    Image.open(small).resize((64, 64), Image.LANCZOS).save(big)
    assert invoke("run", small, *ARGS, "--upscale", 2, "-o", tmp_path / "a.png").exit_code == 0
    assert invoke("run", big, *ARGS, "-o", tmp_path / "b.png").exit_code == 0
    assert (pixels(tmp_path / "a.png") == pixels(tmp_path / "b.png")).all()


def test_a_network_upscaler_enlarges_first(tmp_path, src):
    """``--upscaler FILE``: the input is enlarged by the ESRGAN-family network (spandrel), once,
    then img2img runs on it: with one tile, the result equals a plain run on the network's
    output; the infotext names the network."""
    from img2img_cli.upscalers import load_upscaler, upscale_image

    from .helpers.tiny_upscaler import save_compact

    net = save_compact(tmp_path / "tiny-x2.safetensors", scale=2, seed=3)
    small = tmp_path / "small.png"
    Image.open(src).convert("RGB").resize((32, 32), Image.LANCZOS).save(small)
    big = tmp_path / "big.png"
    upscale_image(load_upscaler(str(net)), Image.open(small).convert("RGB"), 2.0).save(big)
    lanczos = Image.open(small).resize((64, 64), Image.LANCZOS)
    assert np.abs(pixels(big) - pixels(lanczos)).max() > 8  # the network, not Lanczos, enlarged it
    r = invoke("run", small, *ARGS, "--upscale", 2, "--upscaler", net, "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.stderr
    assert invoke("run", big, *ARGS, "-o", tmp_path / "b.png").exit_code == 0
    assert np.abs(pixels(tmp_path / "a.png") - pixels(tmp_path / "b.png")).max() <= 1
    assert parse_infotext(read_infotext(tmp_path / "a.png"))["SD upscale upscaler"] == "tiny-x2"
    # factor 1: no network pass (A1111's Upscaler.upscale loop stops at once): the Lanczos result
    one = [invoke("run", big, *ARGS, "--upscale", 1, *u, "-o", tmp_path / f"one{i}.png") for i, u in enumerate(([], ["--upscaler", net]))]
    assert all(r.exit_code == 0 for r in one), [r.stderr for r in one]
    assert (pixels(tmp_path / "one0.png") == pixels(tmp_path / "one1.png")).all()
    r = invoke("run", small, *ARGS, "--upscale", 2, "--upscaler", tmp_path / "nope.pth", "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and "--upscaler" in r.stderr and "nope.pth: no such file" in r.stderr


def test_batch_size_does_not_change_a_tile(tmp_path, src):
    for b in (1, 4):
        r = invoke("run", src, *ARGS, "--upscale", 2, "--tile-overlap", 16, "-b", b, "-N", 2, "-o", tmp_path / f"b{b}")
        assert r.exit_code == 0, r.stderr
        # the batches hold tiles (2 images of 4): the summary's rates say so, not "images/s"
        assert "2 written, 0 skipped, 0 failed" in r.stderr and f"first batch of {b} tiles" in r.stderr, r.stderr
        assert re.search(r"then [0-9.]+ tiles/s\)", r.stderr), r.stderr
    for name in ("src-0.png", "src-1.png"):  # batched matmuls may round a few values differently, as for images
        diff = np.abs(pixels(tmp_path / "b1" / name) - pixels(tmp_path / "b4" / name))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (pixels(tmp_path / "b1" / "src-0.png") != pixels(tmp_path / "b1" / "src-1.png")).any()


def test_an_upscale_is_made_again_from_its_infotext(tmp_path, src):
    first = tmp_path / "first.png"
    r = invoke("run", src, "--model", "tiny", "--steps", "3", "-s", "0.7", "-p", "a cat", "--upscale", 1.5,
               "--tile-size", "48x40", "--tile-overlap", 8, "-o", first)
    assert r.exit_code == 0, r.stderr
    f = parse_infotext(read_infotext(first))
    again = tmp_path / "again.png"
    r = invoke("run", src, "--model", "tiny", "-p", f["prompt"], "--steps", f["Steps"], "-s", f["Denoising strength"],
               "-g", f["CFG scale"], "--seed", f["Seed"], "--upscale", f["SD upscale factor"], "--tile-size", f["Size"],
               "--tile-overlap", f["SD upscale overlap"], "-o", again)
    assert r.exit_code == 0, r.stderr
    assert pixels(first).shape == (56, 72, 3)  # int(48 * 1.5) = 72, int(40 * 1.5) // 8 * 8 = 56
    assert (pixels(first) == pixels(again)).all()


def test_tiles_never_exceed_the_tile_and_a_failed_tile_fails_its_image_alone(tmp_path, src, monkeypatch):
    """Only tiles reach the pipeline (a 4096 px result never needs the whole picture on the
    device); a tile that fails fails its image, which is not written, and the others are."""
    import img2img_cli.pipeline as pipeline

    other = tmp_path / "other.png"
    Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(other)
    sizes, real = [], pipeline.generate

    def generate(pipe, requests, **kw):
        sizes.extend(r.size for r in requests)
        if any(r.seed == 100 + 2 for r in requests):
            raise RuntimeError("tile 2 of the first input breaks")
        return real(pipe, requests, **kw)

    monkeypatch.setattr(pipeline, "generate", generate)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(f'{{"input": "{src}", "seed": 100}}\n{{"input": "{other}", "seed": 200}}\n')
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "--steps", 2, "-s", 0.5, "--upscale", 4, "--tile-overlap", 16,
               "-o", tmp_path / "out")
    assert r.exit_code == 1
    assert "generation failed" in r.stderr and "tile 2 of the first input breaks" in r.stderr
    assert set(sizes) == {(64, 64)} and len(sizes) >= 2 * 12  # 192x160: 4 x 3 tiles each
    assert not (tmp_path / "out" / "src.png").exists()
    assert pixels(tmp_path / "out" / "other.png").shape == (160, 192, 3)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


@pytest.mark.parametrize("args,message", [
    (["--upscale", 0.5], r"--upscale must be in \[1, 8\], got 0.5"),
    (["--upscale", 2, "--upscaler", "nope.pth"], "--upscaler nope.pth: no such file"),
    (["--upscaler", "lanczos2"], "--upscaler needs --upscale"),
    (["--upscale", 2, "--size", "64x64"], "--width/--height/--size do not apply"),
    (["--tile-size", "64x64"], "--tile-size and --tile-overlap need --upscale"),
    (["--upscale", 2, "--tile-size", "60x64"], "--tile-size sides must be multiples of 8"),
    (["--upscale", 2, "--tile-size", "64x64", "--tile-overlap", 64], r"--tile-overlap 64 must be smaller than the tile \(64x64\)"),
    (["--upscale", 2], r"--tile-overlap 64 must be smaller than the tile \(64x64\); pass a smaller --tile-overlap"),
    (["--upscale", 2, "--tile-size", "32x48", "--model", "missing-model-folder/"], r"--tile-overlap 64 must be smaller than the tile \(32x48\)"),  # before any model
    (["--upscale", 2, "--outpaint", 8], "contradict each other"),
    (["--upscale", 2, "--tile-overlap", 16, "--x", "size=64x64,96x96"], "--x size: --upscale makes the input times FACTOR"),
])
def test_bad_options_are_refused_naming_the_flag(tmp_path, src, args, message):
    r = invoke("run", src, "--model", "tiny", "--steps", 2, *args, "-o", tmp_path / "o.png")
    assert r.exit_code == 2, r.stdout
    assert __import__("re").search(message, r.stderr), r.stderr
    assert not (tmp_path / "o.png").exists()

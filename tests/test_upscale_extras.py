"""``img2img upscale`` (A1111's Extras): super-resolution networks loaded with spandrel, tiling,
Lanczos, and the same inputs, outputs, metadata and exit codes as ``run``. Tiny random networks
(tests/helpers/tiny_upscaler.py), CPU, no network access."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from img2img_cli.metadata import format_infotext, parse_infotext, read_infotext, write_image

from .conftest import EXAMPLES, ROOT
from .helpers.tiny_upscaler import import_spandrel, save_compact, save_hostile_pth
from .test_inpaint import invoke, pixels

import_spandrel()

CHELSEA = EXAMPLES / "chelsea.png"  # 451x300


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    return {
        "x2": save_compact(d / "tiny-x2.safetensors", scale=2),
        "x2pth": save_compact(d / "tiny-x2.pth", scale=2),
        "x4": save_compact(d / "tiny-x4.safetensors", scale=4, seed=1),
        "identity": save_compact(d / "identity-x2.safetensors", scale=2, identity=True),
    }


# -- the library: tiles, blending, sizes


def test_tile_starts_cover_the_axis_with_the_overlap():
    from img2img_cli.upscalers import tile_starts

    assert tile_starts(300, 512, 32) == [0] and tile_starts(300, 0, 0) == [0]
    for length, tile, overlap in ((1000, 256, 32), (513, 512, 32), (600, 100, 0), (257, 128, 8)):
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == length - tile
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # shared >= overlap
        assert all(b > a for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length,tile,overlap,scale", [(1000, 256, 32, 2), (513, 512, 32, 4), (257, 128, 8, 1), (300, 64, 0, 2)])
def test_blend_weights_are_linear_positive_and_normalise_to_one(length, tile, overlap, scale):
    import torch

    from img2img_cli.upscalers import blend_weights, tile_starts

    starts = tile_starts(length, tile, overlap)
    weights = blend_weights(starts, tile, length, scale)
    total = torch.zeros(length * scale)
    for s, w in zip(starts, weights):
        assert len(w) == min(tile, length - s) * scale
        assert float(w.min()) > 0 and float(w.max()) <= 1
        total[s * scale : s * scale + len(w)] += w
    assert float(total.min()) > 0  # every output pixel is covered; run_tiled divides by this sum
    if overlap and len(starts) > 1:  # the ramp of the second tile rises linearly
        ramp = weights[1][: overlap * scale]
        assert torch.allclose(ramp[1:] - ramp[:-1], torch.full((len(ramp) - 1,), float(ramp[1] - ramp[0])), atol=1e-6)


def test_identity_network_keeps_a_constant_image_constant_across_tiles(nets):
    from img2img_cli.upscalers import load_upscaler, upscale_image

    up = load_upscaler(str(nets["identity"]))
    image = Image.new("RGB", (301, 157), (77, 140, 201))
    out = upscale_image(up, image, tile=64, overlap=16)  # 6x3 tiles
    assert out.size == (602, 314)
    assert (pixels(out) == np.array([77, 140, 201])).all()


def test_tiled_equals_untiled_within_a_small_tolerance(nets):
    """A 4-layer 3x3 net (receptive radius 4 px) with 16 px overlaps: tiles blend into what one
    call on the whole photo gives, within 2/255 everywhere (measured: at most 1/255)."""
    from img2img_cli.upscalers import load_upscaler, upscale_image

    up = load_upscaler(str(nets["x2"]))
    with Image.open(CHELSEA) as im:
        photo = im.convert("RGB")
    whole = upscale_image(up, photo, tile=0)
    tiled = upscale_image(up, photo, tile=96, overlap=16)
    assert whole.size == tiled.size == (902, 600)
    diff = np.abs(pixels(whole) - pixels(tiled))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert np.abs(pixels(whole) - pixels(photo.resize((902, 600), Image.NEAREST))).max() > 3  # the net does something


def test_run_tiled_exact_sizes_with_a_plain_callable():
    import torch

    from img2img_cli.upscalers import run_tiled

    def nearest3(x):
        return torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest")

    x = torch.rand(1, 3, 71, 130)
    out = run_tiled(nearest3, x, 3, tile=32, overlap=5)
    assert out.shape == (1, 3, 213, 390)
    assert torch.allclose(out, nearest3(x), atol=1e-6)  # a pointwise net: tiles are exact
    with pytest.raises(ValueError, match="overlap"):
        run_tiled(nearest3, x, 3, tile=32, overlap=32)


def test_factor_resizes_after_the_network_and_passes_again_above_its_scale(nets):
    from img2img_cli.upscalers import load_upscaler, upscale_image

    up = load_upscaler(str(nets["x2"]))
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    assert upscale_image(up, image, 1.5).size == (60, 45)
    assert upscale_image(up, image, 3).size == (120, 90)  # two passes (160x120), then Lanczos down
    assert upscale_image(up, image, 0.5).size == (20, 15)
    lanczos = load_upscaler("Lanczos")
    assert lanczos.name == "Lanczos" and not lanczos.is_network
    with Image.open(CHELSEA) as im:
        photo = im.convert("RGB")
    assert (pixels(upscale_image(lanczos, photo, 2)) == pixels(photo.resize((902, 600), Image.LANCZOS))).all()


def test_postprocess_infotext_appends_to_parameters_only():
    from img2img_cli.extras import postprocess_infotext
    from img2img_cli.metadata import append_params

    base = format_infotext("a cat", None, {"Steps": 20, "Seed": 1, "Size": "64x64"})
    assert append_params("OLYMPUS DIGITAL CAMERA", {"A b": 1}) is None  # no parameters line
    twice = postprocess_infotext(postprocess_infotext(base, "net,v2", 4), "Lanczos", 0.5)
    params = parse_infotext(twice)
    assert twice.startswith(base + ", Postprocess upscaler: ")
    assert params["prompt"] == "a cat" and params["Steps"] == "20" and params["Size-1"] == "64"
    assert params["Postprocess upscaler"] == "Lanczos" and params["Postprocess upscale by"] == "0.5"  # the latest wins
    fresh = parse_infotext(postprocess_infotext("OLYMPUS DIGITAL CAMERA", "net,v2", 4))
    assert fresh["prompt"] == "" and fresh["Postprocess upscaler"] == "net,v2" and fresh["Postprocess upscale by"] == "4"


# -- the command


def test_upscale_a_photo_by_the_networks_factor(tmp_path, nets):
    out = tmp_path / "big.png"
    r = invoke("upscale", CHELSEA, "--upscaler", nets["x2"], "-o", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "1 written, 0 skipped, 0 failed" in r.stderr
    with Image.open(out) as im:
        assert im.size == (902, 600) and im.mode == "RGB"
    params = parse_infotext(read_infotext(out))
    assert params["Postprocess upscaler"] == "tiny-x2" and params["Postprocess upscale by"] == "2"
    assert params["Version"].startswith("img2img-cli ")
    # the .pth of the same weights (read with weights_only=True) gives the same pixels
    out2 = tmp_path / "big2.png"
    r = invoke("upscale", CHELSEA, "--upscaler", nets["x2pth"], "-o", out2)
    assert r.exit_code == 0, r.stderr
    assert (pixels(out) == pixels(out2)).all()


def test_x_resizes_with_lanczos_and_a_4x_network(tmp_path, nets):
    out = tmp_path / "o.webp"
    r = invoke("upscale", CHELSEA, "-u", nets["x4"], "-x", "2.5", "-o", out)
    assert r.exit_code == 0, r.stderr
    with Image.open(out) as im:
        assert im.size == (1128, 750)  # round(451 * 2.5) x 300 * 2.5
    params = parse_infotext(read_infotext(out))
    assert params["Postprocess upscaler"] == "tiny-x4" and params["Postprocess upscale by"] == "2.5"


def test_lanczos_without_a_network_file(tmp_path):
    out = tmp_path / "l.png"
    r = invoke("upscale", CHELSEA, "-x", "2", "-o", out)
    assert r.exit_code == 0, r.stderr
    with Image.open(CHELSEA) as im:
        expected = im.convert("RGB").resize((902, 600), Image.LANCZOS)
    assert (pixels(out) == pixels(expected)).all()
    assert parse_infotext(read_infotext(out))["Postprocess upscaler"] == "Lanczos"
    r = invoke("upscale", CHELSEA, "-o", out)
    assert r.exit_code == 2 and "--upscaler" in r.stderr and "-x" in r.stderr
    r = invoke("upscale", CHELSEA, "--upscaler", "lanczos", "-o", out)
    assert r.exit_code == 2 and "needs -x" in r.stderr


def test_existing_parameters_are_kept_and_the_extras_keys_appended(tmp_path, nets):
    src = tmp_path / "gen.png"
    text = format_infotext("a cat, watercolor", "blurry", {"Steps": 20, "Sampler": "Euler a", "Seed": 42, "Size": "64x40", "Model": "tiny"})
    write_image(Image.open(CHELSEA).convert("RGB").resize((64, 40)), src, "png", text)
    out = tmp_path / "up.jpg"
    r = invoke("upscale", src, "--upscaler", nets["x2"], "-o", out)
    assert r.exit_code == 0, r.stderr
    written = read_infotext(out)
    assert written.startswith(text + ", Postprocess upscaler: tiny-x2, Postprocess upscale by: 2")
    params = parse_infotext(written)
    assert params["prompt"] == "a cat, watercolor" and params["negative_prompt"] == "blurry"
    assert params["Seed"] == "42" and params["Size"] == "64x40" and params["Postprocess upscale by"] == "2"
    r = invoke("info", "--json", out)
    assert json.loads(r.stdout)["Postprocess upscaler"] == "tiny-x2"


def test_folder_skip_existing_json_and_report(tmp_path, photos, nets):
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    r = invoke("upscale", photos, "-u", nets["x2"], "-x", "0.5", "-o", out, "--json", "--report", report)
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(x["output"] for x in lines) == sorted(str(out / f"{n}.png") for n in ("camera", "chelsea", "coffee", "rocket"))
    assert all(x["seed"] is None and x["input"].startswith(str(photos)) for x in lines)
    with Image.open(out / "chelsea.png") as im:
        assert im.size == (226, 150)
    r = invoke("upscale", photos, "-u", nets["x2"], "-x", "0.5", "-o", out, "--skip-existing", "--report", report)
    assert r.exit_code == 0 and r.stdout == ""
    assert "0 written, 4 skipped, 0 failed" in r.stderr
    records = [json.loads(x) for x in report.read_text().splitlines()]
    assert [x["status"] for x in records] == ["ok"] * 4 + ["skipped"] * 4
    assert records[0]["parameters"]["mode"] == "upscale" and records[0]["parameters"]["scale"] == 2
    assert set(records[0]) == {"input", "outputs", "seed", "seeds", "parameters", "status", "error", "seconds"}


def test_inputs_sharing_a_stem_get_distinct_names(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("cat.jpg", "cat.png", "cat.webp"):
        Image.new("RGB", (8, 6), (200, 0, 0)).save(d / name)
    r = invoke("upscale", d, "-x", "2", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat-png.png", "cat-webp.png", "cat.png"]


def test_a_bad_file_in_a_folder_fails_alone(tmp_path, photos, nets):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    r = invoke("upscale", photos, "-u", nets["x2"], "-x", "0.25", "-o", out)
    assert r.exit_code == 1
    assert "broken.png" in r.stderr and "4 written, 0 skipped, 1 failed" in r.stderr
    assert len(r.stdout.splitlines()) == 4 and not (out / "broken.png").exists()


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.safetensors", "no such file"),
    (lambda d: (d / "net.onnx").write_bytes(b"x") and d / "net.onnx", "unsupported file type"),
    (lambda d: (d / "junk.safetensors").write_bytes(b"not safetensors") and d / "junk.safetensors", "not a readable .safetensors"),
    (lambda d: (d / "junk.pth").write_bytes(b"\x80\x04junk") and d / "junk.pth", "not a readable PyTorch"),
])
def test_a_bad_upscaler_is_a_one_line_error_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    r = invoke("upscale", CHELSEA, "--upscaler", path, "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and str(path) in r.stderr and message in r.stderr, r.stderr
    assert not (tmp_path / "o.png").exists()


def test_an_unknown_architecture_is_a_model_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(path))
    r = invoke("upscale", CHELSEA, "--upscaler", path, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "not a network architecture spandrel" in r.stderr and str(path) in r.stderr


def test_a_hostile_pickle_is_refused_and_never_run(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = save_hostile_pth(tmp_path / "evil.pth", marker)
    r = invoke("upscale", CHELSEA, "--upscaler", path, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert str(path) in r.stderr and "refused" in r.stderr and "weights_only" in r.stderr
    assert "tiny_upscaler._payload" in r.stderr  # names what it would have called
    assert not marker.exists() and not (tmp_path / "o.png").exists()
    torch.load(str(path), weights_only=False)  # the control: plain unpickling does run it
    assert marker.read_text() == "the pickle ran code"


def test_bad_options_are_usage_errors(tmp_path, nets):
    for args, needle in (
        (("-x", "0"), "-x must be in"),
        (("-x", "2", "--tile-size", "8"), "--tile-size"),
        (("-u", nets["x2"], "--tile-size", "64", "--tile-overlap", "40"), "--tile-overlap"),
        (("-x", "2", "--overwrite", "--skip-existing"), "contradict"),
        (("-x", "2", "--quality", "0"), "--quality"),
    ):
        r = invoke("upscale", CHELSEA, *args, "-o", tmp_path / "o.png")
        assert r.exit_code == 2 and needle in r.stderr, (args, r.stderr)


def test_provenance_label(tmp_path, nets):
    from img2img_cli.provenance import read_source_type

    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert invoke("upscale", CHELSEA, "-u", nets["x2"], "-x", "0.5", "-o", a).exit_code == 0
    assert read_source_type(a) == "trainedAlgorithmicMedia"
    assert invoke("upscale", CHELSEA, "-u", nets["x2"], "-x", "0.5", "--no-provenance", "-o", b).exit_code == 0
    assert read_source_type(b) is None
    assert invoke("upscale", a, "-x", "2", "-o", c).exit_code == 0  # Lanczos keeps the source's label
    assert read_source_type(c) == "trainedAlgorithmicMedia"


def test_upscale_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from img2img_cli.cli import main\n"
        "sys.argv = ['img2img', 'upscale', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'spandrel', 'diffusers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "--upscaler" in out.stdout and "--tile-overlap" in out.stdout
    assert "LOADED []" in out.stdout


@pytest.mark.gpu
def test_fp16_on_cuda_matches_fp32(nets):
    import torch

    from img2img_cli.upscalers import load_upscaler, upscale_image

    with Image.open(CHELSEA) as im:
        photo = im.convert("RGB")
    half = load_upscaler(str(nets["x4"]), "cuda", "auto")
    assert half.dtype == torch.float16
    full = load_upscaler(str(nets["x4"]), "cpu", "fp32")
    a, b = upscale_image(half, photo, tile=128, overlap=16), upscale_image(full, photo, tile=128, overlap=16)
    assert a.size == b.size == (1804, 1200)
    assert np.abs(pixels(a) - pixels(b)).max() <= 2

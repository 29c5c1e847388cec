"""Prompts end to end with the built-in tiny model: A1111 syntax, long prompts, prompt editing,
clip skip, LoRA and textual inversion through ``img2img run`` (CPU, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import cat_face
from .test_cli import invoke, pixels

STEPS = ["--steps", "8", "--strength", "0.75", "--seed", "11", "-g", "7"]  # int(8 * 0.75) = 6 steps run
#: 30 words of 1-2 tokens each, then a tail: well past 75 tokens in the tiny model's tokenizer
LONG = ", ".join(["a red house by the sea"] * 14)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return cat_face(tmp_path_factory.mktemp("src") / "src.png")


def make(tmp_path, src, prompt, *extra, name="out.png", negative="blurry"):
    out = tmp_path / name
    args = ["run", src, "--model", "tiny", "-p", prompt, *STEPS, "-o", out, "--overwrite", *extra]
    if negative is not None:
        args += ["-n", negative]
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    return pixels(out)


def differ(a, b) -> float:
    return float(np.abs(a - b).mean())


def test_plain_prompt_is_exactly_what_it_was(tmp_path, src):
    """No special syntax, under 75 tokens: our encoder's embeddings are diffusers' own, so the
    pixels equal --prompt-syntax plain (the text straight to diffusers) exactly."""
    ours = make(tmp_path, src, "a cat, oil painting", name="a.png")
    plain = make(tmp_path, src, "a cat, oil painting", "--prompt-syntax", "plain", name="b.png")
    assert np.array_equal(ours, plain)
    assert differ(ours, pixels(src)) > 5  # and it did something


def test_long_prompt_second_chunk_matters(tmp_path, src):
    from img2img_cli.models import load_pipeline, resolve_model

    pipe = load_pipeline(resolve_model("tiny"), device="cpu", dtype=None)
    assert len(pipe.tokenizer(LONG).input_ids) > 77  # past one chunk
    a = make(tmp_path, src, LONG + ", green door", name="a.png")
    b = make(tmp_path, src, LONG + ", purple boat", name="b.png")
    assert differ(a, b) > 0.5  # words after token 75 change the image
    # plain: diffusers truncates at 77 tokens, so the tail is lost
    pa = make(tmp_path, src, LONG + ", green door", "--prompt-syntax", "plain", name="pa.png")
    pb = make(tmp_path, src, LONG + ", purple boat", "--prompt-syntax", "plain", name="pb.png")
    assert np.array_equal(pa, pb)


def test_attention_weight_changes_the_image_and_stays_finite(tmp_path, src):
    base = make(tmp_path, src, "a cat, oil painting", name="a.png")
    strong = make(tmp_path, src, "a (cat:1.5), oil painting", name="b.png")
    assert differ(base, strong) > 0.05  # the tiny model's random weights: small, but never 0
    weak = make(tmp_path, src, "a [cat], oil painting", name="w.png")
    assert differ(base, weak) > 0.01 and not np.array_equal(weak, strong)
    # the tiny model's CLIP mean is ~0: A1111's rescale is guarded, no NaN (a black image)
    neg = make(tmp_path, src, "a cat", name="c.png", negative="(blurry:1.3)")
    assert neg.std() > 5
    # an explicit weight of 1.0 is the plain prompt: the same tokens, untouched
    same = make(tmp_path, src, "a (cat:1.0), oil painting", name="d.png")
    assert np.array_equal(base, same)


def test_prompt_editing_switches_at_the_given_step(tmp_path, src):
    cat = make(tmp_path, src, "a photo of a cat", name="cat.png")
    dog = make(tmp_path, src, "a photo of a dog", name="dog.png")
    assert differ(cat, dog) > 0.1
    # when = 0: the target from the first step; when past the steps that run (6): the source
    assert np.array_equal(make(tmp_path, src, "a photo of a [cat:dog:0]", name="e0.png"), dog)
    assert np.array_equal(make(tmp_path, src, "a photo of a [cat:dog:50]", name="e50.png"), cat)
    mid = make(tmp_path, src, "a photo of a [cat:dog:3]", name="e3.png")
    assert not np.array_equal(mid, cat) and not np.array_equal(mid, dog)
    # a fraction of the steps that run: 0.5 of 6 is step 3
    assert np.array_equal(make(tmp_path, src, "a photo of a [cat:dog:0.5]", name="ef.png"), mid)
    # alternation differs from both
    alt = make(tmp_path, src, "a photo of a [cat|dog]", name="alt.png")
    assert not np.array_equal(alt, cat) and not np.array_equal(alt, dog)
    # editing in the negative prompt too
    n0 = make(tmp_path, src, "a photo", name="n0.png", negative="[blurry:dark:0]")
    assert np.array_equal(n0, make(tmp_path, src, "a photo", name="n1.png", negative="dark"))


def test_clip_skip(tmp_path, src):
    one = make(tmp_path, src, "a cat", name="a.png")
    two = make(tmp_path, src, "a cat", "--clip-skip", "2", name="b.png")
    assert differ(one, two) > 0.5
    info = Image.open(tmp_path / "b.png").info["parameters"]
    assert "Clip skip: 2" in info
    assert "Clip skip" not in Image.open(tmp_path / "a.png").info["parameters"]
    r = invoke("run", src, "--model", "tiny", "--clip-skip", "13", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "--clip-skip must be in [1, 12], got 13" in r.stderr
    # the tiny text encoder has 5 layers
    r = invoke("run", src, "--model", "tiny", "--clip-skip", "6", "--steps", "2", "-o", tmp_path / "x.png")
    assert r.exit_code != 0 and "--clip-skip 6: this model's text encoder has 5 layers" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_batch_of_mixed_prompt_lengths_equals_single_runs(tmp_path, src, photos):
    """A long and a short prompt in one batch: different chunk counts go in separate pipeline
    calls, so each image equals its own single run."""
    jobs = tmp_path / "jobs.jsonl"
    a, b = photos / "chelsea.png", photos / "coffee.png"
    rows = [
        {"input": str(a), "prompt": LONG + ", green door", "seed": 5},
        {"input": str(b), "prompt": "a [cat:dog:2] in (snow:1.2)", "seed": 6},
    ]
    jobs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "batch"
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "--steps", "4", "--batch-size", "2", "-o", out, "--size", "64x64")
    assert r.exit_code == 0, r.stderr
    for row, name in zip(rows, ("chelsea.png", "coffee.png")):
        single = tmp_path / f"single-{name}"
        r = invoke("run", row["input"], "--model", "tiny", "--steps", "4", "-p", row["prompt"], "--seed", row["seed"],
                   "--size", "64x64", "-o", single)
        assert r.exit_code == 0, r.stderr
        assert np.array_equal(pixels(out / name), pixels(single))


# -- LoRA and textual inversion through `img2img run` ------------------------------------------


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """A folder with two tiny kohya LoRAs (UNet + text encoder) for the built-in tiny model."""
    from .helpers.tiny_lora import save_kohya_lora, tiny_sd_lora_weights

    d = tmp_path_factory.mktemp("loras")
    (d / "styles").mkdir()
    save_kohya_lora(d / "styles" / "inky.safetensors", tiny_sd_lora_weights(seed=1))
    save_kohya_lora(d / "grainy.safetensors", tiny_sd_lora_weights(seed=2))
    return d


def test_lora_equals_diffusers_load_lora_weights_called_directly(tmp_path, src, loras):
    """--lora FILE:w equals diffusers' load_lora_weights + set_adapters(w) called directly
    (within 1/255); weight 0 equals no LoRA; the tag equals the flag."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from .conftest import TINY

    lora = loras / "styles" / "inky.safetensors"
    ours = make(tmp_path, src, "a cat", "--lora", f"{lora}:0.7", name="flag.png")
    tag = make(tmp_path, src, "a cat <lora:inky:0.7>", "--lora-dir", loras, name="tag.png")
    assert np.array_equal(ours, tag)
    info = Image.open(tmp_path / "tag.png").info["parameters"]
    assert info.startswith("a cat <lora:inky:0.7>\n")  # the prompt as written, as A1111 keeps it
    from img2img_cli.text.lora import addnet_hash

    assert f'Lora hashes: "inky: {addnet_hash(lora)}"' in info or f"Lora hashes: inky: {addnet_hash(lora)}" in info

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="inky")
    pipe.set_adapters(["inky"], [0.7])
    with Image.open(src) as im:
        expected = pipe(prompt="a cat", negative_prompt="blurry", image=im.convert("RGB"), strength=0.75, num_inference_steps=8,
                        guidance_scale=7, generator=torch.Generator("cpu").manual_seed(11)).images[0]
    assert np.abs(ours - np.asarray(expected, dtype=np.int16)).max() <= 1

    none = make(tmp_path, src, "a cat", name="none.png")
    assert differ(ours, none) > 0.1  # the LoRA does something
    zero = make(tmp_path, src, "a cat", "--lora", f"{lora}:0", name="zero.png")
    assert np.abs(zero - none).max() <= 1
    # <lora:name:te:unet>: text encoder only differs from both
    te_only = make(tmp_path, src, "a cat <lora:inky:0.7:0>", "--lora-dir", loras, name="te.png")
    assert not np.array_equal(te_only, ours) and not np.array_equal(te_only, none)


def test_unknown_lora_is_a_usage_error_before_the_model_loads(tmp_path, src, loras):
    r = invoke("run", src, "--model", "/nonexistent/model", "-p", "a <lora:nope:1>", "--lora-dir", loras, "-o", tmp_path / "o.png")
    assert r.exit_code == 2
    assert "nope" in r.stderr and str(loras) in r.stderr
    from .helpers.tiny_lora import save_fake_lycoris

    loha = save_fake_lycoris(tmp_path / "hairy.safetensors")
    r = invoke("run", src, "--model", "tiny", "-p", "a cat", "--lora", loha, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "LoHa" in r.stderr and "hairy.safetensors" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_per_image_loras_in_a_jobs_file_equal_single_runs(tmp_path, photos, loras):
    """Each row's LoRA set is its own batch (switched with set_adapters, no reload): every image
    equals its single run."""
    rows = [
        {"input": str(photos / "chelsea.png"), "prompt": "a cat <lora:inky:0.8>", "seed": 1},
        {"input": str(photos / "coffee.png"), "prompt": "coffee <lora:grainy:1> <lora:inky:0.3>", "seed": 2},
        {"input": str(photos / "rocket.jpg"), "prompt": "a rocket", "seed": 3},
        {"input": str(photos / "camera.png"), "prompt": "a camera <lora:inky:0.8>", "seed": 4},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = ["--model", "tiny", "--steps", "4", "--size", "64x64", "--lora-dir", loras]
    r = invoke("run", "--jobs", jobs, *common, "--batch-size", "4", "-o", tmp_path / "batch")
    assert r.exit_code == 0, r.stderr
    for row in rows:
        name = Path(row["input"]).with_suffix(".png").name
        single = tmp_path / f"single-{name}"
        r = invoke("run", row["input"], *common, "-p", row["prompt"], "--seed", row["seed"], "-o", single)
        assert r.exit_code == 0, r.stderr
        assert np.array_equal(pixels(tmp_path / "batch" / name), pixels(single)), name


def test_compile_with_two_lora_sets_is_refused(tmp_path, photos, loras):
    rows = [{"input": str(photos / "chelsea.png"), "prompt": "a <lora:inky:1>"}, {"input": str(photos / "coffee.png"), "prompt": "b"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = invoke("run", "--jobs", jobs, "--model", "tiny", "--lora-dir", loras, "--compile", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "--compile" in r.stderr and "2" in r.stderr


def test_embedding_changes_the_image_only_when_named(tmp_path, src):
    import torch

    from .helpers.tiny_lora import save_a1111_embedding

    d = tmp_path / "emb"
    d.mkdir()
    torch.manual_seed(0)
    save_a1111_embedding(d / "shinyvibe.pt", torch.randn(2, 32))
    base = make(tmp_path, src, "a cat", name="base.png")
    unused = make(tmp_path, src, "a cat", "--embeddings-dir", d, name="unused.png")
    assert np.array_equal(base, unused)
    assert "TI hashes" not in Image.open(tmp_path / "unused.png").info["parameters"]
    used = make(tmp_path, src, "a cat, shinyvibe", "--embeddings-dir", d, name="used.png")
    plain_word = make(tmp_path, src, "a cat, shinyvibe", name="word.png")
    assert differ(used, plain_word) > 0.05
    from img2img_cli.text.embeddings import embedding_hash

    assert f"TI hashes: shinyvibe: {embedding_hash(d / 'shinyvibe.pt')}" in Image.open(tmp_path / "used.png").info["parameters"] \
        or f'TI hashes: "shinyvibe: {embedding_hash(d / "shinyvibe.pt")}"' in Image.open(tmp_path / "used.png").info["parameters"]
    # --embedding FILE: the same
    flag = make(tmp_path, src, "a cat, shinyvibe", "--embedding", d / "shinyvibe.pt", name="flag.png")
    assert np.array_equal(flag, used)

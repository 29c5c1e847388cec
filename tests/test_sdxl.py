"""SDXL end to end with a tiny random SDXL base (CPU, no network): the CLI against diffusers'
StableDiffusionXLImg2ImgPipeline, batch invariance, SDXL single-file checkpoints, and the fp32
re-decode with SDXL-style ``latents_mean`` / ``latents_std``.

The model is built once per session by ``tests/helpers/tiny_sdxl.py`` (diffusers' SDXL img2img
fast-test sizes, native resolution 64 px); every run here takes well under a second of compute.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from img2img_cli.cli import app

from .conftest import EXAMPLES
from .helpers.ldm_checkpoint import save_original_checkpoint
from .helpers.tiny_sdxl import save_tiny_sdxl

runner = CliRunner()

PROMPT, NEGATIVE = "a cat, oil painting", "blurry, low quality"
SEED, STRENGTH, STEPS, GUIDANCE = 3, 0.6, 10, 6.5  # int(10 * 0.6) = 6 denoising steps
COMMON_ARGS = ["--steps", STEPS, "-s", STRENGTH, "-g", GUIDANCE, "--device", "cpu"]
RUN_ARGS = [*COMMON_ARGS, "--seed", SEED]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory) -> Path:
    """The tiny SDXL base as a diffusers folder (model_index.json: StableDiffusionXLPipeline)."""
    return save_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def sdxl_pipe(sdxl_dir):
    """diffusers' own StableDiffusionXLImg2ImgPipeline from that folder, CPU, fp32."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sdxl_ckpt(tmp_path_factory, sdxl_pipe) -> Path:
    """The same weights as an original (SGM) SDXL base single-file checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny-sdxl-original.safetensors"
    save_original_checkpoint(sdxl_pipe, path)
    return path


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> list[Path]:
    """Two 64x64 RGB photos: already at the model's native size, so the CLI does not resize them."""
    d = tmp_path_factory.mktemp("sources")
    out = []
    for name, box in (("chelsea.png", (150, 40, 278, 168)), ("coffee.png", (100, 50, 300, 250))):
        with Image.open(EXAMPLES / name) as im:
            small = im.convert("RGB").crop(box).resize((64, 64), Image.Resampling.LANCZOS)
        path = d / f"{Path(name).stem}-64.png"
        small.save(path)
        out.append(path)
    return out


@pytest.fixture(scope="session")
def folder_out(tmp_path_factory, sdxl_dir, sources) -> Path:
    """The CLI's output for ``sources[0]`` with the folder model (shared by several tests)."""
    out = tmp_path_factory.mktemp("folder-out") / "ours.png"
    r = invoke("run", sources[0], "--model", sdxl_dir, "-p", PROMPT, "-n", NEGATIVE, *RUN_ARGS, "-o", out)
    assert r.exit_code == 0, r.stderr
    return out


def direct(pipe, src: Path, *, negative_prompt=NEGATIVE, **overrides) -> np.ndarray:
    """``pipe`` called directly the way a user would, with the CLI's arguments."""
    with Image.open(src) as im:
        image = im.convert("RGB")
    kwargs = dict(
        prompt=PROMPT,
        image=image,
        strength=STRENGTH,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=torch.Generator("cpu").manual_seed(SEED),
    )
    if negative_prompt is not None:
        kwargs["negative_prompt"] = negative_prompt
    kwargs.update(overrides)
    return np.asarray(pipe(**kwargs).images[0], dtype=np.int16)


# --- the folder model through the CLI ---------------------------------------------------------


def test_tiny_sdxl_loads_as_sdxl_img2img_at_64px(sdxl_dir):
    from img2img_cli.models import load_pipeline, native_resolution, resolve_model

    spec = resolve_model(str(sdxl_dir))
    assert spec.kind == "folder" and spec.name == "tiny-sdxl"
    pipe = load_pipeline(spec, device="cpu", dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert native_resolution(pipe) == 64
    # an SDXL *base*: 6 micro-conditioning numbers, empty negative prompts zeroed
    assert pipe.config.requires_aesthetics_score is False and pipe.config.force_zeros_for_empty_prompt is True
    assert pipe.tokenizer_2.pad_token == "!"


def test_cli_equals_sdxl_img2img_pipeline_called_directly(folder_out, sdxl_pipe, sources):
    src, out = sources[0], folder_out
    ours, theirs = pixels(out), direct(sdxl_pipe, src)
    assert ours.shape == theirs.shape == (64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1  # within 1/255 per pixel
    assert np.abs(ours - pixels(src)).mean() > 5  # and not the input passed through
    # the prompts matter: another negative prompt gives other pixels (the comparison can fail)
    assert np.abs(ours - direct(sdxl_pipe, src, negative_prompt="sharp, detailed")).max() > 10
    with Image.open(out) as im:
        text = im.info["parameters"]
    assert text.startswith(PROMPT + "\nNegative prompt: " + NEGATIVE + "\n")
    for field in (f"Seed: {SEED}", f"Steps: {STEPS}", f"Denoising strength: {STRENGTH}", "Size: 64x64",
                  "Model: tiny-sdxl", "Sampler: Euler", "CFG scale: 6.5"):
        assert field in text, (field, text)


def test_cli_without_negative_prompt_equals_pipeline_default(tmp_path, sdxl_dir, sdxl_pipe, sources):
    src = sources[0]
    out = tmp_path / "ours.png"
    r = invoke("run", src, "--model", sdxl_dir, "-p", PROMPT, *RUN_ARGS, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(out) - direct(sdxl_pipe, src, negative_prompt=None)).max() <= 1


def test_batch_of_two_equals_one_by_one(tmp_path, monkeypatch, sdxl_dir, sdxl_pipe, sources, folder_out):
    """Two inputs in one pipeline call (``--batch-size 2``) give each the pixels it gets alone.

    With random weights the output hardly depends on the input image (the random VAE does not
    reconstruct it), so the two rows also differ in seed and prompt (a jobs file): a mix-up of
    the images, seeds or prompts inside the batch then shows."""
    import json

    import img2img_cli.pipeline as pipeline_module

    rows = [
        {"input": str(sources[0]), "seed": SEED, "prompt": PROMPT, "output": "first.png"},
        {"input": str(sources[1]), "seed": SEED + 1, "prompt": "a cup of coffee, ink drawing", "output": "second.png"},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(row) + "\n" for row in rows))

    calls = []
    real_generate = pipeline_module.generate

    def counting_generate(pipe, requests, **kwargs):
        calls.append(len(requests))
        return real_generate(pipe, requests, **kwargs)

    monkeypatch.setattr(pipeline_module, "generate", counting_generate)
    batched = tmp_path / "batched"
    r = invoke("run", "--jobs", jobs, "--model", sdxl_dir, "-n", NEGATIVE, *RUN_ARGS, "--batch-size", "2", "-o", batched)
    assert r.exit_code == 0, r.stderr
    assert calls == [2]  # one pipeline call for both images
    monkeypatch.setattr(pipeline_module, "generate", real_generate)

    first, second = pixels(batched / "first.png"), pixels(batched / "second.png")
    # one by one: the first row is exactly `folder_out`'s run; the second is run alone here
    alone = tmp_path / "alone.png"
    r = invoke("run", sources[1], "--model", sdxl_dir, "-p", rows[1]["prompt"], "-n", NEGATIVE, *COMMON_ARGS,
               "--seed", SEED + 1, "--batch-size", "1", "-o", alone)
    assert r.exit_code == 0, r.stderr
    assert np.abs(first - pixels(folder_out)).max() <= 1
    assert np.abs(second - pixels(alone)).max() <= 1
    # ...and both equal diffusers called directly, one image per call
    assert np.abs(second - direct(sdxl_pipe, sources[1], prompt=rows[1]["prompt"],
                                  generator=torch.Generator("cpu").manual_seed(SEED + 1))).max() <= 1
    assert np.abs(first - second).mean() > 5  # two different images came out


# --- SDXL single-file checkpoints ---------------------------------------------------------


def test_sdxl_checkpoint_is_recognised_as_sdxl_base(sdxl_ckpt):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open

    from img2img_cli.models import CONFIGS_DIR, resolve_model

    with safe_open(str(sdxl_ckpt), framework="pt") as f:
        keys = set(f.keys())
        ckpt = {k: f.get_tensor(k) for k in keys}
    # the original SGM layout, not diffusers'
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.9.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys
    assert not any(".down_blocks." in k or "add_embedding" in k for k in keys)
    assert not any("self_attn" in k or "q_proj" in k for k in keys if k.startswith("conditioner.embedders.1."))
    assert infer_diffusers_model_type(ckpt) == "xl_base"
    spec = resolve_model(str(sdxl_ckpt))
    assert spec.kind == "file" and spec.config == CONFIGS_DIR / "sdxl" and spec.name == "tiny-sdxl-original"


def test_sdxl_single_file_weights_round_trip_exactly(sdxl_ckpt, sdxl_dir, sdxl_pipe):
    from img2img_cli.models import load_pipeline, resolve_model

    spec = resolve_model(str(sdxl_ckpt), str(sdxl_dir))
    assert spec.config == sdxl_dir
    pipe = load_pipeline(spec, device="cpu", dtype=torch.float32)
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, ref = getattr(pipe, name).state_dict(), getattr(sdxl_pipe, name).state_dict()
        assert ours.keys() == ref.keys(), name
        assert all(torch.equal(ours[k], ref[k]) for k in ref), name
    assert pipe.config.requires_aesthetics_score is False and pipe.config.force_zeros_for_empty_prompt is True


def test_sdxl_single_file_cli_equals_folder(tmp_path, sdxl_ckpt, sdxl_dir, sources, folder_out):
    b = tmp_path / "file.png"
    r = invoke("run", sources[0], "--model", sdxl_ckpt, "--model-config", sdxl_dir, "-p", PROMPT, "-n", NEGATIVE, *RUN_ARGS, "-o", b)
    assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(folder_out) - pixels(b)).max() <= 1
    assert "Model: tiny-sdxl-original" in Image.open(b).info["parameters"]


def test_sdxl_single_file_with_config_without_tokenizers(tmp_path, sdxl_ckpt, sdxl_dir, sources, folder_out):
    """A config folder without tokenizer folders (like the shipped ``sdxl`` config): the package's
    CLIP tokenizer is used for both, the second padding with ``!``; same pixels as the folder."""
    from img2img_cli.models import load_pipeline, resolve_model

    config = tmp_path / "sdxl-config"
    shutil.copytree(sdxl_dir, config, ignore=shutil.ignore_patterns("tokenizer", "tokenizer_2"))
    pipe = load_pipeline(resolve_model(str(sdxl_ckpt), str(config)), device="cpu", dtype=torch.float32)
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer_2.pad_token == "!"
    b = tmp_path / "file.png"
    r = invoke("run", sources[0], "--model", sdxl_ckpt, "--model-config", config, "-p", PROMPT, "-n", NEGATIVE, *RUN_ARGS, "-o", b)
    assert r.exit_code == 0, r.stderr
    assert np.abs(pixels(folder_out) - pixels(b)).max() <= 1


# --- decode_fp32 with latents_mean / latents_std ---------------------------------------------

LATENTS_MEAN = [-0.35, 0.25, 0.1, -0.2]
LATENTS_STD = [1.6, 0.7, 1.2, 0.9]


@pytest.fixture
def pipe_with_latent_stats(sdxl_dir):
    """A fresh SDXL img2img pipeline whose VAE config has SDXL-style latents_mean / latents_std."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.register_to_config(latents_mean=LATENTS_MEAN, latents_std=LATENTS_STD)
    return pipe


def _reference_decode(pipe, latents, *, with_stats=True, vae=None):
    """What StableDiffusionXLImg2ImgPipeline.__call__ does after denoising (fp32 VAE)."""
    vae = vae if vae is not None else pipe.vae
    if with_stats:
        mean = torch.tensor(LATENTS_MEAN).view(1, 4, 1, 1)
        std = torch.tensor(LATENTS_STD).view(1, 4, 1, 1)
        lat = latents * std / vae.config.scaling_factor + mean
    else:
        lat = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(lat, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pt")


def test_decode_fp32_applies_latents_mean_and_std(pipe_with_latent_stats):
    from img2img_cli.pipeline import decode_fp32

    pipe = pipe_with_latent_stats
    latents = torch.randn(2, 4, 16, 24, generator=torch.Generator("cpu").manual_seed(0))
    with torch.inference_mode():
        ours = decode_fp32(pipe, latents)
    expected = _reference_decode(pipe, latents)
    assert ours.shape == expected.shape == (2, 3, 32, 48)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)
    # without the stats the picture is another one: the test can tell them apart
    plain = _reference_decode(pipe, latents, with_stats=False)
    assert (ours - plain).abs().max() > 0.05


def test_decode_fp32_equals_the_pipelines_own_decode(pipe_with_latent_stats, sources):
    """Denoise once to latents, then decode_fp32 equals the pipeline's own output for the same call."""
    from img2img_cli.pipeline import decode_fp32

    pipe = pipe_with_latent_stats
    with Image.open(sources[0]) as im:
        image = im.convert("RGB")
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, strength=STRENGTH,
                  num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    latents = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(SEED), output_type="latent").images
    images = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").images
    with torch.inference_mode():
        ours = decode_fp32(pipe, latents)
    assert ours.shape == images.shape == (1, 3, 64, 64)
    assert torch.allclose(ours, images, atol=1e-5, rtol=0)


def test_decode_fp32_upcasts_a_half_precision_vae_and_restores_it(pipe_with_latent_stats):
    import copy

    from img2img_cli.pipeline import decode_fp32

    pipe = pipe_with_latent_stats
    pipe.vae.to(torch.bfloat16)
    fp32_copy = copy.deepcopy(pipe.vae).to(torch.float32)  # bf16 -> fp32 is exact
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator("cpu").manual_seed(1)).to(torch.bfloat16)
    with torch.inference_mode():
        ours = decode_fp32(pipe, latents)
    assert pipe.vae.dtype == torch.bfloat16  # put back as it was
    expected = _reference_decode(pipe, latents.float(), vae=fp32_copy)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)


def test_sdxl_plain_prompt_a1111_syntax_equals_plain_exactly(tmp_path, sdxl_dir, sources, folder_out):
    """Both text encoders through our encoder give diffusers' own embeddings (and pooled)."""
    out = tmp_path / "plain.png"
    r = invoke("run", sources[0], "--model", sdxl_dir, "-p", PROMPT, "-n", NEGATIVE, *RUN_ARGS, "--prompt-syntax", "plain", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(pixels(out), pixels(folder_out))


def test_sdxl_prompt_editing_switches_both_encoders_and_the_pooled_embedding(tmp_path, sdxl_dir, sources):
    def run(prompt, name):
        out = tmp_path / name
        r = invoke("run", sources[0], "--model", sdxl_dir, "-p", prompt, "-n", NEGATIVE, *RUN_ARGS, "-o", out)
        assert r.exit_code == 0, r.stderr
        return pixels(out)

    cat, dog = run("a photo of a cat", "cat.png"), run("a photo of a dog", "dog.png")
    assert not np.array_equal(cat, dog)
    assert np.array_equal(run("a photo of a [cat:dog:0]", "e0.png"), dog)
    assert np.array_equal(run("a photo of a [cat:dog:99]", "e99.png"), cat)
    mid = run("a photo of a [cat:dog:3]", "e3.png")
    assert not np.array_equal(mid, cat) and not np.array_equal(mid, dog)

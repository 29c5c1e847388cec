"""LoRA and textual-inversion files (img2img_cli/text/lora.py, embeddings.py) on the tiny models.

The files are made by tests/helpers/tiny_lora.py (peft LoRAs on fresh copies of the tiny
models, saved in kohya-ss and diffusers layouts; A1111, safetensors and SDXL embeddings).
Outputs are compared on the CPU in fp32: the text encoder's hidden states for a fixed prompt
and one UNet forward on fixed latents, timestep and context.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import pytest
import torch

from img2img_cli.errors import InputError, ModelError, UsageError
from img2img_cli.text.embeddings import embedding_hash, find_embeddings, load_embedding, names_in
from img2img_cli.text.lora import LoraSet, addnet_hash, check_base, find_lora, inspect_lora, model_base

from .conftest import TINY
from .helpers.tiny_lora import (
    save_a1111_embedding,
    save_diffusers_embedding,
    save_diffusers_lora,
    save_fake_lycoris,
    save_kohya_lora,
    save_safetensors_embedding,
    save_sdxl_embedding,
    tiny_sd_lora_weights,
    tiny_sdxl_lora_weights,
)
from .helpers.tiny_sdxl import build_tiny_sdxl_components

PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD 1.x LoRA files: ``a`` (kohya) and ``a_diffusers`` (the same weights, diffusers
    layout), ``b`` (kohya, other weights), ``unet_only`` (diffusers, UNet only), ``a_pt`` (``a``'s
    tensors in a ``.pt``)."""
    d = tmp_path_factory.mktemp("loras")
    a = tiny_sd_lora_weights(seed=1)
    files = {
        "a": save_kohya_lora(d / "a.safetensors", a),
        "a_diffusers": save_diffusers_lora(d / "a_diffusers.safetensors", a),
        "b": save_kohya_lora(d / "b.safetensors", tiny_sd_lora_weights(seed=2)),
        "unet_only": save_diffusers_lora(d / "unet_only.safetensors", tiny_sd_lora_weights(3, components=("unet",))),
    }
    from safetensors.torch import load_file

    files["a_pt"] = d / "a_pt.pt"
    torch.save(load_file(str(files["a"])), str(files["a_pt"]))
    return files


def fresh_pipe():
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(TINY), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def outputs(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's last hidden state for :data:`PROMPT`, (1, 77, 32), and the UNet's
    noise prediction, (1, 4, 8, 8), for fixed latents, timestep 10 and a fixed context (small
    latents: a UNet forward is what costs time here)."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, 8, 8), generator=g)
    context = torch.randn((1, 77, 32), generator=g)
    ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]
        noise = pipe.unet(latents, 10, encoder_hidden_states=context).sample
    return text, noise


def assert_close(got, want, atol):
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= atol


# --- files: hash, find, inspect, base -------------------------------------------------------


def test_addnet_hash_is_sha256_of_the_bytes_after_the_header(loras):
    data = loras["a"].read_bytes()
    n = int.from_bytes(data[:8], "little")
    want = hashlib.sha256(data[8 + n:]).hexdigest()[:12]
    assert addnet_hash(loras["a"]) == want
    assert want != hashlib.sha256(data).hexdigest()[:12]
    assert inspect_lora(loras["a"]).hash == want
    # A .pt LoRA has A1111's plain file hash.
    assert inspect_lora(loras["a_pt"]).hash == hashlib.sha256(loras["a_pt"].read_bytes()).hexdigest()[:12]


def test_addnet_hash_ignores_metadata(tmp_path):
    from safetensors.torch import save_file

    t = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(t, str(tmp_path / "x.safetensors"), metadata={"a": "1"})
    save_file(t, str(tmp_path / "y.safetensors"), metadata={"a": "a much longer value"})
    assert addnet_hash(tmp_path / "x.safetensors") == addnet_hash(tmp_path / "y.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(InputError, match="bad.safetensors"):
        addnet_hash(tmp_path / "bad.safetensors")


def test_find_lora_searches_folders_recursively(tmp_path):
    (tmp_path / "x" / "styles").mkdir(parents=True)
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "styles" / "ink.safetensors").write_bytes(b"")
    (tmp_path / "y" / "old.pt").write_bytes(b"")
    dirs = [tmp_path / "x", tmp_path / "y"]
    assert find_lora("ink", dirs) == tmp_path / "x" / "styles" / "ink.safetensors"
    assert find_lora("old", dirs) == tmp_path / "y" / "old.pt"
    with pytest.raises(UsageError) as e:
        find_lora("foo", dirs)
    msg = str(e.value)
    assert "<lora:foo>" in msg and "foo.safetensors" in msg
    assert str(tmp_path / "x") in msg and str(tmp_path / "y") in msg
    assert "\n" not in msg
    (tmp_path / "y" / "ink.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="2 files named ink.safetensors"):
        find_lora("ink", dirs)


def test_inspect_kohya_and_diffusers_files(loras):
    kohya = inspect_lora(loras["a"])
    assert (kohya.name, kohya.kind, kohya.base) == ("a", "kohya", "sd1")  # ss_base_model_version=sd_v1
    assert kohya.path == loras["a"] and len(kohya.hash) == 12
    diffusers = inspect_lora(loras["a_diffusers"])
    # No metadata, and the tiny model's 32-wide context says nothing about the base.
    assert (diffusers.kind, diffusers.base) == ("diffusers", None)
    pt = inspect_lora(loras["a_pt"])
    assert (pt.kind, pt.base) == ("kohya", None)  # a .pt has no metadata


def _header_only_lora(path: Path, shapes: dict, metadata=None) -> Path:
    from safetensors.torch import save_file

    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


K_DOWN = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
D_DOWN = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
TE_DOWN = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"


@pytest.mark.parametrize(
    "shapes, metadata, base",
    [
        ({K_DOWN: (4, 768)}, None, "sd1"),
        ({K_DOWN: (4, 1024)}, None, "sd2"),
        ({K_DOWN: (4, 2048)}, None, "sdxl"),
        ({D_DOWN: (4, 1024)}, None, "sd2"),
        ({TE_DOWN: (4, 1024)}, None, "sd2"),
        ({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 768)}, None, "sdxl"),
        ({"text_encoder_2.encoder.layers.0.self_attn.q_proj.lora_A.weight": (4, 32)}, None, "sdxl"),
        ({K_DOWN: (4, 768)}, {"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),  # metadata first
        ({K_DOWN: (4, 32)}, {"ss_v2": "True"}, "sd2"),
        ({K_DOWN: (4, 32)}, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
        ({K_DOWN: (4, 32)}, None, None),
        ({K_DOWN: (4, 32)}, {"ss_v2": "False"}, "sd1"),
        ({K_DOWN: (4, 2048)}, {"ss_v2": "False"}, "sdxl"),  # the shapes before a bare ss_v2
    ],
)
def test_base_from_metadata_keys_and_shapes(tmp_path, shapes, metadata, base):
    assert inspect_lora(_header_only_lora(tmp_path / "l.safetensors", shapes, metadata)).base == base


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: save_fake_lycoris(p, "loha"), "LoHa"),
        (lambda p: save_fake_lycoris(p, "lokr"), "LoKr"),
        (lambda p: _header_only_lora(p, {"unet.x.lora_A.weight": (4, 4), "unet.x.dora_scale": (4,)}), "DoRA"),
        (lambda p: save_safetensors_embedding(p, torch.zeros(1, 32)), "embedding"),
        (lambda p: _header_only_lora(p, {"model.diffusion_model.out.2.weight": (4, 4)}), "checkpoint"),
        (lambda p: _header_only_lora(p, {"weight": (4, 4)}), "not a LoRA"),
        (lambda p: _header_only_lora(p, {"lora_transformer_x.lora_down.weight": (4, 4)}), "not a LoRA for Stable"),
        (lambda p: _header_only_lora(p, {K_DOWN: (4, 4)}, {"ss_base_model_version": "flux1"}), "a LoRA for flux1"),
    ],
)
def test_inspect_refuses_what_diffusers_cannot_apply(tmp_path, make, words):
    path = make(tmp_path / "odd.safetensors")
    with pytest.raises(InputError) as e:
        inspect_lora(path)
    assert words in str(e.value) and str(path) in str(e.value)


class Unpicklable:
    """Any class of ours: torch's weights_only unpickler refuses to build it."""


def test_pt_lora_is_read_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1), "x": Unpicklable()}, str(path))
    with pytest.raises(InputError, match=r"evil\.pt.*weights_only=True"):
        inspect_lora(path)


def test_check_base(loras, tmp_path):
    labelled = {"ss_base_model_version": "sdxl_base_v1-0"}
    sdxl = inspect_lora(save_kohya_lora(tmp_path / "xl.safetensors", tiny_sd_lora_weights(seed=5), labelled))
    assert sdxl.base == "sdxl"
    with pytest.raises(ModelError) as e:
        check_base(sdxl, "stable-diffusion")
    assert "SDXL" in str(e.value) and "sdxl" in str(e.value) and "stable-diffusion" in str(e.value)
    check_base(sdxl, "stable-diffusion-xl")
    sd1 = inspect_lora(loras["a"])
    check_base(sd1, "stable-diffusion")
    check_base(sd1, "tiny")
    for family in ("stable-diffusion-xl", "sd2", "sdxl"):
        with pytest.raises(ModelError, match=family):
            check_base(sd1, family)
    check_base(inspect_lora(loras["a_diffusers"]), "stable-diffusion-xl")  # unknown base: not checked
    assert model_base(fresh_pipe()) == "sd1"


# --- LoraSet -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_outputs():
    return outputs(fresh_pipe())


def test_weight_zero_is_the_model_without_lora(loras, plain_outputs):
    pipe = fresh_pipe()
    LoraSet(pipe).apply(((loras["a"], 0.0, 0.0),))
    got = outputs(pipe)
    assert got[0].abs().max() > 0
    assert_close(got, plain_outputs, atol=1e-6)


@pytest.mark.parametrize("te, unet", [(0.6, 0.6), (1.0, 0.25)])
def test_weights_as_diffusers_applies_them(loras, plain_outputs, te, unet):
    pipe = fresh_pipe()
    LoraSet(pipe).apply(((loras["a"], te, unet),))
    got = outputs(pipe)
    ref = fresh_pipe()
    ref.load_lora_weights(str(loras["a"]), adapter_name="x")
    ref.set_adapters(["x"], [te] if te == unet else [{"text_encoder": te, "unet": unet}])
    want = outputs(ref)
    assert_close(got, want, atol=1e-5)
    assert (got[0] - plain_outputs[0]).abs().max() > 1e-3 and (got[1] - plain_outputs[1]).abs().max() > 1e-3


def test_kohya_diffusers_and_pt_layouts_give_the_same_lora(loras):
    pipe = fresh_pipe()
    lora_set = LoraSet(pipe)
    results = []
    for name in ("a", "a_diffusers", "a_pt"):
        lora_set.apply(((loras[name], 0.8, 0.8),))
        results.append(outputs(pipe))
    assert_close(results[1], results[0], atol=1e-6)
    assert_close(results[2], results[0], atol=0)


def test_switching_sets_reloads_nothing(loras, plain_outputs):
    pipe = fresh_pipe()
    lora_set = LoraSet(pipe)
    set_a = ((loras["a"], 0.7, 0.7),)
    set_b = ((loras["b"], 1.0, 0.5), (loras["unet_only"], 0.5, 0.9))
    with mock.patch.object(pipe, "load_lora_weights", wraps=pipe.load_lora_weights) as load:
        lora_set.apply(set_a)
        out_a = outputs(pipe)
        lora_set.apply(set_b)
        out_b = outputs(pipe)
        lora_set.apply(set_a)
        again = outputs(pipe)
        assert load.call_count == 3
        lora_set.apply(())
        off = outputs(pipe)
        lora_set.apply(set_a)
        after_off = outputs(pipe)
        assert load.call_count == 3
    assert (out_b[0] - out_a[0]).abs().max() > 1e-3
    assert torch.equal(again[0], out_a[0]) and torch.equal(again[1], out_a[1])
    assert torch.equal(off[0], plain_outputs[0]) and torch.equal(off[1], plain_outputs[1])
    assert torch.equal(after_off[0], out_a[0]) and torch.equal(after_off[1], out_a[1])
    assert [(info.name, te, unet) for info, te, unet in lora_set.active] == [("a", 0.7, 0.7)]


def test_a_file_listed_twice_counts_once_with_summed_weights(loras):
    pipe = fresh_pipe()
    lora_set = LoraSet(pipe)
    lora_set.apply(((loras["a"], 0.5, 0.25), (loras["a"], 0.25, 0.5)))
    twice = outputs(pipe)
    lora_set.apply(((loras["a"], 0.75, 0.75),))
    assert_close(outputs(pipe), twice, atol=1e-6)
    with pytest.raises(UsageError, match="finite"):
        lora_set.apply(((loras["a"], float("nan"), 1.0),))


def test_fuse_keeps_the_outputs_and_refuses_another_set(loras):
    pipe = fresh_pipe()
    lora_set = LoraSet(pipe)
    lora_set.apply(((loras["b"], 1.0, 1.0),))
    lora_set.apply(((loras["a"], 0.7, 0.4),))
    before = outputs(pipe)
    lora_set.fuse()
    assert pipe.get_list_adapters() == {}  # plain modules again, for torch.compile
    assert_close(outputs(pipe), before, atol=1e-5)
    lora_set.apply(((loras["a"], 0.7, 0.4),))  # the fused set: fine
    with pytest.raises(UsageError) as e:
        lora_set.apply(((loras["b"], 1.0, 1.0),))
    assert "--compile" in str(e.value) and "<lora:a:0.7:0.4>" in str(e.value) and "<lora:b:1:1>" in str(e.value)


def test_a_lora_that_fits_no_layer_is_refused(tmp_path):
    module = "lora_unet_nowhere_to_q"
    shapes = {f"{module}.lora_down.weight": (4, 32), f"{module}.lora_up.weight": (32, 4)}
    path = _header_only_lora(tmp_path / "other.safetensors", shapes)
    pipe = fresh_pipe()
    with pytest.raises(InputError, match="other.safetensors"):
        LoraSet(pipe).apply(((path, 1.0, 1.0),))
    assert pipe.get_list_adapters() == {}


def test_weights_that_fit_no_layer_are_reported(loras, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(loras["a"]))
    module = "lora_te_text_model_encoder_layers_9_self_attn_q_proj"  # the tiny text encoder has 5 layers
    tensors |= {f"{module}.lora_down.weight": torch.zeros(4, 32), f"{module}.lora_up.weight": torch.zeros(32, 4)}
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path))
    with caplog.at_level("DEBUG", logger="img2img_cli"):
        LoraSet(fresh_pipe()).apply(((path, 1.0, 1.0),))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "partial.safetensors: 2 weights" in warnings[0] and "layers.9" in warnings[0]


# --- SDXL ---------------------------------------------------------------------------------------


def sdxl_pipe():
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**build_tiny_sdxl_components(), force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_outputs(pipe, prompt=PROMPT, unet=True):
    """``encode_prompt``'s context (1, 77, 96) and pooled output (1, 32), and (``unet``) the
    UNet's noise prediction (1, 4, 8, 8) for them."""
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        if not unet:
            return embeds, pooled
        g = torch.Generator().manual_seed(0)
        latents = torch.randn((1, 4, 8, 8), generator=g)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        extra = {"text_embeds": pooled, "time_ids": time_ids}
        noise = pipe.unet(latents, 10, encoder_hidden_states=embeds, added_cond_kwargs=extra).sample
    return embeds, pooled, noise


def test_sdxl_lora_weights_reach_both_text_encoders(tmp_path):
    path = save_kohya_lora(tmp_path / "xl.safetensors", tiny_sdxl_lora_weights(seed=4))
    info = inspect_lora(path)
    assert (info.kind, info.base) == ("kohya", "sdxl")
    pipe = sdxl_pipe()
    plain = sdxl_outputs(pipe)
    assert model_base(pipe) == "sdxl"
    LoraSet(pipe).apply(((path, 0.5, 0.8),))
    got = sdxl_outputs(pipe)
    ref = sdxl_pipe()
    ref.load_lora_weights(str(path), adapter_name="x")
    ref.set_adapters(["x"], [{"text_encoder": 0.5, "text_encoder_2": 0.5, "unet": 0.8}])
    assert_close(got, sdxl_outputs(ref), atol=1e-5)
    # Both halves of the context (text_encoder: 32 wide, text_encoder_2: 64) and the pooled output moved.
    assert (got[0][..., :32] - plain[0][..., :32]).abs().max() > 1e-3
    assert (got[0][..., 32:] - plain[0][..., 32:]).abs().max() > 1e-3
    assert (got[1] - plain[1]).abs().max() > 1e-3


# --- embeddings ---------------------------------------------------------------------------------


def encode(pipe, prompt):
    with torch.no_grad():
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0]


def test_find_embeddings_and_hash(tmp_path):
    (tmp_path / "a" / "neg").mkdir(parents=True)
    save_a1111_embedding(tmp_path / "a" / "neg" / "BadHands.pt", torch.zeros(1, 32))
    save_safetensors_embedding(tmp_path / "a" / "Style.safetensors", torch.zeros(1, 32))
    save_diffusers_embedding(tmp_path / "a" / "toy.bin", "<toy>", torch.zeros(32))
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / "empty.pt").write_bytes(b"")
    found = find_embeddings([tmp_path / "a", tmp_path / "missing"])
    assert found == {
        "BadHands": tmp_path / "a" / "neg" / "BadHands.pt",
        "Style": tmp_path / "a" / "Style.safetensors",
        "toy": tmp_path / "a" / "toy.bin",
    }
    path = found["BadHands"]
    assert embedding_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_names_in():
    available = {n: Path(n) for n in ("EasyNegative", "bad_prompt", "bad-hands-5", "style")}
    prompt = "(EasyNegative:1.2), bad-hands-5, bad_prompt_v2, EasyNegativeV2, mystyle"
    assert names_in(prompt, available) == ["EasyNegative", "bad-hands-5"]
    assert names_in("easynegative", available) == []  # case-sensitive
    assert names_in("style, EasyNegative", available) == ["style", "EasyNegative"]


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "bin"])
def test_embedding_adds_the_word(tmp_path, fmt):
    name = "TinyNeg"
    vectors = torch.randn((2, 32), generator=torch.Generator().manual_seed(7))
    if fmt == "pt":
        path = save_a1111_embedding(tmp_path / f"{name}.pt", vectors)
    elif fmt == "safetensors":
        path = save_safetensors_embedding(tmp_path / f"{name}.safetensors", vectors)
    else:
        vectors = vectors[:1]
        path = save_diffusers_embedding(tmp_path / f"{name}.bin", "<other-token>", vectors[0])
    pipe = fresh_pipe()
    before = encode(pipe, PROMPT)
    rng = torch.get_rng_state()
    load_embedding(pipe, name, path)
    assert torch.equal(torch.get_rng_state(), rng)
    tok = pipe.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in [name, f"{name}_1"][: len(vectors)]]
    rows = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(rows[ids], vectors)
    # Every vector is used, the capitalised name included (see load_embedding).
    expanded = pipe.maybe_convert_prompt(f"a photo of {name}, cat", tok)
    assert tok(expanded).input_ids[5: 5 + len(ids)] == ids  # after <start> a pho to of
    assert torch.equal(encode(pipe, PROMPT), before)
    assert (encode(pipe, f"{PROMPT}, {name}") - encode(pipe, f"{PROMPT}, ")).abs().max() > 1e-3
    size = len(tok)
    load_embedding(pipe, name, path)  # again: nothing happens
    assert len(tok) == size


def test_embedding_of_another_width_is_refused(tmp_path):
    path = save_a1111_embedding(tmp_path / "wide.pt", torch.zeros(1, 48))
    pipe = fresh_pipe()
    with pytest.raises(InputError) as e:
        load_embedding(pipe, "wide", path)
    assert "wide.pt" in str(e.value) and "48" in str(e.value) and "32" in str(e.value)
    assert "wide" not in pipe.tokenizer.get_vocab()


def test_sdxl_embedding_goes_to_both_text_encoders(tmp_path):
    name = "XlNeg"
    g = torch.Generator().manual_seed(3)
    clip_l, clip_g = torch.randn((2, 32), generator=g), torch.randn((2, 64), generator=g)
    path = save_sdxl_embedding(tmp_path / f"{name}.safetensors", clip_l, clip_g)
    pipe = sdxl_pipe()
    before = sdxl_outputs(pipe, unet=False)[0]
    load_embedding(pipe, name, path)
    for tok, te, vec in ((pipe.tokenizer, pipe.text_encoder, clip_l), (pipe.tokenizer_2, pipe.text_encoder_2, clip_g)):
        ids = [tok.convert_tokens_to_ids(t) for t in (name, f"{name}_1")]
        assert torch.equal(te.get_input_embeddings().weight.detach()[ids], vec)
    assert torch.equal(sdxl_outputs(pipe, unet=False)[0], before)
    with_name = sdxl_outputs(pipe, f"{PROMPT}, {name}", unet=False)[0]
    without = sdxl_outputs(pipe, f"{PROMPT}, ", unet=False)[0]
    assert (with_name[..., :32] - without[..., :32]).abs().max() > 1e-3
    assert (with_name[..., 32:] - without[..., 32:]).abs().max() > 1e-3
    # An SD 1.x embedding does not fit SDXL, nor an SDXL one SD 1.x (A1111 skips both).
    one = save_a1111_embedding(tmp_path / "one.pt", torch.zeros(1, 32))
    with pytest.raises(InputError, match=r"one\.pt.*32 wide.*clip_l and clip_g"):
        load_embedding(pipe, "one", one)
    with pytest.raises(InputError, match=r"XlNeg\.safetensors.*SDXL embedding.*one text encoder, 32 wide"):
        load_embedding(fresh_pipe(), name, path)

"""img2img_cli.text.encode: weighted fragments to prompt embeddings, the A1111 way (CPU, seconds).

Against diffusers' own ``encode_prompt`` (bit for bit) with the built-in tiny SD model and the
tiny SDXL base of ``tests/helpers/tiny_sdxl.py``; the chunk rules of A1111's
``modules/sd_hijack_clip.py`` (75-token chunks, comma backtrack, BREAK); the "Original"
emphasis of ``modules/sd_emphasis.py`` against a hand computation on a CLIP whose final norm is
not the identity (``tests/helpers/tiny_clip.py``). Fragment lists are built by hand.

The tiny tokenizer's vocabulary is small, but ``a``, ``the``, ``of`` and ``,`` are one token each.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from img2img_cli.text.encode import (
    BREAK,
    CHUNK_TOKENS,
    Embedding,
    PromptEncoder,
    emphasis_original,
    split_chunks,
)

from .helpers.tiny_clip import with_nondegenerate_text_encoder
from .helpers.tiny_sdxl import POOLED_DIM, TEXT_1_WIDTH, TEXT_2_WIDTH, build_tiny_sdxl_components

PROMPT = "a photo of a cat"
SD_WIDTH = 32  # the built-in tiny model's text encoder
SDXL_WIDTH = TEXT_1_WIDTH + TEXT_2_WIDTH


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


def chunk(emb: Embedding, i: int) -> torch.Tensor:
    return emb.hidden[:, 77 * i : 77 * (i + 1)]


@pytest.fixture(scope="module")
def sdxl_components() -> dict:
    return build_tiny_sdxl_components()


@pytest.fixture(scope="module")
def sdxl_pipe(sdxl_components):
    """The tiny SDXL base as diffusers' StableDiffusionXLImg2ImgPipeline, force_zeros_for_empty_prompt
    as in SDXL base."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    return StableDiffusionXLImg2ImgPipeline(**sdxl_components, force_zeros_for_empty_prompt=True)


@pytest.fixture(scope="module")
def emph_pipe(tiny_pipe):
    """The tiny SD pipeline with a text encoder whose chunk means are far from 0."""
    return with_nondegenerate_text_encoder(tiny_pipe, seed=0)


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


# --- equal to diffusers -----------------------------------------------------------------


def test_sd_plain_prompt_and_empty_negative_equal_diffusers(tiny_pipe):
    enc = PromptEncoder(tiny_pipe)
    embeds, negative = tiny_pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=None)
    emb = enc.encode([(PROMPT, 1.0)])
    assert emb.hidden.shape == (1, 77, SD_WIDTH) and emb.pooled is None
    assert torch.equal(emb.hidden, embeds)
    empty = enc.empty_negative(1)
    assert empty.pooled is None and torch.equal(empty.hidden, negative)
    assert torch.equal(empty.hidden, enc.encode([("", 1.0)]).hidden)


def test_sdxl_plain_prompt_and_empty_negative_equal_diffusers(sdxl_pipe):
    enc = PromptEncoder(sdxl_pipe)
    embeds, negative, pooled, negative_pooled = sdxl_pipe.encode_prompt(
        PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None
    )
    emb = enc.encode([(PROMPT, 1.0)])
    assert emb.hidden.shape == (1, 77, SDXL_WIDTH) and emb.pooled.shape == (1, POOLED_DIM)
    assert torch.equal(emb.hidden, embeds) and torch.equal(emb.pooled, pooled)
    empty = enc.empty_negative(1)
    assert torch.equal(empty.hidden, negative) and torch.equal(empty.pooled, negative_pooled)
    assert not empty.hidden.any() and not empty.pooled.any()  # force_zeros_for_empty_prompt
    two = enc.empty_negative(2)
    assert two.hidden.shape == (1, 154, SDXL_WIDTH) and not two.hidden.any() and two.pooled.shape == (1, POOLED_DIM)


def test_sdxl_without_force_zeros_encodes_the_empty_prompt(sdxl_components):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline(**sdxl_components, force_zeros_for_empty_prompt=False)
    _, negative, _, negative_pooled = pipe.encode_prompt(
        PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None
    )
    empty = PromptEncoder(pipe).empty_negative(1)
    assert negative.any() and torch.equal(empty.hidden, negative) and torch.equal(empty.pooled, negative_pooled)


def test_textual_inversion_multi_vector_tokens(tiny_pipe):
    """An embedding loaded with diffusers' load_textual_inversion (3 vectors: <pic>, <pic>_1, <pic>_2)."""
    pipe = type(tiny_pipe).from_pipe(
        tiny_pipe, tokenizer=copy.deepcopy(tiny_pipe.tokenizer), text_encoder=copy.deepcopy(tiny_pipe.text_encoder)
    )
    torch.manual_seed(1)
    pipe.load_textual_inversion({"<pic>": torch.randn(3, SD_WIDTH)}, token="<pic>")
    enc = PromptEncoder(pipe)
    text = "a <pic> on a table"
    assert torch.equal(enc.encode([(text, 1.0)]).hidden, pipe.encode_prompt(text, "cpu", 1, False)[0])
    # A1111 never splits an embedding's vectors between chunks: 73 tokens + 3 vectors -> the
    # embedding starts chunk 2 (not 2 vectors in chunk 1 and 1 in chunk 2).
    emb = enc.encode([(words("a", 73) + " <pic>", 1.0)])
    assert enc.chunks([(words("a", 73) + " <pic>", 1.0)]) == 2
    assert torch.equal(chunk(emb, 0), enc.encode([(words("a", 73), 1.0)]).hidden)
    assert torch.equal(chunk(emb, 1), enc.encode([("<pic>", 1.0)]).hidden)


# --- clip skip ----------------------------------------------------------------------------


def test_sd_clip_skip_2_is_penultimate_layer_through_final_norm(tiny_pipe, monkeypatch):
    te = tiny_pipe.text_encoder
    ids = tiny_pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        manual = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-2])
    skip2 = PromptEncoder(tiny_pipe, clip_skip=2).encode([(PROMPT, 1.0)]).hidden
    assert torch.equal(skip2, manual)
    assert not torch.equal(skip2, PromptEncoder(tiny_pipe).encode([(PROMPT, 1.0)]).hidden)
    # diffusers' own clip_skip reads text_encoder.text_model.final_layer_norm, which transformers 5's
    # CLIPTextModel no longer has; given that attribute back, it computes the same thing.
    if not hasattr(te, "text_model"):
        with pytest.raises(AttributeError, match="text_model"):
            tiny_pipe.encode_prompt(PROMPT, "cpu", 1, False, clip_skip=1)
        monkeypatch.setattr(te, "text_model", SimpleNamespace(final_layer_norm=te.final_layer_norm), raising=False)
    assert torch.equal(skip2, tiny_pipe.encode_prompt(PROMPT, "cpu", 1, False, clip_skip=1)[0])


def test_clip_skip_bounds(tiny_pipe):
    PromptEncoder(tiny_pipe, clip_skip=5)  # the tiny encoder has 5 layers
    for bad in (0, 6, 1.5):
        with pytest.raises(ValueError, match="clip skip"):
            PromptEncoder(tiny_pipe, clip_skip=bad)


def test_sdxl_clip_skip_follows_a1111(sdxl_pipe):
    """A1111 ignores Clip skip for SDXL; with "Clip skip SDXL" (sdxl_clip_l_skip) only CLIP-L
    takes hidden_states[-clip_skip], un-normed; the second encoder stays at the penultimate layer."""
    fragments = [(PROMPT, 1.0)]
    default = PromptEncoder(sdxl_pipe).encode(fragments)
    assert torch.equal(PromptEncoder(sdxl_pipe, clip_skip=2).encode(fragments).hidden, default.hidden)
    penultimate = PromptEncoder(sdxl_pipe, clip_skip=2, sdxl_clip_l_skip=True).encode(fragments)
    assert torch.equal(penultimate.hidden, default.hidden)
    last = PromptEncoder(sdxl_pipe, clip_skip=1, sdxl_clip_l_skip=True).encode(fragments)
    ids = sdxl_pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        manual = sdxl_pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(last.hidden[..., :TEXT_1_WIDTH], manual)
    assert torch.equal(last.hidden[..., TEXT_1_WIDTH:], default.hidden[..., TEXT_1_WIDTH:])
    assert torch.equal(last.pooled, default.pooled)


# --- chunks -------------------------------------------------------------------------------


def test_long_prompt_takes_two_chunks_encoded_apart(tiny_pipe):
    enc = PromptEncoder(tiny_pipe)
    assert len(tokens(tiny_pipe.tokenizer, words("a", 75) + " " + words("the", 5))) == 80
    first = [(words("a", 75) + " " + words("the", 5), 1.0)]
    second = [(words("a", 75) + " " + words("of", 5), 1.0)]
    assert enc.chunks(first) == 2
    a, b = enc.encode(first), enc.encode(second)
    assert a.hidden.shape == (1, 154, SD_WIDTH)
    assert torch.equal(chunk(a, 0), chunk(b, 0))  # words after token 75 do not reach chunk 1
    assert not torch.equal(chunk(a, 1), chunk(b, 1))
    assert torch.equal(chunk(a, 0), enc.encode([(words("a", 75), 1.0)]).hidden)
    assert torch.equal(chunk(a, 1), enc.encode([(words("the", 5), 1.0)]).hidden)
    assert enc.chunks([(words("a", 75), 1.0)]) == 1 and enc.chunks([(words("a", 76), 1.0)]) == 2


def test_comma_backtrack_moves_the_break_to_the_last_comma(tiny_pipe):
    """A comma as token 70: the first chunk holds those 70 tokens (+ padding), the rest moves on."""
    enc = PromptEncoder(tiny_pipe)
    text = words("a", 69) + ", " + words("the", 10)
    assert len(tokens(tiny_pipe.tokenizer, text)) == 80
    emb = enc.encode([(text, 1.0)])
    assert emb.hidden.shape == (1, 154, SD_WIDTH)
    assert torch.equal(chunk(emb, 0), enc.encode([(words("a", 69) + ",", 1.0)]).hidden)
    assert torch.equal(chunk(emb, 1), enc.encode([(words("the", 10), 1.0)]).hidden)
    # a comma 25 tokens back (more than 20): no backtrack, the break stays at 75
    text = words("a", 49) + ", " + words("the", 30)
    emb = enc.encode([(text, 1.0)])
    assert torch.equal(chunk(emb, 0), enc.encode([(words("a", 49) + ", " + words("the", 25), 1.0)]).hidden)
    assert torch.equal(chunk(emb, 1), enc.encode([(words("the", 5), 1.0)]).hidden)


def test_break_starts_a_new_chunk(tiny_pipe):
    enc = PromptEncoder(tiny_pipe)
    fragments = [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert enc.chunks(fragments) == 2
    emb = enc.encode(fragments)
    assert torch.equal(chunk(emb, 0), enc.encode([("a cat", 1.0)]).hidden)
    assert torch.equal(chunk(emb, 1), enc.encode([("a dog", 1.0)]).hidden)
    # BREAK as lists (A1111's parser gives lists), BREAK first: an empty first chunk
    assert enc.chunks([["BREAK", -1.0], ["a cat", 1.0]]) == 2
    # an empty prompt is one chunk; so are no fragments at all
    assert enc.chunks([("", 1.0)]) == 1 and enc.chunks([]) == 1


def test_split_chunks_layout():
    comma, run = 7, (50, 51, 52)
    lay = split_chunks([([1] * 69 + [comma] + [2] * 10, 1.0)], comma=comma)
    assert [len(c.tokens) for c in lay] == [70, 10] and lay[0].tokens[-1] == comma
    lay = split_chunks([([1] * 69 + [comma] + [2] * 10, 1.0)], comma=comma, backtrack=0)
    assert [len(c.tokens) for c in lay] == [75, 5]
    lay = split_chunks([([1] * 3, 1.2), ([2] * 80, 0.5)], comma=None)
    assert [len(c.tokens) for c in lay] == [75, 8]
    assert lay[0].weights == (1.2,) * 3 + (0.5,) * 72 and lay[1].weights == (0.5,) * 8
    # a multi-vector embedding that does not fit starts the next chunk, with its weight
    lay = split_chunks([([1] * 73, 1.0), (list(run), 1.4)], comma=None, groups={50: run})
    assert [c.tokens for c in lay] == [(1,) * 73, run] and lay[1].weights == (1.4,) * 3
    assert [len(c.tokens) for c in split_chunks([([1] * 73 + list(run), 1.0)], comma=None)] == [75, 1]
    assert [c.tokens for c in split_chunks([], comma=None)] == [()]
    assert [c.tokens for c in split_chunks([([1], 1.0), (None, -1.0)], comma=None)] == [(1,)]


def test_chunks_pads_with_empty_chunks(tiny_pipe, sdxl_pipe):
    for pipe, width in ((tiny_pipe, SD_WIDTH), (sdxl_pipe, SDXL_WIDTH)):
        enc = PromptEncoder(pipe)
        one = enc.encode([(PROMPT, 1.0)])
        three = enc.encode([(PROMPT, 1.0)], chunks=3)
        assert three.hidden.shape == (1, 231, width) and three.chunks == 3
        assert torch.equal(chunk(three, 0), one.hidden)
        empty = enc.encode([("", 1.0)]).hidden  # an empty chunk: start, end, padding
        assert torch.equal(chunk(three, 1), empty) and torch.equal(chunk(three, 2), empty)
        if one.pooled is not None:
            assert torch.equal(three.pooled, one.pooled)
        with pytest.raises(ValueError, match="needs 2 chunks"):
            enc.encode([(words("a", 80), 1.0)], chunks=1)
        with pytest.raises(ValueError):
            enc.encode([(PROMPT, 1.0)], chunks=0)
        with pytest.raises(ValueError):
            enc.empty_negative(0)
    enc = PromptEncoder(tiny_pipe)
    assert torch.equal(enc.empty_negative(2).hidden, enc.encode([("", 1.0)], chunks=2).hidden)


def test_sdxl_long_prompt_pooled_from_first_chunk(sdxl_pipe):
    enc = PromptEncoder(sdxl_pipe)
    emb = enc.encode([(words("a", 75) + " " + words("the", 5), 1.0)])
    assert emb.hidden.shape == (1, 154, SDXL_WIDTH)
    first = enc.encode([(words("a", 75), 1.0)])
    assert torch.equal(chunk(emb, 0), first.hidden) and torch.equal(emb.pooled, first.pooled)
    assert torch.equal(chunk(emb, 1), enc.encode([(words("the", 5), 1.0)]).hidden)


def test_sdxl_tokenizers_that_disagree_are_refused(sdxl_pipe):
    pipe = type(sdxl_pipe).from_pipe(
        sdxl_pipe, tokenizer=copy.deepcopy(sdxl_pipe.tokenizer), text_encoder=copy.deepcopy(sdxl_pipe.text_encoder)
    )
    pipe.load_textual_inversion(
        {"<pic>": torch.randn(2, TEXT_1_WIDTH)}, token="<pic>", tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder
    )
    with pytest.raises(ValueError, match="tokenizers split"):
        PromptEncoder(pipe).encode([("a <pic>", 1.0)])


# --- emphasis -----------------------------------------------------------------------------


def test_emphasis_matches_a1111_formula(emph_pipe):
    tok, te = emph_pipe.tokenizer, emph_pipe.text_encoder
    fragments = [("a photo of a ", 1.0), ("cat", 1.3), (" on the table", 0.8)]
    ids, weights = [], []
    for text, weight in fragments:
        piece = tokens(tok, text)
        ids += piece
        weights += [weight] * len(piece)
    ids = [tok.bos_token_id, *ids, tok.eos_token_id] + [tok.pad_token_id] * (CHUNK_TOKENS - len(ids))
    w = torch.tensor([1.0, *weights] + [1.0] * (77 - 1 - len(weights)))
    with torch.no_grad():
        z = te(torch.tensor([ids])).last_hidden_state
    weighted = z * w.reshape(1, 77, 1)
    expected = weighted * (z.mean() / weighted.mean())  # EmphasisOriginal.after_transformers
    assert abs(z.mean().item()) > 1e-2  # not the degenerate case
    got = PromptEncoder(emph_pipe).encode(fragments).hidden
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got.mean(), z.mean())  # the mean is kept
    assert not torch.allclose(got, z)


def test_emphasis_all_ones_is_bit_exact(emph_pipe):
    enc = PromptEncoder(emph_pipe)
    plain = enc.encode([("a photo of a cat on the table", 1.0)]).hidden
    split = enc.encode([("a photo of a ", 1.0), ("cat", 1.0), (" on the table", 1.0)]).hidden
    assert torch.equal(split, plain)
    assert torch.equal(split, emph_pipe.encode_prompt("a photo of a cat on the table", "cpu", 1, False)[0])
    z = torch.randn(1, 77, 8)
    assert emphasis_original(z, [1.0] * 77) is z


def test_emphasis_degenerate_mean_skips_the_rescale(tiny_pipe):
    """The built-in tiny model's final norm (weight 1, bias 0) gives chunks of mean ~0:
    A1111's rescale would divide by ~0; here z * w is kept, finite."""
    enc = PromptEncoder(tiny_pipe)
    plain = enc.encode([("blurry", 1.0)]).hidden
    emb = enc.encode([("blurry", 1.3)]).hidden
    assert torch.isfinite(emb).all()
    w = torch.ones(1, 77, 1)
    w[0, 1:4] = 1.3  # "blurry" is 3 tokens here
    assert torch.equal(emb, plain * w)
    z = torch.zeros(1, 77, 4)
    assert torch.equal(emphasis_original(z, [1.5] * 77), z)  # mean 0 / 0: no NaN
    with pytest.raises(ValueError):
        emphasis_original(z, [1.5] * 76)


def test_sdxl_emphasis_per_encoder(sdxl_pipe):
    """Each encoder's penultimate hidden states get the emphasis with their own means; the pooled
    vector is the second encoder's, before emphasis."""
    tok = sdxl_pipe.tokenizer
    fragments = [("a photo of a ", 1.0), ("cat", 1.4)]
    head, cat = tokens(tok, "a photo of a "), tokens(tok, "cat")
    ids = [tok.bos_token_id, *head, *cat, tok.eos_token_id]
    w = torch.ones(1, 77, 1)
    w[0, 1 + len(head) : 1 + len(head) + len(cat)] = 1.4
    parts = []
    with torch.no_grad():
        # tokenizer pads with the end token, tokenizer_2 with "!" (id 0)
        for te, pad in ((sdxl_pipe.text_encoder, tok.eos_token_id), (sdxl_pipe.text_encoder_2, 0)):
            out = te(torch.tensor([ids + [pad] * (77 - len(ids))]), output_hidden_states=True)
            z = out.hidden_states[-2]
            weighted = z * w
            parts.append(weighted * (z.mean() / weighted.mean()))
    got = PromptEncoder(sdxl_pipe).encode(fragments)
    torch.testing.assert_close(got.hidden, torch.cat(parts, dim=-1), rtol=1e-6, atol=1e-7)
    assert torch.equal(got.pooled, out.text_embeds)
    assert torch.equal(got.pooled, PromptEncoder(sdxl_pipe).encode([("a photo of a cat", 1.0)]).pooled)

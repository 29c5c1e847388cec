"""A tiny CLIP text encoder whose final layer norm is not the identity, for emphasis tests.

The built-in tiny model's ``final_layer_norm`` has weight 1 and bias 0 (its initial values), so
every token's features sum to 0 and a chunk's mean is rounding noise: A1111's emphasis rescale
(``mean before / mean after``) cannot be checked on it. This encoder has the built-in tiny
model's config (5 layers, width 32, its 1000-token vocabulary) with random weights and a
random final norm, seeded: the chunk means are far from 0.
"""

from __future__ import annotations


def nondegenerate_text_encoder(config, *, seed: int = 0):
    """A ``CLIPTextModel`` built from ``config`` (a ``CLIPTextConfig``) after ``torch.manual_seed(seed)``,
    its final layer norm's weight drawn from N(1, 0.5) and its bias from N(0.3, 0.5); in eval mode."""
    import torch
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    encoder = CLIPTextModel(config)
    with torch.no_grad():
        encoder.final_layer_norm.weight.normal_(1.0, 0.5)
        encoder.final_layer_norm.bias.normal_(0.3, 0.5)
    return encoder.eval()


def with_nondegenerate_text_encoder(pipe, *, seed: int = 0):
    """``pipe`` (an SD 1.x-style pipeline) again, through ``from_pipe``, with its text encoder
    replaced by :func:`nondegenerate_text_encoder` of the same config; ``pipe`` is unchanged."""
    encoder = nondegenerate_text_encoder(pipe.text_encoder.config, seed=seed)
    return type(pipe).from_pipe(pipe, text_encoder=encoder)

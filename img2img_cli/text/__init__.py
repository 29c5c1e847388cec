"""Prompts as Stable Diffusion users write them: A1111 syntax, long prompts, LoRA, embeddings."""

"""Models: resolving ``--model`` (:mod:`.resolve`), device and dtype (:mod:`.device`), loading
a mode's diffusers pipeline (:mod:`.load`) and speed settings (:mod:`.speed`).

``trust_remote_code`` is never passed; pickle checkpoints are refused. Importing this package
imports neither torch nor diffusers: each function imports them when called.
"""

from .device import cpu_has_native, resolve_device, resolve_dtype
from .load import load_pipeline, native_resolution
from .resolve import CLIP_TOKENIZER_DIR, CONFIGS_DIR, TINY_DIR, ModelSpec, resolve_model
from .speed import Speed, apply_speed, compile_modules

__all__ = [
    "CLIP_TOKENIZER_DIR", "CONFIGS_DIR", "TINY_DIR", "ModelSpec", "Speed", "apply_speed", "compile_modules",
    "cpu_has_native", "load_pipeline", "native_resolution", "resolve_device", "resolve_dtype", "resolve_model",
]

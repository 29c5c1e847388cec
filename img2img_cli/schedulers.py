"""A1111 sampler names mapped to diffusers schedulers.

The table follows diffusers' scheduler docs ("api/schedulers/overview", table
"A1111/k-diffusion ↔ Diffusers"): e.g. ``DPM++ 2M Karras`` is
``DPMSolverMultistepScheduler`` with ``use_karras_sigmas=True``. Each scheduler is built
with ``SchedulerClass.from_config(pipe.scheduler.config, **kwargs)`` so the model's
training noise schedule (betas, prediction type, timestep spacing) is kept, as the
diffusers docs do when swapping schedulers.

Importing this module does not import torch or diffusers.
"""

from __future__ import annotations

from .errors import UsageError

#: A1111 name -> (diffusers scheduler class name, extra ``from_config`` kwargs).
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
}

#: The A1111 name written to infotext for a model's own scheduler, by class name.
_DEFAULT_NAMES = {
    "EulerAncestralDiscreteScheduler": "Euler a",
    "EulerDiscreteScheduler": "Euler",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "DDPMScheduler": "DDPM",
    "PNDMScheduler": "PNDM",
    "UniPCMultistepScheduler": "UniPC",
    "DEISMultistepScheduler": "DEIS",
}


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


_BY_KEY = {_key(n): n for n in SCHEDULERS}


def canonical_name(name: str) -> str:
    """The A1111 spelling of ``name`` (matched case- and space-insensitively).

    Also accepts a diffusers class name such as ``DPMSolverMultistepScheduler``
    (mapped to its plain A1111 name).

    Raises:
        UsageError: naming ``--scheduler`` and listing the choices when unknown.
    """
    key = _key(name)
    if key in _BY_KEY:
        return _BY_KEY[key]
    for cls_name, a1111 in _DEFAULT_NAMES.items():
        if key == _key(cls_name):
            return a1111
    raise UsageError(
        f"--scheduler: unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)} "
        "(see `img2img schedulers`)"
    )


def display_name(scheduler) -> str:
    """The A1111 name for a diffusers scheduler instance (for the infotext ``Sampler:`` field).

    Karras-sigma and SDE variants are recognised from the scheduler's config; an unknown
    class gives its class name.
    """
    cls_name = type(scheduler).__name__
    config = getattr(scheduler, "config", {}) or {}
    for name, (cls, kwargs) in reversed(list(SCHEDULERS.items())):
        if cls == cls_name and kwargs and all(config.get(k) == v for k, v in kwargs.items()):
            return name
    return _DEFAULT_NAMES.get(cls_name, cls_name)


def make_scheduler(name: str, base_scheduler):
    """Build the diffusers scheduler for A1111 name ``name`` from ``base_scheduler``'s config.

    Args:
        name: an A1111 sampler name (see :data:`SCHEDULERS`); matched via :func:`canonical_name`.
        base_scheduler: the model's own scheduler; its config (betas, ``prediction_type``,
            ``timestep_spacing``...) is kept.

    Raises:
        UsageError: unknown name.
    """
    import diffusers

    cls_name, kwargs = SCHEDULERS[canonical_name(name)]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(base_scheduler.config, **kwargs)

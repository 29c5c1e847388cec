"""What the benchmark scripts share: the environment of their child processes, running a child
with its wall time and peak resident memory, and the pixel difference between two outputs.

Light on purpose: importing it pulls in neither torch nor numpy (``gpu.py``'s launcher must stay
small, see ``run_measured``); ``pixel_diff`` imports numpy and PIL when it is called.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path`` and they
``import _common``; ``components.py`` adds it itself.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the bundled photos the benchmarks crop their inputs from (``examples/``)
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"]


def bench_env(**extra: str) -> dict:
    """The environment of a child process: this one's, offline (``HF_HUB_OFFLINE=1``), quiet
    transformers, and the repository root first on ``PYTHONPATH`` (so the checkout's
    ``img2img_cli`` is the one measured); ``extra`` added on top."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": path, **extra}


def run_measured(cmd: list[str], env: dict, timeout: float | None = None) -> dict:
    """Run ``cmd`` as a child and wait with ``os.wait4`` for its own rusage. Returns a dict:
    ``spawn`` and ``end`` (``time.time()``), ``wall`` (seconds), ``rss_mib`` (the child's peak
    resident memory, ``ru_maxrss``), ``out``, ``err``, ``rc`` (exit code) and ``killed``: with
    ``timeout`` (seconds) the child is killed then.

    Linux records the high-water RSS of the memory image that ``exec`` replaces, which for a
    child started by (v)fork is the launcher's: a child's ``ru_maxrss`` is at least the
    launcher's own peak (``launcher_rss_mib``). A launcher that wants small figures keeps torch
    out of its own process."""
    killed = threading.Event()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        spawn = time.time()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, text=True)
        timer = None
        if timeout is not None:
            def kill():
                killed.set()
                try:
                    p.kill()
                except OSError:
                    pass
            timer = threading.Timer(max(timeout, 1.0), kill)
            timer.daemon = True
            timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if timer is not None:
            timer.cancel()
        wall = time.perf_counter() - t0
        end = time.time()
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    return {"spawn": spawn, "end": end, "wall": wall, "rss_mib": usage.ru_maxrss / 1024.0,
            "out": out, "err": err, "rc": p.returncode, "killed": killed.is_set()}


def run_or_exit(cmd: list[str], env: dict) -> dict:
    """``run_measured``, and exit with the command and the tail of its stderr if it fails."""
    r = run_measured(cmd, env)
    if r["rc"]:
        sys.exit(f"command failed ({r['rc']}): {' '.join(cmd)}\n{r['err'][-3000:]}")
    return r


def launcher_rss_mib() -> float:
    """This process's own peak resident memory in MiB (the floor of its children's figures)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class PixelDiff:
    """Difference between two 8-bit RGB images, in units of 1/255: the largest and the mean
    absolute difference over all pixels and channels, and the PSNR in dB (``inf`` if equal)."""

    max: int
    mean: float
    psnr: float

    @property
    def identical(self) -> bool:
        return self.max == 0


def _rgb(image):
    """An int16 H x W x 3 array from a path, a PIL image or an array."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"), dtype=np.int16)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.int16)
    return np.asarray(image, dtype=np.int16)


def pixel_diff(a, b) -> PixelDiff:
    """The ``PixelDiff`` of ``a`` against ``b`` (each a path, a PIL image or a uint8 array);
    ``ValueError`` if their shapes differ."""
    x, y = _rgb(a), _rgb(b)
    if x.shape != y.shape:
        raise ValueError(f"shape {x.shape} vs {y.shape}")
    d = abs(x - y)
    mse = float((d.astype("float64") ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return PixelDiff(int(d.max()), float(d.mean()), psnr)

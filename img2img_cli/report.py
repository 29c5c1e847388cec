"""What a run tells: the ``--report`` JSONL file and the one summary line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .io import display
from .work import Outcome, WorkItem


@dataclass
class Summary:
    """Counts of a run (over all processes); ``exit_code`` is 0 when nothing failed, 1 when
    something failed, 130/143 when interrupted by SIGINT/SIGTERM."""

    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: int = 0
    remaining: int = 0
    fatal: str | None = None
    is_main: bool = True
    outcomes: list[Outcome] = field(default_factory=list)
    # where the time went (this process; None when nothing was generated):
    load_seconds: float | None = None  # model load and set-up, from the start of the run
    first_batch_seconds: float | None = None  # first pipeline call: compile and warm-up happen here
    first_batch_images: int = 0
    steady_rate: float | None = None  # images/s after the first batch (needs 2 or more batches)
    unit: str = "images"  # what the batches hold: "tiles" when a run cuts images into tiles

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return self.interrupted
        return 1 if self.failed else 0

    def line(self) -> str:
        """The one summary line, e.g. ``32 written, 0 skipped, 1 failed in 25.7 s (1.24
        images/s; model load 5.4 s, first batch of 8 6.1 s, then 1.40 images/s)``: where the
        time went is in the brackets when something was generated (the first batch holds
        ``--compile``'s compiling and any warm-up; the rate after it is the steady state)."""
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        timings = self.timings()
        text = (
            f"{self.written} written, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s{'; ' + timings if timings else ''})"
        )
        if self.interrupted:
            sig = "SIGINT" if self.interrupted == 130 else "SIGTERM"
            text += f"; interrupted by {sig}, {self.remaining} inputs left: rerun with --skip-existing to finish"
        elif self.fatal:
            text += f"; stopped: {self.fatal}; {self.remaining} inputs left: free space and rerun with --skip-existing"
        return text

    def timings(self) -> str | None:
        """``model load 3.1 s, first batch of 8 12.0 s, then 5.20 images/s``; ``None`` when
        nothing was generated (this process's figures). A tiled run counts tiles, the pipeline's
        inputs: ``first batch of 8 tiles 12.0 s, then 5.20 tiles/s``."""
        if self.load_seconds is None or self.first_batch_seconds is None:
            return None
        what = " tiles" if self.unit == "tiles" else ""
        text = f"model load {self.load_seconds:.1f} s, first batch of {self.first_batch_images}{what} {self.first_batch_seconds:.1f} s"
        if self.steady_rate is not None:
            text += f", then {self.steady_rate:.2f} {self.unit}/s"
        return text


class ReportFile:
    """``--report FILE.jsonl``: one JSON line per input, appended (``O_APPEND``) and flushed
    as each input completes, so the file survives a crash; several processes may share it."""

    def __init__(self, path: Path | None):
        self.fd = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # 0o666 less the umask, what open() gives any other file
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            except OSError as e:
                raise UsageError(f"--report {display(path)}: cannot open ({e.strerror or e})") from None

    def write(self, record: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def record(w: WorkItem, sampler: str | None, model_name: str | None, mode: str = "img2img") -> dict:
    """The ``--report`` line of one input: ``input``, ``outputs``, ``seed``, ``seeds``,
    ``parameters`` (prompt, negative prompt, strength, steps, guidance scale, scheduler, size
    as ``WxH``, model, num_images, mode), ``status`` (``ok``, ``skipped``, ``failed``),
    ``error``, ``seconds``."""
    o = w.outcome
    j = w.job
    return {
        "input": display(w.input.path),
        "outputs": [display(p) for p in o.outputs],
        "seed": w.base_seed,
        "seeds": o.seeds,
        "parameters": {
            "prompt": w.prompt,
            "negative_prompt": w.negative_prompt,
            "strength": j.strength,
            "steps": j.steps,
            "guidance_scale": j.guidance_scale,
            "scheduler": sampler,
            "size": f"{w.size[0]}x{w.size[1]}" if w.size else None,
            "model": model_name,
            "num_images": j.num_images,
            "mode": mode,
        },
        "status": o.status,
        "error": o.error,
        "seconds": round(o.seconds, 3),
    }

"""How fast ``img2img run`` stops on SIGTERM and SIGINT in the middle of a denoising step.

SD 1.5 architecture with random weights (``benchmarks/cpu.py`` builds it once into its cache),
one photo at ``--size``x``--size``, ``--steps`` steps at strength 1, ``-N`` images per batch.
The run's stderr is a pseudo-terminal, so the per-step progress bar is drawn; from its updates
the script takes the time of each denoising step, waits until the middle of step
``--at-step``, sends the signal and measures the time until the process has exited. It reports
the step time, that delay, and the delay as a fraction of a step, for each signal and batch size.

    python benchmarks/interrupt.py                 # 256 px, batch sizes 1 and 2
    python benchmarks/interrupt.py --model tiny    # the built-in tiny model (seconds)
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from _common import ROOT, bench_env
from cpu import BUILD, CACHE

_STEP = re.compile(rb"steps:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def measure(model: str, size: int, steps: int, batch: int, sig: int, at_step: int, env: dict) -> dict:
    """One run interrupted mid-step: ``{"step_s", "delay_s", "stop_s", "code", "files"}``: the
    step time, the time from the signal to the process's exit and to its summary line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "img2img_cli", "run", str(ROOT / "examples" / "chelsea.png"), "--model", model,
               "--size", f"{size}x{size}", "--steps", str(steps), "--strength", "1", "--seed", "0", "-N", str(batch),
               "--batch-size", str(batch), "-o", str(out)]
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # tqdm draws nothing at 0 columns
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=tmp)
        os.close(slave)
        seen: list[tuple[int, float]] = []
        buf = b""
        sent = stopped = None
        while p.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    buf += os.read(master, 65536)
                except OSError:
                    break
                for m in _STEP.finditer(buf):
                    n = int(m.group(1))
                    if not seen or n > seen[-1][0]:
                        seen.append((n, time.monotonic()))
                if sent is not None and stopped is None and b"interrupted by" in buf:
                    stopped = time.monotonic()  # the summary line: work stopped, outputs settled
                buf = buf[-4096:]
            if sent is None and len(seen) >= 2 and seen[-1][0] >= at_step:
                step = (seen[-1][1] - seen[0][1]) / (seen[-1][0] - seen[0][0])
                if time.monotonic() >= seen[-1][1] + step / 2:  # the middle of the next step
                    p.send_signal(sig)
                    sent = time.monotonic()
        p.wait()
        end = time.monotonic()
        os.close(master)
        if sent is None:
            raise SystemExit(f"the run ended before step {at_step} (exit {p.returncode})")
        step = (seen[-1][1] - seen[0][1]) / max(1, seen[-1][0] - seen[0][0])
        files = list(out.iterdir()) if out.exists() else []
        return {"step_s": step, "delay_s": end - sent, "stop_s": (stopped or end) - sent, "code": p.returncode, "files": len(files)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a model folder, or tiny (default: SD 1.5 with random weights)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--at-step", type=int, default=3)
    ap.add_argument("--batch-sizes", default="1,2")
    a = ap.parse_args()
    env = bench_env()
    model = a.model
    if model is None:
        if not (CACHE / "model_index.json").exists():
            print(f"building SD 1.5 with random weights in {CACHE} (once)...", flush=True)
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-c", BUILD, str(ROOT / "img2img_cli/models/configs/sd15"), str(CACHE),
                            str(ROOT / "img2img_cli/models/clip_tokenizer")], check=True, env=env)
        model = str(CACHE)
    print(f"interrupt benchmark: model {Path(model).name}, {a.size}x{a.size}, {a.steps} steps, strength 1, "
          f"signal in the middle of step {a.at_step + 1}, {os.cpu_count()} CPUs")
    for batch in (int(b) for b in a.batch_sizes.split(",")):
        for sig in (signal.SIGTERM, signal.SIGINT):
            r = measure(model, a.size, a.steps, batch, sig, a.at_step, env)
            print(f"  batch {batch} {signal.Signals(sig).name:7s}: step {r['step_s']:6.2f} s, signal to exit "
                  f"{r['delay_s']:5.2f} s ({r['delay_s'] / r['step_s']:.2f} of a step; summary line after "
                  f"{r['stop_s']:.2f} s), exit {r['code']}, "
                  f"{r['files']} files written", flush=True)


if __name__ == "__main__":
    main()

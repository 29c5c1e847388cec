"""Several processes (``accelerate launch``, ``torchrun``): splitting the work and gathering
the counts.

The work is split with accelerate's ``PartialState.split_between_processes`` (contiguous, in
order, the same on every process); output names were planned before the split, so no two
processes write the same file; the counts are gathered (``accelerate.utils.gather_object``) so
the main process reports them all.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` / ``accelerate launch``; 1 when unset or bad."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def split(work: list, device: str):
    """This process's share of ``work``.

    Returns:
        ``(state, device, share)``: accelerate's ``PartialState`` (``None`` in a single
        process), the device this process uses (its own GPU; ``cpu`` stays ``cpu``, with the
        CPU threads divided between the local processes) and its contiguous part of ``work``.
    """
    if world_size() <= 1:
        return None, device, work
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    if device != "cpu":
        device = str(state.device)
    else:
        import torch

        local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    with state.split_between_processes(work) as mine:
        return state, device, list(mine)


def gather(summary, state) -> None:
    """Replace ``summary``'s counts by the sums over all processes (every process calls it),
    then end the process group."""
    if state is None:
        summary.is_main = True
        return
    from accelerate.utils import gather_object

    summary.is_main = state.is_main_process
    counts = gather_object(
        [(summary.written, summary.skipped, summary.failed, summary.interrupted, summary.remaining, summary.fatal)]
    )
    summary.written = sum(c[0] for c in counts)
    summary.skipped = sum(c[1] for c in counts)
    summary.failed = sum(c[2] for c in counts)
    summary.interrupted = max(c[3] for c in counts)
    summary.remaining = sum(c[4] for c in counts)
    summary.fatal = next((c[5] for c in counts if c[5]), None)
    # torch.distributed's process group, ended before the interpreter exits: left running, its
    # gloo threads can abort the exiting process ("terminate called without an active exception")
    state.destroy_process_group()

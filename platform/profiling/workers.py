"""A benchmark's worker processes: starting them, and the parent's wait for their results, which
ends at once when a worker dies instead of leaving the parent blocked on the queue."""

from __future__ import annotations

import os
import queue

import torch.multiprocessing as mp


def collect(procs: list, q, n: int) -> list:
    """``n`` results from the workers' queue; a worker that dies first (a bad CPU, no GPU, a
    failed init) ends the wait at once: every worker is killed and the error names its rank."""
    out = []
    while len(out) < n:
        try:
            out.append(q.get(timeout=1.0))
        except queue.Empty:
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (0, None)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"benchmark worker (rank, exit code) {dead} failed; see its traceback above")
    return out


def rank0_result(target, world: int, *args, port_offset: int = 0):
    """Start ``world`` spawned processes, ``target(rank, world, port, q, *args)``, and return the
    one result rank 0 puts on ``q`` (``collect``: a worker that dies ends the wait). ``port``: a
    rendezvous port of this process's own, ``port_offset`` apart for a second set in one process."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = 29500 + (os.getpid() + port_offset) % 1000
    procs = [ctx.Process(target=target, args=(r, world, port, q, *args)) for r in range(world)]
    for p in procs:
        p.start()
    (result,) = collect(procs, q, 1)
    for p in procs:
        p.join()
    return result

"""A benchmark's worker processes: the parent's wait for their results, which ends at once
when a worker dies instead of leaving the parent blocked on the queue."""

from __future__ import annotations

import queue


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

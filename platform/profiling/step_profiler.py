"""``training.profile_steps = [first, last]``: torch.profiler over those optimizer steps, on
every rank of the real job (1 or N GPUs, or CPU), to see what bounds a step.

    python jobs/stage1.py --config stage1_135m cluster.num_workers=2 "training.profile_steps=[60,64]"

Each rank writes ``<run dir>/profile/rank<r>.txt``: two summary lines, then the top ops by
self device time (CUDA) or self CPU time. On a GPU, in this form (figures made up):

    wall 2.71 s for 3 steps | GPU busy 1.83 s (67.5 %): compute 1.80 s, comm 0.21 s, comm not under compute 0.03 s
    host: process CPU 3.10 s (114 % of wall, all threads), 4260 GPU activities/step

``GPU busy`` is the union of the kernel and copy intervals (``device_busy``; the table's self
CUDA times would count a Triton kernel twice, under its launcher op and as the kernel, and a
profiler annotation such as ``DistributedDataParallel.forward`` as busy). comm = NCCL / gloo
kernels. Wall minus busy is time the GPU sat idle: the host (kernel launches, Python, the data
wait) or waiting for another rank. A low GPU busy share with the process CPU near 100 % points
at the host (but a host blocked in a CUDA sync spins too, so CPU time alone proves nothing).
``comm not under compute`` is the all-reduce time no
compute kernel overlapped (a lower bound on what DDP's communication adds to a step; a rank's
NCCL kernels also spin while they wait for the slower rank, so comm is larger on the faster one).

Then a per-phase table of where the GPU sat idle (platform/profiling/step_timeline.py); beside the text,
the steps' Chrome trace, ``rank<r>_trace.json.gz`` (chrome://tracing, ui.perfetto.dev).

The profiled steps run several times slower and their log window is no throughput figure;
the steps after them should not be slower, so the profiler detaches CUPTI when it stops and
frees its events in one garbage collection (``after_step``).
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fovea.pipelines import storage

from fovea.platform.profiling.intervals import length, overlap, union

_COMM = ("nccl", "gloo", "all_reduce", "allreduce", "c10d")


def _is_comm(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in _COMM)


def device_busy(spans: list[tuple[str, float, float]]) -> dict[str, float]:
    """Union lengths of device activity ``(name, start, end)`` (any unit): ``busy`` (any
    kernel), ``compute`` (non-collective kernels), ``comm`` (collectives), ``comm_exposed``
    (collective time with no compute kernel running) and ``activities`` (count)."""
    comp = union([(s, e) for n, s, e in spans if not _is_comm(n)])
    comm = union([(s, e) for n, s, e in spans if _is_comm(n)])
    comm_len = length(comm)
    return {"busy": length(union([(s, e) for _, s, e in spans])), "compute": length(comp), "comm": comm_len,
            "comm_exposed": comm_len - overlap(comm, comp), "activities": float(len(spans))}


def kernel_spans(events) -> list[tuple[str, float, float]]:
    """The device-side activities (kernels, copies, memsets) of a profile's ``events()``, in
    microseconds; profiler annotations (``gpu_user_annotation``) are not activities."""
    from torch.autograd import DeviceType

    return [(e.name, e.time_range.start, e.time_range.end) for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]


def phase(name: str):
    """Mark a phase of the step for the profiler's timeline (``fovea/<name>``; ~1 us when
    no profiler runs)."""
    return torch.profiler.record_function("fovea/" + name)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class StepProfiler:
    """Call ``before_step(step)`` before optimizer step ``step + 1`` and ``after_step(step)``
    once ``step`` steps are done; profiles steps first..last (1-based, inclusive)."""

    def __init__(self, steps: tuple[int, int] | None, out_dir: storage.Location, rank: int, device: torch.device):
        # a URL out_dir (the run dir on object storage): the files are written here, then uploaded
        self.steps, self.dest, self.rank, self.device = steps, out_dir, rank, device
        self.out_dir = Path(tempfile.mkdtemp(prefix="fovea-profile-")) if steps and storage.is_url(out_dir) \
            else storage.location(out_dir)
        self._prof, self._t0, self._cpu0 = None, 0.0, 0.0

    def before_step(self, step: int) -> None:
        if self.steps and self._prof is None and step + 1 == self.steps[0]:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                acts.append(torch.profiler.ProfilerActivity.CUDA)
                # Kineto detaches CUPTI when the trace stops only where TEARDOWN_CUPTI=1 (it reads
                # the variable then); left attached, CUPTI's callbacks slow every later kernel
                # launch of the run (docs/PERFORMANCE.md, "Open goals"). An explicit value wins:
                # torch sets 0 itself where inductor's CUDA graphs cannot survive a re-attach.
                os.environ.setdefault("TEARDOWN_CUPTI", "1")
                torch.cuda.synchronize(self.device)
            self._prof = torch.profiler.profile(activities=acts)
            self._prof.__enter__()
            self._t0, self._cpu0 = time.perf_counter(), _cpu_seconds()

    def after_step(self, step: int) -> storage.Location | None:
        if self._prof is None or step != self.steps[1]:
            return None
        # Reading the trace makes a great many short-lived Python objects in reference cycles.
        # With the set-up objects frozen (training.gc_freeze) each burst of them starts a full
        # collection: several a profile, each a pause of the thread that launches the kernels.
        # One collection after the files are written frees them all at once.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._write(step)
        finally:
            if enabled:
                gc.enable()
            gc.collect()

    def _write(self, step: int) -> storage.Location | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall, cpu = time.perf_counter() - self._t0, _cpu_seconds() - self._cpu0
        self._prof.__exit__(None, None, None)
        prof, self._prof = self._prof, None
        n = self.steps[1] - self.steps[0] + 1
        cuda = self.device.type == "cuda"
        summary = f"wall {wall:.2f} s for {n} steps | "
        if cuda:
            b = device_busy(kernel_spans(prof.events()))
            sec = {k: b[k] / 1e6 for k in ("busy", "compute", "comm", "comm_exposed")}  # us -> s
            summary += (f"GPU busy {sec['busy']:.2f} s ({sec['busy'] / wall:.1%}): compute {sec['compute']:.2f} s, "
                        f"comm {sec['comm']:.2f} s, comm not under compute {sec['comm_exposed']:.2f} s\n"
                        f"host: process CPU {cpu:.2f} s ({cpu / wall:.0%} of wall, all threads), "
                        f"{b['activities'] / n:.0f} GPU activities/step")
        else:
            summary += f"process CPU {cpu:.2f} s ({cpu / wall:.0%} of wall, all threads)"
        events = prof.key_averages()
        table = events.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=40)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        timeline = self._timeline(prof, n)
        path = self.out_dir / f"rank{self.rank}.txt"
        path.write_text(f"rank {self.rank}, steps {self.steps[0]}..{self.steps[1]}\n{summary}\n\n{timeline}\n\n{table}\n")
        if storage.is_url(self.dest):
            storage.put_dir(self.out_dir, self.dest)
            return storage.join(self.dest, path.name)
        return path

    def _timeline(self, prof, steps: int) -> str:
        """Write the Chrome trace (``rank<r>_trace.json.gz``, for chrome://tracing or Perfetto)
        and return its per-phase summary (platform/profiling/step_timeline.py)."""
        from fovea.platform.profiling.step_timeline import format_summary, timeline_summary

        raw = self.out_dir / f"rank{self.rank}_trace.json"
        prof.export_chrome_trace(str(raw))
        trace = json.loads(raw.read_text())
        with raw.open("rb") as f, gzip.open(raw.with_suffix(".json.gz"), "wb", compresslevel=6) as g:
            shutil.copyfileobj(f, g)
        raw.unlink()
        return format_summary(timeline_summary(trace, steps))

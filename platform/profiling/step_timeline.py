"""Where a profiled training step's GPU sits idle, by what the host was doing at the time.

The training loop and the model mark their phases with ``torch.profiler.record_function``
("fovea/data", "fovea/forward", "fovea/encode_patches", ..., "fovea/backward",
"fovea/step_end", "fovea/optimizer"). From a profile's Chrome trace (``export_chrome_trace``)
``timeline_summary`` computes, per phase of the main thread:

    wall        time the main thread spent in the phase (innermost phase wins)
    GPU idle    time inside that wall with no kernel, copy or memset running on the GPU:
                the GPU waited for the host (kernel launches, Python, a sync, the data)
    syncs       host calls that wait for the GPU (cudaStreamSynchronize, ...), how many and
                how long they blocked; a sync drains the queue of launched work, so the GPU
                idles from the moment the host resumes until its next launch arrives
    launches    the process's launch calls (kernels, async copies and memsets, from any of its
                threads) that start in the phase, and the host time in them; ``blocked ms``
                is the time in calls of ``BLOCKED_US`` or more: a launch returns in a few
                microseconds unless the GPU's launch queue is full, when the host waits for
                the GPU to drain it. So a phase with GPU idle and no blocked time has a host
                that is slower than its GPU work; blocked time says the host was ahead

GPU idle at time t is put on the phase the host is in at t: the GPU runs behind the host, so
an empty GPU queue means the host has not yet launched the next work of the phase it is in.
Backward is one phase here (autograd launches its kernels from its own thread while the main
thread waits in ``backward()``).

The window's idle overstates what the host costs an unprofiled step, for three reasons: the
profiler slows the host (it records every op), the first profiled step starts on an empty
queue (``StepProfiler`` syncs before it), and work still queued when the last phase ends runs
after the window, while the profile's closing sync waits for it. So the summary also gives the
GPU's work a step, that tail included (``gpu_work_ms``, ``gpu_after_ms``): set against an
unprofiled step's time (the run's log windows), it says how much of a step the GPU is busy.
"""

from __future__ import annotations

from collections import defaultdict

from fovea.platform.profiling.intervals import length, overlap, union

PHASE_PREFIX = "fovea/"
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cudaStreamQuery")
LAUNCH_PREFIXES = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync")
BLOCKED_US = 50.0  # a launch call this long waited for room in the GPU's queue


def _spans(events, pred) -> list[tuple[float, float, dict]]:
    return [(e["ts"], e["ts"] + e.get("dur", 0.0), e) for e in events if e.get("ph") == "X" and pred(e)]


def _innermost_segments(phases: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Nested intervals (start, end, name) -> disjoint segments labelled by the innermost one."""
    cuts = sorted({t for s, e, _ in phases for t in (s, e)})
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        mid = (lo + hi) / 2
        inside = [(s, name) for s, e, name in phases if s <= mid < e]
        if inside:
            out.append((lo, hi, max(inside)[1]))  # the latest start is the innermost
    return out


def _phase_at(segs: list[tuple[float, float, str]], t: float) -> str:
    return next((n for a, b, n in segs if a <= t < b), "(outside)")


def _count_launches(per: dict, segs: list, launches: list) -> None:
    """Each launch call onto the phase it starts in: count, host time, time in blocked calls."""
    for s, e, _ in launches:
        name = _phase_at(segs, s)
        per[name]["launches"] += 1
        per[name]["launch_ms"] += (e - s) / 1e3
        per[name]["blocked_ms"] += (e - s) / 1e3 if e - s >= BLOCKED_US else 0.0


def _count_syncs(per: dict, segs: list, syncs: list, ops: list) -> dict:
    """Each sync onto its phase; -> {(enclosing op, phase): [count, ms]}."""
    sites = defaultdict(lambda: [0, 0.0])
    for s, e, _ in syncs:
        name = _phase_at(segs, s)
        per[name]["syncs"] += 1
        per[name]["sync_ms"] += (e - s) / 1e3
        encl = [(a, ev["name"]) for a, b, ev in ops if a <= s and e <= b]
        op = max(encl)[1] if encl else "(no op)"
        sites[(op, name)][0] += 1
        sites[(op, name)][1] += (e - s) / 1e3
    return sites


def timeline_summary(trace: dict, steps: int = 1) -> dict:
    """Per-phase wall, GPU idle and sync figures (ms per step) of a Chrome trace dict.

    Returns {"phases": {name: {"wall_ms", "gpu_idle_ms", "syncs", "sync_ms", "launches",
    "launch_ms", "blocked_ms"}}, "window_ms", "gpu_busy_ms", "gpu_idle_ms" (inside the phases'
    window), "gpu_after_ms" (device work after the last phase), "gpu_work_ms" (the two busy
    figures together), "sync_sites": [(op, phase, count, ms), ...]} (per step), or an empty
    dict when the trace has no ``fovea/`` phases."""
    events = trace.get("traceEvents", [])
    marks = _spans(events, lambda e: e.get("cat") == "user_annotation" and e["name"].startswith(PHASE_PREFIX))
    if not marks:
        return {}
    tids = defaultdict(float)
    for s, e, ev in marks:
        tids[(ev.get("pid"), ev.get("tid"))] += e - s
    main = max(tids, key=tids.get)  # the thread that runs the loop: most time in phases
    phases = [(s, e, ev["name"][len(PHASE_PREFIX):]) for s, e, ev in marks if (ev.get("pid"), ev.get("tid")) == main]
    lo, hi = min(s for s, _, _ in phases), max(e for _, e, _ in phases)
    device = _spans(events, lambda e: e.get("cat") in DEVICE_CATS)
    busy = union([(max(s, lo), min(e, hi)) for s, e, _ in device if e > lo and s < hi])
    after = union([(max(s, hi), e) for s, e, _ in device if e > hi])  # drained at the closing sync
    segs = _innermost_segments(phases)

    def on_main(ev) -> bool:
        return (ev.get("pid"), ev.get("tid")) == main

    syncs = _spans(events, lambda e: e.get("cat") in ("cuda_runtime", "cuda_driver") and e["name"] in SYNC_CALLS
                   and on_main(e))
    ops = _spans(events, lambda e: e.get("cat") == "cpu_op" and on_main(e))
    # every thread of the loop's process: backward's kernels are launched by autograd's thread
    launches = _spans(events, lambda e: e.get("cat") in ("cuda_runtime", "cuda_driver")
                      and e["name"].startswith(LAUNCH_PREFIXES) and e.get("pid") == main[0])
    per = defaultdict(lambda: {"wall_ms": 0.0, "gpu_idle_ms": 0.0, "syncs": 0.0, "sync_ms": 0.0,
                               "launches": 0.0, "launch_ms": 0.0, "blocked_ms": 0.0})
    for s, e, name in segs:
        per[name]["wall_ms"] += (e - s) / 1e3
        per[name]["gpu_idle_ms"] += ((e - s) - overlap([(s, e)], busy)) / 1e3
    _count_launches(per, segs, launches)
    sites = _count_syncs(per, segs, syncs, ops)
    for v in per.values():
        for k in v:
            v[k] /= steps
    window = (hi - lo) / 1e3
    busy_ms, after_ms = length(busy) / 1e3 / steps, length(after) / 1e3 / steps
    return {"phases": dict(per), "window_ms": window / steps, "gpu_busy_ms": busy_ms,
            "gpu_idle_ms": window / steps - busy_ms, "gpu_after_ms": after_ms, "gpu_work_ms": busy_ms + after_ms,
            "sync_sites": sorted(((op, ph, c / steps, ms / steps) for (op, ph), (c, ms) in sites.items()),
                                 key=lambda r: -r[3])}


def format_summary(s: dict) -> str:
    """The summary as a text table (per step)."""
    if not s:
        return "timeline: no fovea/ phases in the trace"
    lines = [f"timeline per step: window {s['window_ms']:.1f} ms, GPU busy {s['gpu_busy_ms']:.1f} ms, "
             f"GPU idle {s['gpu_idle_ms']:.1f} ms ({s['gpu_idle_ms'] / max(s['window_ms'], 1e-9):.1%})",
             f"GPU work a step {s['gpu_work_ms']:.1f} ms, {s['gpu_after_ms']:.1f} ms of it after the last phase "
             "(still queued; the closing sync waits for it): compare with an unprofiled step's time",
             f"{'phase (innermost)':<22}{'wall ms':>10}{'GPU idle ms':>13}{'syncs':>8}{'sync wait ms':>14}"
             f"{'launches':>10}{'launch ms':>11}{'blocked ms':>12}"]
    for name, v in sorted(s["phases"].items(), key=lambda kv: -kv[1]["gpu_idle_ms"]):
        lines.append(f"{name:<22}{v['wall_ms']:>10.1f}{v['gpu_idle_ms']:>13.1f}{v['syncs']:>8.1f}{v['sync_ms']:>14.1f}"
                     f"{v['launches']:>10.0f}{v['launch_ms']:>11.1f}{v['blocked_ms']:>12.1f}")
    if s["sync_sites"]:
        lines.append("syncs by op: " + "; ".join(f"{op} in {ph}: {c:.1f}x {ms:.1f} ms"
                                                 for op, ph, c, ms in s["sync_sites"][:8]))
    return "\n".join(lines)

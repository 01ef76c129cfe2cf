"""Where a training step's time goes: torch.profiler over chosen steps of the real job
(``step_profiler``), the per-phase GPU-idle timeline (``step_timeline``) and interval
arithmetic on profiler spans (``intervals``)."""

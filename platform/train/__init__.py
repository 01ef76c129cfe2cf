"""Training on Ray Train: the driver (``trainer.fit``), the per-worker loop (``loop``), and
what the loop is made of -- its batch stream, DDP wrapping and collectives, the ranks'
agreement on a CUDA out-of-memory error (``oom``), the optimiser and
schedules, per-step tallies, the log window's metrics (``window``), checkpoints and resume
(``checkpointing``), the garbage-collection clock and the foveation failure signatures it
warns about -- and the one-process training step that the benchmarks time (``bench_step``)."""

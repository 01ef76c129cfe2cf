"""Where a training step's time and memory go, and the arithmetic of the performance tools
(jobs/bench/ are their command lines):

    step_profiler   torch.profiler over chosen steps of the real job (``training.profile_steps``)
    step_timeline   the per-phase GPU-idle timeline of a profiled step
    intervals       interval arithmetic on profiler spans
    throughput      a run's throughput from its metrics.jsonl: steady and matched windows,
                    1 -> 2 GPU scaling, the FLOP model behind MFU
    saved_tensors   activation memory: the bytes autograd saves for backward, by phase
    host_speed      how fast a process's host runs Python and launches work, alone and beside others
    allreduce       all-reduce time and bus bandwidth between processes, as DDP uses it
    workers         a benchmark's wait for its worker processes that ends when one dies
    bench_shards    the synthetic stage-1 benchmark shards: frames a sample, the shard writer

The one-process training step the benchmarks time is platform/train/bench_step.py (it builds
on the training loop, which itself uses this package's profiler).
"""

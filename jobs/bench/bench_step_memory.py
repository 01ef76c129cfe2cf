#!/usr/bin/env python
"""The step-memory estimate of ``jobs/sweep.py --dry-run`` against real CUDA steps (one GPU).

    python jobs/bench/bench_step_memory.py [--out FILE.json]

For each case (LLM, DINOv2, ``model.gradient_checkpointing``, samples x frames, text tokens): the
bytes saved for backward estimated on the meta device and measured in a real bf16-autocast step,
and the peak of a real AdamW step against the estimate (platform/profiling/step_memory.py).
Random weights from the published configs: no weights need to be on the machine.
"""

from __future__ import annotations

import argparse
import json

CASES = [("HuggingFaceTB/SmolLM2-360M-Instruct", "facebook/dinov2-small", False, 4, 8, 128),
         ("HuggingFaceTB/SmolLM2-360M-Instruct", "facebook/dinov2-small", False, 4, 64, 512),
         ("HuggingFaceTB/SmolLM2-360M-Instruct", "facebook/dinov2-base", "dino", 4, 64, 512),
         ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "facebook/dinov2-small", True, 4, 64, 512),
         ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "facebook/dinov2-base", True, 4, 64, 512)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the figures here (JSON)")
    a = ap.parse_args()
    from fovea.model.config import ModelConfig
    from fovea.platform.profiling.step_memory import real_step_check

    rows = []
    for llm, dino, ckpt, B, F, S in CASES:
        r = real_step_check(ModelConfig(llm=llm, dino=dino, gradient_checkpointing=ckpt), B, F, S)
        r["case"] = f"{llm.split('/')[1]} + {dino.split('/')[1]}, checkpointing {ckpt}, {B} x {F} frames, {S} tokens"
        print(f"{r['case']}: saved est {r['saved_est_GB']:.4f} real {r['saved_real_GB']:.4f} GB; "
              f"step est {r['step_est_GB']:.2f} GB, peak {r['peak_real_GB']:.2f} GB ({r['peak_over_est']:.2f}x)",
              flush=True)
        rows.append(r)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

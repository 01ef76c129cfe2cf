"""Write the embedded raw sample datasets (real media, upstream formats) -- idempotent.

    python jobs/make_sample_data.py --out data/demo/raw [--force]

See fovea.pipelines.demo_datasets for what is written and the media licences.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/demo/raw", help="output folder (default data/demo/raw)")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args(argv)

    from fovea.pipelines.demo_datasets import SETS, is_current, make_sample_data

    t0 = time.time()
    out = Path(args.out)
    fresh = args.force or not is_current(out)
    cat = make_sample_data(out, force=args.force)
    n_bad = {k: len(v) for k, v in cat["expected_rejects"].items()}
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{'wrote' if fresh else 'up to date:'} {out}  ({size / 1e6:.1f} MB, {time.time() - t0:.1f} s)")
    for ds in SETS:
        print(f"  {ds:14s} {len(cat[ds]):3d} good + {n_bad[ds]} deliberately broken")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Validate webdataset shards (DESIGN.md 3.6, plus the checks the reference promised but lacked).

    python jobs/validate_shards.py data/demo/shards/webvid [--max-shards 10] [--seed 0] [--images 3]
    python jobs/validate_shards.py "data/shards/cauldron/train-*.tar"
    python jobs/validate_shards.py s3://bucket/fovea/data/shards/webvid     # AWS_* settings: README, Storage

A folder is checked against its manifest.json (sha256, sample counts, unlisted or missing
shards); every sample: contiguous files, unique key, JSON with the contract fields,
len(token_ids) == len(loss_mask) with at least one target, frame_count == number of
NNN.jpg files, is_text_only iff no frames, the first --images JPEGs decode at 224x224.
Prints frame-count and token-length statistics, and one line per source (samples, frames,
tokens).  Exit status 0 only with zero errors.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="+", help="a shard folder, or .tar paths / globs")
    ap.add_argument("--max-shards", type=int, default=None, help="check a seeded random subset of N shards")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=3, help="JPEGs decoded per sample (default 3)")
    args = ap.parse_args(argv)

    from fovea.pipelines.shards import validate_shards
    from fovea.pipelines.storage import StorageError

    target = args.target[0] if len(args.target) == 1 else args.target
    try:
        report = validate_shards(target, max_shards=args.max_shards, seed=args.seed, check_images=args.images)
    except StorageError as e:  # the store, not the shards: what to set
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

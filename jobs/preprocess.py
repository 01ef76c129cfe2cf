"""Preprocess one raw dataset into validated webdataset shards with Ray Data.

    python jobs/preprocess.py webvid    --input data/demo/raw/webvid    --output data/demo/shards/webvid
    python jobs/preprocess.py smoltalk  --input data/demo/raw/smoltalk  --output data/demo/shards/smoltalk --stage 1
           (SmolTalk goes to <output>_s<stage>, e.g. data/demo/shards/smoltalk_s1)
    python jobs/preprocess.py cauldron  --input data/demo/raw/cauldron  --output data/demo/shards/cauldron
    python jobs/preprocess.py video_sft --input data/demo/raw/video_sft --output data/demo/shards/video_sft
    python jobs/preprocess.py openvid        --input data/demo/raw/openvid        --output data/demo/shards/openvid
    python jobs/preprocess.py vript_long     --input data/demo/raw/vript          --output data/demo/shards/vript_long
    python jobs/preprocess.py vript_short    --input data/demo/raw/vript          --output data/demo/shards/vript_short
    python jobs/preprocess.py sharegpt4video --input data/demo/raw/sharegpt4video --output data/demo/shards/sharegpt4video
           (videos read inside their zip archives; default --stage 1, --stage 2 for the stage-2 mix)

Writes train-NNNNN.tar / val-NNNNN.tar, manifest.json and rejects.jsonl, then validates
(a random subset of) the shards and prints read / written / rejected-by-reason counts.  Reruns are idempotent.
Starts a local Ray instance with --num-cpus unless --address (or RAY_ADDRESS) names a cluster.
Exit status: 0 when samples were written and the shards validate (rejects are not failures); 1 when
nothing was written or the validator fails; 2 for bad arguments or an input folder not in the upstream layout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked: a bad argument exits with status 2 and names it."""
    from fovea.pipelines.preprocess import DEFAULT_SAMPLES_PER_SHARD, DEFAULT_STAGE, DEFAULT_VAL_FRACTION
    from fovea.pipelines.readers import DATASETS
    from fovea.pipelines.tokenize import DEFAULT_TOKENIZER
    from fovea.platform.paths import RootError, resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--input", required=True, help="raw dataset folder (upstream layout)")
    ap.add_argument("--output", required=True, help="shard folder: a path or a URL (s3://bucket/shards/webvid)")
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), default=None,
                    help=f"loss-mask rule (default per dataset: {DEFAULT_STAGE})")
    ap.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    ap.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="model ref or path (local store first)")
    ap.add_argument("--max-tokens", type=int, default=None, help="default 512 (stage 1) / 1024 (stages 2-3)")
    ap.add_argument("--max-frames", type=int, default=None, help="default DataConfig.max_frames (64)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    ap.add_argument("--validate", type=int, default=10, metavar="N",
                    help="validate N random shards afterwards (default 10, 0 = skip)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    try:  # placed now: a job Ray started runs in a copy of its --working-dir (fovea.platform.paths)
        args.input, args.output = resolve(args.input, "--input"), resolve(args.output, "--output")
    except RootError as e:
        ap.error(str(e))
    if args.dataset not in DATASETS:
        ap.error(f"unknown dataset {args.dataset!r}: expected one of {', '.join(DATASETS)}")
    if not os.path.isdir(args.input):
        ap.error(f"input folder {args.input!r} does not exist (for the demo: make sample-data)")
    if not 0.0 <= args.val_fraction < 1.0:
        ap.error("--val-fraction must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fovea.pipelines.readers import LayoutError, check_layout
    from fovea.pipelines.storage import StorageError, check_bucket

    try:
        check_layout(args.dataset, args.input)  # before Ray starts: a wrong folder costs no cluster
        check_bucket(args.output)  # an s3:// output's bucket and settings, likewise
    except (LayoutError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import ray

    from fovea.pipelines.preprocess import run_preprocess
    from fovea.pipelines.shards import validate_shards

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)  # never a `ray start` left running
    try:
        summary = run_preprocess(
            args.dataset, args.input, args.output, stage=args.stage, val_fraction=args.val_fraction,
            samples_per_shard=args.samples_per_shard, tokenizer=args.tokenizer, max_tokens=args.max_tokens,
            max_frames=args.max_frames, progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError, StorageError) as e:  # the input changed since check_layout, a bad file, the store
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    failed = summary.written == 0
    if failed:
        print(f"FAILED: no sample was written ({summary.read} read, {sum(summary.rejected.values())} rejected); "
              f"the reasons are in {os.path.join(summary.output, 'rejects.jsonl')}", file=sys.stderr)
    if args.validate > 0 and not failed:
        report = validate_shards(summary.output, max_shards=args.validate, check_images=1)
        print("validation:", report.summary().replace("\n", "\n  "))
        failed = not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

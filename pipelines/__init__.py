"""Data pipelines: raw upstream datasets -> validated webdataset shards -> training batches.

Modules (one component each; see docs/CONTRACTS.md for the shard layout and the batch dict):

    readers.py      upstream formats (WebVid CSV, The Cauldron parquet, SmolTalk parquet/JSONL,
                    LLaVA-Video-style JSON) -> a plan of sample references + malformed-row rejects
    video_caption_sets.py  OpenVid-1M, Vript, ShareGPT4Video download layouts (videos in zips)
    zip_members.py  videos read inside zip archives (split pieces joined on the fly)
    video.py        1 FPS frame sampling (cap 64, uniform spread), PyAV decode, resize/crop, JPEG
    tokenize.py     ChatML rendering with the explicit system prompt + per-stage loss masks
    process.py      one sample reference -> shard payload (JSON + JPEG frames) or a reject record
    shards.py       atomic deterministic tar writer, manifest, validator
    shard_sets.py   the shard sets a DataConfig reads, and the command that makes a missing one
    shard_stages.py the stage a shard folder was tokenized for, against a run's (DESIGN.md 2.3)
    preprocess.py   the Ray Data pipeline tying the above together (jobs/preprocess.py)
    loader.py       training / evaluation loaders for Ray Train workers (webdataset streaming)
    sample_data.py  small real-media raw datasets in the upstream formats (jobs/make_sample_data.py)

Nothing here is imported eagerly: ``import fovea.pipelines`` is cheap.
"""

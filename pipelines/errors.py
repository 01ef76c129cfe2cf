"""Reject reasons: every input that does not become a sample gets exactly one of these.

A reject record (one line of ``rejects.jsonl``) is
``{"dataset": str, "id": str, "reason": REASON, "detail": str, "where": str}``
where ``where`` names the input file (and row/line when known).
"""

from __future__ import annotations

import re

# "<_io.BytesIO object at 0x7f..>" in an exception's text: the address changes every run, and
# rejects.jsonl must be byte-stable across runs
_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")

MALFORMED_ROW = "malformed_row"  # a CSV/JSON/parquet row lacks fields or has wrong types
DUPLICATE_ID = "duplicate_id"  # the same sample id appeared earlier in the input
MISSING_FILE = "missing_file"  # the referenced video file does not exist
UNREADABLE_VIDEO = "unreadable_video"  # the container cannot be opened / is not a video
TRUNCATED_VIDEO = "truncated_video"  # decoding stops well before the declared duration
NO_FRAMES = "no_frames"  # no video stream, or zero decodable frames
BAD_IMAGE = "bad_image"  # image bytes that PIL cannot decode (garbage, truncated)
NO_IMAGE = "no_image"  # a Cauldron row without any image
EMPTY_CAPTION = "empty_caption"  # empty caption / assistant answer
EMPTY_PROMPT = "empty_prompt"  # empty user turn where the dataset carries its own prompt
TOO_LONG = "too_long"  # the prompt alone fills the token budget (no answer token left)
INTERNAL_ERROR = "internal_error"  # an unexpected exception (type and message in detail)

REASONS = (
    MALFORMED_ROW, DUPLICATE_ID, MISSING_FILE, UNREADABLE_VIDEO, TRUNCATED_VIDEO, NO_FRAMES,
    BAD_IMAGE, NO_IMAGE, EMPTY_CAPTION, EMPTY_PROMPT, TOO_LONG, INTERNAL_ERROR,
)


class Reject(Exception):
    """Raised while reading/processing one sample; becomes a reject record, never stops a run."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def stable_detail(detail: str) -> str:
    """``detail`` without object addresses (``<_io.BytesIO object at 0x..>`` -> ``<_io.BytesIO>``)."""
    return _OBJECT_REPR.sub(r"<\1>", detail)


def reject_record(dataset: str, sample_id: str, reason: str, detail: str = "", where: str = "") -> dict:
    return {"dataset": dataset, "id": sample_id, "reason": reason, "detail": stable_detail(detail)[:500],
            "where": where}

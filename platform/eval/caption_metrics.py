"""COCO-caption scoring: PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (SPICE on request).

This follows ``pycocoevalcap.eval.COCOEvalCap.evaluate`` step for step, with plain dicts
instead of COCO objects::

    refs = {"v1": ["a dog runs on grass", "a dog is running"]}
    hyps = {"v1": "a dog running on the grass"}
    score_captions(refs, hyps)   # {"Bleu_1": ..., "Bleu_4": ..., "METEOR": ..., "ROUGE_L": ..., "CIDEr": ...}

1. References and hypotheses are tokenised by the Stanford PTB tokenizer (lower-cased,
   punctuation tokens removed), exactly as COCOEvalCap does -- including its quirk that
   brackets survive as "-lrb-"/"-rrb-" (lower-cased before its upper-case filter list).
2. The scorers are pycocoevalcap's own classes, called on the tokenised dicts.

CIDEr-D: pycocoevalcap's ``Cider`` class *is* CIDEr-D (the coco-caption code that the COCO
leaderboard reports as "CIDEr" is the D variant): n-grams 1..4, tf-idf vectors with the
hypothesis term clipped to the reference term (``min(vec_hyp, vec_ref) * vec_ref``), a
Gaussian length penalty with sigma = 6, mean over n, average over references, times 10, and
no stemming.  The document frequencies (idf) come from the references of the set being
scored ("corpus" mode), not from a precomputed COCO table, so CIDEr of a single caption is
always 0 (log of one document) and CIDEr values depend on the evaluated set.  We report it
under the COCO key ``CIDEr`` (documented as CIDEr-D).

METEOR runs the METEOR 1.5 jar in a Java subprocess (~4 s to start): one process is kept per
Python process (``get_meteor``) and can be passed in explicitly.  SPICE needs Stanford
CoreNLP models that it downloads on first use, so it is off unless ``spice=True``.

Read-only package folder: pycocoevalcap's PTB tokenizer writes its temp file next to its jar.
When that folder is not writable (a non-root image) we run the same Java command with the
temp file in the system temp dir instead, which gives identical tokens.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Hashable, Iterable, Mapping

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
DEFAULT_SCORERS = ("bleu", "meteor", "rouge", "cider")
# Characters that Java/PTB treat as line breaks: they would shift the one-caption-per-line
# alignment of the tokenizer output, so they become spaces (COCOEvalCap only maps "\n").
_LINE_BREAKS = ("\r\n", "\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


class CaptionMetricsError(RuntimeError):
    """Scoring cannot run (no Java, bad inputs); the message says what to do."""


def _package_dir(sub: str) -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise CaptionMetricsError("pycocoevalcap is not installed (pip install pycocoevalcap)")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise CaptionMetricsError(
            "java not found on PATH: the PTB tokenizer and METEOR need a Java runtime "
            "(e.g. apt-get install default-jre-headless)"
        )
    return java


def _clean(text: str) -> str:
    for lb in _LINE_BREAKS:
        text = text.replace(lb, " ")
    return text


# -- tokenisation -------------------------------------------------------------------------

def ptb_tokenize(captions: Mapping[Hashable, Iterable[str]], force_external_tmp: bool = False
                 ) -> dict[Hashable, list[str]]:
    """``{id: [caption, ...]}`` -> ``{id: [tokenised caption, ...]}`` (COCO PTB tokenisation).

    Uses pycocoevalcap's ``PTBTokenizer`` when its folder is writable, else (or with
    ``force_external_tmp``) the same Java command with the temp file in the system temp dir.
    """
    _require_java()
    coco_style = {k: [{"caption": _clean(str(c))} for c in v] for k, v in captions.items()}
    tok_dir = _package_dir("tokenizer")
    if not force_external_tmp and os.access(tok_dir, os.W_OK):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize(coco_style)
    return _ptb_tokenize_external(coco_style, tok_dir)


def _ptb_tokenize_external(coco_style: dict, tok_dir: Path) -> dict[Hashable, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    jar = tok_dir / STANFORD_CORENLP_3_4_1_JAR
    if not jar.exists():
        raise CaptionMetricsError(f"PTB tokenizer jar missing: {jar}")
    image_id = [k for k, v in coco_style.items() for _ in range(len(v))]
    sentences = "\n".join(c["caption"].replace("\n", " ") for v in coco_style.values() for c in v)
    fd, tmp = tempfile.mkstemp(prefix="fovea_ptb_", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(sentences.encode())
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", tmp]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout.decode()
    finally:
        os.remove(tmp)
    result: dict[Hashable, list[str]] = {}
    for k, line in zip(image_id, out.split("\n")):
        result.setdefault(k, []).append(
            " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS))
    return result


# -- METEOR process -----------------------------------------------------------------------

_METEOR = None
_METEOR_LOCK = threading.Lock()


def get_meteor():
    """One shared METEOR scorer (a Java process) per Python process."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None:
            _require_java()
            from pycocoevalcap.meteor.meteor import Meteor

            _METEOR = Meteor()
        return _METEOR


# -- scoring ------------------------------------------------------------------------------

def score_tokenized(gts: Mapping[Hashable, list[str]], res: Mapping[Hashable, list[str]],
                    scorers: Iterable[str] = DEFAULT_SCORERS, spice: bool = False, meteor=None,
                    per_item: bool = False) -> dict:
    """Run pycocoevalcap's scorers on already tokenised ``gts``/``res`` (COCOEvalCap order)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scorers = list(scorers)
    out: dict = {}
    items: dict[Hashable, dict[str, float]] = {k: {} for k in gts}

    def record(name: str, score, scores) -> None:
        out[name] = float(score)
        for k, s in zip(gts.keys(), scores):
            items[k][name] = float(s)

    if "bleu" in scorers:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for i, (sc, scs) in enumerate(zip(score, scores)):
            record(f"Bleu_{i + 1}", sc, scs)
    if "meteor" in scorers:
        record("METEOR", *(meteor or get_meteor()).compute_score(gts, res))
    if "rouge" in scorers:
        record("ROUGE_L", *Rouge().compute_score(gts, res))
    if "cider" in scorers:
        record("CIDEr", *Cider().compute_score(gts, res))
    if spice:
        from pycocoevalcap.spice.spice import Spice

        try:
            score, scores = Spice().compute_score(gts, res)
        except Exception as e:  # noqa: BLE001 - offline machines fail inside the jar
            raise CaptionMetricsError(
                f"SPICE failed ({e}); it downloads Stanford CoreNLP models on first use, "
                "so it needs internet once (or a pre-filled pycocoevalcap/spice/lib)") from e
        out["SPICE"] = float(score)
        for k, s in zip(sorted(gts.keys()), scores):
            items[k]["SPICE"] = float(s["All"]["f"]) if isinstance(s, dict) else float(s)
    if per_item:
        out["per_item"] = items
    return out


def score_captions(refs: Mapping[Hashable, Iterable[str]], hyps: Mapping[Hashable, str],
                   spice: bool = False, scorers: Iterable[str] = DEFAULT_SCORERS, meteor=None,
                   per_item: bool = False, force_external_tmp: bool = False) -> dict:
    """Score generated captions against references the way COCOEvalCap does.

    refs: ``{id: [reference, ...]}`` (one or more each); hyps: ``{id: caption}``, same ids.
    Returns ``{"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"[, "SPICE"], "n"}`` as floats in
    [0, 1] (CIDEr in [0, 10]); ``per_item=True`` adds ``per_item[id][metric]``.
    """
    if not hyps:
        raise CaptionMetricsError("no captions to score")
    missing = [k for k in hyps if k not in refs]
    if missing:
        raise CaptionMetricsError(f"hypotheses without references: {missing[:5]}")
    ids = list(hyps.keys())
    ref_lists = {k: [str(r) for r in refs[k]] for k in ids}
    empty = [k for k, v in ref_lists.items() if not v]
    if empty:
        raise CaptionMetricsError(f"ids with no reference caption: {empty[:5]}")
    gts = ptb_tokenize(ref_lists, force_external_tmp=force_external_tmp)
    res = ptb_tokenize({k: [str(hyps[k])] for k in ids}, force_external_tmp=force_external_tmp)
    out = score_tokenized(gts, res, scorers=scorers, spice=spice, meteor=meteor, per_item=per_item)
    out["n"] = len(ids)
    return out

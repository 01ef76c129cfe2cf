"""VQA accuracy with the official VQA v2 formula and answer normalisation.

Source of truth: ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of GT-Vision-Lab/VQA
(master).  Reproduced here, with the same tables and regexes (including their quirks):

* predicted answer: ``\\n``/``\\t`` -> space, strip, ``process_punctuation`` then
  ``process_digit_article`` (lower-case, number words -> digits via ``MANUAL_MAP``, drop the
  articles a/an/the, restore contractions via ``CONTRACTIONS``);
* punctuation: each symbol of ``PUNCT`` is deleted when it touches a space (or the text has a
  comma between two digits, ``COMMA_STRIP``), otherwise replaced by a space; then
  ``PERIOD_STRIP`` deletes every period not followed by a digit (the official pattern's
  ``(?!<=\\d)`` is a typo for a look-behind and is kept verbatim, so "2.5" keeps its period);
* ground-truth answers: only when the annotators disagree (more than one distinct answer)
  are they passed through ``process_punctuation``; the official annotations are already
  normalised otherwise.  ``references="normalized"`` instead normalises every reference like
  the prediction (for answers that do not come from the official annotation files);
* accuracy: for each of the N ground-truth answers, leave it out and score
  ``min(1, #matches among the other N-1 / 3)``; average the N values.  With 10 answers and
  ``m`` of them equal to the prediction that is 0, 0.3, 0.6, 0.9, 1.0 for m = 0, 1, 2, 3, 4+.
  The official code drops the left-out answer by identity of its dict (each carries an
  ``answer_id``), i.e. exactly one answer per subset; here it is dropped by position.
* a single reference answer (datasets other than VQA v2) cannot use the leave-one-out
  formula (it would always be 0): it is scored as exact match after normalisation.

``vqa_evaluate`` reports percentages like ``VQAEval.accuracy`` (overall, per question type, per
answer type) without the official rounding to 2 decimals (``round_digits`` restores it).
"""

from __future__ import annotations

import re
from typing import Hashable, Iterable, Literal, Mapping, Sequence

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
         ">", "<", "@", "`", ",", "?", "!"]


def process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    # The official call passes re.UNICODE as the *count* argument (= 32 substitutions at most);
    # kept, since it only matters for answers with more than 32 periods.
    return PERIOD_STRIP.sub("", out_text, int(re.UNICODE))


def process_digit_article(in_text: str) -> str:
    out = []
    for word in in_text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            out.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in out)


def normalize_answer(answer: str) -> str:
    """The official normalisation of a predicted answer."""
    ans = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(ans))


def _prepare_references(gt_answers: Sequence[str], references: str) -> list[str]:
    gts = [str(a) for a in gt_answers]
    if references == "normalized":
        return [normalize_answer(a) for a in gts]
    if references != "official":
        raise ValueError(f"references must be 'official' or 'normalized', got {references!r}")
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    return gts


def vqa_accuracy(prediction: str, gt_answers: Sequence[str],
                 references: Literal["official", "normalized"] = "official") -> float:
    """Accuracy in [0, 1] of one predicted answer against its annotators' answers."""
    if not gt_answers:
        raise ValueError("no ground-truth answers")
    pred = normalize_answer(str(prediction))
    gts = _prepare_references(gt_answers, references)
    if len(gts) == 1:
        return float(pred == gts[0] or pred == normalize_answer(gts[0]))
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        matches = sum(1 for a in others if a == pred)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs)


def vqa_evaluate(predictions: Mapping[Hashable, str], gt_answers: Mapping[Hashable, Sequence[str]],
                 question_types: Mapping[Hashable, str] | None = None,
                 answer_types: Mapping[Hashable, str] | None = None,
                 references: Literal["official", "normalized"] = "official",
                 round_digits: int | None = None) -> dict:
    """Corpus VQA accuracy in percent: ``overall``, ``per_question_type``, ``per_answer_type``,
    ``per_question`` (VQAEval's ``accuracy`` / ``evalQA``), and ``n``."""
    ids: Iterable[Hashable] = list(predictions.keys())
    per_q: dict[Hashable, float] = {}
    by_qt: dict[str, list[float]] = {}
    by_at: dict[str, list[float]] = {}
    for qid in ids:
        if qid not in gt_answers:
            raise KeyError(f"prediction for unknown question {qid!r}")
        acc = vqa_accuracy(predictions[qid], gt_answers[qid], references=references)
        per_q[qid] = acc
        if question_types is not None:
            by_qt.setdefault(question_types.get(qid, "unknown"), []).append(acc)
        if answer_types is not None:
            by_at.setdefault(answer_types.get(qid, "unknown"), []).append(acc)

    def pct(values: list[float]) -> float:
        v = 100.0 * sum(values) / len(values) if values else 0.0
        return round(v, round_digits) if round_digits is not None else v

    return {
        "overall": pct(list(per_q.values())),
        "per_question_type": {k: pct(v) for k, v in by_qt.items()},
        "per_answer_type": {k: pct(v) for k, v in by_at.items()},
        "per_question": {k: pct([v]) for k, v in per_q.items()},
        "n": len(per_q),
    }

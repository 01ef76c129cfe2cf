"""Caption metrics equal pycocoevalcap's own scorers; VQA accuracy matches hand computation."""

from __future__ import annotations

import pytest

from fovea.platform.eval import caption_metrics as cm
from fovea.platform.eval.vqa_metrics import (
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
    vqa_evaluate,
)

REFS = {
    "v1": ["A man is riding a horse on the beach.", "A person rides a brown horse along the shore!",
           "Someone on horseback, near the ocean."],
    "v2": ["Two dogs play with a red ball in the park.", "A pair of dogs chase a ball on grass."],
    "v3": ["A woman slices vegetables in a kitchen.", "Someone is cutting carrots (and onions)."],
    "v4": ["Cars drive down a busy city street at night.", "Traffic moves along a road in the city."],
    "v5": ["A child blows out candles on a birthday cake.", "A kid's birthday party with a cake."],
    "v6": ["A cat sleeps on a sofa.", "The cat is napping on the couch."],
}
HYPS = {
    "v1": "a man riding a horse on a beach",
    "v2": "two dogs are playing with a ball",
    "v3": "a woman is cutting vegetables",
    "v4": "cars on a city street at night",
    "v5": "a child with a birthday cake",
    "v6": "a dog on a couch",
}


@pytest.fixture(scope="module")
def meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    m = Meteor()  # one Java start for the module, shared by both sides of the comparison
    yield m


def test_caption_metrics_equal_pycocoevalcap(meteor):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ours = cm.score_captions(REFS, HYPS, meteor=meteor, per_item=True)

    tok = PTBTokenizer()  # exactly what COCOEvalCap.evaluate does
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in HYPS.items()})
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"Bleu_{i + 1}": bleu[i] for i in range(4)}
    expected["METEOR"], met_items = meteor.compute_score(gts, res)
    expected["ROUGE_L"], rouge_items = Rouge().compute_score(gts, res)
    expected["CIDEr"], cider_items = Cider().compute_score(gts, res)

    for k, v in expected.items():
        assert ours[k] == float(v), k  # exact, not approximate
    assert ours["n"] == len(HYPS)
    for i, key in enumerate(gts):
        assert ours["per_item"][key]["CIDEr"] == float(cider_items[i])
        assert ours["per_item"][key]["ROUGE_L"] == float(rouge_items[i])
        assert ours["per_item"][key]["METEOR"] == float(met_items[i])
        assert ours["per_item"][key]["Bleu_4"] == float(bleu_items[3][i])
    # sanity: a perfect caption beats a wrong one
    assert ours["per_item"]["v1"]["CIDEr"] > ours["per_item"]["v6"]["CIDEr"]
    assert set(cm.CAPTION_METRICS) <= set(ours)


def test_ptb_tokenizer_outside_readonly_package_dir_is_identical():
    caps = {k: v + [HYPS[k]] for k, v in REFS.items()}
    caps["odd"] = ["line\rbreak inside", ""]
    a = cm.ptb_tokenize(caps)
    b = cm.ptb_tokenize(caps, force_external_tmp=True)
    assert a == b
    # COCOEvalCap quirk kept: with -lowerCase the bracket tokens become "-lrb-"/"-rrb-", which
    # its punctuation list (upper-case "-LRB-") does not remove
    assert a["v3"][1] == "someone is cutting carrots -lrb- and onions -rrb-"
    assert a["odd"] == ["line break inside", ""]


def test_caption_input_errors():
    with pytest.raises(cm.CaptionMetricsError):
        cm.score_captions({"a": ["x"]}, {"b": "x"})
    with pytest.raises(cm.CaptionMetricsError):
        cm.score_captions({}, {})


# -- VQA --------------------------------------------------------------------------------

def _gts(match: str, m: int, other: str = "blue", n: int = 10) -> list[str]:
    return [match] * m + [other] * (n - m)


@pytest.mark.parametrize("m,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_partial_agreement(m, expected):
    # m annotators gave the predicted answer. The m left-out subsets that drop a matching
    # answer see m-1 matches, the other 10-m see m: acc = (m*min(1,(m-1)/3) + (10-m)*min(1,m/3))/10
    # m=1: (0 + 9/3)/10 = .3; m=2: (2/3 + 8*2/3)/10 = .6; m=3: (3*2/3 + 7)/10 = .9; m=4: 1.
    assert vqa_accuracy("red", _gts("red", m)) == pytest.approx(expected, abs=1e-12)


def test_vqa_normalisation_cases():
    # number words -> digits ("two" -> "2"), 3 annotators said "2"
    assert vqa_accuracy("Two", _gts("2", 3, "3")) == pytest.approx(0.9)
    # articles dropped, trailing period stripped, lower-cased
    assert normalize_answer("The Dog.") == "dog"
    assert vqa_accuracy("The Dog.", _gts("dog", 4, "cat")) == 1.0
    assert normalize_answer("an apple") == "apple"
    # contractions restored: "dont" -> "don't"; 2 annotators said "don't"
    assert normalize_answer("dont know") == "don't know"
    assert vqa_accuracy("dont", _gts("don't", 2, "no")) == pytest.approx(0.6)
    assert normalize_answer("isnt") == "isn't"
    # punctuation: removed when it touches a space, else replaced by a space
    assert process_punctuation("yes!") == "yes "  # "!" not next to a space -> space
    assert normalize_answer("yes!") == "yes"
    assert process_punctuation("hot-dog") == "hot dog"
    assert process_punctuation("hot - dog") == "hot  dog"
    # comma between digits: every punctuation mark is deleted
    assert normalize_answer("1,000") == "1000"
    assert vqa_accuracy("1,000", _gts("1000", 1, "100")) == pytest.approx(0.3)
    # a period followed by a digit stays (decimal numbers)
    assert normalize_answer("2.5") == "2.5"
    assert normalize_answer("none") == "0"
    # newline / tab / surrounding space
    assert normalize_answer("  a\tbig\nred ball ") == "big red ball"


def test_vqa_reference_handling():
    # annotators disagree -> their answers get punctuation processing ("dog." -> "dog")
    gts = ["dog.", "dog.", "dog.", "cat", "cat", "cat", "cat", "cat", "cat", "cat"]
    assert vqa_accuracy("dog", gts) == pytest.approx(0.9)
    # all agree -> the official code leaves them as they are ("Dog." never matches "dog")
    assert vqa_accuracy("dog", ["Dog."] * 10) == 0.0
    assert vqa_accuracy("dog", ["Dog."] * 10, references="normalized") == 1.0
    # a single reference: normalised exact match (the leave-one-out formula would give 0)
    assert vqa_accuracy("The cat", ["cat"]) == 1.0
    assert vqa_accuracy("dog", ["cat"]) == 0.0


def test_vqa_evaluate_corpus():
    preds = {1: "red", 2: "two", 3: "no"}
    gts = {1: _gts("red", 1), 2: _gts("2", 2, "3"), 3: _gts("yes", 10)}
    out = vqa_evaluate(preds, gts, question_types={1: "what color", 2: "how many", 3: "is"},
                       answer_types={1: "other", 2: "number", 3: "yes/no"})
    assert out["overall"] == pytest.approx(100 * (0.3 + 0.6 + 0.0) / 3)
    assert out["per_answer_type"] == pytest.approx({"other": 30.0, "number": 60.0, "yes/no": 0.0})
    assert out["per_question"][2] == pytest.approx(60.0)
    assert vqa_evaluate(preds, gts, round_digits=2)["overall"] == 30.0

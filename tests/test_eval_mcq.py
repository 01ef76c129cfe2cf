"""MCQ harness: option parsing, argmin scoring (stub and real SmolLM2), benchmark readers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fovea.platform.eval import benchmark_frames as bf
from fovea.platform.eval import benchmark_items as bm
from fovea.platform.eval import mcq


# -- parsing ----------------------------------------------------------------------------

def test_parse_options_and_answer_letter():
    q = "What is shown?\nA. a red car\nB. a blue\nbicycle\nC. nothing\nAnswer with the letter."
    assert mcq.parse_options(q) == [("A", "a red car"), ("B", "a blue\nbicycle"), ("C", "nothing")]
    # a stray "I." line before the option list is not an option
    q2 = "Read this.\nI. think so\nWhich?\nA. yes\nB. no"
    assert mcq.parse_options(q2) == [("A", "yes"), ("B", "no")]
    assert mcq.parse_options("no options here") == []
    assert mcq.answer_letter("B. a blue bicycle") == "B"
    assert mcq.answer_letter("(C) nothing") == "C"
    with pytest.raises(ValueError):
        mcq.answer_letter("maybe")
    assert bm.format_question("Q?", ["x", "y"]) == "Q?\nA. x\nB. y"


def test_option_batch_masks_assistant_span(tokenizer):
    q = bm.format_question("Which colour?", ["red", "dark blue"])
    b = mcq.build_option_batch(tokenizer, q, mcq.parse_options(q))
    ids, lm = b["input_ids"], b["loss_mask"]
    for i, text in enumerate(["A. red", "B. dark blue"]):
        span = ids[i][lm[i] > 0].tolist()
        # letter, option text, <|im_end|>, "\n": the whole assistant turn after the prefix
        assert tokenizer.decode(span) == text + "<|im_end|>\n"
        prefix = tokenizer.decode(ids[i][: int((lm[i] == 0).logical_and(b["attention_mask"][i]).sum())])
        assert prefix.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>")
        assert prefix.endswith("<|im_start|>assistant\n")
    assert not b["attention_mask"][0, -1] and lm[0, -1] == 0  # shorter option is right-padded


def test_per_sample_loss_masks_and_pad_quirk():
    V = 5
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 4, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.float32)
    logits = torch.randn(2, 4, V)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1),
                                           reduction="none").view(2, 3)
    got = mcq.per_sample_loss(logits, ids, mask)
    assert torch.allclose(got, torch.stack([(ce[0, 1] + ce[0, 2]) / 2, (ce[1, 0] + ce[1, 1]) / 2]))
    # extra leading positions (coarse_only [visual; text]) are ignored: last S positions = text
    extra = torch.cat([torch.randn(2, 3, V), logits], 1)
    assert torch.allclose(mcq.per_sample_loss(extra, ids, mask), got)
    # old reference quirk: token 4 (= pad id) adds 0 to the sum but stays in the count
    quirk = mcq.per_sample_loss(logits, ids, mask, pad_quirk_id=4)
    assert torch.allclose(quirk, torch.stack([ce[0, 1] / 2, ce[1, 0] / 2]))


def _image_bytes(color=(200, 30, 30), size=(320, 240)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _item(question, options, answer, category="c", groups=None):
    return bm.MCQItem(id=f"x/{question}", benchmark="t", frames_source=_image_bytes(), source_kind="image",
                      question=bm.format_question(question, options), options=options,
                      answer_letter=answer, category=category, groups=groups or {})


def test_argmin_with_stub_losses(tokenizer):
    seen = {}

    def stub(frames, frame_mask, input_ids, attention_mask, loss_mask):
        seen["frames"], seen["mask"] = frames.shape, frame_mask
        return torch.tensor([2.0, 0.5, 1.0, 3.0])[: input_ids.shape[0]]

    scorer = mcq.TokenMCQScorer(tokenizer, stub, name="stub")
    items = [_item("q1", ["a", "b", "c", "d"], "B", "cat1", {"len": "short"}),
             _item("q2", ["a", "b", "c", "d"], "C", "cat2", {"len": "short"}),
             _item("q3", ["a", "b", "c"], "B", "cat2", {"len": "long"})]
    out = mcq.run_mcq(items, scorer, progress=False)
    assert [r["pred"] for r in out["records"]] == ["B", "B", "B"]
    assert out["accuracy"] == pytest.approx(200 / 3)
    assert out["per_category"] == {"cat1": 100.0, "cat2": 50.0}
    assert out["per_group"] == {"len": {"long": 100.0, "short": 50.0}}
    # an image is replicated to 8 frames, all options share them
    assert tuple(seen["frames"]) == (3, 8, 3, 224, 224) and seen["mask"].all()


def test_missing_media_is_skipped(tokenizer):
    item = bm.MCQItem("v/1", "t", "/nonexistent/video.mp4", "video", bm.format_question("q", ["a", "b"]),
                      ["a", "b"], "A", "c")
    out = mcq.run_mcq([item], mcq.TokenMCQScorer(tokenizer, lambda *a: torch.zeros(2)), progress=False)
    assert out["n"] == 0 and out["skipped"] == 1


@pytest.fixture(scope="module")
def smollm2(model_store):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_store["HuggingFaceTB/SmolLM2-135M-Instruct"],
                                                dtype=torch.float32).eval()


def test_real_smollm2_picks_the_plausible_option(tokenizer, smollm2):
    """Real SmolLM2-135M weights through the same harness: the sensible option has the
    lowest mean per-token loss, gibberish options of similar length do not."""
    scorer = mcq.TokenMCQScorer(tokenizer, mcq.causal_lm_option_losses(smollm2), name="smollm2-135m")
    items = [
        _item("Count from one to ten in words.",
              ["seven apple nine blue two chair lamp river ten", "nine four ten banana one window six three eight",
               "one, two, three, four, five, six, seven, eight, nine, ten", "green two five desk orange cloud seven one"],
              "C"),
        _item("What is the capital of France?",
              ["Gleeb snorf wazzle", "The capital of France is Paris.", "Blorp quix zandor", "Fnord plimsy drax"], "B"),
    ]
    out = mcq.run_mcq(items, scorer, progress=False)
    for r in out["records"]:
        assert r["pred"] == r["answer"], r
        losses = sorted(r["losses"])
        assert losses[1] - losses[0] > 0.1  # a clear margin, not a coin flip
    assert out["accuracy"] == 100.0


def test_reference_model_absent_gives_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("FOVEA_MODEL_STORE", str(tmp_path))
    monkeypatch.delenv("FOVEA_REFERENCE_MODEL", raising=False)
    assert mcq.find_reference_model() is None
    hint = mcq.reference_model_hint()
    assert "HuggingFaceTB--SmolVLM2-256M-Video-Instruct" in hint and str(tmp_path) in hint


# -- benchmark readers ------------------------------------------------------------------

def _write_video(path: Path, seconds: float = 5.0, fps: int = 10, size=(96, 64)) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            arr = np.full((size[1], size[0], 3), int(255 * i / (seconds * fps)), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_sample_times_spread_not_truncated():
    assert bf.sample_times(5.0) == [0.5, 1.5, 2.5, 3.5, 4.5]
    t = bf.sample_times(3600.0, max_frames=64)
    assert len(t) == 64 and t[-1] > 3500  # the whole hour, not the first 64 s
    assert bf.sample_times(100.0, bound=(10.0, 14.0)) == [10.5, 11.5, 12.5, 13.5]
    assert len(bf.sample_times(0.4)) == 1


def test_readers_on_upstream_layouts(tmp_path):
    import pandas as pd

    root = tmp_path / "benchmarks"
    # Video-MME: parquet with letter-prefixed options, videos in data/
    _write_video(root / "videomme" / "data" / "vid001.mp4")
    (root / "videomme" / "videomme").mkdir(parents=True)
    pd.DataFrame([{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity",
                   "videoID": "vid001", "question_id": "001-1", "task_type": "Counting Problem",
                   "question": "How many?", "options": ["A. one", "B. two", "C. three", "D. four"],
                   "answer": "C"}]).to_parquet(root / "videomme" / "videomme" / "test-00000-of-00001.parquet")
    # MLVU as the hub download lays it out (MLVU/json, MLVU/video): json per task, answer = candidate text
    mlvu = root / "mlvu" / "MLVU"
    (mlvu / "json").mkdir(parents=True)
    _write_video(mlvu / "video" / "4_count" / "c1.mp4")
    (mlvu / "json" / "4_count.json").write_text(json.dumps([
        {"video": "c1.mp4", "duration": 5.0, "question": "Count?", "candidates": ["1", "2", "3"],
         "answer": "2", "question_type": "count"}]))
    (mlvu / "json" / "9_summary.json").write_text(json.dumps([
        {"video": "c1.mp4", "question": "Summarise", "answer": "text", "question_type": "summary"}]))
    # MVBench: json per task, bound on some tasks, frame folder for episodic reasoning
    (root / "mvbench" / "json").mkdir(parents=True)
    _write_video(root / "mvbench" / "video" / "star" / "Charades_v1_480" / "AB12.mp4")
    (root / "mvbench" / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "AB12.mp4", "question": "What first?", "candidates": ["sat", "stood"], "answer": "stood",
         "start": 1.0, "end": 3.0}]))
    fdir = root / "mvbench" / "video" / "tvqa" / "frames_fps3_hq" / "ep1"
    fdir.mkdir(parents=True)
    for i in range(9):
        (fdir / f"{i:05d}.jpg").write_bytes(_image_bytes((i * 20, 0, 0), (64, 48)))
    (root / "mvbench" / "json" / "episodic_reasoning.json").write_text(json.dumps([
        {"video": "ep1", "question": "Why?", "candidates": ["a", "b", "c"], "answer": "a", "start": 0, "end": 3}]))
    # ScienceQA: parquet with embedded images, answer index; text-only rows dropped
    (root / "scienceqa" / "data").mkdir(parents=True)
    pd.DataFrame([
        {"image": {"bytes": _image_bytes(), "path": None}, "question": "Which is a mammal?",
         "choices": ["frog", "whale"], "answer": 1, "hint": "Look.", "subject": "natural science",
         "category": "Classification", "task": "closed choice"},
        {"image": None, "question": "Text only?", "choices": ["x", "y"], "answer": 0, "hint": "",
         "subject": "language science", "category": "Grammar", "task": "closed choice"},
    ]).to_parquet(root / "scienceqa" / "data" / "test-00000-of-00001.parquet")

    vm = bm.load_benchmark("videomme", root)
    assert len(vm) == 1 and vm[0].options == ["one", "two", "three", "four"] and vm[0].answer_letter == "C"
    assert vm[0].category == "Counting Problem" and vm[0].groups["duration"] == "short"
    assert mcq.parse_options(vm[0].question)[2] == ("C", "three")
    x = bf.load_item_frames(vm[0])
    assert tuple(x.shape) == (5, 3, 224, 224)  # 5 s at 1 FPS
    assert x[-1].mean() > x[0].mean()  # time order kept (the test video brightens)

    ml = bm.load_benchmark("mlvu", root)
    assert len(ml) == 1 and ml[0].answer_letter == "B" and ml[0].category == "count"
    assert Path(ml[0].frames_source).exists() and ml[0].groups == {"duration": "< 3 min"}

    mv = {i.category: i for i in bm.load_benchmark("mvbench", root)}
    seq = mv["Action Sequence"]
    assert seq.answer_letter == "B" and seq.bound == (1.0, 3.0)
    assert bf.load_item_frames(seq).shape[0] == 2  # only the [1 s, 3 s] bound
    ep = mv["Episodic Reasoning"]
    assert ep.source_kind == "frames" and bf.load_item_frames(ep).shape[0] == 3

    sq = bm.load_benchmark("scienceqa", root)
    assert len(sq) == 1 and sq[0].answer_letter == "B" and sq[0].category == "natural science"
    assert sq[0].question.startswith("Context: Look.\nWhich is a mammal?\nA. frog")
    assert tuple(bf.load_item_frames(sq[0]).shape) == (8, 3, 224, 224)  # replicated to 8

    assert all(v is None for v in bm.available_benchmarks(root).values())


def test_benchmarks_found_as_their_downloads_name_them(tmp_path):
    """``git clone https://huggingface.co/datasets/MLVU/MVLU`` makes MVLU/MLVU/json + video;
    sy1998/MLVU_dev (what lmms-eval reads) is one parquet whose questions list their options;
    Video-MME and MVBench keep their hub names; MVBench's NTU videos come re-encoded (.avi -> .mp4)."""
    import pandas as pd

    root = tmp_path / "benchmarks"
    clone = root / "MVLU" / "MLVU"
    (clone / "json").mkdir(parents=True)
    _write_video(clone / "video" / "3_ego" / "e1.mp4", seconds=2.0)
    (clone / "json" / "3_ego.json").write_text(json.dumps([
        {"video": "e1.mp4", "duration": 700, "question": "Where?", "candidates": ["home", "park"],
         "answer": "park", "question_type": "ego"}]))
    (root / "Video-MME" / "videomme").mkdir(parents=True)
    pd.DataFrame([{"videoID": "v9", "question_id": "9-1", "task_type": "OCR", "question": "Text?",
                   "options": ["A. a", "B. b"], "answer": "B", "duration": "long"}]
                 ).to_parquet(root / "Video-MME" / "videomme" / "test-00000-of-00001.parquet")
    (root / "MVBench" / "json").mkdir(parents=True)
    _write_video(root / "MVBench" / "video" / "nturgbd_convert" / "S001C001.mp4", seconds=2.0)
    (root / "MVBench" / "json" / "fine_grained_pose.json").write_text(json.dumps([
        {"video": "S001C001.avi", "question": "Pose?", "candidates": ["sit", "jump"], "answer": "Jump."}]))

    found = bm.find_benchmarks(root)
    assert found == {"videomme": root / "Video-MME", "mlvu": root / "MVLU", "mvbench": root / "MVBench"}
    (ego,) = bm.load_benchmark("mlvu", root)
    assert ego.answer_letter == "B" and Path(ego.frames_source) == clone / "video" / "3_ego" / "e1.mp4"
    assert ego.groups == {"duration": "10-30 min"} and ego.category == "ego"
    (pose,) = bm.load_benchmark("mvbench", root)
    assert pose.answer_letter == "B" and Path(pose.frames_source).name == "S001C001.mp4"
    assert bm.load_benchmark("videomme", root)[0].groups["duration"] == "long"

    dev = tmp_path / "dev" / "mlvu"
    (dev / "mlvu").mkdir(parents=True)
    _write_video(dev / "video_part_1" / "needle_7.mp4", seconds=2.0)
    pd.DataFrame([{"video_name": "needle_7.mp4", "question": "What is hidden?\n(A) a cat\n(B) a key",
                   "candidates": ["a cat", "a key"], "answer": "B", "task_type": "needle"},
                  {"video_name": "gone.mp4", "question": "Q?\n(A) x\n(B) y", "candidates": ["x", "y"],
                   "answer": "(C)", "task_type": "count"}]).to_parquet(dev / "mlvu" / "test-00000-of-00001.parquet")
    bad: list = []
    (needle,) = bm.load_benchmark("mlvu", tmp_path / "dev", malformed=bad)
    assert needle.question == "What is hidden?\nA. a cat\nB. a key" and needle.answer_letter == "B"
    assert Path(needle.frames_source) == dev / "video_part_1" / "needle_7.mp4" and needle.category == "needle"
    assert len(bad) == 1 and str(bad[0]).startswith(f"{dev / 'mlvu' / 'test-00000-of-00001.parquet'}[1]: ")
    assert tuple(bf.load_item_frames(needle).shape) == (2, 3, 224, 224)


def test_malformed_rows_are_named_and_the_rest_read(tmp_path):
    """An MVBench answer that matches no candidate (not even loosely), a row without its question:
    skipped, each named by file and row; the well-formed rows are read ('Yes.' is 'yes').  lmms-lab's ScienceQA download holds
    the image questions twice (ScienceQA-FULL and ScienceQA-IMG): read once."""
    import pandas as pd

    root = tmp_path / "benchmarks"
    (root / "mvbench" / "json").mkdir(parents=True)
    (root / "mvbench" / "json" / "object_existence.json").write_text(json.dumps([
        {"video": "v0.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "yes"},
        {"video": "v1.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "Yes."},
        {"video": "v2.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "maybe"},
        {"video": "v3.mp4", "candidates": ["yes", "no"], "answer": "no"}]))
    bad: list = []
    items = bm.load_benchmark("mvbench", root, malformed=bad)
    assert [(i.id, i.answer_letter) for i in items] == [("mvbench/object_existence/0", "A"),
                                                         ("mvbench/object_existence/1", "A")]
    where = str(root / "mvbench" / "json" / "object_existence.json")
    assert [str(b) for b in bad] == [
        f"{where}[2]: ValueError: answer 'maybe' matches none of the options ['yes', 'no']",
        f"{where}[3]: KeyError: 'question'"]
    for sub in ("ScienceQA-FULL", "ScienceQA-IMG"):
        (root / "scienceqa" / sub).mkdir(parents=True)
        pd.DataFrame([{"image": {"bytes": _image_bytes(), "path": None}, "question": "Which is a mammal?",
                       "choices": ["frog", "whale"], "answer": 1, "hint": "", "subject": "natural science"}]
                     ).to_parquet(root / "scienceqa" / sub / "test-00000-of-00001.parquet")
    assert len(bm.load_benchmark("scienceqa", root)) == 1


def test_answers_match_their_option_loosely():
    """Case, surrounding whitespace and quotes, trailing punctuation, a leading option letter:
    the answer still names its option; an answer that names none, or names one by its letter
    and another by its text, is refused (the reader then skips the row and names it)."""
    yes_no = ["yes", "no"]
    for answer, letter in [("Yes.", "A"), ("  no  ", "B"), ("NO!", "B"), ('"yes"', "A"), ("(A) yes", "A"),
                           ("A.", "A"), ("(b)", "B"), ("B) No.", "B"), ("A", "A"), ("b", "B"), (1, "B")]:
        assert bm.option_letter(answer, yes_no) == letter, answer
    assert bm.option_letter("a dog", ["dog", "A dog."]) == "B"  # the text wins over a letter reading
    assert bm.option_letter("2", ["1", "2", "3"]) == "B"  # an option text, not an index
    assert bm.option_letter("The red  car", ["a blue car", "the red car."]) == "B"
    for answer in ("maybe", "(A) no", "C", "yes no", "", 2):
        with pytest.raises(ValueError):
            bm.option_letter(answer, yes_no)
    with pytest.raises(ValueError, match="matches several of the options"):
        bm.option_letter("Yes", ["yes.", "YES"])
    assert bm.loose(" 'Yes.' ") == "yes" and bm.loose("A  red\ncar!") == "a red car"


def test_missing_benchmark_names_download(tmp_path):
    with pytest.raises(bm.BenchmarkNotFound) as e:
        bm.load_benchmark("mvbench", tmp_path)
    msg = str(e.value)
    assert "OpenGVLab/MVBench" in msg and "data/benchmarks/mvbench/json/<task>.json" in msg
    (tmp_path / "videomme").mkdir()
    with pytest.raises(bm.BenchmarkNotFound, match="lmms-lab/Video-MME"):
        bm.load_benchmark("videomme", tmp_path)
    missing = bm.available_benchmarks(tmp_path)
    assert set(missing) == {"videomme", "mlvu", "mvbench", "scienceqa"}
    assert all(missing.values())


# -- reference VLM plumbing (a tiny random Idefics3, the architecture SmolVLM2 derives from) ----

@pytest.fixture(scope="module")
def tiny_reference_vlm(tmp_path_factory, model_store):
    from transformers import (AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3Processor)
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = AutoTokenizer.from_pretrained(model_store["HuggingFaceTB/SmolLM2-135M-Instruct"])
    tok.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]})
    template = (  # SmolVLM's template
        "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]"
        "['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}"
        "{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}"
        "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}"
        "{{ 'Assistant:' }}{% endif %}")
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                   max_image_size={"longest_edge": 64})
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=template)
    from transformers import LlamaConfig

    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1)
    vision = Idefics3VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, image_size=64, patch_size=16)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(Idefics3Config(
        vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>")))
    d = tmp_path_factory.mktemp("ref") / "tiny-vlm"
    model.save_pretrained(d)
    proc.save_pretrained(d)
    return d


def test_reference_vlm_scores_images_and_videos(tiny_reference_vlm, tmp_path, monkeypatch):
    monkeypatch.setenv("FOVEA_REFERENCE_MODEL", str(tiny_reference_vlm))
    assert mcq.find_reference_model() == tiny_reference_vlm
    scorer = mcq.HFVLMScorer(tiny_reference_vlm, max_frames=3)
    video = _write_video(tmp_path / "v.mp4", seconds=3.0)
    items = [_item("Colour?", ["red", "blue"], "A"),
             bm.MCQItem("v/1", "t", str(video), "video", bm.format_question("Colour?", ["dark", "bright", "grey"]),
                        ["dark", "bright", "grey"], "B", "c")]
    out = mcq.run_mcq(items, scorer, progress=False, on_error="raise")
    assert out["n"] == 2 and [len(r["losses"]) for r in out["records"]] == [2, 3]
    assert all(np.isfinite(r["losses"]).all() for r in out["records"])

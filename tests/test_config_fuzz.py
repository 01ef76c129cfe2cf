"""Malformed configs and overrides, as a user types them, through the real command line of
``jobs/stage1.py``: each ends in exit status 2 and one line naming the key and the file, never
a traceback.  Hand-written cases (files: bad bases, encodings, duplicate keys, types, bounds;
overrides) plus cases generated from the config's own fields (a bool, a string and an
out-of-bounds number for every numeric key, a number for every switch, an unknown word for
every choice).  Most run in-process (``stages.main``); a handful as subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import annotated_types as at
import pytest
from pydantic import BaseModel

from fovea.platform.config import RunConfig
from fovea.platform.stages import main

REPO = Path(__file__).resolve().parents[1]
STAGE1 = REPO / "jobs" / "stage1.py"

# (name, file text or bytes (None: no file), overrides, what the message must name besides the file)
FILE_CASES = [
    ("self_base", "base: self_base.yaml\nname: x\n", [], "'base' chain is a cycle"),
    ("missing_base", "base: not_there.yaml\n", [], "base 'not_there.yaml' not found"),
    ("base_not_text", "base: 5\n", [], "'base' must name a config file"),
    ("not_utf8", b"name: caf\xe9\n", [], "not UTF-8 text"),
    ("dup_top", "name: a\ntraining:\n  max_steps: 2\nname: b\n", [], "key 'name' is given twice"),
    ("dup_nested", "training:\n  max_steps: 2\n  lr_llm: 1.0e-5\n  max_steps: 3\n", [],
     "key 'training.max_steps' is given twice"),
    ("bad_yaml", "training:\n  max_steps: [1, 2\n", [], "not valid YAML"),
    ("top_list", "- name\n- x\n", [], "top level must be a mapping"),
    ("unknown_top", "trainng:\n  lr: 1\n", [], "unknown key 'trainng'"),
    ("unknown_nested", "training:\n  lr_conector: 1.0e-3\n", [], "unknown key 'training.lr_conector'"),
    ("section_scalar", "training: 5\n", [], "'training'"),
    ("bool_for_int", "data:\n  batch_size: true\n", [], "'data.batch_size'"),
    ("negative_steps", "training:\n  max_steps: -5\n", [], "'training.max_steps'"),
    ("zero_steps", "training:\n  max_steps: 0\n", [], "'training.max_steps'"),
    ("negative_wd", "training:\n  weight_decay: -0.1\n", [], "'training.weight_decay'"),
    ("negative_clip", "training:\n  grad_clip: -1.0\n", [], "'training.grad_clip'"),
    ("negative_lr_target", "training:\n  lr_target: -1e-3\n", [], "'training.lr_target'"),
    ("negative_budget", "data:\n  max_total_frames: -1\n", [], "'data.max_total_frames'"),
    ("word_for_float", "training:\n  lr_connector: fast\n", [], "'training.lr_connector'"),
    ("quoted_float", "training:\n  lr_connector: '0.1'\n", [], "'training.lr_connector'"),
    ("float_for_int", "training:\n  max_steps: 5.5\n", [], "'training.max_steps'"),
    ("zero_query_dim", "model:\n  query_dim: 0\n", [], "'model.query_dim'"),
    ("zero_scale", "model:\n  visual_scale: 0\n", [], "'model.visual_scale'"),
    ("bad_mode", "eval:\n  modes: [coarse_fine, fine]\n", [], "'eval.modes'"),
    ("bad_schedule", "training:\n  schedule: linear\n", [], "'training.schedule'"),
    ("ratio_above_one", "data:\n  text_ratio: 1.5\n", [], "'data.text_ratio'"),
    ("bool_stage", "training:\n  stage: true\n", [], "'training.stage'"),
    ("int_for_gpu_switch", "cluster:\n  use_gpu: 1\n", [], "'cluster.use_gpu'"),
    ("int_for_ckpt_switch", "model:\n  gradient_checkpointing: 2\n", [], "'model.gradient_checkpointing'"),
    ("profile_backwards", "training:\n  profile_steps: [5, 2]\n", [], "training.profile_steps must be"),
    ("string_for_list", "data:\n  train_shards: data/x/*.tar\n", [], "'data.train_shards'"),
    ("schedule_needs_target", "training:\n  schedule: converging\n  lr_target: null\n", [], "training.lr_target"),
    ("ovr_no_key", "", ["=5"], "override '=5' has no key"),
    ("ovr_empty_part", "", ["training..max_steps=5"], "has no key"),
    ("ovr_no_equals", "", ["training.max_steps"], "not of the form key.sub=value"),
    ("ovr_negative", "", ["training.max_steps=-5"], "'training.max_steps'"),
    ("ovr_zero", "", ["training.max_steps=0"], "'training.max_steps'"),
    ("ovr_bool", "", ["data.batch_size=true"], "'data.batch_size'"),
    ("ovr_typo", "", ["trainng.lr=1"], "unknown key 'trainng'"),
    ("ovr_through_leaf", "", ["training.lr_connector.x=1"], "'training.lr_connector' is a value, not a section"),
    ("ovr_section_scalar", "", ["training=5"], "'training'"),
    ("ovr_gpu_fraction", "", ["cluster.gpus_per_worker=2"], "'cluster.gpus_per_worker'"),
]


def _bounds(field) -> list[tuple[str, float]]:
    out = []
    for m in field.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            v = getattr(m, kind, None)
            if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt, at.Interval)) and v is not None:
                out.append((kind, v))
    return out


def generated_overrides() -> list[tuple[str, str]]:
    """(override, key) for every leaf key: a bool and a word for each number, a number past
    each bound, a number for each switch, an unknown word for each choice."""
    out = []
    for section, sfield in RunConfig.model_fields.items():
        model = sfield.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, f in model.model_fields.items():
            key, ann = f"{section}.{name}", str(f.annotation)
            numeric = ann in ("<class 'int'>", "<class 'float'>", "int | None", "float | None")
            if numeric:
                out += [(f"{key}=true", key), (f"{key}=abc", key)]
                for kind, v in _bounds(f):
                    bad = {"ge": v - 1, "gt": v, "le": v + 1, "lt": v}[kind]
                    out.append((f"{key}={bad!r}", key))
            elif ann == "<class 'bool'>":
                out.append((f"{key}=1", key))
            elif "Literal" in ann:
                out.append((f"{key}=no_such_choice", key))
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(1, argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, *names: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in names:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("name,text,overrides,needle", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hand_written_malformed_configs(tmp_path, capsys, name, text, overrides, needle):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, err = run_cli(["--config", str(path), *overrides, "--dry-run"], capsys)
    assert_one_line_error(rc, err, needle, str(path))


def test_generated_malformed_overrides(tmp_path, capsys):
    """The user's own file starts from ``stage1_135m.yaml`` (found in platform/configs)."""
    path = tmp_path / "mine.yaml"
    path.write_text("base: stage1_135m.yaml\nname: mine\n")
    cases = generated_overrides()
    assert len(cases) >= 100
    for override, key in cases:
        rc, err = run_cli(["--config", str(path), override, "--dry-run"], capsys)
        assert_one_line_error(rc, err, f"'{key}'", f"override {override!r}", str(path))


def test_cycles_bases_and_folders(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    rc, err = run_cli(["--config", str(tmp_path / "a.yaml")], capsys)
    assert_one_line_error(rc, err, f"cycle: {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'}")
    # a base is looked up next to the file, then in platform/configs; the message lists both
    (tmp_path / "c.yaml").write_text("base: nowhere\n")
    rc, err = run_cli(["--config", str(tmp_path / "c.yaml")], capsys)
    assert_one_line_error(rc, err, f"looked for {tmp_path / 'nowhere'}, {tmp_path / 'nowhere.yaml'}, "
                                   f"{REPO / 'platform' / 'configs' / 'nowhere'}")
    # a base next to the file wins over platform/configs' file of the same name
    (tmp_path / "stage1_135m.yaml").write_text("training:\n  stage: 1\n  max_steps: 7\n")
    (tmp_path / "d.yaml").write_text("base: stage1_135m.yaml\ntrainng: {}\n")
    rc, err = run_cli(["--config", str(tmp_path / "d.yaml")], capsys)
    assert_one_line_error(rc, err, f"unknown key 'trainng' in {tmp_path / 'd.yaml'}")
    rc, err = run_cli(["--config", str(tmp_path)], capsys)
    assert_one_line_error(rc, err, f"{tmp_path}: is a directory, not a config file")
    rc, err = run_cli(["--config", "no_such_config"], capsys)
    assert_one_line_error(rc, err, "config file not found: no_such_config (looked for")


def test_a_base_key_error_names_the_base_file(tmp_path):
    from fovea.platform.config import ConfigError, load_config

    (tmp_path / "base.yaml").write_text("training:\n  grad_clip: -1.0\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: child\n")
    with pytest.raises(ConfigError, match=f"'training.grad_clip' in {tmp_path / 'base.yaml'}:"):
        load_config(tmp_path / "child.yaml")
    cfg = load_config(tmp_path / "child.yaml", ["training.grad_clip=0.5", "name=2024", "training.lr_llm=2e-5"])
    assert cfg.training.grad_clip == 0.5 and cfg.name == "2024" and cfg.training.lr_llm == 2e-5


SUBPROCESS_CASES = [
    ("directory", lambda d: ["--config", str(d)], lambda d: f"{d}: is a directory"),
    ("cycle", lambda d: ["--config", str(d / "self.yaml")], lambda d: "'base' chain is a cycle"),
    ("latin1", lambda d: ["--config", str(d / "latin1.yaml")], lambda d: "not UTF-8 text"),
    ("negative", lambda d: ["training.max_steps=-5"], lambda d: "'training.max_steps'"),
    ("no_key", lambda d: ["=5"], lambda d: "override '=5' has no key"),
]


def test_the_command_line_itself(tmp_path):
    """A handful through ``python jobs/stage1.py`` as a subprocess, and the README's dry run on
    a fresh checkout (no shards): the preprocess command and ``make demo``, exit 2."""
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    for name, argv, needle in SUBPROCESS_CASES:
        p = subprocess.run([sys.executable, str(STAGE1), *argv(tmp_path), "--dry-run"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=120)
        assert_one_line_error(p.returncode, p.stderr, needle(tmp_path))
    p = subprocess.run([sys.executable, str(STAGE1), "--config", "stage1_135m", "--dry-run"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    err = p.stderr
    assert err.startswith("error: this run's shards are not there (config stage1_135m):")
    assert "data.train_shards=['data/shards/webvid/train-*.tar'] matches no .tar file" in err
    assert "python jobs/preprocess.py webvid --input /path/to/raw/webvid --output data/shards/webvid --stage 1" in err
    assert "python jobs/preprocess.py smoltalk --input data/demo/raw/smoltalk --output data/shards/smoltalk --stage 1" in err
    assert "make demo" in err

"""The typed run configuration, ``RunConfig``: the training, eval, tracking and cluster sections
(here) with the model's and the data's own, every default in one place, and how a run's YAML and
overrides load into it.

A run's config is a YAML file (see ``platform/configs/``) plus ``key.sub=value``
overrides from the command line, validated at load time by pydantic:

    cfg = load_config("platform/configs/stage1_135m.yaml", ["training.lr_connector=3e-4"])

Unknown keys and wrong types fail with a ``ConfigError`` that names the key and
the file (``trainng.lr=1`` -> "unknown key 'trainng'").  Sections:

    model     what to build (LLM, DINOv2, query width, ablation switches): model/config.py
    data      shards, interleave ratio, batching: pipelines/config.py
    training  stage, budget, optimiser groups, schedule, checkpoints
    eval      validation cadence and inference modes
    tracking  MLflow store and experiment
    cluster   Ray address, workers, GPUs, fault tolerance
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fovea.model.config import ModelConfig
from fovea.pipelines.config import DataConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUNS_DIR_DEFAULT = "runs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingConfig(_Section):
    """Optimisation and checkpoints (DESIGN.md 4)."""

    stage: Literal[1, 2, 3] = 1
    total_samples: int = Field(1_000_000, ge=1)
    max_steps: int | None = None  # overrides total_samples when set
    grad_accum: int = Field(4, ge=1)
    lr_connector: float = Field(1e-3, ge=0.0)
    lr_dino: float = Field(1e-5, ge=0.0)
    lr_llm: float = Field(1e-5, ge=0.0)
    lr_target: float | None = 3e-5  # converging schedule: every group ends here
    schedule: Literal["cosine", "constant", "converging"] = "converging"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_nonfinite_steps: int = Field(5, ge=1)  # abort after this many NaN/Inf steps in a row
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False  # regional torch.compile of the repeated blocks (FoveatedVLM.compile_blocks)
    # after the first step (model built, blocks compiled): gc.collect() then gc.freeze(), so that
    # Python's full collections skip the ~1 M set-up objects: a full collection pauses the thread
    # that launches the kernels, and the freeze keeps it short (platform/train/gc_clock.py)
    gc_freeze: bool = True
    checkpoint_every: int = Field(1000, ge=1)
    keep_last: int = Field(2, ge=1)
    checkpoint_metric: str = "val_loss"
    checkpoint_mode: Literal["min", "max"] = "min"
    init_from: str | None = None  # checkpoint path or mlflow run id (stage 2/3)
    log_every: int = Field(10, ge=1)
    diagnostics_every: int = Field(50, ge=1)
    # [first, last] optimizer steps to run under torch.profiler on every rank (platform/profiling/step_profiler.py)
    profile_steps: tuple[int, int] | None = None
    seed: int = 42


class EvalConfig(_Section):
    every_steps: int = Field(500, ge=0)  # 0 = no eval during training
    max_samples: int = Field(1000, ge=1)
    modes: list[Literal["coarse_only", "coarse_fine", "autoregressive"]] = Field(
        default_factory=lambda: ["coarse_fine"]
    )
    caption_samples: int = Field(4, ge=0)  # generated captions logged as a table
    max_new_tokens: int = Field(48, ge=1)
    # jobs/evaluate.py (platform/eval/harness.py run_evaluation)
    batch_size: int | None = Field(None, ge=1)  # None -> data.batch_size
    image_frames: int = Field(8, ge=1)  # single images replicated to N frames at eval (DESIGN.md 6.2/6.3)
    benchmarks_dir: str | None = None  # data/benchmarks: MCQ benchmarks present there are run
    benchmark_max_items: int | None = Field(None, ge=1)  # per benchmark, spread over its items
    reference_model: str | None = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"  # scored when local
    mcq_pad_quirk: bool = False  # True: old reference MCQ loss (pad-id <|im_end|> adds 0, counted)
    heatmap_videos: int = Field(3, ge=0)  # videos in the attention-heatmap grid
    spice: bool = False  # SPICE needs Stanford CoreNLP downloads


class TrackingConfig(_Section):
    tracking_uri: str | None = None  # None -> sqlite:///<runs_dir>/mlflow.db
    experiment: str = "fovea"
    run_name: str | None = None
    enabled: bool = True


class ClusterConfig(_Section):
    address: str | None = None  # None -> start a local Ray cluster (or use RAY_ADDRESS)
    num_workers: int = Field(2, ge=1)
    use_gpu: Literal["auto", True, False] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    # GPUs per worker when use_gpu: 1 = a GPU each (DDP); a fraction lets runs share a GPU
    # (e.g. 0.5: the two arms of jobs/foveation_check.py on one card, both host-bound).
    gpus_per_worker: float = Field(1.0, gt=0, le=1)
    max_failures: int = Field(2, ge=0)
    # DDP's search for parameters a step left unused (a graph walk after every forward, and
    # an error where it is off but a parameter went unused). auto: on where a step can leave
    # some unused (text-only batches, data.text_ratio > 0; coarse_only); see platform/train/ddp.py find_unused().
    ddp_find_unused: Literal["auto", True, False] = "auto"
    # DDP's gradient all-reduce (platform/train/ddp.py): bucket size; gradients as views into the
    # buckets (no copy into them, one gradient-sized buffer less); the dtype on the wire
    # (bf16: half the bytes, gradients rounded to bf16 before they are averaged).
    ddp_bucket_mb: float = Field(25.0, gt=0)
    ddp_bucket_view: bool = False
    ddp_comm_dtype: Literal["fp32", "bf16"] = "fp32"
    storage_path: str | None = None  # None -> <runs_dir>/ray


class RunConfig(_Section):
    """A whole run: ``name`` identifies the experiment (rerun the same name to resume)."""

    name: str = "run"
    runs_dir: str = RUNS_DIR_DEFAULT
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.training.schedule == "converging" and self.training.lr_target is None:
            raise ValueError("training.lr_target is required by the converging schedule")
        ps = self.training.profile_steps
        if ps is not None and not 1 <= ps[0] <= ps[1]:
            raise ValueError(f"training.profile_steps must be [first, last] with 1 <= first <= last, got {list(ps)}")
        return self

    # -- helpers -----------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """``{"model.llm": ..., "training.lr_connector": ...}`` for MLflow params."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def tracking_uri(self) -> str:
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        return f"sqlite:///{Path(self.runs_dir).resolve() / 'mlflow.db'}"

    def storage_path(self) -> str:
        return self.cluster.storage_path or str(Path(self.runs_dir).resolve() / "ray")


def absolute_paths(cfg: RunConfig, base: str | Path | None = None) -> RunConfig:
    """Relative shard globs, runs_dir and init_from -> absolute (against ``base`` or the cwd).

    Ray Train workers run in their own working directory, so paths must be resolved on
    the driver before the config travels to them.  Hub ids and URIs are left alone.
    """
    base = Path(base or Path.cwd())

    def fix(p: str) -> str:
        if "://" in p or Path(p).is_absolute():
            return p
        return str(base / p)

    d = cfg.model_dump(mode="json")
    for key in ("train_shards", "val_shards", "text_shards"):
        d["data"][key] = [fix(p) for p in d["data"][key]]
    d["runs_dir"] = fix(d["runs_dir"])
    init = d["training"]["init_from"]
    if init and (base / init).exists():
        d["training"]["init_from"] = fix(init)
    return RunConfig.model_validate(d)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_value(text: str) -> Any:
    """Command-line value -> Python: numbers, bools, null, lists; anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (validation happens afterwards)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section ({source})")
            node = nxt
        node[parts[-1]] = parse_value(value)
    return raw


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' in {source}")
        else:
            lines.append(f"bad value for '{key}' in {source}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def resolve_config_path(path: str | Path) -> Path:
    """A config argument: a file path, or a name in platform/configs/ (``stage1_135m``)."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    raise ConfigError(f"config file not found: {path} (nor in {CONFIG_DIR})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (may be None: all defaults), apply overrides, validate.

    A YAML file may say ``base: other.yaml`` to start from another config.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        raw = _read_yaml(p)
    overrides = list(overrides or [])
    src = source + (f" + overrides {overrides}" if overrides else "")
    raw = apply_overrides(raw, overrides, src)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, src)) from None


def read_yaml_mapping(p: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file."""
    try:
        raw = yaml.safe_load(Path(p).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return raw


def _read_yaml(p: Path) -> dict[str, Any]:
    raw = read_yaml_mapping(p)
    base = raw.pop("base", None)
    if base:
        merged = _read_yaml(resolve_config_path(p.parent / base if not Path(base).is_absolute() else base))
        _deep_merge(merged, raw)
        raw = merged
    return raw


def _deep_merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v


def save_resolved(cfg: RunConfig, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(cfg.to_yaml())
    return p


def config_from_json(text: str) -> RunConfig:
    return RunConfig.model_validate(json.loads(text))

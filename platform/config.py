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
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from fovea.model.config import MAX_NEW_TOKENS, ModelConfig
from fovea.pipelines.config import DataConfig
from fovea.platform.paths import RootError, is_url, resolve, resolve_checkpoint_ref

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUNS_DIR_DEFAULT = "runs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


class _Section(BaseModel):
    # strict: YAML and the command line give typed values (bool, int, float, str), and a bool
    # where an int belongs (``batch_size: true``) or a string where a number belongs is a mistake
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


class TrainingConfig(_Section):
    """Optimisation and checkpoints (DESIGN.md 4)."""

    stage: int = Field(1, ge=1, le=3)
    total_samples: int = Field(1_000_000, ge=1)
    max_steps: int | None = Field(None, ge=1)  # overrides total_samples when set
    grad_accum: int = Field(4, ge=1)
    lr_connector: float = Field(1e-3, ge=0.0)
    lr_dino: float = Field(1e-5, ge=0.0)
    lr_llm: float = Field(1e-5, ge=0.0)
    lr_target: float | None = Field(3e-5, ge=0.0)  # converging schedule: every group ends here
    schedule: Literal["cosine", "constant", "converging"] = "converging"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)  # max global gradient norm
    max_nonfinite_steps: int = Field(5, ge=1)  # abort after this many NaN/Inf steps in a row
    max_oom_windows: int = Field(20, ge=1)  # abort after this many windows in a row dropped for a CUDA OOM
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False  # regional torch.compile of the repeated blocks (FoveatedVLM.compile_blocks)
    # that compile's mode: "max-autotune-no-cudagraphs" has inductor time Triton GEMM templates
    # against cuBLAS for each matmul of the blocks and fuse element-wise neighbours (bias, GELU,
    # residual adds) into the winning template; compiling takes minutes longer (docs/PERFORMANCE.md)
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = "default"
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
    # (strict=False lets the YAML list [60, 64] be the tuple; its items stay strict ints)
    profile_steps: tuple[StrictInt, StrictInt] | None = Field(None, strict=False)
    seed: int = Field(42, ge=0)


class EvalConfig(_Section):
    every_steps: int = Field(500, ge=0)  # 0 = no eval during training
    max_samples: int = Field(1000, ge=1)
    modes: list[Literal["coarse_only", "coarse_fine", "autoregressive"]] = Field(
        default_factory=lambda: ["coarse_fine"]
    )
    caption_samples: int = Field(4, ge=0)  # generated captions logged as a table
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1)  # generation stops at eos or here (DESIGN.md 1.4)
    # jobs/evaluate.py (platform/eval/harness.py run_evaluation)
    batch_size: int | None = Field(None, ge=1)  # None -> data.batch_size
    image_frames: int = Field(8, ge=1)  # single images replicated to N frames at eval (DESIGN.md 6.2/6.3)
    # data/benchmarks: the MCQ benchmarks there are run (jobs/evaluate.py, and at the end of training);
    # checked before Ray starts (platform/eval/benchmarks.py check_benchmarks_dir)
    benchmarks_dir: str | None = None
    benchmark_max_items: int | None = Field(None, ge=1)  # per benchmark, spread over its items
    reference_model: str | None = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"  # scored when local
    mcq_pad_quirk: bool = False  # True: old reference MCQ loss (pad-id <|im_end|> adds 0, counted)
    heatmap_videos: int = Field(3, ge=0)  # videos in the attention-heatmap grid
    spice: bool = False  # SPICE needs Stanford CoreNLP downloads


class TrackingConfig(_Section):
    tracking_uri: str | None = None  # None -> sqlite:///<runs_dir>/mlflow.db
    # where a NEW experiment keeps its artifacts (s3://bucket/mlartifacts, or a path); None: next
    # to a SQLite store (<runs_dir>/mlartifacts/<experiment>), or the tracking server's choice
    # (mlflow server --artifacts-destination). An existing experiment keeps its own.
    artifact_location: str | None = Field(None, pattern=r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?\S+$")
    experiment: str = "fovea"
    run_name: str | None = None
    enabled: bool = True


class ClusterConfig(_Section):
    address: str | None = None  # None -> start a local Ray cluster (or use RAY_ADDRESS)
    num_workers: int = Field(2, ge=1)
    use_gpu: Literal["auto"] | bool = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    # GPUs per worker when use_gpu: 1 = a GPU each (DDP); a fraction lets runs share a GPU
    # (e.g. 0.5: the two arms of jobs/foveation_check.py on one card, both host-bound).
    gpus_per_worker: float = Field(1.0, gt=0, le=1)
    max_failures: int = Field(2, ge=0)
    # DDP's search for parameters a step left unused (a graph walk after every forward, and
    # an error where it is off but a parameter went unused). auto: on where a step can leave
    # some unused (text-only batches, data.text_ratio > 0; coarse_only); see platform/train/ddp.py find_unused().
    ddp_find_unused: Literal["auto"] | bool = "auto"
    # DDP's gradient all-reduce (platform/train/ddp.py): bucket size; gradients as views into the
    # buckets (no copy into them, one gradient-sized buffer less); the dtype on the wire
    # (bf16: half the bytes, gradients rounded to bf16 before they are averaged).
    ddp_bucket_mb: float = Field(25.0, gt=0)
    ddp_bucket_view: bool = False
    ddp_comm_dtype: Literal["fp32", "bf16"] = "fp32"
    # a CUDA OOM on one rank: the ranks agree over gloo after every micro-batch and before every
    # DDP bucket, then all drop the window (platform/train/oom.py); false: no agreement, and an
    # OOM on one of several ranks ends the run (Ray restarts it from the latest checkpoint)
    oom_agreement: bool = True
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
        if self.training.compile_mode != "default" and not self.training.compile:
            raise ValueError(f"training.compile_mode={self.training.compile_mode} is the mode of the blocks' "
                             "torch.compile: set training.compile=true")
        if self.model.llm_cudagraphs and not self.training.compile:
            raise ValueError("model.llm_cudagraphs=true records the graphs through torch.compile: "
                             "set training.compile=true")
        if self.model.llm_cudagraphs and self.training.grad_accum > 1:
            # the graphed backward writes the LLM's gradients into the graphs' memory, which the
            # next micro-batch's replay overwrites before they are summed
            raise ValueError("model.llm_cudagraphs keeps each backward's gradients in its graphs' memory until the "
                             "next pass: set training.grad_accum=1 (a larger data.max_total_frames instead)")
        return self

    # -- helpers -----------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """``{"model.llm": ..., "training.lr_connector": ...}`` for MLflow params."""
        return flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def tracking_uri(self) -> str:
        """tracking.tracking_uri, else MLFLOW_TRACKING_URI (a cluster's MLflow server), else a
        SQLite store in runs_dir."""
        uri = self.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri
        if is_url(self.runs_dir):
            raise ConfigError(f"runs_dir={self.runs_dir!r} is a URL, where MLflow's default SQLite store "
                              f"cannot live: set tracking.tracking_uri or MLFLOW_TRACKING_URI to the "
                              f"cluster's MLflow server (docker/README.md, Storage)")
        return f"sqlite:///{Path(self.runs_dir).resolve() / 'mlflow.db'}"

    def storage_path(self) -> str:
        if self.cluster.storage_path:
            return self.cluster.storage_path
        if is_url(self.runs_dir):
            return f"{self.runs_dir.rstrip('/')}/ray"
        return str(Path(self.runs_dir).resolve() / "ray")


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Relative shard globs, runs_dir, cluster.storage_path and init_from -> absolute, against
    the project root (``fovea.platform.paths``: FOVEA_ROOT, else the current directory).

    Ray Train workers, Tune trials and submitted jobs run in other directories, so paths are
    resolved once, on the driver, before the config travels, and so is the tracking URI. Hub
    ids and URLs are left alone; ``init_from`` is a path only where it has a slash (else an
    MLflow run id)."""
    d = cfg.model_dump(mode="json")
    try:
        for key in ("train_shards", "val_shards", "text_shards"):
            d["data"][key] = [resolve(p, f"data.{key}") for p in d["data"][key]]
        for name, src in (d["data"]["mixture"] or {}).items():
            src["shards"] = [resolve(p, f"data.mixture.{name}.shards") for p in src["shards"]]
        d["runs_dir"] = resolve(d["runs_dir"], "runs_dir")
        if d["cluster"]["storage_path"]:
            d["cluster"]["storage_path"] = resolve(d["cluster"]["storage_path"], "cluster.storage_path")
        if d["tracking"]["artifact_location"]:
            d["tracking"]["artifact_location"] = resolve(d["tracking"]["artifact_location"],
                                                         "tracking.artifact_location")
        if d["eval"]["benchmarks_dir"]:
            d["eval"]["benchmarks_dir"] = resolve(d["eval"]["benchmarks_dir"], "eval.benchmarks_dir")
        d["training"]["init_from"] = resolve_checkpoint_ref(d["training"]["init_from"], "training.init_from")
    except RootError as e:
        raise ConfigError(str(e)) from None
    out = RunConfig.model_validate(d)
    if out.tracking.enabled:  # pinned: rank 0 may run on a node whose environment differs
        out.tracking.tracking_uri = out.tracking_uri()
    return out


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
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return _load_yaml_text(text)
    except yaml.YAMLError:
        return text


def _section_model(field) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _named_sections(field) -> type[BaseModel] | None:
    """The section type of a field that maps names to sections (``data.mixture``:
    ``dict[str, MixtureSource] | None``), else None."""
    for ann in (field.annotation, *typing.get_args(field.annotation)):
        if typing.get_origin(ann) is dict:
            value = typing.get_args(ann)[1]
            if isinstance(value, type) and issubclass(value, BaseModel):
                return value
    return None


def _field_at(parts: list[str]):
    """The ``RunConfig`` field that ``parts`` (``["training", "lr_llm"]``) names, or None; in a
    mapping of named sections the name is skipped (``data.mixture.openvid.weight``: ``weight``)."""
    model: Any = RunConfig
    field = None
    named = False
    for part in parts:
        if named:  # the name of a section in data.mixture
            named = False
            continue
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = _section_model(field)
        if model is None and (model := _named_sections(field)) is not None:
            named = True
    return field


def _text_value(parts: list[str], value: str) -> tuple[bool, Any]:
    """(True, value) for a key whose field holds a string: ``name=2024`` stays the text '2024'
    (quotes dropped; null / none / ~ is None where the field allows it)."""
    field = _field_at(parts)
    if field is None or field.annotation not in (str, str | None):
        return False, None
    v = value.strip()
    if field.annotation != str and v.lower() in ("null", "none", "~"):
        return True, None
    return True, v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


def _schema_leaf(parts: list[str]) -> str | None:
    """The first prefix of ``parts`` that names a value, not a section (None if none does)."""
    for i in range(1, len(parts) + 1):
        field = _field_at(parts[:i])
        if field is None:
            return None  # unknown: validation names it
        if _section_model(field) is None and _named_sections(field) is None:
            return ".".join(parts[:i])
    return None


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str,
                    origins: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (validation happens afterwards); each key
    set is recorded in ``origins`` as ``override 'a.b=value'`` for the error messages."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value ({source})")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"override {item!r} has no key{' (an empty part in ' + repr(key) + ')' if key.strip() else ''}: "
                              f"the form is key.sub=value, e.g. training.max_steps=10 ({source})")
        leaf = _schema_leaf(parts[:-1])
        if leaf:
            raise ConfigError(f"override {item!r}: {leaf!r} is a value, not a section ({source})")
        node = raw
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])!r} is not a section ({source})")
            node = nxt
        is_text, text = _text_value(parts, value)
        node[parts[-1]] = text if is_text else parse_value(value)
        if origins is not None:
            origins[".".join(parts)] = f"override {item!r} (on {source})"
    return raw


def _error_key(loc: tuple) -> tuple[str, str]:
    """pydantic's error location -> (config key, position in it): field names only, without
    the tags of union members (``gradient_checkpointing.bool``); list or tuple positions apart."""
    model: Any = RunConfig
    parts: list[str] = []
    pos = ""
    named = False
    for part in loc:
        if isinstance(part, int):
            pos += f"[{part}]"
            continue
        if named:  # a section's name in data.mixture
            parts.append(str(part))
            named = False
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or pos:
            break  # past a leaf: the tag of a union member
        parts.append(str(part))
        if part not in fields:
            break  # an unknown key
        model = _section_model(fields[part])
        if model is None and (model := _named_sections(fields[part])) is not None:
            named = True
    return ".".join(parts), pos


def _origin(key: str, origins: dict[str, str], fallback: str) -> str:
    """The file (or override) that set ``key``, else the last that set a key below it, else
    the one that set the closest section above it."""
    if key in origins:
        return origins[key]
    below = [where for k, where in origins.items() if k.startswith(key + ".")]
    if below:
        return below[-1]
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        above = ".".join(parts[:n])
        if above in origins:
            return origins[above]
        # a section that no file names as such (data.mixture.<name>): where its keys were set
        near = [where for k, where in origins.items() if k.startswith(above + ".")]
        if near:
            return near[-1]
    return fallback


def _format_errors(err: ValidationError, source: str, origins: dict[str, str] | None = None) -> str:
    """One line per bad key (a key's union alternatives merged), naming the key and where it was set."""
    origins = origins or {}
    by_key: dict[str, dict[str, list[dict]]] = {}
    for e in err.errors():
        key, pos = _error_key(e["loc"])
        by_key.setdefault(key, {}).setdefault(pos, []).append(e)
    lines = []
    for key, by_pos in by_key.items():
        e = next(iter(by_pos.values()))[0]
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' in {_origin(key, origins, source)}")
        elif e["type"] == "missing":  # a required key of a named section (data.mixture.<name>.shards)
            lines.append(f"missing key '{key}' in {_origin(key, origins, source)}")
        elif e["type"] == "value_error":  # a section's own check: keys may come from anywhere
            msg = "; ".join(x["msg"].removeprefix("Value error, ") for errs in by_pos.values() for x in errs)
            lines.append(f"invalid config ({source}): {msg}")
        else:
            what = []
            for pos, errs in by_pos.items():
                msgs = list(dict.fromkeys(x["msg"] for x in errs))
                msg = " or ".join([msgs[0]] + [m.removeprefix("Input should be ") for m in msgs[1:]])
                what.append(f"{'item ' + pos + ': ' if pos else ''}{msg} (got {errs[0].get('input')!r})")
            lines.append(f"bad value for '{key}' in {_origin(key, origins, source)}: {'; '.join(what)}")
    return lines[0] if len(lines) == 1 else "invalid config:\n  " + "\n  ".join(lines)


def _config_candidates(name: str, folders: list[Path], add_suffix: list[bool]) -> list[Path]:
    """Where a config name may be: each folder's ``name`` (and ``name.yaml`` where asked)."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return [p]
    out: list[Path] = []
    for folder, suffix in zip(folders, add_suffix):
        for cand in [folder / p] + ([folder / f"{p}.yaml"] if suffix and p.suffix not in (".yaml", ".yml") else []):
            if cand not in out:
                out.append(cand)
    return out


def _first_file(cands: list[Path]) -> Path | None:
    """The first candidate that is a file; a directory among them is named only if none is."""
    for c in cands:
        if c.is_file():
            return c
    for c in cands:
        if c.is_dir():
            raise ConfigError(f"{c}: is a directory, not a config file")
    return None


def resolve_config_path(path: str | Path) -> Path:
    """A config argument: a file path, or a name in platform/configs/ (``stage1_135m``)."""
    cands = _config_candidates(str(path), [Path.cwd(), CONFIG_DIR], [False, True])
    found = _first_file(cands)
    if found is None:
        raise ConfigError(f"config file not found: {path} (looked for {', '.join(str(c) for c in cands)})")
    return found


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load YAML (may be None: all defaults), apply overrides, validate.

    A YAML file may say ``base: other.yaml`` to start from another config, looked up next to
    the file, then in platform/configs/.  Every failure is a ``ConfigError`` naming the file
    (or the override) and the key.
    """
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source = "<defaults>"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        raw = _read_yaml(p, (), origins)
    overrides = list(overrides or [])
    src = source + (f" + overrides {overrides}" if overrides else "")
    raw = apply_overrides(raw, overrides, source, origins)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, src, origins)) from None


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with ``1e-3`` a float as in YAML 1.2 (YAML 1.1 wants ``1.0e-3``,
    and a strict float field refuses the string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _refuse_duplicates(node: yaml.Node, source: str, prefix: str = "") -> None:
    """A key given twice in one mapping (PyYAML keeps the last one silently) is an error."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = prefix + key
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(f"{source}, line {line}: key '{dotted}' is given twice (first on line {seen[key]})")
            seen[key] = line
            _refuse_duplicates(value_node, source, dotted + ".")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicates(item, source, prefix)


def _load_yaml_text(text: str, source: str = "<text>") -> Any:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml_mapping(p: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; every error is one line naming the file."""
    try:
        text = Path(p).read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot be read ({e.strerror or e})") from None
    try:
        raw = _load_yaml_text(text, str(p))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}{where}: not valid YAML: {e.problem or e.context}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{p}: not valid YAML: {type(e).__name__}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys (got a {type(raw).__name__})")
    return raw


def _find_base(base: Any, child: Path) -> Path:
    """``base:`` of ``child`` -> a file: next to ``child``, then in platform/configs/."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{child}: 'base' must name a config file, got {base!r}")
    cands = _config_candidates(base.strip(), [child.parent, CONFIG_DIR], [True, True])
    found = _first_file(cands)
    if found is None:
        raise ConfigError(f"{child}: base '{base}' not found (looked for {', '.join(str(c) for c in cands)})")
    return found


def _read_yaml(p: Path, chain: tuple[Path, ...], origins: dict[str, str]) -> dict[str, Any]:
    """``p`` with its ``base:`` chain merged under it; ``origins`` maps each key to its file."""
    here = p.resolve()
    if here in chain:
        loop = " -> ".join(str(c) for c in (*chain, here))
        raise ConfigError(f"{chain[0]}: 'base' chain is a cycle: {loop}")
    raw = read_yaml_mapping(p)
    base = raw.pop("base", None)
    for key in flatten(raw):
        origins[key] = str(p)
    for key in raw:  # sections too: an unknown or malformed section names its file
        origins.setdefault(key, str(p))
    if base is None:
        return raw
    inner: dict[str, str] = {}
    merged = _read_yaml(_find_base(base, p), (*chain, here), inner)
    for key, where in inner.items():
        origins.setdefault(key, where)
    _deep_merge(merged, raw)
    return merged


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

"""Search spaces as data: ``search_spaces/<name>.yaml`` -> a list of named experiments.

A space file holds::

    space: ablations                 # must match the file name
    description: "..."
    common:                          # dotted RunConfig keys applied to every trial
      training.schedule: cosine
    experiments:
      A1:
        description: "shallow query"
        overrides: {model.deep_query: false}

Any other top-level key (e.g. ``sizes:`` holding YAML anchors) is ignored.  Every key of
``common`` and of each experiment's ``overrides`` is checked against
``fovea.platform.config.RunConfig`` when the space is loaded, and so are the values (types,
ranges): a typo fails at once with the key, the experiment and the file.

    from fovea.search_spaces.spaces import load_space
    for exp in load_space("ablations"):
        print(exp.name, exp.overrides)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fovea.platform.config import ConfigError, RunConfig, read_yaml_mapping

SPACES_DIR = Path(__file__).resolve().parent
TOP_KEYS = {"space", "description", "common", "experiments"}


@dataclass(frozen=True)
class Experiment:
    name: str
    overrides: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    common: dict[str, Any]
    experiments: list[Experiment] = field(default_factory=list)
    path: Path | None = None

    def names(self) -> list[str]:
        return [e.name for e in self.experiments]

    def select(self, only: list[str] | None) -> list[Experiment]:
        """The experiments named in ``only`` (in the space's order); all when empty."""
        if not only:
            return list(self.experiments)
        unknown = [n for n in only if n not in self.names()]
        if unknown:
            raise ConfigError(f"unknown experiment(s) {unknown} in space {self.name!r} "
                              f"({self.path}); it has: {', '.join(self.names())}")
        return [e for e in self.experiments if e.name in only]


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def space_path(name: str | Path) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = SPACES_DIR / f"{name}.yaml"
    if cand.exists():
        return cand
    raise ConfigError(f"no search space {str(name)!r}: available {', '.join(available_spaces())} "
                      f"(files in {SPACES_DIR})")


# -- key/value validation against RunConfig ------------------------------------------

def _section_model(model: type[BaseModel], parts: list[str], key: str, where: str) -> None:
    """Walk a dotted key through the pydantic models; fail naming the key if it does not exist."""
    cur: type[BaseModel] = model
    for i, part in enumerate(parts):
        fields = cur.model_fields
        if part not in fields:
            prefix = ".".join(parts[:i])
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{key}' in {where}"
                              f"{f' (section {prefix!r} has: {known})' if prefix else f' (sections: {known})'}")
        ann = fields[part].annotation
        last = i == len(parts) - 1
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if not last:
            if not is_section:
                raise ConfigError(f"unknown key '{key}' in {where} ({'.'.join(parts[:i + 1])!r} is not a section)")
            cur = ann
        elif is_section:
            raise ConfigError(f"key '{key}' in {where} is a whole section; override its fields one by one")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)


def check_keys(overrides: dict[str, Any], where: str) -> None:
    for key in overrides:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"bad key {key!r} in {where}")
        _section_model(RunConfig, key.split("."), key, where)


def validate_overrides(overrides: dict[str, Any], where: str, base: dict[str, Any] | None = None) -> None:
    """Keys exist in RunConfig, and the values validate on top of ``base`` (default: all defaults)."""
    check_keys(overrides, where)
    raw = copy.deepcopy(base) if base is not None else {}
    for k, v in overrides.items():
        set_dotted(raw, k, v)
    try:
        RunConfig.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            lines.append(f"bad value for '{key}' in {where}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("\n  ".join(lines)) from None


# -- loading ---------------------------------------------------------------------------

def _mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} in {where} must be a mapping of dotted keys, got {type(value).__name__}")
    return dict(value)


def load_search_space(name: str | Path) -> SearchSpace:
    path = space_path(name)
    raw = read_yaml_mapping(path)
    space = raw.get("space", path.stem)
    if space != path.stem:
        raise ConfigError(f"{path}: 'space: {space}' does not match the file name {path.stem!r}")
    common = _mapping(raw.get("common"), "'common'", str(path))
    validate_overrides(common, f"{path} (common)")
    exps_raw = raw.get("experiments")
    if not isinstance(exps_raw, dict) or not exps_raw:
        raise ConfigError(f"{path}: 'experiments' must be a non-empty mapping name -> {{description, overrides}}")
    experiments = []
    for ename, body in exps_raw.items():
        ename = str(ename)
        where = f"{path} (experiment {ename})"
        if not ename or any(c in ename for c in " ,/\\:"):
            raise ConfigError(f"{where}: experiment names may not contain spaces, commas, slashes or colons")
        body = body or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: must be a mapping with 'description' and 'overrides'")
        extra = set(body) - {"description", "overrides"}
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)} (expected description, overrides)")
        overrides = _mapping(body.get("overrides"), "'overrides'", where)
        check_keys(overrides, where)
        base: dict[str, Any] = {}
        for k, v in common.items():
            set_dotted(base, k, v)
        validate_overrides(overrides, where, base)
        experiments.append(Experiment(ename, overrides, str(body.get("description", ""))))
    return SearchSpace(space, str(raw.get("description", "")), common, experiments, path)


def load_space(name: str | Path) -> list[Experiment]:
    """The experiments of a space (validated); see ``load_search_space`` for the common part."""
    return load_search_space(name).experiments


def format_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "null"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return yaml.safe_dump(v, default_flow_style=True).strip()
    return str(v)


def format_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "(none)"

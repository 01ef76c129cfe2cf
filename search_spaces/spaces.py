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

Any other top-level key (e.g. ``sizes:`` holding YAML anchors) is ignored.  This module
checks the file's shape (names, mappings, fields) and knows nothing of the run config; the
sweep passes ``validate`` to check every key and value of ``common`` and of each experiment's
``overrides`` against it when the space is loaded (platform/sweep/spaces.py), so a typo
fails at once with the key, the experiment and the file.

    from fovea.search_spaces.spaces import load_search_space
    for exp in load_search_space("ablations").experiments:
        print(exp.name, exp.overrides)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

# validate(overrides, where, base): raises ValueError naming the bad key; base holds `common`
Validator = Callable[[dict[str, Any], str, dict[str, Any]], None]


class SpaceError(ValueError):
    """A search-space file is malformed; the message names the file and the experiment."""


def read_yaml_mapping(p: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(p).read_text()) or {}
    except yaml.YAMLError as e:
        raise SpaceError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{p}: top level must be a mapping")
    return raw

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
            raise SpaceError(f"unknown experiment(s) {unknown} in space {self.name!r} "
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
    raise SpaceError(f"no search space {str(name)!r}: available {', '.join(available_spaces())} "
                      f"(files in {SPACES_DIR})")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw["a"]["b"] = value`` for the dotted key ``a.b``."""
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = copy.deepcopy(value)


# -- loading ---------------------------------------------------------------------------

def _mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"{what} in {where} must be a mapping of dotted keys, got {type(value).__name__}")
    return dict(value)


def load_search_space(name: str | Path, validate: Validator | None = None) -> SearchSpace:
    """The space in ``search_spaces/<name>.yaml`` (or a path), its shape checked; with
    ``validate``, every override too (on top of ``common`` for the experiments)."""
    path = space_path(name)
    raw = read_yaml_mapping(path)
    space = raw.get("space", path.stem)
    if space != path.stem:
        raise SpaceError(f"{path}: 'space: {space}' does not match the file name {path.stem!r}")
    common = _mapping(raw.get("common"), "'common'", str(path))
    if validate is not None:
        validate(common, f"{path} (common)", {})
    exps_raw = raw.get("experiments")
    if not isinstance(exps_raw, dict) or not exps_raw:
        raise SpaceError(f"{path}: 'experiments' must be a non-empty mapping name -> {{description, overrides}}")
    experiments = []
    for ename, body in exps_raw.items():
        ename = str(ename)
        where = f"{path} (experiment {ename})"
        if not ename or any(c in ename for c in " ,/\\:"):
            raise SpaceError(f"{where}: experiment names may not contain spaces, commas, slashes or colons")
        body = body or {}
        if not isinstance(body, dict):
            raise SpaceError(f"{where}: must be a mapping with 'description' and 'overrides'")
        extra = set(body) - {"description", "overrides"}
        if extra:
            raise SpaceError(f"{where}: unknown field(s) {sorted(extra)} (expected description, overrides)")
        overrides = _mapping(body.get("overrides"), "'overrides'", where)
        if validate is not None:
            base: dict[str, Any] = {}
            for k, v in common.items():
                set_dotted(base, k, v)
            validate(overrides, where, base)
        experiments.append(Experiment(ename, overrides, str(body.get("description", ""))))
    return SearchSpace(space, str(raw.get("description", "")), common, experiments, path)


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

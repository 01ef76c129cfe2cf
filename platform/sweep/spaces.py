"""Search spaces checked against the run config: every key of a space's ``common`` and of
each experiment's ``overrides`` must exist in ``RunConfig``, and every value must validate
there (types, ranges).  The files and their shape belong to ``fovea.search_spaces``; this
module adds what only the platform knows.

    sp = load_space("ablations")          # SearchSpace; a typo fails naming key and file
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fovea.platform.config import ConfigError, RunConfig
from fovea.search_spaces.spaces import SearchSpace, SpaceError, load_search_space, set_dotted


def _walk_key(model: type[BaseModel], parts: list[str], key: str, where: str) -> None:
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


def check_keys(overrides: dict[str, Any], where: str) -> None:
    """Every dotted key names a field of ``RunConfig``."""
    for key in overrides:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"bad key {key!r} in {where}")
        _walk_key(RunConfig, key.split("."), key, where)


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


def load_space(name: str | Path) -> SearchSpace:
    """A search space with every override validated against ``RunConfig``."""
    try:
        return load_search_space(name, validate=validate_overrides)
    except SpaceError as e:
        raise ConfigError(str(e)) from None

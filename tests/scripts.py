"""The repository's entry points (``jobs/*.py``, ``jobs/bench/*.py``) as modules, for tests that
call their ``main`` or helpers in this process: a script is a file, not a package member."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """``load_script("jobs/preprocess.py")`` -> that file run as module ``script_preprocess``,
    registered in ``sys.modules`` (dataclasses and pickling look a class's module up there)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

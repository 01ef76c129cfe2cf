"""The layout's rules, read from the source: imports point one way (jobs/ -> platform/ ->
model/, pipelines/, search_spaces/), no cycle between rooms, no private names taken from
another module, no ``sys.path`` edits, no function over 80 lines, no run history in code.

A room is a top folder (``model``, ``pipelines``, ``search_spaces``, ``jobs``), a sub-package
of ``platform`` (``platform/train``, ...) or a module at ``platform``'s top (``platform/config.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"jobs": 2, "platform": 1, "model": 0, "pipelines": 0, "search_spaces": 0}
MAX_FUNCTION_LINES = 80


def source_files() -> list[Path]:
    return sorted(p for top in LAYER for p in (ROOT / top).rglob("*.py"))


def room_of_path(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[0] == "platform" and len(parts) >= 2:
        return "/".join(parts[:2])  # platform/train, or platform/config for a top module
    return parts[0]


def room_of_module(module: str) -> str | None:
    """``fovea.platform.train.loop`` -> ``platform/train``; None for anything outside fovea."""
    parts = module.split(".")
    if parts[0] != "fovea" or len(parts) < 2:
        return None
    if parts[1] == "platform" and len(parts) >= 3:
        return "platform/" + parts[2]
    return parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["fovea", *parts])


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) for every import in the file, also inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((node.lineno, base, [a.name for a in node.names]))
    return out


def room_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in source_files():
        src = room_of_path(path)
        for line, module, _ in imports(path):
            dst = room_of_module(module)
            if dst is not None and dst != src:
                edges.setdefault((src, dst), []).append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return edges


def test_the_rule_reads_rooms_right():
    assert room_of_path(ROOT / "platform/train/loop.py") == "platform/train"
    assert room_of_path(ROOT / "platform/config.py") == "platform/config"
    assert room_of_path(ROOT / "model/vlm.py") == "model"
    assert room_of_module("fovea.platform.eval.harness") == "platform/eval"
    assert room_of_module("fovea.model") == "model" and room_of_module("torch.nn") is None
    assert ("platform/config", "model") in room_edges()  # the run config composes ModelConfig


def test_imports_point_one_way():
    upward = [where for (src, dst), wheres in room_edges().items()
              if LAYER[dst.split("/")[0]] > LAYER[src.split("/")[0]] for where in wheres]
    assert not upward, "imports from a room above:\n" + "\n".join(upward)


def test_no_cycle_between_rooms():
    edges = room_edges()
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)

    def path_back(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return trail + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = [c for c in (path_back(r) for r in sorted(graph)) if c]
    detail = [f"{' -> '.join(c)}: " + "; ".join(edges[(c[0], c[1])][:2]) for c in cycles]
    assert not cycles, "rooms importing each other:\n" + "\n".join(detail)


def test_no_private_names_from_other_modules():
    bad = [f"{p.relative_to(ROOT)}:{line} takes {', '.join(n for n in names if n.startswith('_'))} from {mod}"
           for p in source_files() for line, mod, names in imports(p)
           if mod.startswith("fovea.") and mod != module_name(p)
           and any(n.startswith("_") and not n.startswith("__") for n in names)]
    assert not bad, "\n".join(bad)


def test_no_sys_path_edits_in_jobs_or_platform():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in source_files() if p.relative_to(ROOT).parts[0] in ("jobs", "platform")
           for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"sys\.path\.(insert|append)", line)]
    assert not bad, bad


def test_no_function_over_80_lines():
    long = []
    for p in source_files():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these where they divide:\n" + "\n".join(long)


@pytest.mark.parametrize("pattern", [r"\b20\d\d-[01]\d-[0-3]\d\b", r"\b[Ss]ession \d+", r"\bmachine [A-H]\b"])
def test_no_run_history_in_code(pattern):
    """Dates, session numbers and machine letters belong to docs/PERFORMANCE.md."""
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:100]}" for p in source_files()
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert not hits, "\n".join(hits)


def test_every_sub_package_is_in_the_wheel():
    """pyproject.toml lists the packages (platform/ is mapped, not found): a new room must be added."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    rooms = {"fovea." + ".".join(p.parent.relative_to(ROOT).parts) for top in LAYER if top != "jobs"
             for p in (ROOT / top).rglob("*.py")}
    assert rooms - listed == set(), "add to [tool.setuptools] packages in pyproject.toml"
    assert not (ROOT / "platform" / "__init__.py").exists()  # would shadow the standard library's platform

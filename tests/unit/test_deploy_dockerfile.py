"""deploy/Dockerfile, statically: multi-stage, non-root, health-checked, no secrets."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) of every instruction, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    return result


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, args in parsed:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


@pytest.fixture(scope="module")
def parsed() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text())


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = "# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\nUSER 1\n"
    assert instructions(text) == [("FROM", "a AS b"), ("RUN", "x  && y"), ("USER", "1")]


def test_multi_stage_builder_then_slim_runtime(parsed: list[Instruction]) -> None:
    froms = [args for keyword, args in parsed if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime"
    assert froms[-1].split()[0] == "python:3.11-slim"
    builder, runtime = stages(parsed)[0], stages(parsed)[-1]
    builder_runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert re.search(r"pip wheel \. --no-deps", builder_runs)
    assert "[rocksdb]" in builder_runs
    runtime_runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    # Offline from the builder's wheelhouse, the rocksdb extra and no other (no dev tools).
    assert "--no-index" in runtime_runs
    assert re.search(r"limitstream\[rocksdb\]", runtime_runs)
    assert "[dev]" not in runtime_runs and "rocksdb," not in runtime_runs
    assert "from=builder" in runtime_runs or any(
        keyword == "COPY" and "--from=builder" in args for keyword, args in runtime
    )


def test_builder_copies_every_package_of_the_wheel(parsed: list[Instruction]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    builder = stages(parsed)[0]
    copied = {args.split()[0] for keyword, args in builder if keyword == "COPY"}
    for package in packages:  # a data package (streams.schemas) comes with its parent
        top = package.split(".")[0]
        assert top in copied, f"the wheel would miss {top}/"
    assert "pyproject.toml" in copied
    # The readme pyproject names must be in the context of the build.
    assert any(pyproject["project"]["readme"] in args.split() for k, args in builder if k == "COPY")


def test_runs_as_a_non_root_user(parsed: list[Instruction]) -> None:
    runtime = stages(parsed)[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # Kubernetes' securityContext refers to the same uid.
    statefulset = (ROOT / "deploy" / "k8s" / "statefulset.yaml").read_text()
    assert f"runAsUser: {user}" in statefulset


def test_healthcheck_probes_healthz_on_the_web_port(parsed: list[Instruction]) -> None:
    checks = [args for keyword, args in stages(parsed)[-1] if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert "CMD python -c" in check
    assert "urllib" in check
    assert "http://127.0.0.1:${LIMITSTREAM_WEB_PORT}/healthz" in check


def test_entrypoint_is_the_worker(parsed: list[Instruction]) -> None:
    entrypoints = [args for keyword, args in stages(parsed)[-1] if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["limitstream", "worker"]
    assert ("STOPSIGNAL", "SIGTERM") in stages(parsed)[-1]


def test_no_secret_in_env_or_args(parsed: list[Instruction]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
    for keyword, args in parsed:
        if keyword not in {"ENV", "ARG"}:
            continue
        for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=|\s|$)", args):
            assert not secret.search(name), f"{keyword} {name}: secrets come at run time"


def test_dockerignore_keeps_the_venv_and_secrets_out_of_the_context() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git", ".env", "deploy/k8s/secrets"} <= ignored

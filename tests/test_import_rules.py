"""The architecture's arrows, pinned (README, "What runs where"): `agent` and `control_api` use
`avatar_runtime`, which uses `renderers`; `control_api` and `agent` never import each other,
they meet through LiveKit.

Every module of the four packages is parsed (ast, nothing is imported), and every import it
can make is checked: `import x`, `from x import y`, relative imports resolved against the
module's package, `importlib.import_module("x")` / `__import__("x")` with a literal name, and
"module:attribute" import-path strings (the renderer registry's and the preparation writers'
tables). Then fresh interpreters import the libraries and show which modules they loaded.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "avatar_runtime", "control_api", "renderers")
# `agent/` installs as `avatar_agents.agent` (pyproject.toml); either name is the agent.
ALIASES = {"avatar_agents": "agent"}
FORBIDDEN = {
    "renderers": {"agent", "avatar_runtime", "control_api"},
    "avatar_runtime": {"agent", "control_api"},
    "control_api": {"agent"},
    "agent": {"control_api"},
}
# "package.module:Attribute", as renderers/registry.py and renderers/preparation.py name what
# they import lazily.
_IMPORT_PATH = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")
_IMPORT_FUNCTIONS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    target: str  # the absolute dotted name of the imported module

    @property
    def top(self) -> str:
        top = self.target.split(".")[0]
        return ALIASES.get(top, top)

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool, path: Path) -> Iterator[Import]:
    """Every module `source` (the text of `module`) can import, with its line."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level > len(parts):
                    raise AssertionError(
                        f"{path}:{node.lineno}: relative import beyond the top-level package"
                    )
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                target = node.module
            yield Import(path, node.lineno, target)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in _IMPORT_FUNCTIONS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and not first.value.startswith(".")
            ):
                yield Import(path, node.lineno, first.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if match := _IMPORT_PATH.match(node.value):
                yield Import(path, node.lineno, match.group(1))


def package_imports(package: str) -> list[Import]:
    found: list[Import] = []
    for path in sorted((REPO / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        found += imports_of(
            path.read_text(encoding="utf-8"),
            module_name(path),
            is_package=path.name == "__init__.py",
            path=path,
        )
    return found


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = (
        "import os.path, agent.worker\n"
        "from control_api import app\n"
        "from . import sibling\n"
        "from ..base import Renderer\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('avatar_agents.agent.cli')\n"
        "    __import__('avatar_runtime')\n"
        "TABLE = {'x': 'renderers.meshwarp:MeshwarpRenderer', 'y': 'not a path: at all'}\n"
    )
    path = REPO / "renderers" / "vision" / "example.py"
    found = list(imports_of(source, "renderers.vision.example", is_package=False, path=path))
    assert [(i.line, i.target) for i in found] == [
        (1, "os.path"),
        (1, "agent.worker"),
        (2, "control_api"),
        (3, "renderers.vision"),
        (4, "renderers.base"),
        (6, "importlib"),
        (7, "avatar_agents.agent.cli"),
        (8, "avatar_runtime"),
        (9, "renderers.meshwarp"),
    ]
    assert {i.top for i in found} >= {"agent", "control_api", "avatar_runtime", "renderers"}
    with pytest.raises(AssertionError, match="beyond the top-level package"):
        list(imports_of("from ... import x\n", "agent.cli", is_package=False, path=path))


def test_the_arrows_that_should_exist_are_seen() -> None:
    # A scanner that found nothing would pass the rules below; these arrows are the design.
    assert "avatar_runtime" in {i.top for i in package_imports("agent")}
    assert "avatar_runtime" in {i.top for i in package_imports("control_api")}
    assert "renderers" in {i.top for i in package_imports("avatar_runtime")}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    assert (REPO / package / "__init__.py").is_file()
    wrong = [str(i) for i in package_imports(package) if i.top in FORBIDDEN[package]]
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(
        wrong
    )


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        # The library for anyone's agent, every public name resolved.
        (
            "import avatar_runtime\n"
            "for name in getattr(avatar_runtime, '__all__', ()):\n"
            "    getattr(avatar_runtime, name)\n",
            {"agent", "avatar_agents", "control_api"},
        ),
        ("import renderers, renderers.vision", {"agent", "avatar_agents", "avatar_runtime",
                                                 "control_api"}),  # fmt: skip
        ("import control_api.app", {"agent", "avatar_agents"}),
    ],
    ids=["avatar_runtime", "renderers", "control_api"],
)
def test_importing_a_library_loads_none_of_the_layers_above(
    statement: str, forbidden: set[str]
) -> None:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"forbidden = {sorted(forbidden)!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in forbidden)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{statement!r} loaded {loaded}"

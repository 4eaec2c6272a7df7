"""The house's import rules refuse what they are written against.

Each test lays out a small tree with Tend's package names, breaks one rule in it, and runs
`lint-imports` with the project's own contracts (pyproject.toml) over it: the tidy tree passes,
and every broken rule is refused by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

ROOMS = ("api", "shell", "store", "core")

# Contract names, as pyproject.toml gives them.
SHARED_FLOOR = "shared imports no service and not the cli"
SERVICES_APART = "services never import each other"
FOUR_ROOMS = "scoring and outreach import downward only: api → shell → store → core"
NO_CYCLES = "no import cycles"
CONSOLE_CLIENT = "the console imports no other service"
CONSOLE_ROOMS = (
    "the console imports downward only: app → pages → clients | session → formatting → settings"
)


def _write(root: Path, module: str, body: str = "") -> None:
    """Write ``module`` (dotted) under ``root``, with the packages above it."""
    parts = module.split(".")
    for i in range(1, len(parts)):
        init = root.joinpath(*parts[:i], "__init__.py")
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    path = root.joinpath(*parts[:-1], f"{parts[-1]}.py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def _tidy_tree(root: Path) -> None:
    """A tree that keeps every rule: each room imports the one below it."""
    _write(root, "shared.base")
    _write(root, "shared.kafka", "import shared.base\n")
    _write(root, "cli.main", "import shared.kafka\n")
    _write(root, "services.ingest.app", "import shared.kafka\n")
    for service in ("scoring", "outreach"):
        pkg = f"services.{service}"
        _write(root, f"{pkg}.settings", "import shared.base\n")
        _write(root, f"{pkg}.schemas", f"import {pkg}.settings\n")
        _write(root, f"{pkg}.migrations.env", "import shared.base\n")
        below = f"{pkg}.settings"
        for room in reversed(ROOMS):
            _write(root, f"{pkg}.{room}.work", f"import {below}\nimport shared.kafka\n")
            below = f"{pkg}.{room}.work"
        _write(root, f"{pkg}.app", f"import {pkg}.api.work\nimport {pkg}.schemas\n")
    console = "services.console"
    _write(root, f"{console}.settings", "import shared.base\n")
    _write(root, f"{console}.formatting", f"import {console}.settings\n")
    _write(root, f"{console}.session", f"import {console}.formatting\n")
    _write(root, f"{console}.clients.work", f"import {console}.formatting\nimport shared.kafka\n")
    _write(
        root, f"{console}.pages.work", f"import {console}.clients.work\nimport {console}.session\n"
    )
    _write(root, f"{console}.app", f"import {console}.pages.work\n")


def _lint(root: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_tidy_tree_keeps_every_contract(tmp_path: Path) -> None:
    _tidy_tree(tmp_path)
    code, out = _lint(tmp_path)
    assert code == 0, out
    for name in (SHARED_FLOOR, SERVICES_APART, FOUR_ROOMS, NO_CYCLES):
        assert f"{name} KEPT" in out


@pytest.mark.parametrize(
    ("module", "body", "broken"),
    [
        pytest.param(
            "shared.base", "import services.ingest.app\n", SHARED_FLOOR, id="shared→service"
        ),
        pytest.param("shared.base", "import cli.main\n", SHARED_FLOOR, id="shared→cli"),
        pytest.param(
            "services.outreach.shell.work",
            "import services.scoring.core.work\n",
            SERVICES_APART,
            id="service→service",
        ),
        pytest.param(
            "services.scoring.core.work",
            "import services.scoring.store.work\n",
            FOUR_ROOMS,
            id="core→store",
        ),
        pytest.param(
            "services.outreach.store.work",
            "import services.outreach.api.work\n",
            FOUR_ROOMS,
            id="store→api",
        ),
        pytest.param(
            "services.scoring.settings",
            "import services.scoring.shell.work\n",
            FOUR_ROOMS,
            id="settings→shell",
        ),
        pytest.param("services.scoring.helpers", "", FOUR_ROOMS, id="a module outside the rooms"),
        pytest.param(
            "services.console.pages.work",
            "import services.scoring.app\n",
            CONSOLE_CLIENT,
            id="console→service",
        ),
        pytest.param(
            "services.console.clients.work",
            "import services.console.pages.work\n",
            CONSOLE_ROOMS,
            id="console clients→pages",
        ),
        pytest.param("shared.base", "import shared.kafka\n", NO_CYCLES, id="cycle"),
        pytest.param(
            "shared.base",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import shared.kafka\n",
            NO_CYCLES,
            id="type-only cycle",
        ),
    ],
)
def test_a_broken_rule_is_refused_by_name(
    tmp_path: Path, module: str, body: str, broken: str
) -> None:
    _tidy_tree(tmp_path)
    _write(tmp_path, module, body)
    code, out = _lint(tmp_path)
    assert code != 0, out
    assert f"{broken} BROKEN" in " ".join(out.split()), out  # a long name wraps

"""The built-in callbacks and strategies install as `kronos_engine.callbacks` and
`kronos_engine.strategies`: a user's own `callbacks.py`/`strategies.py` cannot shadow them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_cli import TINY, _env, check_ok, run_cli

REPO = Path(__file__).resolve().parents[1]

USER_CALLBACKS = '''
import json
import os

from kronos_engine import TrainCallback


class StepLog(TrainCallback):
    """A user's callback in a module named like the built-in package."""

    def on_step_end(self, ctx):
        with open(os.environ["STEP_LOG"], "a") as fh:
            fh.write(json.dumps(ctx.global_step) + "\\n")
'''


def _package_dirs() -> dict[str, Path]:
    """Every package of the source tree, by the name it must install as."""
    found = {
        ".".join(p.parent.relative_to(REPO).parts): p.parent
        for p in (REPO / "kronos_engine").rglob("__init__.py")
    }
    for folder in ("callbacks", "strategies"):
        found[f"kronos_engine.{folder}"] = REPO / folder
    return found


def test_pyproject_lists_every_package_under_its_installed_name():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(_package_dirs())
    assert setuptools["package-dir"] == {
        "kronos_engine.callbacks": "callbacks",
        "kronos_engine.strategies": "strategies",
    }


def test_wheel_holds_the_builtins_under_kronos_engine(tmp_path):
    # Built from a copy: an in-tree build would leave build/ in the checkout, whose stale
    # files (a removed module) setuptools would put into every later wheel.
    source = tmp_path / "src"
    for name in ("kronos_engine", "callbacks", "strategies"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source / "pyproject.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("kronos_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in _package_dirs().items():
        for source in folder.glob("*.py"):
            assert f"{package.replace('.', '/')}/{source.name}" in names
    assert not any(n.startswith(("callbacks/", "strategies/")) for n in names)


def test_user_modules_named_callbacks_and_strategies_do_not_shadow_the_builtins(tmp_path):
    (tmp_path / "callbacks.py").write_text(USER_CALLBACKS)
    (tmp_path / "strategies.py").write_text("raise ImportError('a user module, not ours')\n")
    steps = tmp_path / "steps.jsonl"
    proc = run_cli(
        "--train_type=tokenizer",
        *TINY,
        "--max_steps=2",
        "--callbacks=callbacks:StepLog",
        f"--output_dir={tmp_path / 'out'}",
        cwd=tmp_path,
        env=_env(pythonpath=tmp_path, STEP_LOG=str(steps)),
    )
    check_ok(proc)
    assert [json.loads(line) for line in steps.read_text().splitlines()] == [1, 2]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "completed" and (tmp_path / "out" / "best").is_dir()

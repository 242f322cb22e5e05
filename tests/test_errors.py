"""Exit code 2 means exactly "a `UserError` reached the shell"; the shell lists no error classes."""

from __future__ import annotations

import ast
import inspect
import io
import sys
from pathlib import Path

import pytest

from kronos_engine import errors
from kronos_engine.cli import shell

ROOT = Path(__file__).resolve().parents[1]


def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    ]


def test_every_engine_error_belongs_to_one_exit_code_family():
    for cls in _error_classes():
        families = [
            f for f in (errors.UserError, errors.TrainingError, OSError) if issubclass(cls, f)
        ]
        assert len(families) == 1, cls


def test_every_error_class_is_defined_in_the_errors_module_only():
    """One home: no other module defines an exception class."""
    defined = []
    for folder in ("kronos_engine", "callbacks", "strategies"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "kronos_engine" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).endswith(("Error", "Exception")) for b in node.bases
                ):
                    defined.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert defined == []


def test_any_user_error_is_exit_2_and_one_line(capsys):
    class NewCommandError(errors.UserError, ValueError):
        """A user error a future command defines: the shell needs no change for it."""

    assert shell.exit_code_for(NewCommandError("--flag: bad\n  value")) == 2
    assert capsys.readouterr().err == "error: --flag: bad value\n"
    for cls in _error_classes():
        if issubclass(cls, errors.UserError):
            assert shell.exit_code_for(cls("x")) == 2, cls


class _Writes(io.RawIOBase):
    """An unbuffered stream that keeps each write apart, as a pipe under PYTHONUNBUFFERED."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)


def test_the_error_line_is_one_write_so_ranks_cannot_interleave_it(monkeypatch):
    """With PYTHONUNBUFFERED, print() wrote the text and its newline apart, and another rank's
    line landed between them (seen in CI on a two-rank test)."""
    raw = _Writes()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    assert shell.exit_code_for(errors.ConfigError("data.lookback_window: must be > 0")) == 2
    assert raw.chunks == [b"error: data.lookback_window: must be > 0\n"]


def test_training_errors_and_os_errors_are_exit_1_and_the_rest_propagates(capsys):
    assert shell.exit_code_for(errors.NonFiniteError("loss is nan at step 3")) == 1
    assert shell.exit_code_for(errors.CheckpointWriteError("disk full")) == 1
    assert shell.exit_code_for(PermissionError("out: read-only")) == 1
    assert capsys.readouterr().err.count("error: ") == 3
    with pytest.raises(ZeroDivisionError):
        shell.exit_code_for(ZeroDivisionError("a bug: a traceback, not a line"))
    with pytest.raises(ValueError):
        shell.exit_code_for(ValueError("a plain ValueError is a bug, not a user error"))


def test_no_command_module_lists_error_classes():
    """The shell decides by family; commands raise their errors and return `exit_code_for`
    (catching one error to re-word it is fine; a tuple or an isinstance ladder is not)."""
    names = {cls.__name__ for cls in _error_classes()} - {"UserError", "TrainingError"}
    offenders = []
    for path in (ROOT / "kronos_engine" / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            caught = None
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Tuple):
                caught = ast.unparse(node.type)
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance":
                caught = ast.unparse(node.args[1])
            if caught and any(name in caught for name in names):
                offenders.append(f"{path.name}: {caught}")
    assert offenders == []

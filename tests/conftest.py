"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "kronos"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The public-implementation reference files (checkpoints, vectors, manifests)."""
    if not (REFERENCE_DIR / "SPEC.md").is_file():
        pytest.skip(f"Kronos reference files not found at {REFERENCE_DIR}")
    return REFERENCE_DIR

"""Property 7: nothing the user points the trainer at is unpickled. Weights are safetensors,
metadata JSON/YAML (safe loader), optimizer state `torch.load(weights_only=True)`; a checkpoint
or config crafted to run code is refused with one line naming the file, and the code never runs.
"""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import faultinject as fi
import pytest
import torch

from kronos_engine.run.checkpoints import write_manifest

SOURCE_DIRS = ("kronos_engine", "strategies", "callbacks", "scripts")
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}


def _sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((fi.REPO / d).rglob("*.py"))]
    assert len(files) > 30, files  # the scan really looks at the package
    return files


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def unsafe_loads(source: str, filename: str) -> list[str]:
    """Every pickle-capable load in `source`, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            bad = {n.split(".")[0] for n in names} & UNSAFE_MODULES
            if bad:
                found.append(f"{where}: imports {sorted(bad)}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name.endswith("torch.load"):
            if _keyword(node, "weights_only") is not True:
                found.append(f"{where}: {name} without weights_only=True")
        elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (
            None,
            False,
        ):
            found.append(f"{where}: {name} with allow_pickle")
        elif name.endswith("read_pickle") or name.endswith("torch.jit.load"):
            found.append(f"{where}: {name}")
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            loader = _keyword(node, "Loader")
            if not (isinstance(loader, ast.AST) and _dotted(loader).endswith("SafeLoader")):
                found.append(f"{where}: {name} without SafeLoader")
    return found


def test_the_scan_finds_each_kind_of_unsafe_load():
    bad = (
        "import pickle\nimport numpy as np, torch, yaml, pandas as pd\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\n"
        "np.load('x', allow_pickle=True)\npd.read_pickle('x')\nyaml.load(open('x'))\n"
    )
    assert len(unsafe_loads(bad, "bad.py")) == 6
    good = (
        "import numpy as np, torch, yaml\ntorch.load('x', weights_only=True)\n"
        "np.load('x', allow_pickle=False)\nnp.load('x')\nyaml.safe_load('a: 1')\n"
        "yaml.load('a: 1', Loader=yaml.SafeLoader)\n"
    )
    assert unsafe_loads(good, "good.py") == []


def test_no_pickle_capable_load_in_the_sources():
    found = [hit for path in _sources() for hit in unsafe_loads(path.read_text(), str(path))]
    assert found == []


# ------------------------------------------------------------------ crafted files


class RunsCode:
    """Unpickling this calls os.system: what a booby-trapped checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("payload", ["pickled_object", "not_a_torch_file"])
def test_resume_refuses_a_crafted_optimizer_pt(tmp_path_factory, tmp_path, payload):
    reference, _ = fi.reference_run(tmp_path_factory, "tokenizer")
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    marker = tmp_path / "code_ran"
    step = out / "checkpoints" / f"step_{fi.LAST_STEP}"
    if payload == "pickled_object":
        state = torch.load(step / "optimizer.pt", weights_only=True)
        state["payload"] = RunsCode(f"touch {marker}")
        torch.save(state, step / "optimizer.pt")
    else:
        (step / "optimizer.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (step / "manifest.json").unlink()
    write_manifest(step)  # the attacker also fixed the checksums: integrity checks pass
    result = fi.run(
        fi.train_args("tokenizer", out) + [f"--resume={out}"], tmp_path / "logs", timeout=300
    )
    assert not marker.exists(), "the pickled payload ran"
    assert result.returncode == 2, result
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"error: {step / 'optimizer.pt'}: not a plain optimizer state"), last
    assert "weights_only" not in last  # no advice to switch the safety off
    assert "Traceback" not in result.stderr


def test_a_yaml_config_that_constructs_objects_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    result = fi.run(["--train_type=tokenizer", f"--config={config}"], tmp_path / "logs")
    assert not marker.exists()
    assert result.returncode == 2, result
    last = result.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"error: {config}:1:") and "invalid YAML" in last, last

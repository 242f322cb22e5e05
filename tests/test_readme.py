"""The README's code works as written (issue 22): its Python forecasting snippet runs on a
finished run at `outputs/demo`, and its commands name modules that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest
from engine_helpers import run, save_random_tokenizer, tiny_cfg

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_forecasting_snippet_runs_on_a_finished_run(tmp_path, monkeypatch):
    (snippet,) = [b for b in _blocks("python") if "KronosPredictor.from_run" in b]
    exp = tmp_path / "outputs" / "demo"
    tok = save_random_tokenizer(tmp_path / "tok")
    run(tiny_cfg(tmp_path, train_type="predictor", exp_dir=str(exp), tokenizer_path=str(tok),
                 max_steps=2, epochs=1))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 (the README's own code)
    forecast, paths, frames = scope["forecast"], scope["paths"], scope["frames"]
    assert isinstance(forecast, pd.DataFrame) and len(forecast) == 10
    assert {"close_q10", "close_q90"} <= set(forecast.columns)
    assert paths.shape == (50, 10, 6) and len(frames) == 2


@pytest.mark.parametrize(
    "module", sorted(set(re.findall(r"python -m ([\w.]+)", README.read_text())))
)
def test_every_python_dash_m_module_in_the_readme_exists(module):
    if module.split(".")[0] == "qlib":
        pytest.importorskip("qlib")
    assert importlib.util.find_spec(module) is not None, f"README: python -m {module}"

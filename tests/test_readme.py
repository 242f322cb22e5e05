"""The README's code works as written (issue 22). Every fenced block is accounted for: each
shell command and each Python/YAML block is classified below as run here or not run (with the
reason: the network, a GPU, several machines or the user's own files), and one that is in
neither table fails, so a new block cannot go untested silently. The offline ones run as
written, in README order, in one temporary folder holding the repository's `scripts/` and
`configs/`; the only change is `OVERRIDES`, appended to every training command so it trains a
tiny model for a few steps."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from engine_helpers import run, save_random_tokenizer, tiny_cfg

from kronos_engine.cli.launch import pop_nprocs
from kronos_engine.cli.pipeline import load_pipeline_configs
from kronos_engine.cli.sweep import pop_flags as pop_sweep_flags
from kronos_engine.cli.train import load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Appended to every `scripts/train.py` and `scripts/pipeline.py` command: the demo data and the
# tiny preset, shrunk to a few steps (flags win over any `--config` file).
OVERRIDES = [
    "--model_preset=tiny",
    "--demo_symbols=2",
    "--demo_length=300",
    "--lookback_window=20",
    "--predict_window=4",
    "--batch_size=8",
    "--max_steps=2",
    "--train_samples_per_epoch=16",
    "--val_samples=8",
    "--progress_bar=false",
]
TRAINING = ("scripts/train.py", "scripts/pipeline.py", "scripts/sweep.py")  # a sweep's flags
# apply to every trial

NET = "needs the network"
INSTALL = f"{NET}: installs packages (the tests run in the installed dev environment)"
USER = "needs the user's files"
HUB = f"{NET}: the public checkpoints in models/ come from the Hugging Face hub"
HUB_GET = shlex.join([
    "python", "-c", "from huggingface_hub import snapshot_download as get;"
    " get('NeoQuasar/Kronos-Tokenizer-base', local_dir='models/Kronos-Tokenizer-base');"
    " get('NeoQuasar/Kronos-small', local_dir='models/Kronos-small')",
])  # fmt: skip

# Shell commands, in README order, that run here (after `OVERRIDES` where they train).
RUNS = [
    "python scripts/train.py --train_type=tokenizer",
    "python scripts/train.py --train_type=predictor",
    "python scripts/pipeline.py --config configs/demo.yaml --exp_dir=outputs/pipeline",
    "python scripts/pipeline.py --config configs/demo.yaml --exp_dir=outputs/pipeline"
    " --skip-tokenizer --overwrite=true",
    "python scripts/train.py --nprocs=2 --train_type=tokenizer --exp_dir=outputs/two_procs",
    "python scripts/train.py --config outputs/demo/tokenizer/config.yaml"
    " --resume=outputs/demo/tokenizer",
    "python scripts/train.py --train_type=tokenizer --callbacks=my_callbacks:PrintLoss"
    " --exp_dir=outputs/callbacks",
    "python scripts/predict.py --exp_dir outputs/demo",
    "python scripts/predict.py --exp_dir outputs/demo --sample_count 20 --quantiles 0.1,0.5,0.9"
    " --output outputs/demo/forecast.parquet --plot",
    "python scripts/plot.py outputs/demo/tokenizer",
    "python scripts/plot.py outputs/demo/tokenizer outputs/pipeline/tokenizer -o compare.png",
    "python scripts/evaluate.py --exp_dir outputs/demo",
    "python scripts/train.py --train_type=predictor --forecast_val_origins=256"
    " --best_metric=val_rank_ic --best_mode=max --exp_dir=outputs/ranked"
    " --tokenizer_path=outputs/demo/tokenizer/best",
    "python scripts/sweep.py --config configs/sweep_demo.yaml --train_type=predictor --workers 2",
    "python scripts/evaluate.py --exp_dir outputs/demo/sweep/best_trial"
    " --compare pretrained=outputs/demo/predictor/best",
    "python scripts/backtest.py --exp_dir outputs/demo/sweep/best_trial --topk 2 --n_drop 1",
    "python scripts/train.py --train_type=tokenizer --loggers=tensorboard,mlflow"
    " --exp_dir=outputs/tracked",
]

# Shell commands that do not run here, and why.
NOT_RUN = {
    "python3 -m venv .venv": "sets up the environment the tests already run in",
    ". .venv/bin/activate": "sets up the environment the tests already run in",
    "pip install torch==2.13.0 -e .": INSTALL,
    "pip install torch==2.13.0 -e '.[dev]'": INSTALL,
    "pip install -e '.[qlib]'": INSTALL,
    "pip install -e '.[hub]'": INSTALL,
    "pip install -e '.[plot]'": INSTALL,
    "lint-imports": "run by tests/test_layers.py::test_the_import_linter_contracts_are_kept",
    "python -m pytest -q": "the test suite this test is part of",
    "python scripts/train.py --train_type=tokenizer --config configs/finetune_csv.yaml": (
        f"{USER} (data_path edited to their CSVs) and {HUB}"
    ),
    "python scripts/train.py --train_type=predictor --config configs/finetune_csv.yaml": (
        f"{USER} (data_path edited to their CSVs) and {HUB}"
    ),
    "python scripts/train.py --train_type=tokenizer --data_source=csv --data_path=data/klines"
    " --exp_dir=outputs/mine --model_preset=base": f"{USER} (their CSVs in data/klines)",
    "python scripts/train.py --train_type=predictor --data_source=csv --data_path=data/klines"
    " --exp_dir=outputs/mine --model_preset=small": f"{USER} (their CSVs in data/klines)",
    "python scripts/download.py --source sina --instruments sh600000,sz000001 --freq 5min"
    " --data_path data/sina_5min": f"{NET}: Sina Finance's K-line service",
    "python scripts/pipeline.py --data_source=sina --data_path=data/sina_5min"
    " --instruments=sh600000,sz000001 --freq=5min --exp_dir=outputs/sina --skip-data-process": (
        f"{NET}: the bars the Sina download above fetched"
    ),
    "python scripts/download.py --source ccxt --exchange binance --instruments BTC/USDT,ETH/USDT"
    " --freq 1h --data_path data/binance_1h --fetch_since 2024-01-01": f"{NET}: Binance via ccxt",
    "python scripts/pipeline.py --data_source=ccxt --exchange=binance --data_path=data/binance_1h"
    " --instruments=BTC/USDT,ETH/USDT --freq=1h --exp_dir=outputs/crypto --skip-data-process": (
        f"{NET}: the bars the ccxt download above fetched"
    ),
    "python -m qlib.cli.data qlib_data --target_dir '~/.qlib/qlib_data/cn_data' --region cn": (
        f"{NET}: Qlib's data download"
    ),
    "python scripts/pipeline.py --config configs/finetune_qlib.yaml": (
        f"{NET}: the CSI 300 Qlib bundle (2011-2025) and {HUB}"
    ),
    HUB_GET: HUB,
    "python scripts/train.py --train_type=tokenizer --config configs/finetune_pretrained.yaml": HUB,
    "python scripts/train.py --train_type=predictor --config configs/finetune_pretrained.yaml": HUB,
    "python scripts/pipeline.py --config finetune_csv/configs/config_ali09988_candle-5min.yaml": (
        f"{USER} (the public Kronos repository's finetune_csv YAML; tests/test_public_configs.py)"
    ),
    "torchrun --standalone --nproc_per_node=8 scripts/train.py --train_type=predictor"
    " --config configs/finetune_qlib.yaml": "needs 8 GPUs and the Qlib bundle",
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=node0:29500"
    " --rdzv_id=kronos scripts/train.py --train_type=predictor"
    " --config configs/finetune_qlib.yaml": "needs two machines with 8 GPUs each",
    "python scripts/evaluate.py --exp_dir outputs/mine --compare pretrained=models/Kronos-small"
    " --sample_count 20 --stride 5": f"{USER} (outputs/mine) and {HUB}",
    "python scripts/backtest.py --exp_dir outputs/mine --provider data/qlib_provider --topk 50"
    " --n_drop 5 --hold 1": f"{USER} (outputs/mine and their Qlib provider)",
    "python scripts/train.py --train_type=predictor --config configs/finetune_pretrained.yaml"
    " --finetune_method=lora --lora_r=16": HUB,
    "tensorboard --logdir outputs/tracked/tokenizer/tensorboard": (
        "starts a web server that runs until stopped"
    ),
}

# Python and YAML blocks by their first line: all run (the YAML through the config loader).
CODE_BLOCKS = {
    ("yaml", "epochs: 10"): "loaded and validated per stage",
    ("python", "# my_callbacks.py"): "written as my_callbacks.py",
    ("python", "from kronos_engine import TrainConfig, TrainContextBuilder, Trainer"): "exec",
    ("python", "from kronos_engine import KronosPredictor"): "exec on outputs/demo",
}


def _blocks(lang: str | None = None) -> list[tuple[str, str]]:
    found = re.findall(r"```(\w*)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [(kind, body) for kind, body in found if lang is None or kind == lang]


def _commands(body: str) -> list[str]:
    """A shell block's commands: one a line, split at `&&`, comments dropped."""
    out = []
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(shlex.join(words[:cut]))
            words = words[cut + 1 :]
    return out


def _readme_commands() -> list[str]:
    return [cmd for _, body in _blocks("bash") for cmd in _commands(body)]


def _code_block(lang: str, first_line: str) -> str:
    (body,) = [b for kind, b in _blocks(lang) if b.splitlines()[0] == first_line]
    return body


def _workdir(tmp_path: Path) -> Path:
    for name in ("scripts", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_every_readme_block_is_classified():
    kinds = {kind for kind, _ in _blocks()}
    assert kinds <= {"bash", "python", "yaml"}, f"README block of an unknown language: {kinds}"
    for kind, body in _blocks():
        if kind != "bash":
            key = (kind, body.splitlines()[0])
            assert key in CODE_BLOCKS, f"README block {key} is not classified"
    commands = _readme_commands()
    for cmd in commands:
        assert (cmd in RUNS) != (cmd in NOT_RUN), f"README block command {cmd!r} is not classified"
    stale = [cmd for cmd in [*RUNS, *NOT_RUN] if cmd not in commands]
    assert stale == [], f"classified but no longer in the README: {stale}"
    ordered = [cmd for cmd in commands if cmd in RUNS]
    assert ordered == RUNS, "RUNS must list the README's runnable commands in README order"


def test_the_extras_the_readme_installs_exist():
    """Each `pip install -e '.[X]'` the README gives (also in prose) names an extra of
    pyproject.toml's [project.optional-dependencies] (read as text: no tomllib on 3.10)."""
    toml = (ROOT / "pyproject.toml").read_text()
    section = toml.split("[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+) = ", section, re.M))
    assert {"plot", "hub", "qlib"} <= extras
    named = [m for cmd in _readme_commands() for m in re.findall(r"\.\[([\w,]+)\]", cmd)]
    named += re.findall(r"pip install -e '\.\[([\w,]+)\]'", README.read_text())
    assert named
    for group in named:
        for extra in group.split(","):
            assert extra in extras, f"README installs the extra {extra!r}, pyproject lacks it"


@pytest.mark.parametrize("cmd", [c for c in RUNS if c.split()[1] in TRAINING])
def test_each_training_command_parses_with_the_overrides(cmd, tmp_path, monkeypatch):
    """Cheap: each runnable training command plus `OVERRIDES` is a valid config (one that
    reads an earlier command's output is checked by the slow test)."""
    argv = shlex.split(cmd)[2:] + OVERRIDES
    if "--config" in argv and argv[argv.index("--config") + 1].startswith("outputs/"):
        pytest.skip("reads the Quick start's config.yaml")
    monkeypatch.chdir(_workdir(tmp_path))
    if cmd.split()[1] == "scripts/pipeline.py":
        stages, _ = load_pipeline_configs(argv)
        assert all(c.model_preset == "tiny" and c.max_steps == 2 for c in stages.values())
    else:
        if cmd.split()[1] == "scripts/sweep.py":  # its own flags, then every trial's
            argv = pop_sweep_flags(argv)[1]
        cfg = load_config(pop_nprocs(argv)[1])
        assert cfg.model_preset == "tiny" and cfg.max_steps == 2


def test_the_per_stage_yaml_block_loads(tmp_path):
    path = tmp_path / "stages.yaml"
    path.write_text(_code_block("yaml", "epochs: 10"))
    stages, _ = load_pipeline_configs(["--config", str(path), "--model_preset=tiny"])
    assert (stages["tokenizer"].lr, stages["tokenizer"].epochs) == (0.0002, 10)
    assert (stages["predictor"].lr, stages["predictor"].epochs) == (0.00001, 20)


def test_the_callback_block_prints_every_n_steps(tmp_path, monkeypatch):
    (tmp_path / "my_callbacks.py").write_text(_code_block("python", "# my_callbacks.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_callbacks import PrintLoss  # the README's file

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for step in (19, 20):
            ctx = SimpleNamespace(is_main=True, global_step=step, last_loss=0.5, lr=1e-4)
            PrintLoss().on_step_end(ctx)
    assert out.getvalue() == "step 20: loss 0.5000, lr 1.00e-04\n"
    sys.modules.pop("my_callbacks")


def test_the_forecasting_snippet_runs_on_a_finished_run(tmp_path, monkeypatch):
    snippet = _code_block("python", "from kronos_engine import KronosPredictor")
    exp = tmp_path / "outputs" / "demo"
    tok = save_random_tokenizer(tmp_path / "tok")
    run(tiny_cfg(tmp_path, train_type="predictor", exp_dir=str(exp), tokenizer_path=str(tok),
                 max_steps=2, epochs=1))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    _check_forecast_snippet(snippet)


def _check_forecast_snippet(snippet: str) -> None:
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


def _shell(cmd: str, cwd: Path) -> str:
    """Runs one README command as written (`python` is this interpreter; `OVERRIDES`
    appended to training commands); its output, failing with its stderr."""
    argv = shlex.split(cmd)
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    if argv[1] in TRAINING:
        argv += _overrides(argv[1])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"README command failed: {cmd}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _overrides(script: str) -> list[str]:
    """`OVERRIDES`; the sweep keeps its config's 4 demo symbols: the loop's backtest after it
    holds 2 and swaps 1 (3 instruments)."""
    if script == "scripts/sweep.py":
        return [o for o in OVERRIDES if not o.startswith("--demo_symbols=")]
    return OVERRIDES


def _in_order() -> list[tuple[str, str]]:
    """("bash", command) for each command of RUNS and ("python", block), in README order."""
    steps = []
    for kind, body in _blocks():
        if kind == "bash":
            steps += [("bash", cmd) for cmd in _commands(body) if cmd in RUNS]
        elif kind == "python":
            steps.append(("python", body))
    return steps


@pytest.mark.slow
def test_the_readme_runs_in_order(tmp_path, monkeypatch):
    """Every runnable block in README order in one folder: shell commands as processes, the
    Python blocks with exec (my_callbacks.py written as the file it names), each training
    tiny; the timings are printed (`-s`)."""
    pytest.importorskip("matplotlib", reason="--plot and scripts/plot.py need the plot extra")
    cwd = _workdir(tmp_path)
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    timings: dict[str, float] = {}
    for kind, text in _in_order():
        start = time.perf_counter()
        first = text.splitlines()[0]
        if kind == "bash":
            _shell(text, cwd)
        elif first == "# my_callbacks.py":
            (cwd / "my_callbacks.py").write_text(text)
        elif first == "from kronos_engine import KronosPredictor":
            _check_forecast_snippet(text)
        else:
            exec(compile(text, "README.md", "exec"), {})  # noqa: S102 (the README's own code)
        timings[first] = time.perf_counter() - start
    sys.modules.pop("my_callbacks", None)
    for made in ("outputs/demo/forecast.csv", "outputs/demo/forecast.parquet", "compare.png",
                 "outputs/demo/eval/metrics.json", "outputs/api/tokenizer/best", "outputs/ranked/predictor/best",
                 "outputs/tracked/tokenizer/tensorboard", "outputs/two_procs/tokenizer/best"):  # fmt: skip
        assert (cwd / made).exists(), made
    print("\n".join(f"{t:7.1f} s  {cmd}" for cmd, t in timings.items()))

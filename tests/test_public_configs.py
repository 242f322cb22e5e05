"""Coming from the public Kronos scripts (issue 22): `--config` reads the public `finetune_csv`
YAML as it is and the `finetune/config.py` names, names every key it cannot map in one line
with what to use instead, `--device cuda:N` is a device, the `train_sequential.py` flags work,
and params.md's "From the public scripts" tables are the loader's own (`config.public`)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from engine_helpers import only_error_line
from test_faults_bad_input import EXIT_USAGE, _assert_untouched, snapshot

from kronos_engine.cli.pipeline import pipeline_main
from kronos_engine.cli.train import load_config
from kronos_engine.cli.train import main as train_main
from kronos_engine.config import TrainConfig, read_yaml_config
from kronos_engine.config.loading import read_config_layers
from kronos_engine.config.public_doc import markdown_tables
from kronos_engine.data import generate_demo_frames
from kronos_engine.errors import ConfigError
from kronos_engine.models import build_predictor, build_tokenizer
from kronos_engine.models.presets import PREDICTOR_PRESETS, TOKENIZER_PRESETS

REPO = Path(__file__).resolve().parents[1]

# The public finetune_csv/configs/config_ali09988_candle-5min.yaml, key for key and comment for
# comment; only the paths (and the epochs, rates and batch size, to stay small) differ.
PUBLIC_YAML = """\
#This is a template config for custom finetuning kronos on csv data
#这是一份模板config，用于kronos的csv自定义数据微调

data:
  data_path: "{data_path}"
  lookback_window: 512
  predict_window: 48
  max_context: 512
  clip: 5.0
  # dataset split ratio
  train_ratio: 0.9
  val_ratio: 0.1
  test_ratio: 0.0

training:
  # control the training epochs of tokenizer and basemodel
  tokenizer_epochs: 2
  basemodel_epochs: 3
  batch_size: 16
  log_interval: 50
  num_workers: 0
  seed: 42

  tokenizer_learning_rate: 0.0003
  predictor_learning_rate: 0.00002

  adam_beta1: 0.9
  adam_beta2: 0.95
  adam_weight_decay: 0.1

  # gradient accumulation steps for tokenizer training
  accumulation_steps: 1

# model path configuration
model_paths:
  # pretrained model path
  pretrained_tokenizer: "{tokenizer}"
  pretrained_predictor: "{predictor}"

  # experiment name - other paths will be generated based on this
  exp_name: "HK_ali_09988_kline_5min_all"
  base_path: "{base_path}"

  # the following paths will be generated based on exp_name, no need to modify manually
  # way 1: leave empty string, the system will generate the full path
  base_save_path: ""  #  /xxxx/Kronos/finetune_csv/finetuned/{{exp_name}}
  finetuned_tokenizer: ""  # /xxxx/Kronos/finetune_csv/finetuned/{{exp_name}}/tokenizer/best_model

  # way 2: use template string, {{exp_name}} will be replaced with the actual experiment name
  # base_save_path: "/xxxx/Kronos/finetune_csv/finetuned/{{exp_name}}"
  # finetuned_tokenizer: "/xxxx/Kronos/finetune_csv/finetuned/{{exp_name}}/tokenizer/best_model"

  tokenizer_save_name: "tokenizer"
  basemodel_save_name: "basemodel"

experiment:
  name: "kronos_custom_finetune"
  description: "Custom finetune for HK stock data"
  use_comet: false

  # control the training phase
  train_tokenizer: true
  train_basemodel: true

  # if true, skip the existing model training
  skip_existing: false

# device configuration
device:
  use_cuda: true
  device_id: 0

"""

# Small enough for a 2-core CPU: the public 512 + 48 windows, 16-window epochs.
SMALL = ["--lookback_window=32", "--predict_window=4", "--train_samples_per_epoch=16"]
SMALL += ["--val_samples=8", "--progress_bar=false", "--log_interval=1"]


@pytest.fixture(scope="module")
def public_setup(tmp_path_factory) -> dict:
    """A 5-minute CSV (one symbol, as the public HK_ali example), tiny pretrained models in
    the public folder layout, and the public YAML pointing at them."""
    root = tmp_path_factory.mktemp("public")
    (frame,) = generate_demo_frames(1, 700, "5min", seed=7).values()
    csv = root / "HK_ali_09988_kline_5min_all.csv"
    frame.to_csv(csv, index=False)
    torch.manual_seed(0)
    build_tokenizer("tiny").save_pretrained(root / "Kronos-Tokenizer-tiny")
    build_predictor("tiny").save_pretrained(root / "Kronos-tiny")
    text = PUBLIC_YAML.format(
        data_path=csv,
        tokenizer=root / "Kronos-Tokenizer-tiny",
        predictor=root / "Kronos-tiny",
        base_path=f"{root / 'finetuned'}/",
    )
    (root / "config.yaml").write_text(text, encoding="utf-8")
    return {"root": root, "config": root / "config.yaml", "csv": csv}


_one_error = only_error_line


def test_public_finetune_csv_yaml_trains_its_two_stages(public_setup, capsys, caplog):
    """The done-when: the public layout as it is trains the tokenizer and the predictor, each
    with its own epochs and learning rate, read back from each stage's config.yaml."""
    root = public_setup["root"]
    caplog.set_level(logging.INFO, logger="kronos_engine")
    code = pipeline_main([f"--config={public_setup['config']}", *SMALL])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert "the public finetune_csv layout" in caplog.text
    assert "training.basemodel_epochs -> predictor.epochs" in caplog.text
    exp = root / "finetuned" / "HK_ali_09988_kline_5min_all"
    tok = yaml.safe_load((exp / "tokenizer" / "config.yaml").read_text())
    pred = yaml.safe_load((exp / "predictor" / "config.yaml").read_text())
    assert (tok["epochs"], tok["lr"]) == (2, 0.0003)
    assert (pred["epochs"], pred["lr"]) == (3, 0.00002)
    for cfg in (tok, pred):
        assert cfg["data_source"] == "csv" and cfg["data_path"] == str(public_setup["csv"])
        assert cfg["split_ratios"] == [0.9, 0.1, 0.0]
        assert (cfg["seed"], cfg["weight_decay"], cfg["batch_size"]) == (42, 0.1, 16)
        assert cfg["exp_dir"] == str(exp) and cfg["device"] == "auto"
        assert cfg["experiment_name"] == "kronos_custom_finetune" and cfg["freq"] == "5min"
        assert cfg["pretrained_tokenizer"] == str(root / "Kronos-Tokenizer-tiny")
    assert tok["pretrained_predictor"] is None
    assert pred["pretrained_predictor"] == str(root / "Kronos-tiny")
    assert pred["tokenizer_path"] == str(exp / "tokenizer" / "best")  # the fine-tuned one
    # 16 windows an epoch, batch 16: one step per epoch, so the steps are the epochs.
    for stage, steps in (("tokenizer", 2), ("predictor", 3)):
        summary = json.loads((exp / stage / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == steps


def test_skip_basemodel_then_skip_existing(public_setup, tmp_path, caplog):
    """train_sequential.py's flags: `--skip-basemodel` is `--skip-predictor` (logged), and
    `--skip-existing` skips a stage whose best/ exists (logged), training the other."""
    args = [f"--config={public_setup['config']}", *SMALL, f"--exp_dir={tmp_path / 'exp'}"]
    caplog.set_level(logging.INFO, logger="kronos_engine")
    assert pipeline_main([*args, "--skip-basemodel"]) == 0
    assert "--skip-basemodel (train_sequential.py) is --skip-predictor here" in caplog.text
    tok, pred = tmp_path / "exp" / "tokenizer", tmp_path / "exp" / "predictor"
    assert (tok / "best").is_dir() and not pred.exists()
    before = snapshot(tok)
    caplog.clear()
    assert pipeline_main([*args, "--skip-existing"]) == 0
    assert f"skipping the tokenizer stage, {tok / 'best'} exists (--skip-existing)" in caplog.text
    _assert_untouched(before, snapshot(tok))
    assert json.loads((pred / "summary.json").read_text())["status"] == "completed"


def test_public_experiment_switches_steer_the_pipeline(public_setup, tmp_path):
    text = public_setup["config"].read_text(encoding="utf-8")
    text = text.replace("train_basemodel: true", "train_basemodel: false")
    text = text.replace("skip_existing: false", "skip_existing: true")
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    layers = read_config_layers(tmp_path / "c.yaml")
    assert layers.pipeline == {"skip_predictor": True, "skip_existing": True}


# The public finetune_csv keys written flat (the reruns), a typo and public names with
# no key here: one line names them all, each with the key to use.
FLAT_PUBLIC = {
    "train_ratio": "use split_ratios",
    "exp_name": "use exp_dir",
    "base_path": "use exp_dir",
    "basemodel_epochs": "use epochs in the predictor: section",
    "use_cuda": "use device",
    "device_id": "use device",
    "learning_rate": "use lr",
    "batch_sise": "did you mean 'batch_size'?",
    "inference_T": "use scripts/predict.py --T",
    "feature_list": "no equivalent: the six features",
    "comet_config": "COMET_API_KEY",
}


def test_unknown_public_keys_are_named_at_once_with_the_key_to_use(tmp_path, capsys):
    path = tmp_path / "flat.yaml"
    path.write_text("".join(f"{key}: 1\n" for key in FLAT_PUBLIC))
    before = snapshot(tmp_path)
    assert train_main(["--train_type=tokenizer", f"--config={path}"]) == EXIT_USAGE
    line = _one_error(capsys)
    assert f"{len(FLAT_PUBLIC)} unknown keys" in line
    parts = {}
    for number, (key, hint) in enumerate(FLAT_PUBLIC.items(), start=1):
        part = re.search(rf"'{key}' \(line {number}; (.*?)\)(, '| \(see params)", line)
        assert part and hint in part.group(1), (key, line)
        parts[key] = part.group(1)
    # Never a different concept (the hints the issue found: difflib's nearest names).
    for key, wrong in (("exp_name", "experiment_name"), ("train_ratio", "tracking_uri")):
        assert wrong not in parts[key], parts[key]
    assert "data_path" not in parts["base_path"] and "bad_data" not in parts["batch_sise"]
    _assert_untouched(before, snapshot(tmp_path))


def test_public_sections_name_what_has_no_equivalent(tmp_path, public_setup):
    text = public_setup["config"].read_text(encoding="utf-8")
    text = text.replace('tokenizer_save_name: "tokenizer"', 'tokenizer_save_name: "tok"')
    text = text.replace("  use_comet: false", "  use_comet: false\n  pre_trained: false")
    text = text.replace("  device_id: 0", "  device_id: 0\n  gpu: 1\ndistributed:\n  use_ddp: true")
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_config_layers(path)
    message = str(info.value)
    assert "4 unknown keys" in message
    assert "'model_paths.tokenizer_save_name' (line 53; no equivalent: the stage writes to " in (
        message
    )
    assert "'experiment.pre_trained' (line 60; no equivalent as a switch: drop " in message
    assert "'device.gpu' (line 73)" in message
    assert "'distributed.use_ddp' (line 75; use --nprocs N (or torchrun))" in message


def test_finetune_config_py_names_are_read_as_ours(tmp_path):
    path = tmp_path / "qlib.yaml"
    path.write_text(
        "qlib_data_path: ~/.qlib/qlib_data/cn_data\ninstrument: csi300\nn_train_iter: 100000\n"
        "n_val_iter: 20000\ntokenizer_learning_rate: 0.0002\npredictor_learning_rate: 0.00004\n"
        "adam_weight_decay: 0.05\naccumulation_steps: 2\nbatch_size: 50\nsave_path: ./outputs\n"
        "dataset_path: ./data/processed_datasets\ncomet_name: demo\nlookback_window: 90\n"
    )
    tok = load_config(["--train_type=tokenizer", f"--config={path}"])
    pred = load_config(["--train_type=predictor", f"--config={path}"])
    for cfg in (tok, pred):
        assert (cfg.data_source, cfg.data_path) == ("qlib", "~/.qlib/qlib_data/cn_data")
        assert (cfg.instruments, cfg.train_samples_per_epoch, cfg.val_samples) == (
            "csi300",
            100000,
            20000,
        )
        assert (cfg.weight_decay, cfg.exp_dir, cfg.run_name) == (0.05, "./outputs", "demo")
        assert cfg.cache_dir == "./data/processed_datasets"
    assert (tok.lr, pred.lr) == (0.0002, 0.00004)
    # The public tokenizer splits each 50-window batch into 2: one step still sees 50 windows.
    assert (tok.grad_accum_steps, tok.batch_size) == (2, 25)
    assert (pred.grad_accum_steps, pred.batch_size) == (1, 50)


def test_a_public_value_of_the_wrong_type_names_its_line(tmp_path, public_setup):
    text = public_setup["config"].read_text(encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("train_ratio: 0.9", "train_ratio: most"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml:11: data.train_ratio: expected a number"):
        read_config_layers(path)
    path.write_text(text.replace("batch_size: 16", "batch_size: many"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml:19: training.batch_size -> batch_size: exp"):
        read_config_layers(path)


def test_a_key_set_by_a_public_name_and_ours_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("weight_decay: 0.1\nadam_weight_decay: 0.2\n")
    with pytest.raises(ConfigError, match="'weight_decay' is set twice, by 'weight_decay'"):
        read_yaml_config(path)


def test_device_names_one_gpu(tmp_path, capsys, public_setup):
    """`cuda:N` is a device for training as for forecasting; a machine without it stops the
    command before any work, and a public `device_id: 2` is `cuda:2`."""
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match="device: 'tpu' is not allowed; choose one of auto, cpu"):
        TrainConfig(device="tpu").validate()
    text = (
        public_setup["config"].read_text(encoding="utf-8").replace("device_id: 0", "device_id: 2")
    )
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    assert read_yaml_config(tmp_path / "c.yaml")["device"] == "cuda:2"
    if torch.cuda.device_count() >= 8:
        pytest.skip("a machine with 8 GPUs has cuda:7")
    before = snapshot(tmp_path)
    exp = tmp_path / "exp"
    assert pipeline_main(["--device=cuda:7", f"--exp_dir={exp}", "--demo_length=200"]) == 2
    assert "device: 'cuda:7'" in _one_error(capsys)
    args = ["--train_type=tokenizer", "--device=cuda:7", f"--exp_dir={exp}"]
    assert train_main(args) == EXIT_USAGE
    assert "device: 'cuda:7'" in _one_error(capsys)
    _assert_untouched(before, snapshot(tmp_path))


def test_params_md_tables_are_the_loaders(capsys):
    """params.md's "From the public scripts" is `markdown_tables()` verbatim, and its
    preset table pairs the presets whose bits agree."""
    text = (REPO / "params.md").read_text(encoding="utf-8")
    assert markdown_tables() in text
    section = text.split("\n## Which presets pair\n", 1)[1].split("\n## ", 1)[0]
    for name, tok in TOKENIZER_PRESETS.items():
        bits = (tok["s1_bits"], tok["s2_bits"])
        fits = [
            p for p, cfg in PREDICTOR_PRESETS.items() if (cfg["s1_bits"], cfg["s2_bits"]) == bits
        ]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}`"))
        assert f"| {bits[0]} + {bits[1]} |" in row
        assert re.findall(r"`(\w+)`", row.split("|")[3]) == fits

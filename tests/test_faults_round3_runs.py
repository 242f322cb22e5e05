"""Bad input, third round (issue 19): a finished run is read for what it recorded, never guessed.

- `best/` records the fingerprint of the tokenizer the predictor trained with
  (`tokenizer_fingerprint.json`); forecasting it with another tokenizer is refused.
- A predictor folder with no kept tokenizer and no config saying which one it read is refused,
  instead of being paired with whatever lies at `./outputs/demo/tokenizer/best`.
- A recorded value of the wrong type (`clip: abc`) or a config.yaml that is not UTF-8 is one
  line naming the file and key, exit code 2.
"""

from __future__ import annotations

import json
import shutil

import pytest
import test_faults_bad_input_round3 as round3
from engine_helpers import save_random_tokenizer
from round3_helpers import refused as _refused

from kronos_engine.cli.backtest import main as backtest_main
from kronos_engine.cli.evaluate import main as evaluate_main
from kronos_engine.cli.predict import main as predict_main
from kronos_engine.errors import ForecastError
from kronos_engine.forecasting import KronosPredictor
from kronos_engine.models import KronosTokenizer
from kronos_engine.models.fingerprint import TOKENIZER_RECORD, weights_fingerprint

finished, case = round3.finished, round3.case  # the fixtures
WINDOW = ["--lookback", "30", "--pred_len", "3"]
FAST_EVAL = ["--no_model", "--max_origins", "3", "--no_plots", "--no_progress"]


def test_best_records_the_fingerprint_of_the_tokenizer_it_trained_with(finished):
    run = finished / "exp" / "predictor"
    record = json.loads((run / "best" / TOKENIZER_RECORD).read_text())
    kept = KronosTokenizer.from_pretrained(run / "frozen_tokenizer")
    source = KronosTokenizer.from_pretrained(finished / "tok")
    assert record["sha256"] == weights_fingerprint(kept) == weights_fingerprint(source)
    assert record["source"] == str(finished / "tok")
    # The public layout of best/ still loads (the record is an extra file).
    assert {"config.json", "model.safetensors", TOKENIZER_RECORD} <= {
        p.name for p in (run / "best").iterdir()
    }
    KronosPredictor.from_run(finished / "exp", device="cpu")


def test_forecasting_with_another_tokenizer_is_refused(case, capsys):
    other = save_random_tokenizer(case / "other_tok", seed=7)
    best = case / "exp" / "predictor" / "best"
    argv = ["--tokenizer", str(other), "--predictor", str(best), "--top_k=1", *WINDOW,
            "--data_path", str(case / "klines"), "--output", str(case / "f.csv")]  # fmt: skip
    line = _refused(capsys, case, predict_main, argv, str(other), "not the tokenizer")
    assert "frozen_tokenizer" in line
    with pytest.raises(ForecastError, match="not the tokenizer the predictor"):
        KronosPredictor.from_pretrained(other, best, device="cpu")
    # The tokenizer it trained with (its kept copy) is accepted.
    ok = ["--tokenizer", str(case / "exp" / "predictor" / "frozen_tokenizer"),
          "--predictor", str(best), "--top_k=1", *WINDOW, "--data_path", str(case / "klines"),
          "--output", str(case / "f.csv")]  # fmt: skip
    assert predict_main(ok) == 0 and (case / "f.csv").is_file()


def test_evaluating_another_predictor_with_the_wrong_tokenizer_is_refused(case, capsys):
    """`evaluate --compare <predictor folder>` reads it with the evaluated run's tokenizer: a
    predictor trained on another tokenizer is refused, not scored."""
    foreign = case / "foreign_best"
    shutil.copytree(case / "exp" / "predictor" / "best", foreign)
    record = json.loads((foreign / TOKENIZER_RECORD).read_text())
    record["sha256"] = "0" * 64
    (foreign / TOKENIZER_RECORD).write_text(json.dumps(record))
    argv = ["--exp_dir", str(case / "exp"), "--compare", str(foreign), "--max_origins", "2",
            "--no_plots", "--no_progress", "--output", str(case / "ev")]  # fmt: skip
    _refused(capsys, case, evaluate_main, argv, "not the tokenizer the predictor")


def test_a_predictor_without_a_known_tokenizer_is_never_paired_by_guess(case, capsys, monkeypatch):
    # A best/ copied away from its run, next to a default experiment tokenizer in the cwd.
    copied = case / "copied_run"
    shutil.copytree(case / "exp" / "predictor" / "best", copied / "best")
    save_random_tokenizer(case / "outputs" / "demo" / "tokenizer" / "best", seed=3)
    monkeypatch.chdir(case)
    argv = ["--exp_dir", str(copied), "--top_k=1", "--data_path", str(case / "klines"),
            "--output", str(case / "f.csv")]  # fmt: skip
    _refused(capsys, case, predict_main, argv, str(copied), "cannot tell which tokenizer")


@pytest.mark.parametrize("text", ["clip: abc\n", "lookback_window: [1, 2]\n"])
def test_a_recorded_value_of_the_wrong_type_is_one_line(case, capsys, text):
    config = case / "exp" / "predictor" / "config.yaml"
    config.write_text(config.read_text() + text)  # the later key wins in YAML
    key = text.split(":")[0]
    argv = ["--exp_dir", str(case / "exp"), "--top_k=1", "--output", str(case / "f.csv")]
    _refused(capsys, case, predict_main, argv, str(config), key)
    argv = ["--exp_dir", str(case / "exp"), *FAST_EVAL, "--output", str(case / "ev")]
    _refused(capsys, case, evaluate_main, argv, str(config), key)


def test_a_run_config_that_is_not_utf8_is_one_line(case, capsys):
    config = case / "exp" / "predictor" / "config.yaml"
    config.write_bytes(b"\xff\xfe garbage \x80\x81\n")
    argv = ["--exp_dir", str(case / "exp"), "--top_k=1", "--output", str(case / "f.csv")]
    _refused(capsys, case, predict_main, argv, str(config), "unreadable run config")
    _refused(capsys, case, backtest_main, ["--exp_dir", str(case / "exp")], str(config))


def test_the_fingerprint_survives_a_save_and_load(tmp_path):
    tok = KronosTokenizer.from_pretrained(save_random_tokenizer(tmp_path / "t", seed=1))
    tok.save_pretrained(tmp_path / "copy")
    again = KronosTokenizer.from_pretrained(tmp_path / "copy")
    assert weights_fingerprint(again) == weights_fingerprint(tok)
    other = KronosTokenizer.from_pretrained(save_random_tokenizer(tmp_path / "u", seed=2))
    assert weights_fingerprint(other) != weights_fingerprint(tok)


def test_lora_base_fingerprint_is_the_shared_one():
    """One fingerprint for both pairings: the LoRA checkpoint's base record is the same hash
    without the adapter tensors (old LoRA checkpoints stay resumable)."""
    from kronos_engine.models.adapters import base_fingerprint
    from kronos_engine.models.presets import build_tokenizer

    model = build_tokenizer("tiny")
    assert base_fingerprint(model) == weights_fingerprint(model)

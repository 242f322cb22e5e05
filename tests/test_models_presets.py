"""Models built from the public configs have the public key sets, shapes and sizes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from kronos_engine.models import (
    Kronos,
    KronosTokenizer,
    build_predictor,
    build_tokenizer,
    count_parameters,
    predictor_config,
    tokenizer_config,
)

MANIFESTS = [
    "Kronos-Tokenizer-base",
    "Kronos-base",
    "Kronos-small",
    "Kronos-small-fixed-time-embedding",
    "predictor_tiny",
    "tokenizer_tiny",
]
CLASSES = {"Kronos": Kronos, "KronosTokenizer": KronosTokenizer}
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def load_manifest(reference_dir: Path, name: str) -> dict:
    return json.loads((reference_dir / "manifests" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_keys_shapes_dtypes_and_parameter_count(reference_dir, name):
    manifest = load_manifest(reference_dir, name)
    with torch.device("meta"):  # shapes only: no memory, no init cost for Kronos-base
        model = CLASSES[manifest["class"]](**manifest["config"])
    state = model.state_dict()
    expected = manifest["state_dict"]
    assert sorted(state) == sorted(expected)
    for key, entry in expected.items():
        assert list(state[key].shape) == entry["shape"], key
        assert state[key].dtype == DTYPES[entry["dtype"]], key
    assert count_parameters(model) == manifest["n_params"]
    assert model.config == manifest["config"]


@pytest.mark.parametrize(
    "preset, manifest", [("tiny", "tokenizer_tiny"), ("base", "Kronos-Tokenizer-base")]
)
def test_tokenizer_presets_match_public_configs(reference_dir, preset, manifest):
    assert tokenizer_config(preset) == load_manifest(reference_dir, manifest)["config"]


@pytest.mark.parametrize(
    "preset, manifest",
    [("tiny", "predictor_tiny"), ("small", "Kronos-small"), ("base", "Kronos-base")],
)
def test_predictor_presets_match_public_configs(reference_dir, preset, manifest):
    assert predictor_config(preset) == load_manifest(reference_dir, manifest)["config"]


def test_tiny_presets_match_reference_checkpoint_configs(reference_dir):
    for preset, folder, config_fn in [
        ("tiny", "tokenizer_tiny", tokenizer_config),
        ("tiny", "predictor_tiny", predictor_config),
    ]:
        on_disk = json.loads((reference_dir / folder / "config.json").read_text())
        assert config_fn(preset) == on_disk


def test_mini_preset_is_public_kronos_mini():
    mini, small = predictor_config("mini"), predictor_config("small")
    assert {k: mini[k] for k in ("s1_bits", "s2_bits", "n_layers", "d_model", "n_heads")} == {
        "s1_bits": 10,
        "s2_bits": 10,
        "n_layers": 4,
        "d_model": 256,
        "n_heads": 4,
    }
    assert mini["ff_dim"] == 512 and mini["learn_te"] is True
    dropouts = ("ffn_dropout_p", "attn_dropout_p", "resid_dropout_p", "token_dropout_p")
    assert {k: mini[k] for k in dropouts} == {k: small[k] for k in dropouts}


def test_preset_configs_are_copies():
    config = predictor_config("tiny")
    config["d_model"] = 1
    assert predictor_config("tiny")["d_model"] == 32


def test_unknown_preset_and_override_are_rejected():
    with pytest.raises(ValueError, match="unknown predictor preset 'huge'"):
        predictor_config("huge")
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        tokenizer_config("small")
    with pytest.raises(ValueError, match="d_modle"):
        build_predictor("tiny", d_modle=64)


def test_build_logs_preset_and_parameter_count(caplog):
    with caplog.at_level(logging.INFO, logger="kronos_engine"):
        tok = build_tokenizer("tiny")
        pred = build_predictor("tiny", ffn_dropout_p=0.1)
    assert pred.ffn_dropout_p == 0.1
    messages = [r.getMessage() for r in caplog.records if r.name == "kronos_engine"]
    assert any("preset=tiny" in m and str(count_parameters(tok)) in m for m in messages)
    assert any("Kronos preset=tiny" in m and str(count_parameters(pred)) in m for m in messages)


def test_count_parameters_trainable_only_skips_fixed_time_table():
    fixed = build_predictor("tiny", learn_te=False)
    frozen = sum(p.numel() for p in fixed.time_emb.parameters())
    assert frozen == (60 + 24 + 7 + 32 + 13) * 32
    assert count_parameters(fixed, trainable_only=True) == count_parameters(fixed) - frozen


def test_from_scratch_initialisation_is_sensible():
    torch.manual_seed(0)
    pred = build_predictor("tiny")
    assert torch.equal(pred.norm.weight, torch.ones(32))
    assert torch.count_nonzero(pred.head.proj_s1.bias) == 0
    std = pred.embedding.emb_s1.weight.std().item()
    assert 0.5 * 32**-0.5 < std < 1.5 * 32**-0.5
    expected_inv_freq = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(pred.transformer[0].self_attn.rotary.inv_freq, expected_inv_freq)
    tok = build_tokenizer("tiny")
    assert tok.tokenizer.bsq.basis.tolist() == [128, 64, 32, 16, 8, 4, 2, 1]
    assert tok.tokenizer.bsq.group_basis.tolist() == [8, 4, 2, 1]


def test_fixed_time_embedding_is_frozen_sinusoid():
    pred = build_predictor("tiny", learn_te=False)
    table = pred.time_emb.hour_embed.emb.weight
    assert not table.requires_grad
    pos, i = 5, 3  # column 2*i holds sin(pos / 10000^(2i/d)), column 2*i+1 the cosine
    angle = pos / 10000 ** (2 * i / 32)
    assert table[pos, 2 * i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-6)

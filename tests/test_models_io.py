"""Checkpoint directories: strict loading, bit-exact round trips and one-line errors."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kronos_engine.errors import CheckpointError
from kronos_engine.models import Kronos, KronosTokenizer, build_predictor, build_tokenizer
from kronos_engine.models.io import CONFIG_NAME, WEIGHTS_NAME


def copy_checkpoint(reference_dir: Path, name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(reference_dir / name, target)
    target.chmod(0o755)
    for file in target.iterdir():
        file.chmod(0o644)  # the reference files are read-only
    return target


def expect_error(cls: type, path: Path | str, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        cls.from_pretrained(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize("cls, preset", [(KronosTokenizer, "tiny"), (Kronos, "tiny")])
def test_save_load_round_trip_is_bit_exact(tmp_path, cls, preset):
    torch.manual_seed(0)
    model = build_tokenizer(preset) if cls is KronosTokenizer else build_predictor(preset)
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text()) == model.config
    loaded = cls.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype
        assert torch.equal(restored[key], tensor), key


def test_reference_checkpoint_resaves_identically(reference_dir, tmp_path):
    model = Kronos.from_pretrained(str(reference_dir / "predictor_tiny"))
    model.save_pretrained(tmp_path / "again")
    original = load_file(reference_dir / "predictor_tiny" / WEIGHTS_NAME)
    resaved = load_file(tmp_path / "again" / WEIGHTS_NAME)
    assert original.keys() == resaved.keys()
    assert all(torch.equal(original[k], resaved[k]) for k in original)
    on_disk = json.loads((reference_dir / "predictor_tiny" / CONFIG_NAME).read_text())
    assert json.loads((tmp_path / "again" / CONFIG_NAME).read_text()) == on_disk


def test_fixed_time_embedding_round_trip(tmp_path):
    model = build_predictor("tiny", learn_te=False)
    model.save_pretrained(tmp_path)
    loaded = Kronos.from_pretrained(tmp_path)
    table = loaded.time_emb.minute_embed.emb.weight
    assert not table.requires_grad
    assert torch.equal(table, model.time_emb.minute_embed.emb.weight)


def test_config_overrides_keep_weights(reference_dir):
    model = Kronos.from_pretrained(reference_dir / "predictor_tiny", ffn_dropout_p=0.1)
    assert model.ffn_dropout_p == 0.1 and model.config["ffn_dropout_p"] == 0.1
    with pytest.raises(CheckpointError, match="unknown config override"):
        Kronos.from_pretrained(reference_dir / "predictor_tiny", dropout=0.1)


def test_shape_mismatch(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "tokenizer_tiny", tmp_path)
    state = load_file(ckpt / WEIGHTS_NAME)
    state["embed.weight"] = torch.zeros(32, 7)
    save_file(state, ckpt / WEIGHTS_NAME)
    expect_error(
        KronosTokenizer,
        ckpt,
        WEIGHTS_NAME,
        "shape mismatch for key 'embed.weight'",
        "expected (32, 6), got (32, 7)",
    )


def test_missing_key(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "predictor_tiny", tmp_path)
    state = load_file(ckpt / WEIGHTS_NAME)
    del state["transformer.0.self_attn.rotary.inv_freq"]
    save_file(state, ckpt / WEIGHTS_NAME)
    expect_error(Kronos, ckpt, WEIGHTS_NAME, "missing key(s) 'transformer.0.self_attn.rotary")


def test_unexpected_key(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "predictor_tiny", tmp_path)
    state = load_file(ckpt / WEIGHTS_NAME)
    state["head.extra.weight"] = torch.zeros(2)
    save_file(state, ckpt / WEIGHTS_NAME)
    expect_error(Kronos, ckpt, WEIGHTS_NAME, "unexpected key(s) 'head.extra.weight'")


def test_checkpoint_of_the_other_class_is_rejected(reference_dir):
    expect_error(Kronos, reference_dir / "tokenizer_tiny", CONFIG_NAME, "unknown config key(s)")


@pytest.mark.parametrize("missing", [CONFIG_NAME, WEIGHTS_NAME])
def test_missing_file(reference_dir, tmp_path, missing):
    ckpt = copy_checkpoint(reference_dir, "tokenizer_tiny", tmp_path)
    (ckpt / missing).unlink()
    expect_error(KronosTokenizer, ckpt, str(ckpt / missing), f"missing {missing}")


def test_truncated_weights(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "tokenizer_tiny", tmp_path)
    data = (ckpt / WEIGHTS_NAME).read_bytes()
    (ckpt / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    expect_error(KronosTokenizer, ckpt, WEIGHTS_NAME, "corrupt or truncated safetensors")


def test_garbage_weights(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "tokenizer_tiny", tmp_path)
    (ckpt / WEIGHTS_NAME).write_bytes(b"\x80\x04not a safetensors file")
    expect_error(KronosTokenizer, ckpt, WEIGHTS_NAME, "corrupt or truncated safetensors")


def test_unknown_and_missing_config_keys(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "predictor_tiny", tmp_path)
    config = json.loads((ckpt / CONFIG_NAME).read_text())
    (ckpt / CONFIG_NAME).write_text(json.dumps({**config, "use_flash": True}))
    expect_error(Kronos, ckpt, CONFIG_NAME, "unknown config key(s) 'use_flash'")
    del config["learn_te"]
    (ckpt / CONFIG_NAME).write_text(json.dumps(config))
    expect_error(Kronos, ckpt, CONFIG_NAME, "missing config key(s) 'learn_te'")


def test_invalid_json_config(reference_dir, tmp_path):
    ckpt = copy_checkpoint(reference_dir, "predictor_tiny", tmp_path)
    (ckpt / CONFIG_NAME).write_text("{not json")
    expect_error(Kronos, ckpt, CONFIG_NAME, "unreadable JSON")


def test_file_instead_of_directory(reference_dir):
    expect_error(Kronos, reference_dir / "SPEC.md", "expected a checkpoint directory")


def test_hub_id_without_huggingface_hub(monkeypatch, tmp_path):
    """A non-existent path is a repo id; without huggingface_hub the error says what to do."""
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name == "huggingface_hub" or name.startswith("huggingface_hub."):
            raise ImportError("No module named 'huggingface_hub'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    monkeypatch.chdir(tmp_path)  # make sure the id cannot resolve to a local folder
    message = expect_error(Kronos, "NeoQuasar/Kronos-small", "'NeoQuasar/Kronos-small'")
    assert "install" in message and "huggingface_hub" in message
    assert "local path" in message


def test_hub_download_failure_is_reported(monkeypatch, tmp_path):
    """An installed hub client that cannot download (offline) gives the same advice."""
    import sys
    import types

    def offline(**kwargs):
        raise OSError("network is unreachable\nretry later")

    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = offline
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.chdir(tmp_path)
    message = expect_error(Kronos, "NeoQuasar/Kronos-small", "could not be downloaded")
    assert "network is unreachable retry later" in message and "local path" in message


def test_hub_download_is_used_when_available(reference_dir, monkeypatch, tmp_path):
    import sys
    import types

    calls = []

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(reference_dir / "predictor_tiny")

    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.chdir(tmp_path)
    model = Kronos.from_pretrained("NeoQuasar/Kronos-tiny", revision="main")
    assert model.config["d_model"] == 32
    assert calls[0]["repo_id"] == "NeoQuasar/Kronos-tiny" and calls[0]["revision"] == "main"


def test_missing_local_directory_is_not_sent_to_the_hub(tmp_path):
    expect_error(Kronos, tmp_path / "runs" / "exp1" / "ckpt", "no such checkpoint directory")
    expect_error(Kronos, "./ckpt", "no such checkpoint directory")

"""Pretrained checkpoint directories: `config.json` + `model.safetensors`.

This is the layout of the public Kronos checkpoints (written by huggingface_hub's
`PyTorchModelHubMixin`), so directories saved here load in the public code and vice versa.
Weights are read through safetensors only, never through pickle. Every failure of
`from_pretrained` raises a `CheckpointError` whose one-line message names the file and the problem.

`save_model` / `save_resumable_model` / `load_model_weights` are the one path by which a training
run saves and restores its model (`best/`, `checkpoints/step_<N>/`), LoRA included.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kronos_engine.errors import CheckpointError
from kronos_engine.models.adapters import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    is_adapted,
    load_adapter,
    merged_copy,
    save_adapter,
    save_adapter_checkpoint,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_MAX_LISTED_KEYS = 5
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")

M = TypeVar("M", bound="PretrainedMixin")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f" (and {more} more)" if more > 0 else "")


def constructor_keys(cls: type) -> tuple[str, ...]:
    """The keyword names of `cls.__init__`: the only keys a config.json may hold."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD)


def resolve_checkpoint_dir(path_or_repo_id: str | os.PathLike[str], revision: str | None) -> Path:
    """A local directory as is; a string shaped like `namespace/name` that is not an existing
    path is a Hugging Face Hub repo id; anything else is a missing directory."""
    path = Path(path_or_repo_id)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"{path}: is a file, expected a checkpoint directory holding "
                f"{CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        return path
    if not _REPO_ID.fullmatch(str(path_or_repo_id)):
        raise CheckpointError(f"{path}: no such checkpoint directory")
    return _download_from_hub(str(path_or_repo_id), revision)


def _download_from_hub(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{repo_id!r} is not a local directory and huggingface_hub is not installed: "
            f"install it (pip install huggingface_hub) to download from the Hugging Face Hub, "
            f"or download the checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME}) yourself and "
            f"pass its local path"
        ) from None
    try:
        local = snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
        )
    except Exception as exc:  # offline, unknown repo, auth: all end the same way for the user
        raise CheckpointError(
            f"{repo_id!r} is not a local directory and could not be downloaded from the "
            f"Hugging Face Hub ({type(exc).__name__}: {_one_line(exc)}); download the "
            f"checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME}) and pass its local path"
        ) from exc
    return Path(local)


def read_config(directory: Path, cls: type) -> dict[str, Any]:
    """Read config.json and check that it names exactly the constructor keywords of `cls`."""
    file = directory / CONFIG_NAME
    if not file.is_file():
        raise CheckpointError(f"{file}: missing {CONFIG_NAME}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: unreadable JSON ({_one_line(exc)})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(config).__name__}")
    expected = constructor_keys(cls)
    unknown = sorted(set(config) - set(expected))
    if unknown:
        raise CheckpointError(
            f"{file}: unknown config key(s) {_list_keys(unknown)} for {cls.__name__}"
        )
    missing = [k for k in expected if k not in config]
    if missing:
        raise CheckpointError(
            f"{file}: missing config key(s) {_list_keys(missing)} for {cls.__name__}"
        )
    return config


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Load tensors with safetensors (no pickle); any decoding failure is reported as corrupt."""
    if not file.is_file():
        raise CheckpointError(f"{file}: missing {WEIGHTS_NAME}")
    try:
        return load_file(str(file))
    except Exception as exc:  # safetensors raises its own error type for bad headers/sizes
        raise CheckpointError(
            f"{file}: corrupt or truncated safetensors file ({_one_line(exc)})"
        ) from exc


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], file: Path
) -> None:
    """Fail on missing keys, unexpected keys and shape mismatches, in that order."""
    missing = [k for k in expected if k not in found]
    if missing:
        raise CheckpointError(f"{file}: missing key(s) {_list_keys(missing)}")
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise CheckpointError(f"{file}: unexpected key(s) {_list_keys(unexpected)}")
    for key, tensor in expected.items():
        got = tuple(found[key].shape)
        if tuple(tensor.shape) != got:
            raise CheckpointError(
                f"{file}: shape mismatch for key {key!r}: expected {tuple(tensor.shape)}, got {got}"
            )


def load_pretrained(
    cls: type[M],
    path_or_repo_id: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    **config_overrides: Any,
) -> M:
    """Build `cls` from config.json (plus overrides, e.g. dropouts) and load strictly."""
    directory = resolve_checkpoint_dir(path_or_repo_id, revision)
    config = read_config(directory, cls)
    unknown = sorted(set(config_overrides) - set(constructor_keys(cls)))
    if unknown:
        raise CheckpointError(
            f"unknown config override(s) {_list_keys(unknown)} for {cls.__name__}"
        )
    config.update(config_overrides)
    weights_file = directory / WEIGHTS_NAME
    state = read_state_dict(weights_file)
    try:
        model = cls(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: invalid config ({_one_line(exc)})"
        ) from exc
    check_state_dict(model.state_dict(), state, weights_file)
    model.load_state_dict(state, strict=True)
    if device is not None:
        model.to(device)
    return model.eval()


def save_pretrained(model: PretrainedMixin, path: str | os.PathLike[str]) -> Path:
    """Write config.json (constructor kwargs) and model.safetensors (the state dict)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(model.config, indent=2, sort_keys=True) + "\n"
    (directory / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


class PretrainedMixin(nn.Module):
    """`from_pretrained` / `save_pretrained` for models whose constructor kwargs are the config.

    Subclasses call `self._store_config(locals())` in `__init__`.
    """

    _config: dict[str, Any]

    def _store_config(self, values: Mapping[str, Any]) -> None:
        self._config = {k: values[k] for k in constructor_keys(type(self))}

    @property
    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (a copy): what config.json holds."""
        return dict(self._config)

    @classmethod
    def from_pretrained(
        cls: type[M],
        path_or_repo_id: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        **config_overrides: Any,
    ) -> M:
        """Load a checkpoint directory (or a Hub repo id when huggingface_hub is installed).

        The model is returned in eval mode; `config_overrides` replace config.json values
        (for instance larger dropouts for fine-tuning) but cannot change any shape.
        """
        return load_pretrained(
            cls, path_or_repo_id, device=device, revision=revision, **config_overrides
        )

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write the directory layout that `from_pretrained` and the public code read."""
        return save_pretrained(self, path)


# ---------------------------------------------------------------- trained models of a run


def save_model(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """The one way a run saves a model (`best/`, checkpoints): the public layout when the model
    supports it (`save_pretrained`), else a plain safetensors state dict. A LoRA model is saved
    merged (a plain model in the public layout) plus its adapter in `adapter/` (peft's
    layout)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if is_adapted(model):
        save_model(merged_copy(model), directory)
        save_adapter(model, directory / ADAPTER_DIR)
    elif hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
    return directory


def save_resumable_model(model: nn.Module, directory: Path) -> None:
    """A checkpoint's model part: `save_model`, or for a LoRA model the adapter alone with the
    frozen base's fingerprint (resume rebuilds the base from the config)."""
    if is_adapted(model):
        save_adapter_checkpoint(model, directory)
    else:
        save_model(model, directory)


def load_model_weights(model: nn.Module, directory: Path) -> None:
    """Load what `save_resumable_model` wrote into the built `model`, strictly. Raises
    `RuntimeError` (from torch or peft) when the weights do not fit."""
    if is_adapted(model):
        load_adapter(model, directory)
        return
    if (directory / ADAPTER_WEIGHTS).is_file():
        raise RuntimeError(
            "the checkpoint holds LoRA adapters: resume it with finetune_method=lora"
        )
    state = load_file(str(directory / WEIGHTS_NAME))
    model.load_state_dict(state, strict=True)

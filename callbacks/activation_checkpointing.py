"""Recompute transformer-block activations in backward to save memory on long contexts."""

from __future__ import annotations

from kronos_engine.callback import TrainCallback
from kronos_engine.context import TrainContext
from kronos_engine.registry import CALLBACKS


@CALLBACKS.register("activation_checkpointing")
class ActivationCheckpointing(TrainCallback):
    """Switches the model's block checkpointing on; RNG state is preserved, so dropout masks and
    therefore losses are the same as without it."""

    role = "model_setup"

    def on_train_begin(self, ctx: TrainContext) -> None:
        model = ctx.unwrapped_model
        if not hasattr(model, "set_activation_checkpointing"):
            raise TypeError(
                f"activation_checkpointing: {type(model).__name__} has no "
                "set_activation_checkpointing(enabled) method"
            )
        model.set_activation_checkpointing(True)

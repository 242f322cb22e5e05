"""Run one training job from a JSON config; used by the distributed tests under torchrun.

Writes `<output_dir>/final.safetensors` (rank 0) and `<output_dir>/losses_rank<r>.json`.
"""

from __future__ import annotations

import json
import sys

from safetensors.torch import save_file
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from kronos_engine import TrainCallback, TrainConfig, TrainContextBuilder, Trainer


class LossLog(TrainCallback):
    """Records the global loss per step and on which micro-batches DDP all-reduced gradients."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.micro = 0
        self.allreduce_micro: set[int] = set()

    def on_train_begin(self, ctx) -> None:
        if isinstance(ctx.model, DistributedDataParallel):

            def hook(state, bucket):
                self.allreduce_micro.add(self.micro)
                return allreduce_hook(None, bucket)

            ctx.model.register_comm_hook(None, hook)

    def on_batch_begin(self, ctx, batch) -> None:
        self.micro += 1

    def on_step_end(self, ctx) -> None:
        self.losses.append(ctx.last_loss)


def main(path: str) -> None:
    cfg = TrainConfig.from_dict(json.loads(open(path).read()))
    log = LossLog()
    ctx = TrainContextBuilder(cfg).with_callbacks(log).build()
    Trainer(ctx).fit()
    out = ctx.output_dir
    (out / f"losses_rank{ctx.rank}.json").write_text(
        json.dumps(
            {
                "losses": log.losses,
                "val": ctx.val_metrics,
                "world": ctx.world_size,
                "allreduce_micro": sorted(log.allreduce_micro),
                "micro_batches": log.micro,
            }
        )
    )
    if ctx.is_main:
        state = {
            k: v.detach().cpu().contiguous() for k, v in ctx.unwrapped_model.state_dict().items()
        }
        save_file(state, str(out / "final.safetensors"))
    executor = ctx.executor
    del ctx  # the DDP model holds the process group: drop it before the executor closes it
    executor.close()


if __name__ == "__main__":
    main(sys.argv[1])

"""One client's LoRA training pass, shared by the LoRA-based algorithms."""
from __future__ import annotations

import torch

from fedsim.algorithms.base import Arrays, ClientContext
from fedsim.models.lora import get_adapter, set_adapter
from fedsim.rng import seed_torch_global, torch_stream
from fedsim.train.batching import encode_for_training
from fedsim.train.local import TrainStats, make_optimizer, train_steps


def _detached_state(state: dict) -> dict:
    """A copy of an optimizer state dict whose tensors no longer alias the optimizer's."""
    return {
        "state": {k: {n: (v.detach().clone() if torch.is_tensor(v) else v) for n, v in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": [dict(group) for group in state["param_groups"]],
    }


def train_adapter(ctx: ClientContext, start: Arrays, steps: int | None = None) -> tuple[Arrays, TrainStats]:
    """Load `start` into the worker's model, train it on the client's examples, return the new adapter."""
    config = ctx.config
    set_adapter(ctx.model, start)
    encoded = encode_for_training(ctx.tokenizer, ctx.examples, config.train.target, config.train.max_len)
    optimizer = make_optimizer(ctx.model, config.train.lr, config.train.weight_decay)
    if config.train.keep_optimizer_state and "optimizer" in ctx.state:
        optimizer.load_state_dict(ctx.state["optimizer"])
    seed_torch_global(config.seed, ctx.client, ctx.round_index, "dropout")
    batches = torch_stream(config.seed, ctx.client, ctx.round_index, "batches")
    stats = train_steps(ctx.model, encoded, optimizer, steps or config.train.local_steps,
                        config.train.batch_size, batches, config.train.max_grad_norm)
    if config.train.keep_optimizer_state:
        ctx.state["optimizer"] = _detached_state(optimizer.state_dict())
    return get_adapter(ctx.model), stats

"""One client's LoRA training pass, shared by the LoRA-based algorithms."""
from __future__ import annotations

import torch

from fedsim.algorithms.base import Arrays, ClientContext
from fedsim.models.lora import get_adapter, set_adapter
from fedsim.privacy.dpsgd import DPSGDParams, train_dp_sgd
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


def _train_private(ctx: ClientContext, encoded: dict, steps: int, generator: torch.Generator) -> TrainStats:
    """DP-SGD steps (Poisson batches of expected size batch_size, per-example clipping, Gaussian noise)."""
    config = ctx.config
    rate = min(1.0, config.train.batch_size / len(ctx.examples))
    settings = DPSGDParams(max_grad_norm=config.privacy.dp_sgd.max_grad_norm, delta=config.privacy.budget_delta,
                             noise_multiplier=ctx.dp_noise_multiplier, sample_rate=rate)
    result = train_dp_sgd(ctx.model, encoded, steps, config.train.lr, settings, generator, optimizer="adam")
    losses = [step.loss for step in result.stats if step.loss is not None]
    samples = sum(step.batch_size for step in result.stats)
    return TrainStats(steps=steps, samples=samples, tokens=0,  # DP-SGD's step stats carry no token count
                      mean_loss=sum(losses) / len(losses) if losses else float("nan"),
                      final_loss=losses[-1] if losses else float("nan"))


def train_adapter(ctx: ClientContext, start: Arrays, steps: int | None = None) -> tuple[Arrays, TrainStats]:
    """Load `start` into the worker's model, train it on the client's examples, return the new adapter."""
    config = ctx.config
    set_adapter(ctx.model, start)
    encoded = encode_for_training(ctx.tokenizer, ctx.examples, config.train.target, config.train.max_len)
    seed_torch_global(config.seed, ctx.client, ctx.round_index, "dropout")
    batches = torch_stream(config.seed, ctx.client, ctx.round_index, "batches")
    steps = steps or config.train.local_steps
    if ctx.dp_noise_multiplier is not None:
        stats = _train_private(ctx, encoded, steps, batches)
        return get_adapter(ctx.model), stats
    optimizer = make_optimizer(ctx.model, config.train.lr, config.train.weight_decay)
    if config.train.keep_optimizer_state and "optimizer" in ctx.state:
        optimizer.load_state_dict(ctx.state["optimizer"])
    stats = train_steps(ctx.model, encoded, optimizer, steps, config.train.batch_size, batches,
                        config.train.max_grad_norm)
    if config.train.keep_optimizer_state:
        ctx.state["optimizer"] = _detached_state(optimizer.state_dict())
    return get_adapter(ctx.model), stats

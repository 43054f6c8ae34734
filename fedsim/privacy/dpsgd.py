"""DP-SGD on the trainable (LoRA) parameters of a causal LM, with Opacus as the engine.

Each step Poisson-samples a batch (every example independently with probability q, so batch
sizes vary as the accountant assumes), computes per-example gradients of the mean target-token
loss with Opacus's GradSampleModule hooks, and lets Opacus's DPOptimizer clip each to
`max_grad_norm`, sum them, add N(0, sigma^2 C^2) and divide by the expected batch size q * n.
Opacus's own accountants are not used: the steps taken are returned as a dp-accounting event
for the privacy ledger. The hooks are attached for the call only and removed afterwards (the
base model is shared by many clients of a worker and is never copied).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from dp_accounting.dp_event import DpEvent
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from fedsim.privacy.accounting import AccountingError, calibrate_noise_multiplier, poisson_gaussian_event
from fedsim.train.batching import IGNORE_INDEX

ENCODED_KEYS = ("input_ids", "attention_mask", "labels")
_OPACUS_PARAM_ATTRS = ("grad_sample", "_forward_counter", "_current_grad_sample", "_norm_sample",
                       "summed_grad")
_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}

__all__ = ["DPSGDError", "DPSGDResult", "DPSGDParams", "DPSGDStepStats", "calibrate_noise_multiplier",
           "per_example_causal_lm_loss", "train_dp_sgd"]


class DPSGDError(AccountingError):
    """Bad input to DP-SGD."""


@dataclass(frozen=True)
class DPSGDParams:
    """Give exactly one of `noise_multiplier` / `target_eps` (calibrated for the planned steps
    at `delta`), and exactly one of `sample_rate` / `batch_size` (expected batch size:
    sample_rate = batch_size / n)."""

    max_grad_norm: float
    delta: float
    noise_multiplier: float | None = None
    target_eps: float | None = None
    sample_rate: float | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise DPSGDError(f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}")
        if not 0 < self.delta < 1:
            raise DPSGDError(f"delta must be in (0, 1), got {self.delta!r}")
        if (self.noise_multiplier is None) == (self.target_eps is None):
            raise DPSGDError("give exactly one of noise_multiplier and target_eps")
        if self.noise_multiplier is not None and not (
                math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise DPSGDError(f"noise_multiplier must be a finite number >= 0, got {self.noise_multiplier!r}")
        if self.target_eps is not None and not (math.isfinite(self.target_eps) and self.target_eps > 0):
            raise DPSGDError(f"target_eps must be a finite number > 0, got {self.target_eps!r}")
        if (self.sample_rate is None) == (self.batch_size is None):
            raise DPSGDError("give exactly one of sample_rate and batch_size")
        if self.sample_rate is not None and not 0 < self.sample_rate <= 1:
            raise DPSGDError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise DPSGDError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")

    def resolve_sample_rate(self, num_examples: int) -> float:
        """Poisson sampling rate for a data set of `num_examples` examples."""
        if self.sample_rate is not None:
            return self.sample_rate
        if self.batch_size > num_examples:
            raise DPSGDError(f"batch_size {self.batch_size} exceeds the {num_examples} examples")
        return self.batch_size / num_examples

    def resolve_noise_multiplier(self, sample_rate: float, steps: int) -> float:
        """The given noise multiplier, or the one calibrated to `target_eps` for `steps` steps."""
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        return calibrate_noise_multiplier(self.target_eps, self.delta, sample_rate, steps)

    def planned_event(self, num_examples: int, steps: int) -> DpEvent:
        """The event `train_dp_sgd` will return for these data and steps: check it against the
        ledger's budget before training."""
        sample_rate = self.resolve_sample_rate(num_examples)
        return poisson_gaussian_event(self.resolve_noise_multiplier(sample_rate, steps), sample_rate, steps)


@dataclass(frozen=True)
class DPSGDStepStats:
    """One step, measured before clipping: Poisson batch size, mean per-example loss (None on an
    empty batch), fraction of per-example gradients clipped and their mean L2 norm."""

    step: int
    batch_size: int
    loss: float | None
    clipped_fraction: float
    mean_grad_norm: float


@dataclass(frozen=True)
class DPSGDResult:
    stats: list[DPSGDStepStats]
    event: DpEvent  # SelfComposed(PoissonSampled(sample_rate, Gaussian(noise_multiplier)), steps)
    noise_multiplier: float
    sample_rate: float
    steps: int


def per_example_causal_lm_loss(model: torch.nn.Module, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] mean next-token cross-entropy over each example's target tokens (labels at t + 1
    != -100); an example without target tokens has loss 0."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    token_loss = F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]),
                                 shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                 reduction="none").view(shifted_labels.shape)
    targets = (shifted_labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / targets


def train_dp_sgd(model: torch.nn.Module, encoded: dict[str, torch.Tensor], steps: int, lr: float,
                 settings: DPSGDParams, generator: torch.Generator, *,
                 optimizer: Literal["sgd", "adam"] = "sgd") -> DPSGDResult:
    """Run `steps` DP-SGD steps on the parameters of `model` that require grad (the LoRA
    adapter of a peft model). `generator` (on the model's device) draws the Poisson batches,
    the noise, and seeds dropout, so a call is reproducible from the generator's state."""
    num_examples = _check_encoded(encoded)
    if not isinstance(steps, int) or steps < 1:
        raise DPSGDError(f"steps must be an integer >= 1, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise DPSGDError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in _OPTIMIZERS:
        raise DPSGDError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DPSGDError("the model has no trainable parameters (attach a LoRA adapter first)")
    device = params[0].device
    if generator.device.type != device.type:
        raise DPSGDError(f"generator is on {generator.device} but the model is on {device}")
    sample_rate = settings.resolve_sample_rate(num_examples)
    noise_multiplier = settings.resolve_noise_multiplier(sample_rate, steps)
    data = {k: encoded[k].to(device) for k in ENCODED_KEYS}

    stats = []
    rng_devices = [device] if device.type == "cuda" else []
    was_training = model.training
    grad_sample_model = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    try:
        model.train()
        dp_optimizer = DPOptimizer(_OPTIMIZERS[optimizer](params, lr=lr), noise_multiplier=noise_multiplier,
                                   max_grad_norm=settings.max_grad_norm,
                                   expected_batch_size=sample_rate * num_examples,
                                   loss_reduction="mean", generator=generator)
        with torch.random.fork_rng(devices=rng_devices), warnings.catch_warnings():
            # LoRA A sees frozen activations; Opacus's full backward hooks still fire correctly.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)))
            for step in range(steps):
                stats.append(_dp_step(grad_sample_model, dp_optimizer, params, data, num_examples,
                                      sample_rate, settings.max_grad_norm, generator, step))
    finally:
        _detach_opacus(grad_sample_model, model, params)
        model.train(was_training)
    return DPSGDResult(stats, poisson_gaussian_event(noise_multiplier, sample_rate, steps),
                       noise_multiplier, sample_rate, steps)


def _dp_step(grad_sample_model: GradSampleModule, dp_optimizer: DPOptimizer,
             params: list[torch.nn.Parameter], data: dict[str, torch.Tensor], num_examples: int,
             sample_rate: float, max_grad_norm: float, generator: torch.Generator,
             step: int) -> DPSGDStepStats:
    dp_optimizer.zero_grad(set_to_none=True)
    selected = torch.rand(num_examples, generator=generator, device=generator.device) < sample_rate
    batch = torch.nonzero(selected).flatten().to(data["input_ids"].device)
    loss = None
    if batch.numel() == 0:
        # An empty Poisson batch still takes a (pure-noise) step, as Opacus does for empty batches.
        for p in params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        norms = torch.zeros(0)
    else:
        losses = per_example_causal_lm_loss(grad_sample_model, *(data[k][batch] for k in ENCODED_KEYS))
        losses.sum().backward()
        loss = float(losses.mean().detach())
        with torch.no_grad():
            norms = torch.stack([p.grad_sample.reshape(len(batch), -1).norm(dim=1) for p in params],
                                dim=1).norm(dim=1)
    dp_optimizer.step()
    return DPSGDStepStats(step=step, batch_size=int(batch.numel()), loss=loss,
                          clipped_fraction=float((norms > max_grad_norm).float().mean()) if len(norms) else 0.0,
                          mean_grad_norm=float(norms.mean()) if len(norms) else 0.0)


def _detach_opacus(grad_sample_model: GradSampleModule, model: torch.nn.Module,
                   params: list[torch.nn.Parameter]) -> None:
    """Remove Opacus's hooks and every attribute it left on parameters and modules."""
    grad_sample_model.cleanup()
    for p in params:
        for name in _OPACUS_PARAM_ATTRS:
            if hasattr(p, name):
                delattr(p, name)
        p.grad = None
    for module in model.modules():
        if isinstance(module.__dict__.get("activations"), list):
            del module.activations
        if "max_batch_len" in module.__dict__:
            del module.max_batch_len


def _check_encoded(encoded: dict[str, torch.Tensor]) -> int:
    missing = [k for k in ENCODED_KEYS if k not in encoded]
    if missing:
        raise DPSGDError(f"encoded data lacks {missing}; it needs {list(ENCODED_KEYS)}")
    shape = encoded["input_ids"].shape
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 2:
        raise DPSGDError(f"input_ids must be [n >= 1, length >= 2], got {tuple(shape)}")
    for key in ENCODED_KEYS[1:]:
        if encoded[key].shape != shape:
            raise DPSGDError(f"{key} has shape {tuple(encoded[key].shape)}, input_ids {tuple(shape)}")
    if not bool((encoded["labels"][:, 1:] != IGNORE_INDEX).any()):
        raise DPSGDError("no target tokens: every label after the first position is -100")
    return int(shape[0])

"""DP-SGD fine-tuning of FDKT's client generator (algorithms.md §4.2) through fedsim.privacy.dpsgd.

The generator's examples are encoded by fedsim.train.generator (loss on the question tokens only)
and trained with Poisson batches, per-example clipping and Gaussian noise whose multiplier is
calibrated to (eps, delta) for the planned steps. The release is recorded in the client's ledger
(record-level, add/remove adjacency) as SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps).
eps = inf runs the same loop with noise multiplier 0 (clipping kept) and is a NonPrivate release.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from dp_accounting.dp_event import DpEvent, NonPrivateDpEvent
from transformers import PreTrainedTokenizerBase

from fedsim.data.task import Example
from fedsim.privacy.dpsgd import DPSGDParams, DPSGDStepStats, train_dp_sgd
from fedsim.train.generator import GeneratorSettings, encode_generator_examples


@dataclass(frozen=True)
class GeneratorTraining:
    """What training the generator did, and its release event for the client's ledger."""

    event: DpEvent  # SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps); NonPrivate at eps = inf
    noise_multiplier: float  # 0 at eps = inf
    sample_rate: float
    steps: int
    stats: list[DPSGDStepStats]


def generator_dp_params(settings: GeneratorSettings, num_examples: int) -> DPSGDParams:
    """DP-SGD parameters for `num_examples` examples: sigma calibrated to settings.eps (0 at eps = inf)."""
    common = {"max_grad_norm": settings.max_grad_norm, "delta": settings.delta,
              "sample_rate": settings.sample_rate(num_examples)}
    if settings.private:
        return DPSGDParams(target_eps=settings.eps, **common)
    return DPSGDParams(noise_multiplier=0.0, **common)


def planned_generator_event(settings: GeneratorSettings, num_examples: int) -> DpEvent:
    """The event `train_generator` will return on `num_examples` examples: check it against the
    client's budget before training."""
    if not settings.private:
        return NonPrivateDpEvent()
    return generator_dp_params(settings, num_examples).planned_event(
        num_examples, settings.planned_steps(num_examples))


def train_generator(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                    settings: GeneratorSettings, generator: torch.Generator) -> GeneratorTraining:
    """DP-SGD (Adam) on the trainable (LoRA) parameters of `model` over `examples` as the
    generator learns them; `generator` draws batches, noise and dropout (fedsim.privacy.dpsgd)."""
    encoded = encode_generator_examples(tokenizer, examples, settings.max_len)
    steps = settings.planned_steps(len(examples))
    result = train_dp_sgd(model, encoded, steps, settings.lr, generator_dp_params(settings, len(examples)),
                          generator, optimizer="adam")
    event = result.event if settings.private else NonPrivateDpEvent()
    return GeneratorTraining(event, result.noise_multiplier, result.sample_rate, result.steps, result.stats)

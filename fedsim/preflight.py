"""Preflight: everything a run would reject, found before Ray starts and before the run folder exists.

It builds the cheap objects the engine builds (the federated data, each algorithm, its privacy gate
with its calibrated noise, the secure-aggregation config, each preset's model with LoRA attached),
so the very code that would fail later fails here, and it asks the privacy gate to admit a first
round. `fit_pool` is the worker-pool arithmetic of the runner, given the cluster's CPUs and GPUs.
"""
from __future__ import annotations

import math

from fedsim.algorithms import make_algorithm
from fedsim.algorithms.base import Algorithm
from fedsim.config import ConfigError, EngineConfig, ExperimentConfig
from fedsim.data.federated import FederatedData, build_federated_data
from fedsim.engine.privacy_gate import PrivacyGate
from fedsim.engine.secure_sum import secagg_config
from fedsim.engine.worker import WorkerRuntime
from fedsim.errors import PrivacyBudgetError, ResourceError
from fedsim.models.presets import check_model_name
from fedsim.privacy.accounting import AccountingError
from fedsim.secagg.spec import TensorSpec


def check_experiment(config: ExperimentConfig) -> FederatedData:
    """Raise the FedsimError a run of `config` would raise at its start; return the built data."""
    data = build_federated_data(config)
    for name in config.algorithms:
        algorithm = make_algorithm(name, config)
        if algorithm.needs_llm and config.llm.backend in ("hf", "vllm"):
            _check_llm_model(config)
        _check_privacy(config, data, algorithm)
        if algorithm.needs_model or (config.secagg.mode != "off" and algorithm.summed_kind is not None):
            _check_models_and_secagg(config, name, data, algorithm)
    return data


def _check_llm_model(config: ExperimentConfig) -> None:
    if not config.llm.model:
        raise ConfigError("llm.model must name a local model directory (e.g. one made by `fedsim teacher train`)")
    check_model_name(config.llm.model)


def _check_privacy(config: ExperimentConfig, data: FederatedData, algorithm: Algorithm) -> None:
    """Build the engine's privacy gate and let it admit one client per DP-SGD sampling rate to round 0."""
    privacy = config.privacy
    for section, settings, budget, key in (("dp_sgd", privacy.dp_sgd, privacy.budget_eps, "budget_eps"),
                                           ("central", privacy.central, privacy.server_budget_eps,
                                            "server_budget_eps")):
        if settings is not None and settings.target_eps is not None and settings.target_eps > budget:
            raise PrivacyBudgetError(f"privacy.{section}.target_eps={settings.target_eps} exceeds "
                                     f"privacy.{key}={budget}: "
                                     f"the noise calibrated for the planned rounds would be refused before the end")
    try:
        gate = PrivacyGate(config, data.sizes, algorithm)
        if algorithm.pooled:
            return
        representatives = list({gate.dp_sgd_rate(client): client for client in range(config.clients.num)}.values())
        _, refused = gate.admit_clients(0, representatives)
        if privacy.central is not None and not gate.admit_round(0):
            raise PrivacyBudgetError(f"privacy.central: one round's release (noise multiplier "
                                     f"{gate.central_sigma:.4g}, sample rate {config.sample_rate():.4g}) already "
                                     f"exceeds privacy.server_budget_eps={privacy.server_budget_eps}")
    except AccountingError as error:
        raise PrivacyBudgetError(f"privacy: {error}") from None
    if refused:
        raise PrivacyBudgetError(
            f"privacy.budget_eps={privacy.budget_eps}: {algorithm.name}'s first-round release of client "
            f"{refused[0]} ({int(data.sizes[refused[0]])} examples) alone exceeds it, so no round could train "
            f"that client; raise the budget or the noise")


def _check_models_and_secagg(config: ExperimentConfig, name: str, data: FederatedData,
                             algorithm: Algorithm) -> None:
    """Build each preset's starting payload as a worker does; check it fits the secure sum's modulus."""
    runtime = WorkerRuntime(config, name, data, None)
    presets = sorted(config.clients.presets) if not algorithm.pooled else [next(iter(config.clients.presets))]
    secure = config.secagg.mode != "off" and algorithm.summed_kind is not None
    settings = secagg_config(config.secagg) if secure else None
    largest_cohort = config.clients.num if config.clients.sampling == "poisson" else config.clients.per_round
    for preset in presets:
        try:
            payload = runtime.initial_payload(preset)
        except ValueError as error:  # peft and attach_lora reject LoRA settings that do not fit the model
            raise ConfigError(f"lora settings do not fit the model {preset!r}: {error}") from None
        if settings is not None:
            settings.check_capacity(largest_cohort, TensorSpec.from_update(payload).total)
    if settings is not None and isinstance(settings.threshold, int) and settings.threshold > largest_cohort:
        raise ConfigError(f"secagg.threshold={settings.threshold} exceeds the largest cohort ({largest_cohort} "
                          f"clients): every round's secure aggregation would abort")


def fit_pool(config: ExperimentConfig, cpus: float, gpus: float) -> int:
    """Workers to start on `cpus` and `gpus` (what the cluster has beside the LLM deployment): the
    configured number, or as many as fit; ResourceError when the configured pool does not fit."""
    engine: EngineConfig = config.engine
    if engine.dedicated:
        wanted = config.clients.num
    elif engine.num_workers == "auto":
        limits = [math.floor(cpus / engine.num_cpus_per_worker + 1e-9)] if engine.num_cpus_per_worker else []
        if engine.num_gpus_per_worker:
            limits.append(math.floor(gpus / engine.num_gpus_per_worker + 1e-9))
        wanted = max(1, min(limits)) if limits else max(1, int(cpus))
    else:
        wanted = engine.num_workers
    if wanted * engine.num_cpus_per_worker > cpus + 1e-9 or wanted * engine.num_gpus_per_worker > gpus + 1e-9:
        raise ResourceError(
            f"{wanted} workers x (num_cpus={engine.num_cpus_per_worker}, num_gpus={engine.num_gpus_per_worker})"
            f" do not fit the cluster (CPU {cpus:g}, GPU {gpus:g}); lower engine.num_workers or the"
            f" per-worker resources (fractions are allowed)")
    return wanted


def check_pool(config: ExperimentConfig, cpus: float, gpus: float) -> None:
    """Raise ResourceError unless every algorithm's pool fits a cluster of `cpus` and `gpus`."""
    for name in config.algorithms:
        algorithm = make_algorithm(name, config)
        held_cpus = (config.llm.num_cpus if algorithm.needs_llm else 0.0) + \
            (config.server.num_cpus if algorithm.needs_trainer else 0.0)
        held_gpus = (config.llm.num_gpus if algorithm.needs_llm else 0.0) + \
            (config.server.num_gpus if algorithm.needs_trainer else 0.0)
        fit_pool(config, cpus - held_cpus, gpus - held_gpus)

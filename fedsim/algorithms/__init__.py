"""Algorithm registry: name -> class, imported on first use (model-free workloads never load peft)."""
from __future__ import annotations

from importlib import import_module

from fedsim.algorithms.base import Algorithm

REGISTRY: dict[str, str] = {
    "local": "fedsim.algorithms.local:LocalOnly",
    "fedavg_lora": "fedsim.algorithms.fedavg_lora:FedAvgLora",
    "centralized": "fedsim.algorithms.centralized:Centralized",
    "fedavg_vector": "fedsim.algorithms.synthetic:FedAvgVector",
    "fedcot": "fedsim.algorithms.fedcot:FedCoT",
    "fedcollm": "fedsim.algorithms.fedcollm:FedCoLLM",
    "fedmkt": "fedsim.algorithms.fedmkt:FedMKT",
    "centralized_llm": "fedsim.algorithms.centralized_llm:CentralizedLLM",
}


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered under `name` (its module imported on first use)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {sorted(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(import_module(module), cls)


def make_algorithm(name: str, config) -> Algorithm:
    """Instantiate a registered algorithm."""
    return algorithm_class(name)(config)

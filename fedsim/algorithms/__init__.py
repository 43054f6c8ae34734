"""Algorithm registry: name -> class."""
from fedsim.algorithms.base import Algorithm
from fedsim.algorithms.centralized import Centralized
from fedsim.algorithms.fedavg_lora import FedAvgLora
from fedsim.algorithms.local import LocalOnly
from fedsim.algorithms.synthetic import FedAvgVector

REGISTRY: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (LocalOnly, FedAvgLora, Centralized, FedAvgVector)
}


def make_algorithm(name: str, config) -> Algorithm:
    """Instantiate a registered algorithm."""
    if name not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; allowed: {sorted(REGISTRY)}")
    return REGISTRY[name](config)

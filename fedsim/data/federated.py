"""The federation's data: each client's examples, the test set and the public split.

Built-in data are generated lazily per client from (seed, client), so 10,000 registered clients cost
a few arrays, not 10,000 data sets. File data are loaded once and partitioned by index.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fedsim.comm import SERVER
from fedsim.config import ExperimentConfig
from fedsim.data.loaders import DataFileError, load_examples
from fedsim.data.partition import client_domain_weights, client_sizes, partition_dirichlet, partition_iid, \
    partition_quantity_skew
from fedsim.data.task import DOMAINS, Example, generate_examples
from fedsim.rng import numpy_stream, stream_seed


@dataclass
class FederatedData:
    """Who holds which examples. Picklable: shipped once to every worker."""

    seed: int
    min_steps: int
    max_steps: int
    domains: tuple[str, ...]
    domain_weights: np.ndarray            # float32 [N, D]: each client's domain mixture
    sizes: np.ndarray                     # int64 [N]
    test: list[Example]
    public: list[Example]
    file_examples: list[Example] | None = None
    file_parts: list[np.ndarray] | None = None
    _cache: dict[int, list[Example]] = field(default_factory=dict, repr=False)

    @property
    def num_clients(self) -> int:
        return len(self.sizes)

    def client_examples(self, client: int) -> list[Example]:
        """The private training examples of one client."""
        if self.file_examples is not None:
            return [self.file_examples[i] for i in self.file_parts[client]]
        if client not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            weights = dict(zip(self.domains, self.domain_weights[client].tolist()))
            self._cache[client] = generate_examples(
                int(self.sizes[client]), stream_seed(self.seed, client, 0, "data"), "train",
                weights, self.min_steps, self.max_steps)
        return self._cache[client]

    def for_workers(self, keep_public: bool = False) -> "FederatedData":
        """What the workers need: everything but the public examples, unless the clients read them."""
        return dataclasses.replace(self, public=self.public if keep_public else [], _cache={})

    def pooled_examples(self) -> list[Example]:
        """Every client's examples together (the centralized upper bound)."""
        return [example for client in range(self.num_clients) for example in self.client_examples(client)]


def _domain_mixture(examples: list[Example], parts: list[np.ndarray], domains: tuple[str, ...]) -> np.ndarray:
    index = {domain: i for i, domain in enumerate(domains)}
    mixture = np.zeros((len(parts), len(domains)), dtype=np.float32)
    for client, part in enumerate(parts):
        for i in part:
            mixture[client, index[examples[i].domain]] += 1
    return mixture / np.maximum(mixture.sum(axis=1, keepdims=True), 1)


def build_federated_data(config: ExperimentConfig) -> FederatedData:
    """Build the clients' data, the test set and the public split from the config."""
    task, n = config.task, config.clients.num
    rng = numpy_stream(config.seed, SERVER, 0, "partition")
    if task.source == "builtin":
        test = generate_examples(task.test_size, stream_seed(config.seed, SERVER, 0, "test"), "test",
                                 None, task.min_steps, task.max_steps)
        public = generate_examples(task.public_size, stream_seed(config.seed, SERVER, 0, "public"), "public",
                                   None, task.min_steps, task.max_steps)
        weights = client_domain_weights(n, task.domain_alpha, rng)
        if task.client_domains is not None:  # the clients hold only these domains
            weights = weights * np.array([domain in task.client_domains for domain in DOMAINS], dtype=np.float64)
            weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
            weights[weights.sum(axis=1) == 0] = np.isin(DOMAINS, task.client_domains) / len(task.client_domains)
        weights = weights.astype(np.float32)
        sizes = client_sizes(n, task.train_per_client, task.size_skew, rng)
        return FederatedData(config.seed, task.min_steps, task.max_steps, DOMAINS, weights, sizes, test, public)
    examples = load_examples(task.path)
    if len(examples) < task.test_size + n:
        raise DataFileError(f"task.path {task.path} has {len(examples)} records: too few for "
                         f"task.test_size={task.test_size} plus one per client ({n} clients)")
    order = rng.permutation(len(examples))
    test = [examples[i] for i in order[:task.test_size]]
    train = [examples[i] for i in order[task.test_size:]]
    domains = tuple(sorted({example.domain for example in examples}))
    if task.domain_alpha is not None:
        parts = partition_dirichlet([example.domain for example in train], n, task.domain_alpha, rng,
                                    size_skew=task.size_skew)
    elif task.size_skew is not None:
        parts = partition_quantity_skew(len(train), n, task.size_skew, rng)
    else:
        parts = partition_iid(len(train), n, rng)
    sizes = np.array([len(part) for part in parts], dtype=np.int64)
    public = load_examples(task.public_path) if task.public_path else []
    return FederatedData(config.seed, task.min_steps, task.max_steps, domains,
                         _domain_mixture(train, parts, domains), sizes, test, public, train, parts)

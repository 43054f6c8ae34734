"""Tests of the partitioners and per-client profiles."""
import numpy as np
import pytest

from fedsim.data.partition import (
    client_domain_weights,
    client_sizes,
    partition_dirichlet,
    partition_iid,
    partition_quantity_skew,
)
from fedsim.data.task import DOMAINS


def _assert_exact_cover(parts, n_items):
    assert all(len(part) > 0 for part in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n_items))


def test_iid_covers_every_index_with_balanced_sizes():
    parts = partition_iid(103, 10, np.random.default_rng(0))
    _assert_exact_cover(parts, 103)
    assert {len(p) for p in parts} == {10, 11}


def test_quantity_skew_alpha_extremes():
    balanced = partition_quantity_skew(1000, 10, 1e4, np.random.default_rng(0))
    skewed = partition_quantity_skew(1000, 10, 0.05, np.random.default_rng(0))
    _assert_exact_cover(balanced, 1000)
    _assert_exact_cover(skewed, 1000)
    assert max(len(p) for p in balanced) < 130
    assert max(len(p) for p in skewed) > 500


def _domain_shares(parts, domains):
    names = sorted(set(domains))
    labels = np.array(domains)
    return np.array([[np.mean(labels[part] == name) for name in names] for part in parts])


def test_dirichlet_alpha_extremes():
    domains = [DOMAINS[i % len(DOMAINS)] for i in range(800)]
    iid_like = partition_dirichlet(domains, 8, 1e4, np.random.default_rng(1))
    skewed = partition_dirichlet(domains, 8, 1e-3, np.random.default_rng(1))
    for parts in (iid_like, skewed):
        _assert_exact_cover(parts, 800)
        assert {len(p) for p in parts} == {100}
    assert np.abs(_domain_shares(iid_like, domains) - 0.25).max() < 0.12
    # Equal sizes cap how pure a client can be once its favourite domain runs out.
    assert _domain_shares(skewed, domains).max(axis=1).mean() > 0.6


def test_dirichlet_with_size_skew_keeps_domain_skew_and_unequal_sizes():
    domains = [DOMAINS[i % len(DOMAINS)] for i in range(800)]
    parts = partition_dirichlet(domains, 8, 1e-3, np.random.default_rng(2), size_skew=0.05)
    _assert_exact_cover(parts, 800)
    assert max(len(p) for p in parts) > 400
    assert _domain_shares(parts, domains).max(axis=1).mean() > 0.6


def test_partitions_are_deterministic_in_the_rng():
    domains = [DOMAINS[i % 3] for i in range(60)]
    first = partition_dirichlet(domains, 5, 0.5, np.random.default_rng(4))
    second = partition_dirichlet(domains, 5, 0.5, np.random.default_rng(4))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_client_domain_weights():
    uniform = client_domain_weights(5, None, np.random.default_rng(0))
    assert uniform.shape == (5, len(DOMAINS)) and np.allclose(uniform, 1 / len(DOMAINS))
    peaked = client_domain_weights(200, 1e-3, np.random.default_rng(0))
    assert np.allclose(peaked.sum(axis=1), 1) and peaked.max(axis=1).mean() > 0.95
    flat = client_domain_weights(200, 1e4, np.random.default_rng(0))
    assert np.abs(flat - 1 / len(DOMAINS)).max() < 0.05


def test_client_sizes():
    assert client_sizes(4, 10, None, np.random.default_rng(0)).tolist() == [10] * 4
    sizes = client_sizes(10_000, 20, 0.3, np.random.default_rng(0), min_size=2)
    assert sizes.sum() == 200_000 and sizes.min() >= 2 and sizes.max() > 100


@pytest.mark.parametrize("call", [
    lambda rng: partition_iid(3, 4, rng),
    lambda rng: partition_iid(10, 0, rng),
    lambda rng: partition_quantity_skew(10, 2, 0.0, rng),
    lambda rng: partition_dirichlet(["a", "b"], 2, float("nan"), rng),
    lambda rng: partition_dirichlet(["a", "b"], 2, 1.0, rng, size_skew=0.0),
    lambda rng: client_domain_weights(3, -1.0, rng),
    lambda rng: client_sizes(3, 0, None, rng),
    lambda rng: client_sizes(2.5, 3, None, rng),
])
def test_invalid_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call(np.random.default_rng(0))

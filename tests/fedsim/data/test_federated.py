"""The federation's data: lazy built-in clients, file data partitioned by index."""
import numpy as np
import pytest

from fedsim.config import ConfigError, validate
from fedsim.data.federated import build_federated_data
from fedsim.data.loaders import save_examples
from fedsim.data.task import generate_examples


def test_builtin_clients_are_lazy_deterministic_and_disjoint_from_test():
    config = validate({"clients": {"num": 10_000, "per_round": 10},
                       "task": {"train_per_client": 5, "domain_alpha": 0.3, "test_size": 50, "public_size": 20}})
    data = build_federated_data(config)
    assert data.num_clients == 10_000 and data.domain_weights.shape == (10_000, len(data.domains))
    first = data.client_examples(9_999)
    assert len(first) == 5 and first == build_federated_data(config).client_examples(9_999)
    assert first != data.client_examples(0)
    test_questions = {e.question for e in data.test} | {e.question for e in data.public}
    assert not test_questions & {e.question for c in range(50) for e in data.client_examples(c)}
    # Dirichlet(0.3) mixtures are skewed: most clients are dominated by one domain.
    assert np.median(data.domain_weights.max(axis=1)) > 0.5


def test_file_source_is_partitioned_by_index(tmp_path):
    path = tmp_path / "data.jsonl"
    save_examples(generate_examples(120, seed=1), path)
    config = validate({"clients": {"num": 10, "per_round": 2},
                       "task": {"source": "file", "path": str(path), "test_size": 20, "domain_alpha": 1.0}})
    data = build_federated_data(config)
    assert len(data.test) == 20 and int(data.sizes.sum()) == 100
    seen = [e.question for c in range(10) for e in data.client_examples(c)]
    assert len(seen) == 100 and not set(seen) & {e.question for e in data.test}
    assert np.allclose(data.domain_weights.sum(axis=1), 1.0)


@pytest.mark.parametrize("domain_alpha", [None, 1.0])
def test_file_client_sizes_follow_task_size_skew(tmp_path, domain_alpha):
    path = tmp_path / "data.jsonl"
    save_examples(generate_examples(420, seed=1), path)
    task = {"source": "file", "path": str(path), "test_size": 20, "domain_alpha": domain_alpha}
    equal = build_federated_data(validate({"clients": {"num": 10, "per_round": 2}, "task": task}))
    skewed = build_federated_data(validate({"clients": {"num": 10, "per_round": 2},
                                            "task": dict(task, size_skew=0.05)}))
    assert set(equal.sizes.tolist()) == {40}
    assert int(skewed.sizes.sum()) == 400 and skewed.sizes.min() >= 1 and skewed.sizes.max() > 150
    assert [len(skewed.client_examples(c)) for c in range(10)] == skewed.sizes.tolist()


def test_builtin_client_sizes_follow_task_size_skew():
    base = {"clients": {"num": 200, "per_round": 2}, "task": {"train_per_client": 10, "test_size": 5,
                                                               "public_size": 0}}
    equal = build_federated_data(validate(base))
    skewed = build_federated_data(validate({**base, "task": dict(base["task"], size_skew=0.1)}))
    assert set(equal.sizes.tolist()) == {10}
    assert int(skewed.sizes.sum()) == 2000 and skewed.sizes.max() > 60
    assert len(skewed.client_examples(int(skewed.sizes.argmax()))) == skewed.sizes.max()


def test_too_small_file_is_an_error(tmp_path):
    path = tmp_path / "small.jsonl"
    save_examples(generate_examples(8, seed=1), path)
    config = validate({"clients": {"num": 10, "per_round": 2},
                       "task": {"source": "file", "path": str(path), "test_size": 4}})
    with pytest.raises(ValueError, match="too few"):
        build_federated_data(config)


def test_a_file_task_reads_the_servers_public_examples_which_stay_off_the_workers(tmp_path):
    path, public_path = tmp_path / "train.jsonl", tmp_path / "public.jsonl"
    save_examples(generate_examples(60, seed=1), path)
    save_examples(generate_examples(7, seed=2, split="public"), public_path)
    config = validate({"clients": {"num": 4, "per_round": 2},
                       "task": {"source": "file", "path": str(path), "public_path": str(public_path), "test_size": 10}})
    data = build_federated_data(config)
    assert [e.question for e in data.public] == [e.question for e in generate_examples(7, seed=2, split="public")]
    workers = data.for_workers()
    assert workers.public == [] and workers.client_examples(0) == data.client_examples(0)
    assert data.for_workers(keep_public=True).public == data.public  # FedMKT: the clients read them


def test_public_path_is_refused_for_the_builtin_task():
    with pytest.raises(ConfigError, match="task.public_path is for task.source 'file'"):
        validate({"task": {"public_path": "public.jsonl"}})


def test_builtin_clients_can_hold_only_some_domains():
    config = validate({"clients": {"num": 6, "per_round": 2},
                       "task": {"train_per_client": 20, "domain_alpha": 0.5, "client_domains": ["cooking", "finance"]}})
    data = build_federated_data(config)
    assert {e.domain for c in range(6) for e in data.client_examples(c)} <= {"cooking", "finance"}
    assert {e.domain for e in data.test} == {"shopping", "travel", "cooking", "finance"}
    np.testing.assert_allclose(data.domain_weights.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ConfigError, match="task.client_domains"):
        validate({"task": {"client_domains": ["baking"]}})

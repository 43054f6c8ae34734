"""Privacy in the round engine: central DP-FedAvg accounting, budgets and refusals (fedavg_vector)."""
import numpy as np
import pytest
from dp_accounting.dp_event import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
from dp_accounting.pld import PLDAccountant

from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.engine.privacy_gate import PrivacyConfigError

SIZE = 200


def engine_for(privacy, rounds=3, **extra):
    raw = {"algorithms": ["fedavg_vector"], "rounds": rounds, "seed": 2,
           "clients": {"num": 100, "per_round": 10, "sampling": "poisson"},
           "synthetic": {"vector_size": SIZE}, "task": {"test_size": 4, "public_size": 0}, "privacy": privacy}
    raw.update(extra)
    config = validate(raw)
    data = build_federated_data(config)
    return RoundEngine(config, "fedavg_vector", data, InProcessExecutor(config, "fedavg_vector", data, None, 2), None)


def test_central_dp_epsilon_equals_dp_accounting_directly():
    engine = engine_for({"central": {"clip_norm": 0.05, "noise_multiplier": 1.1}, "budget_delta": 1e-5})
    rows = [engine.run_round() for _ in range(3)]
    accountant = PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(SelfComposedDpEvent(PoissonSampledDpEvent(0.1, GaussianDpEvent(1.1)), 3))
    assert rows[-1]["eps_server"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-3)
    assert rows[0]["eps_server"] < rows[1]["eps_server"] < rows[2]["eps_server"]
    sizes = {row["clients_selected"] for row in rows}
    assert len(sizes) > 1  # Poisson sampling: the cohort size varies


def test_central_dp_clips_and_adds_calibrated_noise():
    quiet = engine_for({"central": {"clip_norm": 0.05, "noise_multiplier": 0.0}}, rounds=1)
    quiet.run_round()
    w = quiet.globals["llama-1m"]["w"]
    # each client's update (norm about 0.01*sqrt(200) = 0.14) is clipped to 0.05, summed and divided by q*N = 10
    assert np.linalg.norm(w) <= 0.05 * quiet.rows[0]["clients_selected"] / 10 + 1e-6
    noisy = engine_for({"central": {"clip_norm": 0.05, "noise_multiplier": 2.0}}, rounds=1)
    noisy.run_round()
    noise = noisy.globals["llama-1m"]["w"] - w
    assert np.std(noise) == pytest.approx(2.0 * 0.05 / 10, rel=0.15)


def test_server_budget_refuses_rounds_once_spent():
    engine = engine_for({"central": {"clip_norm": 0.05, "noise_multiplier": 0.8}, "server_budget_eps": 1.0},
                        rounds=6)
    rows = [engine.run_round() for _ in range(6)]
    refused = [row for row in rows if row["clients_selected"] == 0]
    assert refused and all(row["eps_server"] <= 1.0 for row in rows)
    assert refused[0]["privacy_refused"] == 1


def test_target_eps_calibrates_the_noise():
    engine = engine_for({"central": {"clip_norm": 0.05, "target_eps": 2.0}}, rounds=4)
    rows = [engine.run_round() for _ in range(4)]
    assert rows[-1]["eps_server"] == pytest.approx(2.0, rel=0.01)


def test_finite_budget_without_a_mechanism_is_an_error():
    with pytest.raises(PrivacyConfigError, match="no DP mechanism"):
        engine_for({"budget_eps": 3.0})


def test_central_dp_needs_poisson_sampling():
    from fedsim.config import ConfigError

    with pytest.raises(ConfigError, match="sampling: poisson"):
        validate({"algorithms": ["fedavg_vector"], "privacy": {"central": {"clip_norm": 1, "noise_multiplier": 1}}})


def test_dp_sgd_releases_are_accounted_and_refused_over_budget():
    config = validate({"algorithms": ["fedavg_lora"], "rounds": 3, "seed": 4,
                       "clients": {"num": 3, "per_round": 3, "presets": {"llama-0.3m": 1}},
                       "task": {"test_size": 4, "public_size": 0, "train_per_client": 16},
                       "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 0},
                       "privacy": {"budget_eps": 4.0, "dp_sgd": {"noise_multiplier": 1.0, "max_grad_norm": 0.5}}})
    data = build_federated_data(config)
    engine = RoundEngine(config, "fedavg_lora", data, InProcessExecutor(config, "fedavg_lora", data, None, 1), None)
    rows = [engine.run_round() for _ in range(3)]
    accountant = PLDAccountant(value_discretization_interval=1e-4)
    event = SelfComposedDpEvent(PoissonSampledDpEvent(4 / 16, GaussianDpEvent(1.0)), 2)
    accountant.compose(event)
    assert rows[0]["eps_client_max"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-3)
    accountant.compose(event)
    assert accountant.get_epsilon(1e-5) > 4.0  # a second round would exceed the budget ...
    assert rows[1]["clients_refused"] == 3 and rows[1]["clients_succeeded"] == 0  # ... so it is refused
    assert rows[2]["eps_client_max"] == rows[0]["eps_client_max"]
    assert rows[0]["dp_sgd_sigma_max"] == 1.0
    refusals = [r for r in engine.privacy.ledger.rows() if r.refused]
    assert len(refusals) == 6 and all(r.mechanism == "dp_sgd" for r in refusals)

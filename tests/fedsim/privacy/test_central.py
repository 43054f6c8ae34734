"""Central (user-level) DP: clipping, noise, averaging, accounting."""
import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant

from fedsim.privacy.accounting import calibrate_noise_multiplier
from fedsim.privacy.central import (
    CentralDPError,
    add_central_noise,
    central_dp_average,
    central_dp_event,
    clip_update,
)
from fedsim.privacy.ledger import SERVER_USER_UNIT, PrivacyLedger


def adapter(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"layers.0.q_proj.lora_A": (scale * rng.normal(size=(4, 32))).astype(np.float32),
            "layers.0.q_proj.lora_B": (scale * rng.normal(size=(32, 4))).astype(np.float32)}


def l2(update: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in update.values())))


def test_clip_scales_the_concatenated_update_to_the_clip_norm():
    update = adapter(np.random.default_rng(0))
    clipped, norm = clip_update(update, clip_norm=0.1)
    assert norm == pytest.approx(l2(update))
    assert l2(clipped) == pytest.approx(0.1, rel=1e-6)
    for key in update:  # one factor for all arrays: the direction is kept
        np.testing.assert_allclose(clipped[key], update[key] * (0.1 / norm), rtol=1e-5)
        assert clipped[key].dtype == np.float32


def test_clip_leaves_small_updates_unchanged():
    update = adapter(np.random.default_rng(1), scale=1e-3)
    clipped, norm = clip_update(update, clip_norm=10.0)
    assert norm < 10.0
    for key in update:
        np.testing.assert_array_equal(clipped[key], update[key])


def test_one_user_moves_the_sum_by_at_most_the_clip_norm():
    rng = np.random.default_rng(2)
    clipped = [clip_update(adapter(rng, scale=s), 0.5)[0] for s in (0.01, 1.0, 30.0)]
    total = {k: sum(c[k].astype(np.float64) for c in clipped) for k in clipped[0]}
    without_last = {k: sum(c[k].astype(np.float64) for c in clipped[:-1]) for k in clipped[0]}
    assert l2({k: total[k] - without_last[k] for k in total}) <= 0.5 * (1 + 1e-6)


def test_noise_has_standard_deviation_sigma_times_clip():
    summed = {"a": np.zeros((400, 250), np.float32), "b": np.zeros(100_000, np.float32)}
    noised = add_central_noise(summed, noise_multiplier=1.3, clip_norm=0.2, rng=np.random.default_rng(3))
    values = np.concatenate([noised["a"].ravel(), noised["b"].ravel()]).astype(np.float64)
    assert values.std() == pytest.approx(1.3 * 0.2, rel=0.01)
    assert abs(values.mean()) < 4 * 0.26 / np.sqrt(values.size)


def test_noise_is_reproducible_and_independent_of_key_order():
    summed = adapter(np.random.default_rng(4))
    reordered = dict(reversed(list(summed.items())))
    first = add_central_noise(summed, 1.0, 0.1, np.random.default_rng(5))
    second = add_central_noise(reordered, 1.0, 0.1, np.random.default_rng(5))
    for key in summed:
        np.testing.assert_array_equal(first[key], second[key])
        assert not np.array_equal(first[key], summed[key])


def test_average_divides_the_noised_sum_by_the_expected_cohort_size():
    summed = adapter(np.random.default_rng(6))
    noised = add_central_noise(summed, 0.7, 0.1, np.random.default_rng(7))
    averaged = central_dp_average(summed, 0.7, 0.1, expected_cohort_size=12.5, rng=np.random.default_rng(7))
    for key in summed:
        np.testing.assert_allclose(averaged[key], noised[key] / 12.5, rtol=1e-6)


def test_rounds_in_the_ledger_equal_the_self_composed_event():
    sigma, q, rounds, delta = 1.1, 0.02, 12, 1e-6
    ledger = PrivacyLedger(budget_delta=delta)
    for r in range(rounds):
        decision = ledger.record(SERVER_USER_UNIT, r, "central_dp", central_dp_event(sigma, q),
                                 adjacency=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
        assert decision.accepted
    direct = PLDAccountant(value_discretization_interval=ledger.value_discretization_interval).compose(
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), rounds))
    assert ledger.epsilon(SERVER_USER_UNIT).pld == pytest.approx(direct.get_epsilon(delta), rel=1e-6)


def test_calibrated_noise_meets_the_target_over_the_rounds():
    target, delta, q, rounds = 2.0, 1e-6, 0.02, 20
    sigma = calibrate_noise_multiplier(target, delta, q, rounds)
    ledger = PrivacyLedger(budget_eps=target, budget_delta=delta)
    for r in range(rounds):
        assert ledger.record(SERVER_USER_UNIT, r, "central_dp", central_dp_event(sigma, q),
                             adjacency=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE).accepted
    assert 0.99 * target <= ledger.epsilon(SERVER_USER_UNIT).pld <= target


def test_bad_input_is_named():
    with pytest.raises(CentralDPError, match="clip_norm"):
        clip_update(adapter(np.random.default_rng(0)), 0.0)
    with pytest.raises(CentralDPError, match="NaN"):
        clip_update({"a": np.array([np.nan], np.float32)}, 1.0)
    with pytest.raises(CentralDPError, match="non-empty dict"):
        clip_update({}, 1.0)
    with pytest.raises(CentralDPError, match="rng"):
        add_central_noise(adapter(np.random.default_rng(0)), 1.0, 1.0, rng=3)
    with pytest.raises(CentralDPError, match="sample_rate"):
        central_dp_event(1.0, 0.0)

"""Accounting helpers: event serialisation, RDP conversion, noise calibration."""
import json
import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant

from fedsim.privacy.accounting import (
    AccountingError,
    PureEpsEntry,
    calibrate_noise_multiplier,
    event_from_dict,
    event_to_dict,
    poisson_gaussian_event,
    rdp_to_epsilon,
    zcdp_epsilon,
)


def test_events_round_trip_through_json():
    event = dpa.ComposedDpEvent([
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.1)), 300),
        dpa.LaplaceDpEvent(2.0),
        dpa.SampledWithoutReplacementDpEvent(1000, 10, dpa.GaussianDpEvent(3.0)),
        dpa.NonPrivateDpEvent(),
    ])
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_event_from_dict_rejects_unknown_classes():
    with pytest.raises(AccountingError, match="unknown DpEvent class"):
        event_from_dict({"class_name": "PrivacyAccountant"})
    with pytest.raises(AccountingError, match="not a serialised DpEvent"):
        event_from_dict({"noise_multiplier": 1.0})


def test_rdp_conversion_of_a_zcdp_curve_reaches_the_closed_form():
    rho, delta = 0.5, 1e-6
    orders = np.linspace(1.01, 200, 200_000)
    assert rdp_to_epsilon(orders, rho * orders, delta) == pytest.approx(zcdp_epsilon(rho, delta), rel=1e-6)
    assert rdp_to_epsilon(orders, rho * orders, 0.0) == math.inf


def test_pure_eps_entry_rho():
    assert PureEpsEntry(2.0, 3, bounded_range=True).zcdp_rho == pytest.approx(3 * 4 / 8)
    assert PureEpsEntry(2.0, 3).zcdp_rho == pytest.approx(3 * 4 / 2)
    with pytest.raises(AccountingError, match="count"):
        PureEpsEntry(1.0, 0)


@pytest.mark.parametrize("target_eps, sample_rate, steps", [(1.0, 0.05, 40), (4.0, 0.2, 25)])
def test_calibration_hits_target_within_one_percent(target_eps, sample_rate, steps):
    delta = 1e-5
    sigma = calibrate_noise_multiplier(target_eps, delta, sample_rate, steps)
    eps = PLDAccountant().compose(poisson_gaussian_event(sigma, sample_rate, steps)).get_epsilon(delta)
    assert 0.99 * target_eps <= eps <= target_eps
    slightly_less = PLDAccountant().compose(poisson_gaussian_event(sigma * 0.99, sample_rate, steps))
    assert slightly_less.get_epsilon(delta) > target_eps


def test_calibration_rejects_bad_input():
    with pytest.raises(AccountingError, match="target_eps"):
        calibrate_noise_multiplier(0.0, 1e-5, 0.1, 10)
    with pytest.raises(AccountingError, match="sample_rate"):
        calibrate_noise_multiplier(1.0, 1e-5, 1.5, 10)
    with pytest.raises(AccountingError, match="steps"):
        calibrate_noise_multiplier(1.0, 1e-5, 0.1, 0)

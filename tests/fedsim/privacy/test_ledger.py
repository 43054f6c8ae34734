"""Privacy ledger: epsilons against dp-accounting, budgets, serialisation."""
import json
import math

import dp_accounting as dpa
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from fedsim.privacy import accounting
from fedsim.privacy.accounting import UnsupportedReleaseError, zcdp_epsilon
from fedsim.privacy.ledger import (
    SERVER_USER_UNIT,
    AdjacencyMismatchError,
    LedgerError,
    PrivacyLedger,
    PureEpsEntry,
    client_unit,
)

ADD_REMOVE = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
REPLACE = dpa.NeighboringRelation.REPLACE_ONE
DELTA = 1e-5
VDI = accounting.DEFAULT_VALUE_DISCRETIZATION


def poisson_gaussian(q: float, sigma: float, steps: int) -> dpa.DpEvent:
    return dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)


def direct_pld_eps(event: dpa.DpEvent, relation=ADD_REMOVE, delta: float = DELTA) -> float:
    return PLDAccountant(relation, VDI).compose(event).get_epsilon(delta)


def record_all(ledger: PrivacyLedger, unit: str, releases, adjacency=ADD_REMOVE):
    return [ledger.record(unit, r, "test", release, adjacency=adjacency) for r, release in enumerate(releases)]


def test_gaussian_matches_pld_accountant():
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [dpa.GaussianDpEvent(1.5)])
    assert ledger.epsilon("client/0").pld == pytest.approx(direct_pld_eps(dpa.GaussianDpEvent(1.5)), rel=1e-6)


def test_poisson_sampled_gaussian_over_rounds_matches_one_self_composed_event():
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [poisson_gaussian(0.05, 1.1, 10)] * 3)
    expected = direct_pld_eps(poisson_gaussian(0.05, 1.1, 30))
    assert ledger.epsilon("client/0").pld == pytest.approx(expected, rel=1e-6)
    # the same steps composed one event at a time differ only by discretisation
    sequential = PLDAccountant(ADD_REMOVE, VDI)
    for _ in range(3):
        sequential.compose(poisson_gaussian(0.05, 1.1, 10))
    assert ledger.epsilon("client/0").pld == pytest.approx(sequential.get_epsilon(DELTA), rel=1e-3)


def test_laplace_matches_pld_accountant():
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [dpa.LaplaceDpEvent(2.0), dpa.LaplaceDpEvent(2.0)])
    expected = direct_pld_eps(dpa.SelfComposedDpEvent(dpa.LaplaceDpEvent(2.0), 2))
    assert ledger.epsilon("client/0").pld == pytest.approx(expected, rel=1e-6)


def test_composed_event_matches_pld_accountant():
    event = dpa.ComposedDpEvent([dpa.GaussianDpEvent(3.0), poisson_gaussian(0.1, 1.5, 5), dpa.LaplaceDpEvent(4.0)])
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [event])
    assert ledger.epsilon("client/0").pld == pytest.approx(direct_pld_eps(event), rel=1e-6)


def test_pure_eps_composition_at_delta_zero_is_n_times_eps():
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [PureEpsEntry(0.5, count=4), PureEpsEntry(0.5, count=6)], adjacency=REPLACE)
    report = ledger.epsilon("client/0", delta=0.0)
    assert report.pld == pytest.approx(5.0, abs=1e-12)
    assert report.rdp == math.inf  # RDP cannot reach delta = 0


@pytest.mark.parametrize("bounded_range, divisor", [(True, 8.0), (False, 2.0)])
def test_exponential_mechanism_zcdp_route_matches_closed_form(bounded_range, divisor):
    eps_tok, n_pert = 3.0, 50
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [PureEpsEntry(eps_tok, n_pert, bounded_range)], adjacency=REPLACE)
    rho = n_pert * eps_tok ** 2 / divisor
    report = ledger.epsilon("client/0")
    assert report.rdp == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1 / DELTA)), rel=1e-12)
    if bounded_range:  # the reference's example: 150 (pure composition) or about 107 (zCDP)
        assert report.rdp == pytest.approx(107.1, abs=0.1)
        assert report.pld == pytest.approx(150.0, abs=0.01)
        assert report.route == "rdp" and report.epsilon == report.rdp


def test_rdp_route_adds_alpha_rho_to_gaussian_curve():
    """Gaussian(sigma) is 1/(2 sigma^2)-zCDP, so with an EM entry the RDP route must sit just
    above the closed form of the total rho (the order grid is discrete)."""
    sigma, eps_tok = 4.0, 0.5
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [dpa.GaussianDpEvent(sigma), PureEpsEntry(eps_tok, 8, bounded_range=True)])
    closed_form = zcdp_epsilon(1 / (2 * sigma ** 2) + 8 * eps_tok ** 2 / 8, DELTA)
    assert closed_form <= ledger.epsilon("client/0").rdp <= closed_form * 1.005


@pytest.mark.parametrize("releases", [
    [dpa.GaussianDpEvent(2.0)] * 3,
    [poisson_gaussian(0.01, 0.9, 200)] * 2,
    [dpa.LaplaceDpEvent(1.0)] * 5,
    [poisson_gaussian(0.2, 2.0, 20), dpa.GaussianDpEvent(5.0)],
    [PureEpsEntry(0.3, 20), dpa.GaussianDpEvent(3.0)],
])
def test_rdp_is_never_below_pld(releases):
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", releases)
    for delta in (1e-3, 1e-5, 1e-8):
        report = ledger.epsilon("client/0", delta)
        assert report.rdp >= report.pld - 2 * VDI, (delta, report)


def test_rdp_cross_check_matches_rdp_accountant():
    events = [poisson_gaussian(0.02, 1.0, 100), dpa.GaussianDpEvent(2.0)]
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", events)
    direct = RdpAccountant(accounting.RDP_ORDERS).compose(dpa.ComposedDpEvent(events)).get_epsilon(DELTA)
    assert ledger.epsilon("client/0").rdp == pytest.approx(direct, rel=1e-6)


def test_replace_one_events_use_pld_and_report_no_rdp():
    ledger = PrivacyLedger()
    record_all(ledger, "client/0", [dpa.GaussianDpEvent(2.0)], adjacency=REPLACE)
    report = ledger.epsilon("client/0")
    assert report.pld == pytest.approx(direct_pld_eps(dpa.GaussianDpEvent(2.0), REPLACE), rel=1e-6)
    assert report.pld > direct_pld_eps(dpa.GaussianDpEvent(2.0))  # twice the sensitivity
    assert report.rdp is None and report.epsilon == report.pld


def test_release_over_budget_is_refused_before_it_happens_and_recorded():
    ledger = PrivacyLedger(budget_eps=3.0, budget_delta=DELTA)
    step = poisson_gaussian(0.05, 1.0, 20)
    decisions = [ledger.record("client/1", r, "dpsgd", step, adjacency=ADD_REMOVE) for r in range(6)]
    accepted = [d.accepted for d in decisions]
    first_refused = accepted.index(False)
    assert first_refused > 0 and not any(accepted[first_refused:])
    spent = ledger.epsilon("client/1")
    assert spent.epsilon <= 3.0
    assert decisions[first_refused].report.epsilon > 3.0
    assert len(ledger.entries("client/1")) == first_refused
    assert not ledger.check("client/1", step, adjacency=ADD_REMOVE)
    assert ledger.check("client/1", poisson_gaussian(0.05, 1.0, 1), adjacency=ADD_REMOVE) == (
        ledger.record("client/1", 6, "dpsgd", poisson_gaussian(0.05, 1.0, 1), adjacency=ADD_REMOVE).accepted)
    refused_rows = [row for row in ledger.rows() if row.refused]
    assert len(refused_rows) == 6 - first_refused
    assert all(row.eps_pld == ledger.rows()[first_refused - 1].eps_pld for row in refused_rows)
    assert ledger.summary()["refused_releases"] == len(refused_rows)


def test_non_private_release_has_infinite_epsilon():
    unlimited = PrivacyLedger()
    assert unlimited.record("client/0", 0, "adapter", dpa.NonPrivateDpEvent(), adjacency=ADD_REMOVE).accepted
    assert unlimited.epsilon("client/0").pld == math.inf
    limited = PrivacyLedger(budget_eps=10.0)
    assert not limited.record("client/0", 0, "adapter", dpa.NonPrivateDpEvent(), adjacency=ADD_REMOVE).accepted


def test_per_unit_budgets_and_summary():
    ledger = PrivacyLedger(budget_eps=2.0, budget_delta=DELTA)
    ledger.set_budget(SERVER_USER_UNIT, 8.0, 1e-6)
    for client in range(3):
        ledger.record(client_unit(client), 0, "dpsgd", poisson_gaussian(0.05, 1.0, 5 * (client + 1)),
                      adjacency=ADD_REMOVE)
    ledger.record(client_unit(3), 0, "aem", PureEpsEntry(0.1, 3), adjacency=REPLACE, status="claimed")
    assert ledger.record(SERVER_USER_UNIT, 0, "central_dp", dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.0)),
                         adjacency=ADD_REMOVE).report.delta == 1e-6
    summary = ledger.summary()
    client_eps = sorted(ledger.epsilon(client_unit(c)).pld for c in range(4))
    assert summary["client_units"] == 4
    assert summary["client_eps_pld"]["max"] == client_eps[-1]
    assert summary["client_eps_pld"]["median"] == pytest.approx((client_eps[1] + client_eps[2]) / 2)
    assert summary["claimed_entries"] == 1 and summary["entries"] == 5
    assert summary["server_eps_pld"] == ledger.epsilon(SERVER_USER_UNIT, DELTA).pld


def test_serialisation_round_trips_exactly():
    ledger = PrivacyLedger(budget_eps=6.0, budget_delta=DELTA)
    ledger.set_budget(SERVER_USER_UNIT, math.inf, 1e-6)
    for r in range(4):
        ledger.record("client/1", r, "dpsgd", poisson_gaussian(0.05, 0.8, 25), adjacency=ADD_REMOVE,
                      params={"max_grad_norm": 1.0, "steps": 25})
        ledger.record("client/2", r, "em", PureEpsEntry(1.0, 3, bounded_range=True), adjacency=REPLACE)
        ledger.record(SERVER_USER_UNIT, r, "central_dp",
                      dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.2)), adjacency=ADD_REMOVE)
    ledger.record("client/3", 0, "laplace", dpa.ComposedDpEvent([dpa.LaplaceDpEvent(1.0)]), adjacency=ADD_REMOVE)
    assert not ledger.record("client/3", 1, "laplace", dpa.LaplaceDpEvent(0.1), adjacency=ADD_REMOVE).accepted
    text = json.dumps(ledger.to_dict())
    restored = PrivacyLedger.from_dict(json.loads(text))
    assert json.dumps(restored.to_dict()) == text
    assert restored.rows() == ledger.rows()
    assert restored.entries() == ledger.entries()
    accounting._composition_epsilon.cache_clear()
    accounting._PLD_CACHE.clear()
    for unit in ledger.units:
        for delta in (None, 1e-7):
            assert restored.epsilon(unit, delta) == ledger.epsilon(unit, delta)
    assert restored.check("client/3", dpa.LaplaceDpEvent(0.1), adjacency=ADD_REMOVE) is False
    assert restored.check("client/3", dpa.LaplaceDpEvent(1.0), adjacency=ADD_REMOVE) is True


def test_identical_histories_share_one_pld_computation():
    accounting._composition_epsilon.cache_clear()
    accounting._PLD_CACHE.clear()
    ledger = PrivacyLedger()
    rounds, units = 4, 50
    for r in range(rounds):
        for u in range(units):
            ledger.record(client_unit(u), r, "dpsgd", poisson_gaussian(0.05, 1.0, 10), adjacency=ADD_REMOVE)
    assert accounting._composition_epsilon.cache_info().misses == rounds


def test_bad_input_is_named():
    ledger = PrivacyLedger()
    ledger.record("client/0", 0, "em", PureEpsEntry(1.0), adjacency=REPLACE)
    with pytest.raises(AdjacencyMismatchError, match="REPLACE_ONE"):
        ledger.record("client/0", 1, "dpsgd", dpa.GaussianDpEvent(1.0), adjacency=ADD_REMOVE)
    with pytest.raises(UnsupportedReleaseError, match="LaplaceDpEvent"):
        ledger.record("client/9", 0, "laplace", dpa.LaplaceDpEvent(1.0), adjacency=REPLACE)
    with pytest.raises(LedgerError, match="status"):
        ledger.record("client/0", 1, "em", PureEpsEntry(1.0), adjacency=REPLACE, status="maybe")
    with pytest.raises(LedgerError, match="round"):
        ledger.record("client/0", -1, "em", PureEpsEntry(1.0), adjacency=REPLACE)
    with pytest.raises(LedgerError, match="JSON"):
        ledger.record("client/0", 1, "em", PureEpsEntry(1.0), adjacency=REPLACE, params={"x": object()})
    with pytest.raises(LedgerError, match="unknown unit"):
        ledger.epsilon("client/404")
    with pytest.raises(LedgerError, match="budget eps"):
        PrivacyLedger(budget_eps=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        PureEpsEntry(-1.0)
    with pytest.raises(ValueError, match="DpEvent or a PureEpsEntry"):
        ledger.record("client/0", 1, "x", {"eps": 1.0}, adjacency=REPLACE)
    assert len(ledger.entries()) == 1 and len(ledger.rows()) == 1

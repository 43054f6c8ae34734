"""Privacy accounting math: releases in canonical form, PLD and RDP epsilons, noise calibration.

A unit's releases are kept as a `Composition`: a hashable multiset of leaf dp-accounting events
(Composed/SelfComposed flattened into counts) and pure-epsilon entries. Composition is
commutative, so this is all an accountant needs. Epsilons are memoised per composition, so
units with identical histories (many clients with the same settings) share one computation, and
nothing is recomposed from the whole history on a repeated query. No per-unit PLD is kept (a
dense PLD takes 0.1 to several MB); PLDs live in one byte-bounded cache.

- PLD (headline): each leaf's single-application PLD comes from dp-accounting's PLDAccountant
  and is self-composed `count` times (as PLDAccountant does for sampled mechanisms); pure-epsilon
  entries are the worst-case PLD of (eps, 0)-DP from `from_privacy_parameters`, composed onto it.
- RDP (cross-check): dp-accounting's RdpAccountant curves of the events; pure-epsilon entries
  add alpha * rho at every order (eps-bounded-range gives eps^2/8-zCDP per use, pure eps-DP
  gives eps^2/2), converted with eps = min_alpha [RDP(alpha) + ln(1/delta) / (alpha - 1)]
  (in closed form, rho + 2 sqrt(rho ln(1/delta)), when there are no events). With no such
  term, dp-accounting's own (tighter) conversion is used.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import attr
import numpy as np
from dp_accounting import dp_event
from dp_accounting.dp_event import (
    DpEvent,
    GaussianDpEvent,
    NoOpDpEvent,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
)
from dp_accounting.mechanism_calibration import ExplicitBracketInterval, calibrate_dp_mechanism
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp.rdp_privacy_accountant import (
    DEFAULT_RDP_ORDERS,
    RdpAccountant,
    compute_epsilon,
)

# PLD grid: dp-accounting defaults to 1e-4; 1e-3 is about 10x faster and smaller, changes
# epsilons by ~1e-4 relative, and stays a valid (pessimistic) upper bound.
DEFAULT_VALUE_DISCRETIZATION = 1e-3
RDP_ORDERS = np.array(DEFAULT_RDP_ORDERS, dtype=np.float64)


class AccountingError(ValueError):
    """A release or a request the accountants cannot handle as asked."""


class UnsupportedReleaseError(AccountingError):
    """The PLD accountant does not support this event under this neighbouring relation."""


@dataclass(frozen=True)
class PureEpsEntry:
    """A mechanism with no DpEvent, such as the exponential mechanism: `count` uses of an
    `epsilon`-DP mechanism. `bounded_range` (EM is eps-bounded-range) gives eps^2/8-zCDP per use
    on the RDP route; without it, pure eps-DP gives eps^2/2."""

    epsilon: float
    count: int = 1
    bounded_range: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise AccountingError(f"PureEpsEntry.epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise AccountingError(f"PureEpsEntry.count must be an integer >= 1, got {self.count!r}")

    @property
    def zcdp_rho(self) -> float:
        """rho of the zCDP guarantee of all `count` uses."""
        return self.count * self.epsilon ** 2 / (8.0 if self.bounded_range else 2.0)


@dataclass(frozen=True)
class EpsReport:
    """Epsilon at `delta` from both accountants; `epsilon` is the smaller valid bound."""

    delta: float
    pld: float
    rdp: float | None  # None where dp-accounting's RDP accountant cannot analyse the events

    @property
    def epsilon(self) -> float:
        return self.pld if self.rdp is None else min(self.pld, self.rdp)

    @property
    def route(self) -> str:
        """Which accountant gave `epsilon`: "pld" or "rdp"."""
        return "rdp" if self.rdp is not None and self.rdp < self.pld else "pld"


# ---- events as JSON ------------------------------------------------------------------------------

def event_to_dict(event: DpEvent) -> dict:
    """JSON-able form of a dp-accounting event: its class name and its (attrs) fields."""
    data = {"class_name": type(event).__name__}
    for event_field in attr.fields(type(event)):
        data[event_field.name] = _value_to_json(getattr(event, event_field.name))
    return data


def _value_to_json(value):
    if isinstance(value, DpEvent):
        return event_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_value_to_json(v) for v in value]
    return value


def event_from_dict(data: dict) -> DpEvent:
    """Inverse of `event_to_dict`; only classes of `dp_accounting.dp_event` are accepted."""
    if not isinstance(data, dict) or "class_name" not in data:
        raise AccountingError(f"not a serialised DpEvent: {data!r}")
    cls = getattr(dp_event, data["class_name"], None)
    if not (isinstance(cls, type) and issubclass(cls, DpEvent)):
        raise AccountingError(f"unknown DpEvent class {data['class_name']!r}")
    kwargs = {k: _json_to_value(v) for k, v in data.items() if k != "class_name"}
    return cls(**kwargs)


def _json_to_value(value):
    if isinstance(value, dict):
        return event_from_dict(value)
    if isinstance(value, list):
        return [_json_to_value(v) for v in value]
    return value


def _event_key(event: DpEvent) -> str:
    """Canonical JSON of an event, interned: many compositions hold the same few keys."""
    return sys.intern(json.dumps(event_to_dict(event), sort_keys=True))


def _leaf_counts(event: DpEvent, count: int) -> Iterator[tuple[DpEvent, int]]:
    """Flatten Composed/SelfComposed events into (leaf event, number of applications)."""
    if isinstance(event, NoOpDpEvent) or count == 0:
        return
    if isinstance(event, SelfComposedDpEvent):
        yield from _leaf_counts(event.event, count * event.count)
    elif isinstance(event, dp_event.ComposedDpEvent):
        for sub_event in event.events:
            yield from _leaf_counts(sub_event, count)
    else:
        yield event, count


# ---- one unit's releases in canonical form -------------------------------------------------------

@dataclass(frozen=True)
class Composition:
    """Hashable multiset of one unit's releases under one neighbouring relation."""

    relation: NeighboringRelation
    events: tuple[tuple[str, int], ...] = field(default=())  # (leaf event JSON, count), sorted
    pure: tuple[tuple[float, bool, int], ...] = field(default=())  # (eps, bounded_range, count)

    def with_release(self, release: DpEvent | PureEpsEntry) -> Composition:
        """This composition plus one more release (the release is validated first)."""
        if isinstance(release, PureEpsEntry):
            counts = {(e, b): c for e, b, c in self.pure}
            key = (float(release.epsilon), release.bounded_range)
            counts[key] = counts.get(key, 0) + release.count
            pure = tuple(sorted((e, b, c) for (e, b), c in counts.items()))
            return Composition(self.relation, self.events, pure)
        if not isinstance(release, DpEvent):
            raise AccountingError(
                f"a release is a dp-accounting DpEvent or a PureEpsEntry, got {type(release).__name__}")
        check_supported(release, self.relation)
        counts = dict(self.events)
        for leaf, count in _leaf_counts(release, 1):
            key = _event_key(leaf)
            counts[key] = counts.get(key, 0) + count
        return Composition(self.relation, tuple(sorted(counts.items())), self.pure)


def check_supported(event: DpEvent, relation: NeighboringRelation) -> None:
    """Raise `UnsupportedReleaseError` unless the PLD accountant handles `event` under `relation`."""
    if not PLDAccountant(relation).supports(event):
        raise UnsupportedReleaseError(
            f"dp-accounting's PLD accountant does not support {event!r} under {relation.name}")


def composition_epsilon(composition: Composition, delta: float,
                        value_discretization_interval: float = DEFAULT_VALUE_DISCRETIZATION) -> EpsReport:
    """PLD and RDP epsilon of a composition at `delta` (memoised)."""
    if not 0 <= delta < 1:
        raise AccountingError(f"delta must be in [0, 1), got {delta!r}")
    return _composition_epsilon(composition, float(delta), float(value_discretization_interval))


@functools.lru_cache(maxsize=200_000)
def _composition_epsilon(composition: Composition, delta: float, vdi: float) -> EpsReport:
    pld = _PLD_CACHE.get(("composition", composition, vdi), lambda: _composition_pld(composition, vdi))
    pld_eps = math.inf if pld is None else float(pld.get_epsilon_for_delta(delta))
    return EpsReport(delta=delta, pld=pld_eps, rdp=_rdp_epsilon(composition, delta))


class _ComposablePLDAccountant(PLDAccountant):
    """PLDAccountant that exposes its composed PLD (dp-accounting keeps it in `_pld`), so that
    leaf PLDs can be memoised and pure-epsilon entries, which have no DpEvent, composed onto it."""

    @property
    def pld(self) -> pld_lib.PrivacyLossDistribution | None:
        """The composed PLD, or None once a non-private event was composed (epsilon = inf)."""
        return None if self._contains_non_dp_event else self._pld


class _PLDCache:
    """Least-recently-used PLDs under a byte budget (a dense PLD can take megabytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[pld_lib.PrivacyLossDistribution | None, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple, build: Callable[[], pld_lib.PrivacyLossDistribution | None]
            ) -> pld_lib.PrivacyLossDistribution | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = build()
        size = _pld_nbytes(value)
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, evicted) = self._items.popitem(last=False)
            self._bytes -= evicted
        return value

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


def _pld_nbytes(pld: pld_lib.PrivacyLossDistribution | None) -> int:
    """Approximate memory of a PLD: 8 bytes per stored loss (dp-accounting keeps its pmfs private)."""
    if pld is None:
        return 0
    pmfs = {id(pld._pmf_remove): pld._pmf_remove, id(pld._pmf_add): pld._pmf_add}
    return 8 * sum(pmf.size for pmf in pmfs.values())


_PLD_CACHE = _PLDCache(max_bytes=256 * 2 ** 20)


def _composition_pld(composition: Composition, vdi: float) -> pld_lib.PrivacyLossDistribution | None:
    """The composition's PLD, or None when it holds a non-private release. Each leaf event is
    self-composed as PLDAccountant does for sampled mechanisms (`self_compose(count)`), from a
    cached single-application PLD, so a new count does not rebuild the mechanism's PLD."""
    pure_pld = None
    for epsilon, _, count in composition.pure:
        pld = _PLD_CACHE.get(("pure", epsilon, count, vdi), lambda: _pure_eps_pld(epsilon, count, vdi))
        pure_pld = pld if pure_pld is None else pure_pld.compose(pld, tail_mass_truncation=0.0)
    if not composition.events:
        return pure_pld if pure_pld is not None else pld_lib.identity(vdi)
    composed = pld_lib.identity(vdi)
    for key, count in composition.events:
        leaf = _PLD_CACHE.get(("leaf", composition.relation, key, vdi),
                              lambda: _leaf_pld(composition.relation, key, vdi))
        if leaf is None:
            return None
        composed = composed.compose(leaf.self_compose(count))
    return composed if pure_pld is None else composed.compose(pure_pld)


def _leaf_pld(relation: NeighboringRelation, leaf_key: str, vdi: float
              ) -> pld_lib.PrivacyLossDistribution | None:
    """PLD of one application of a leaf event, built by dp-accounting's PLD accountant."""
    accountant = _ComposablePLDAccountant(relation, vdi)
    return accountant.compose(event_from_dict(json.loads(leaf_key))).pld


def _pure_eps_pld(epsilon: float, count: int, vdi: float) -> pld_lib.PrivacyLossDistribution:
    """Worst-case PLD of `count` uses of an (epsilon, 0)-DP mechanism, without tail truncation
    (so that delta = 0 gives exactly count * epsilon)."""
    single = pld_lib.from_privacy_parameters(
        pld_common.DifferentialPrivacyParameters(epsilon, 0.0), value_discretization_interval=vdi)
    return single.self_compose(count, tail_mass_truncation=0.0)


@functools.lru_cache(maxsize=4096)
def _leaf_rdp(relation: NeighboringRelation, leaf_key: str) -> tuple[float, ...] | None:
    """RDP curve of one leaf event on RDP_ORDERS, or None where the RDP accountant cannot
    analyse it. dp-accounting's RDP accountant ignores REPLACE_ONE for Gaussian and Laplace
    events (it would report the add/remove curve), so only ADD_OR_REMOVE_ONE is trusted."""
    if relation is not NeighboringRelation.ADD_OR_REMOVE_ONE:
        return None
    accountant = RdpAccountant(RDP_ORDERS, relation)
    leaf = event_from_dict(json.loads(leaf_key))
    if not accountant.supports(leaf):
        return None
    return tuple(accountant.compose(leaf).rdp.tolist())


def _rdp_epsilon(composition: Composition, delta: float) -> float | None:
    rdp = np.zeros_like(RDP_ORDERS)
    for key, count in composition.events:
        curve = _leaf_rdp(composition.relation, key)
        if curve is None:
            return None
        rdp += count * np.asarray(curve)
    rho = sum(PureEpsEntry(e, c, b).zcdp_rho for e, b, c in composition.pure)
    if rho == 0:
        return float(compute_epsilon(RDP_ORDERS, rdp, delta)[0])
    if not composition.events:
        return zcdp_epsilon(rho, delta)  # the minimum over all real orders, in closed form
    return rdp_to_epsilon(RDP_ORDERS, rdp + rho * RDP_ORDERS, delta)


def rdp_to_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """eps(delta) = min over orders alpha > 1 of RDP(alpha) + ln(1/delta) / (alpha - 1)."""
    if delta <= 0:
        return math.inf
    usable = orders > 1
    values = rdp[usable] + math.log(1.0 / delta) / (orders[usable] - 1.0)
    return float(max(0.0, np.min(values)))


def zcdp_epsilon(rho: float, delta: float) -> float:
    """Closed-form (eps, delta) of rho-zCDP: eps = rho + 2 sqrt(rho ln(1/delta))."""
    if delta <= 0:
        return math.inf
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


# ---- noise calibration ---------------------------------------------------------------------------

def poisson_gaussian_event(noise_multiplier: float, sample_rate: float, steps: int) -> DpEvent:
    """`steps` applications of a Poisson-subsampled Gaussian mechanism."""
    return SelfComposedDpEvent(PoissonSampledDpEvent(sample_rate, GaussianDpEvent(noise_multiplier)), steps)


_MIN_NOISE_MULTIPLIER = 0.02
_MAX_NOISE_MULTIPLIER = 2.0 ** 20


@functools.lru_cache(maxsize=256)
def calibrate_noise_multiplier(target_eps: float, delta: float, sample_rate: float, steps: int,
                               rel_tol: float = 1e-4,
                               value_discretization_interval: float = DEFAULT_VALUE_DISCRETIZATION) -> float:
    """Smallest noise multiplier (within `rel_tol`) for which `steps` Poisson-subsampled
    Gaussian steps at `sample_rate` are (target_eps, delta)-DP under the PLD accountant
    (add/remove adjacency): a bracket, then dp-accounting's `calibrate_dp_mechanism`."""
    if not (math.isfinite(target_eps) and target_eps > 0):
        raise AccountingError(f"target_eps must be a finite number > 0, got {target_eps!r}")
    if not 0 < delta < 1:
        raise AccountingError(f"delta must be in (0, 1), got {delta!r}")
    if not 0 < sample_rate <= 1:
        raise AccountingError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if not isinstance(steps, int) or steps < 1:
        raise AccountingError(f"steps must be an integer >= 1, got {steps!r}")

    def eps_at(sigma: float) -> float:
        return PLDAccountant(value_discretization_interval=value_discretization_interval).compose(
            poisson_gaussian_event(sigma, sample_rate, steps)).get_epsilon(delta)

    upper = 1.0
    while eps_at(upper) > target_eps:
        upper *= 2.0
        if upper > _MAX_NOISE_MULTIPLIER:
            raise AccountingError(f"no noise multiplier below {_MAX_NOISE_MULTIPLIER} reaches eps={target_eps}")
    lower = upper / 2.0
    while eps_at(lower) <= target_eps:
        lower /= 2.0
        if lower < _MIN_NOISE_MULTIPLIER:
            raise AccountingError(
                f"target_eps={target_eps} is so loose that noise multiplier {_MIN_NOISE_MULTIPLIER} "
                f"already meets it for {steps} steps at sample_rate={sample_rate}")
    return float(calibrate_dp_mechanism(
        lambda: PLDAccountant(value_discretization_interval=value_discretization_interval),
        lambda s: poisson_gaussian_event(s, sample_rate, steps),
        target_eps, delta, ExplicitBracketInterval(lower, upper), tol=rel_tol * lower))

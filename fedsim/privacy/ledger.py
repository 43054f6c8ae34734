"""Privacy ledger: one account per protected data unit, with budgets enforced before release.

Units are ids such as "client/17" (a client's records) or "server/users" (the user-level unit
of central DP). Every private release is an entry holding a dp-accounting `DpEvent` or, for
mechanisms without one (the exponential mechanism), a `PureEpsEntry`. A release that would
take its unit over budget is refused: no entry is added and the refusal is kept as a row.

Parallel composition is the caller's business: releases about disjoint records of one unit
are recorded once, as the per-record worst case (e.g. FedCoT perturbs each example once, so
one PureEpsEntry(eps_tok, count=n_pert) covers the whole data set).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Literal

from dp_accounting.dp_event import DpEvent
from dp_accounting.privacy_accountant import NeighboringRelation

from fedsim.privacy.accounting import (
    DEFAULT_VALUE_DISCRETIZATION,
    AccountingError,
    Composition,
    EpsReport,
    PureEpsEntry,
    composition_epsilon,
    event_from_dict,
    event_to_dict,
)

SERVER_USER_UNIT = "server/users"
CLIENT_UNIT_PREFIX = "client/"
FORMAT = "fedsim.privacy_ledger/1"
Status = Literal["proven", "claimed"]
STATUSES = ("proven", "claimed")

__all__ = [
    "SERVER_USER_UNIT", "AdjacencyMismatchError", "Decision", "EpsReport", "LedgerEntry",
    "LedgerError", "LedgerRow", "PrivacyLedger", "PureEpsEntry", "client_unit",
]


class LedgerError(AccountingError):
    """Bad input to the ledger."""


class AdjacencyMismatchError(LedgerError):
    """An entry's neighbouring relation differs from the one its unit is accounted under."""


def client_unit(client_id: int | str) -> str:
    """Unit id of a client's private data set."""
    return f"{CLIENT_UNIT_PREFIX}{client_id}"


@dataclass(frozen=True)
class LedgerEntry:
    """One accepted private release."""

    unit: str
    round: int
    mechanism: str
    release: DpEvent | PureEpsEntry
    adjacency: NeighboringRelation
    status: Status
    params: dict = field(default_factory=dict)  # mechanism parameters, JSON-able


@dataclass(frozen=True)
class LedgerRow:
    """A result row: the unit's epsilon spent so far after this request (unchanged if refused)."""

    round: int
    unit: str
    mechanism: str
    eps_pld: float
    eps_rdp: float | None
    delta: float
    status: Status
    refused: bool


@dataclass(frozen=True)
class Decision:
    """Outcome of a release request. `report` is the unit's epsilon with the release included:
    the new total if accepted, what it would have been if refused."""

    accepted: bool
    unit: str
    report: EpsReport
    budget_eps: float
    budget_delta: float


class PrivacyLedger:
    """Per-unit privacy accounts under an (eps, delta) budget (default for every unit,
    overridable per unit with `set_budget`)."""

    def __init__(self, budget_eps: float = math.inf, budget_delta: float = 1e-5, *,
                 value_discretization_interval: float = DEFAULT_VALUE_DISCRETIZATION) -> None:
        _check_budget(budget_eps, budget_delta)
        if not 0 < value_discretization_interval <= 0.1:
            raise LedgerError(
                f"value_discretization_interval must be in (0, 0.1], got {value_discretization_interval!r}")
        self.budget_eps = float(budget_eps)
        self.budget_delta = float(budget_delta)
        self.value_discretization_interval = float(value_discretization_interval)
        self._unit_budgets: dict[str, tuple[float, float]] = {}
        self._compositions: dict[str, Composition] = {}
        self._entries: list[LedgerEntry] = []
        self._rows: list[LedgerRow] = []

    # ---- budgets ---------------------------------------------------------------------------------

    def set_budget(self, unit: str, eps: float, delta: float) -> None:
        """Give `unit` its own budget (e.g. the server's user-level unit)."""
        _check_unit(unit)
        _check_budget(eps, delta)
        self._unit_budgets[unit] = (float(eps), float(delta))

    def budget(self, unit: str) -> tuple[float, float]:
        """The (eps, delta) budget of `unit`."""
        return self._unit_budgets.get(unit, (self.budget_eps, self.budget_delta))

    # ---- releases --------------------------------------------------------------------------------

    def check(self, unit: str, release: DpEvent | PureEpsEntry, *,
              adjacency: NeighboringRelation) -> bool:
        """Whether `release` would fit in `unit`'s budget; records nothing."""
        return self._evaluate(unit, release, adjacency)[0].accepted

    def record(self, unit: str, round: int, mechanism: str, release: DpEvent | PureEpsEntry, *,
               adjacency: NeighboringRelation, status: Status = "proven",
               params: dict | None = None) -> Decision:
        """Request a release: add it as an entry if it fits the budget, else refuse it.
        Either way a row is appended. Check `Decision.accepted` before releasing anything."""
        if not isinstance(round, int) or isinstance(round, bool) or round < 0:
            raise LedgerError(f"round must be an integer >= 0, got {round!r}")
        if not isinstance(mechanism, str) or not mechanism:
            raise LedgerError(f"mechanism must be a non-empty string, got {mechanism!r}")
        if status not in STATUSES:
            raise LedgerError(f"status must be one of {STATUSES}, got {status!r}")
        params = dict(params or {})
        try:
            json.dumps(params, allow_nan=True)
        except TypeError as error:
            raise LedgerError(f"params of {mechanism!r} must be JSON-able: {error}") from None
        decision, candidate = self._evaluate(unit, release, adjacency)
        self._compositions.setdefault(unit, Composition(adjacency))
        if decision.accepted:
            self._compositions[unit] = candidate
            self._entries.append(LedgerEntry(unit, round, mechanism, release, adjacency, status, params))
            spent = decision.report
        else:
            spent = self.epsilon(unit, decision.budget_delta)
        self._rows.append(LedgerRow(round, unit, mechanism, spent.pld, spent.rdp, spent.delta,
                                    status, not decision.accepted))
        return decision

    def _evaluate(self, unit: str, release: DpEvent | PureEpsEntry,
                  adjacency: NeighboringRelation) -> tuple[Decision, Composition]:
        _check_unit(unit)
        if not isinstance(adjacency, NeighboringRelation):
            raise LedgerError(f"adjacency must be a dp_accounting NeighboringRelation, got {adjacency!r}")
        current = self._compositions.get(unit, Composition(adjacency))
        if current.relation is not adjacency:
            raise AdjacencyMismatchError(
                f"unit {unit!r} is accounted under {current.relation.name}, but this release is "
                f"declared under {adjacency.name}; convert it explicitly (an eps guarantee under "
                f"ADD_OR_REMOVE_ONE gives 2*eps under REPLACE_ONE; a DpEvent can be re-declared "
                f"under the unit's relation, which dp-accounting then analyses)")
        candidate = current.with_release(release)
        eps_budget, delta_budget = self.budget(unit)
        report = composition_epsilon(candidate, delta_budget, self.value_discretization_interval)
        decision = Decision(report.epsilon <= eps_budget, unit, report, eps_budget, delta_budget)
        return decision, candidate

    # ---- reading ---------------------------------------------------------------------------------

    @property
    def units(self) -> list[str]:
        """Units that have requested at least one release."""
        return list(self._compositions)

    def epsilon(self, unit: str, delta: float | None = None) -> EpsReport:
        """Epsilon spent by `unit` at `delta` (default: the unit's budget delta)."""
        if unit not in self._compositions:
            raise LedgerError(f"unknown unit {unit!r}: it has requested no release")
        delta = self.budget(unit)[1] if delta is None else delta
        return composition_epsilon(self._compositions[unit], delta, self.value_discretization_interval)

    def entries(self, unit: str | None = None) -> list[LedgerEntry]:
        """Accepted entries, all or of one unit, in recording order."""
        return [e for e in self._entries if unit is None or e.unit == unit]

    def rows(self) -> list[LedgerRow]:
        """One row per release request, in order (use dataclasses.asdict for a DataFrame)."""
        return list(self._rows)

    def summary(self, delta: float | None = None) -> dict:
        """Max and median epsilon over client units, the server unit, claimed entries, refusals."""
        delta = self.budget_delta if delta is None else delta
        clients = [self.epsilon(u, delta) for u in self._compositions if u.startswith(CLIENT_UNIT_PREFIX)]
        server = self.epsilon(SERVER_USER_UNIT, delta) if SERVER_USER_UNIT in self._compositions else None
        return {
            "delta": delta,
            "client_units": len(clients),
            "client_eps_pld": _max_and_median([r.pld for r in clients]),
            "client_eps_rdp": _max_and_median([r.rdp for r in clients]),
            "client_eps": _max_and_median([r.epsilon for r in clients]),
            "server_eps_pld": None if server is None else server.pld,
            "server_eps_rdp": None if server is None else server.rdp,
            "entries": len(self._entries),
            "claimed_entries": sum(e.status == "claimed" for e in self._entries),
            "refused_releases": sum(r.refused for r in self._rows),
        }

    # ---- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-able state (json.dumps writes inf as Infinity); `from_dict` restores it exactly."""
        return {
            "format": FORMAT,
            "budget": {"eps": self.budget_eps, "delta": self.budget_delta},
            "unit_budgets": {u: {"eps": e, "delta": d} for u, (e, d) in self._unit_budgets.items()},
            "value_discretization_interval": self.value_discretization_interval,
            "units": {u: c.relation.name for u, c in self._compositions.items()},
            "entries": [_entry_to_dict(e) for e in self._entries],
            "rows": [asdict(r) for r in self._rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PrivacyLedger:
        """Rebuild a ledger written by `to_dict` (entries are replayed, not re-checked)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LedgerError(f"not a privacy ledger of format {FORMAT!r}")
        ledger = cls(data["budget"]["eps"], data["budget"]["delta"],
                     value_discretization_interval=data["value_discretization_interval"])
        for unit, budget in data["unit_budgets"].items():
            ledger.set_budget(unit, budget["eps"], budget["delta"])
        for unit, relation in data["units"].items():
            ledger._compositions[unit] = Composition(NeighboringRelation[relation])
        for item in data["entries"]:
            entry = _entry_from_dict(item)
            ledger._compositions[entry.unit] = ledger._compositions[entry.unit].with_release(entry.release)
            ledger._entries.append(entry)
        ledger._rows = [LedgerRow(**row) for row in data["rows"]]
        return ledger


def _check_unit(unit: str) -> None:
    if not isinstance(unit, str) or not unit:
        raise LedgerError(f"unit must be a non-empty string such as 'client/17', got {unit!r}")


def _check_budget(eps: float, delta: float) -> None:
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise LedgerError(f"budget eps must be > 0 (math.inf for no limit), got {eps!r}")
    if not (isinstance(delta, (int, float)) and 0 <= delta < 1):
        raise LedgerError(f"budget delta must be in [0, 1), got {delta!r}")


def _max_and_median(values: list[float | None]) -> dict | None:
    if not values or any(v is None for v in values):
        return None
    return {"max": max(values), "median": statistics.median(values)}


def _entry_to_dict(entry: LedgerEntry) -> dict:
    release = entry.release
    return {
        "unit": entry.unit, "round": entry.round, "mechanism": entry.mechanism,
        "adjacency": entry.adjacency.name, "status": entry.status, "params": entry.params,
        "event": event_to_dict(release) if isinstance(release, DpEvent) else None,
        "pure_eps": asdict(release) if isinstance(release, PureEpsEntry) else None,
    }


def _entry_from_dict(item: dict) -> LedgerEntry:
    release = (event_from_dict(item["event"]) if item["event"] is not None
               else PureEpsEntry(**item["pure_eps"]))
    return LedgerEntry(item["unit"], item["round"], item["mechanism"], release,
                       NeighboringRelation[item["adjacency"]], item["status"], item["params"])

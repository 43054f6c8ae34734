"""Client device profiles and the virtual clock (FedScale style).

A client's round time is samples x seconds-per-sample plus (bytes down + bytes up) over its bandwidth.
Each round samples ceil(K x over-commit) online clients, keeps the K fastest that meet the deadline,
and lasts as long as the slowest kept client. Times are simulated seconds, never slept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.comm import SERVER
from fedsim.config import ClientsConfig, Distribution
from fedsim.rng import numpy_stream, stream_seed


def _lognormal(dist: Distribution, size: int, rng: np.random.Generator) -> np.ndarray:
    if dist.sigma == 0:
        return np.full(size, dist.median, dtype=np.float64)
    return dist.median * np.exp(rng.normal(0.0, dist.sigma, size))


@dataclass
class ClientProfiles:
    """Per-client device data for the whole population, as arrays (clients are data, not processes)."""

    preset_index: np.ndarray      # int16 [N]: index into `presets`
    presets: list[str]
    seconds_per_sample: np.ndarray  # float32 [N]
    bandwidth_bps: np.ndarray       # float32 [N], bits per second
    availability: float

    @property
    def num_clients(self) -> int:
        return len(self.preset_index)

    @classmethod
    def draw(cls, config: ClientsConfig, seed: int) -> "ClientProfiles":
        rng = numpy_stream(seed, SERVER, 0, "profiles")
        presets = list(config.presets)
        shares = np.array([config.presets[name] for name in presets], dtype=np.float64)
        preset_index = rng.choice(len(presets), size=config.num, p=shares / shares.sum()).astype(np.int16)
        speed = _lognormal(config.seconds_per_sample, config.num, rng).astype(np.float32)
        bandwidth = (_lognormal(config.bandwidth_mbps, config.num, rng) * 1e6).astype(np.float32)
        return cls(preset_index, presets, speed, bandwidth, config.availability)

    def preset_of(self, client: int) -> str:
        return self.presets[int(self.preset_index[client])]

    def is_online(self, seed: int, client: int, round_index: int) -> bool:
        """Whether a client is online in a round (its own keyed draw)."""
        if self.availability >= 1.0:
            return True
        draw = stream_seed(seed, client, round_index, "online") / float(1 << 63)
        return draw < self.availability

    def completion_time(self, client: int, samples: int, bytes_down: int, bytes_up: int) -> tuple[float, float]:
        """(compute seconds, transfer seconds) of one client round."""
        compute = samples * float(self.seconds_per_sample[client])
        transfer = 8.0 * (bytes_down + bytes_up) / float(self.bandwidth_bps[client])
        return compute, transfer


@dataclass
class CohortPlan:
    """The clients of one round: those that will run, and those left out and why."""

    selected: list[int]
    stragglers: list[int]
    missed_deadline: list[int]
    planned_s: dict[int, float]


def sample_online(profiles: ClientProfiles, seed: int, round_index: int, count: int) -> list[int]:
    """Draw `count` distinct online clients for a round without scanning the population."""
    n = profiles.num_clients
    rng = numpy_stream(seed, SERVER, round_index, "sample")
    chunk = min(n, max(4 * count, 64))
    candidates = rng.choice(n, size=chunk, replace=False)
    online = [int(c) for c in candidates if profiles.is_online(seed, int(c), round_index)]
    if len(online) < count and chunk < n:
        rest = np.setdiff1d(rng.permutation(n), candidates, assume_unique=True)
        online += [int(c) for c in rest if profiles.is_online(seed, int(c), round_index)]
    return online[:count]


def sample_poisson(profiles: ClientProfiles, seed: int, round_index: int, rate: float) -> list[int]:
    """Poisson sampling: every client independently with probability `rate`, then the online ones.

    Drawn as a Binomial(N, rate) count and a uniform subset of that size (the same distribution as
    N coin flips) so the cost is O(cohort), not O(N).
    """
    n = profiles.num_clients
    rng = numpy_stream(seed, SERVER, round_index, "sample")
    count = int(rng.binomial(n, rate))
    drawn = rng.choice(n, size=count, replace=False) if count else np.empty(0, dtype=np.int64)
    return [int(c) for c in drawn if profiles.is_online(seed, int(c), round_index)]


def plan_cohort(profiles: ClientProfiles, candidates: list[int], keep: int, planned_s: dict[int, float],
                deadline_s: float | None) -> CohortPlan:
    """Keep the `keep` fastest candidates that meet the deadline (ties broken by client id)."""
    in_time = [c for c in candidates if deadline_s is None or planned_s[c] <= deadline_s]
    late = sorted(set(candidates) - set(in_time))
    ranked = sorted(in_time, key=lambda c: (planned_s[c], c))
    return CohortPlan(sorted(ranked[:keep]), sorted(ranked[keep:]), late, planned_s)


@dataclass
class VirtualClock:
    """Simulated time of the federation, advanced round by round."""

    now_s: float = 0.0

    def advance(self, seconds: float) -> float:
        self.now_s += seconds
        return self.now_s

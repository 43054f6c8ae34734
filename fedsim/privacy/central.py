"""Central (user-level) DP for federated averaging of adapters (DP-FedAvg).

Per round: the cohort is Poisson-sampled at rate q; each client clips its update over the
concatenated adapter to L2 norm C; the server sums the clipped updates with weight 1 each (so
one user changes the sum by at most C), adds N(0, sigma^2 C^2) to every coordinate of the sum
and divides by the expected cohort size q * N. The noise is added after the (secure) sum by
a trusted aggregator. Each round is one PoissonSampled(q, Gaussian(sigma)) event on the unit
"server/users"; R rounds compose to SelfComposed(PoissonSampled(q, Gaussian(sigma)), R).
"""
from __future__ import annotations

import math

import numpy as np
from dp_accounting.dp_event import DpEvent, GaussianDpEvent, PoissonSampledDpEvent

from fedsim.privacy.accounting import AccountingError

Update = dict[str, np.ndarray]


class CentralDPError(AccountingError):
    """Bad input to a central-DP step."""


def clip_update(update: Update, clip_norm: float) -> tuple[Update, float]:
    """Scale `update` by min(1, C / ||update||_2), the norm taken over all its arrays together.
    Returns the clipped update (same keys and dtypes) and the original norm."""
    _check_positive("clip_norm", clip_norm)
    _check_update(update)
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values()))
    factor = 1.0 if norm <= clip_norm else clip_norm / norm
    clipped = {k: (a.astype(np.float64) * factor).astype(a.dtype) for k, a in update.items()}
    return clipped, norm


def add_central_noise(summed: Update, noise_multiplier: float, clip_norm: float,
                      rng: np.random.Generator) -> Update:
    """The sum of clipped updates plus N(0, (noise_multiplier * clip_norm)^2) per coordinate.
    Noise is drawn in sorted key order, so it does not depend on the dict's insertion order."""
    _check_positive("clip_norm", clip_norm)
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise CentralDPError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if not isinstance(rng, np.random.Generator):
        raise CentralDPError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    _check_update(summed)
    std = noise_multiplier * clip_norm
    return {k: (summed[k].astype(np.float64) + rng.normal(0.0, std, size=summed[k].shape))
            .astype(summed[k].dtype) for k in sorted(summed)}


def central_dp_average(summed: Update, noise_multiplier: float, clip_norm: float,
                       expected_cohort_size: float, rng: np.random.Generator) -> Update:
    """The round's model update: noised sum divided by the expected cohort size q * N (not by
    the realised cohort size, which would depend on who was sampled)."""
    _check_positive("expected_cohort_size", expected_cohort_size)
    noised = add_central_noise(summed, noise_multiplier, clip_norm, rng)
    return {k: (a.astype(np.float64) / expected_cohort_size).astype(a.dtype) for k, a in noised.items()}


def central_dp_event(noise_multiplier: float, sample_rate: float) -> DpEvent:
    """The ledger event of one central-DP round."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise CentralDPError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    _check_rate(sample_rate)
    return PoissonSampledDpEvent(sample_rate, GaussianDpEvent(noise_multiplier))


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise CentralDPError(f"{name} must be a finite number > 0, got {value!r}")


def _check_rate(sample_rate: float) -> None:
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise CentralDPError(f"sample_rate must be in (0, 1], got {sample_rate!r}")


def _check_update(update: Update) -> None:
    if not isinstance(update, dict) or not update:
        raise CentralDPError("an update is a non-empty dict of parameter name -> numpy array")
    for name, array in update.items():
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            raise CentralDPError(f"update[{name!r}] must be a floating-point numpy array")
        if not np.all(np.isfinite(array)):
            raise CentralDPError(f"update[{name!r}] holds NaN or infinite values")

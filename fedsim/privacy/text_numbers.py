"""Numbers as perturbable units, independent of how a tokenizer splits them.

Many LLM tokenizers (LLaMA, Mistral, Qwen, the built-in one) cut numbers into single
digits, so number *tokens* cannot carry a numeric mechanism. Here every run of ASCII digits
in the text (at most MAX_DIGITS long) is one unit, replaced by a number of the same
length: its domain is [10^(k-1), 10^k - 1] for k digits (0..9 for one digit) or, when it has
a leading zero, every zero-padded k-digit string. The utility is u(x, x') = 1 - 2|x - x'|/R
with R the domain's range, the same [-1, 1] scale as cosine similarity.

Both mechanisms reduce to a two-sided geometric law P(x') ∝ exp(-λ|x' - x|) on an integer
interval around x, sampled exactly in closed form:
- EM: the interval is x's group, the domain cut into consecutive blocks of `group_size`
  (the last block takes the remainder, so groups hold group_size..2·group_size - 1
  numbers, or the whole domain when it is smaller); Δu of a group of G numbers is
  2(G - 1)/R, so λ = eps / (2(G - 1)).
- AEM: the interval is {x' : |x' - x| <= |L|}, L ~ Laplace(0, 2R/eps_lap) (the noisy value
  x + L sets the threshold u(x, x + L)), and λ = eps_em / (R·Δu).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MAX_DIGITS = 15
"""Longer digit runs are left in clear: beyond 15 digits float64 arithmetic is not exact."""
NUMBER_PATTERN = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class NumberDomains:
    """Values of digit strings and the integer domain [low, high] each is replaced within."""

    values: np.ndarray   # float64, exact integers
    low: np.ndarray      # float64
    high: np.ndarray     # float64
    width: np.ndarray    # int64, digits to print (zero-padded)

    @property
    def value_range(self) -> np.ndarray:
        return self.high - self.low


def number_domains(digit_strings: list[str]) -> NumberDomains:
    """The replacement domain of each digit string (see the module docstring)."""
    width = np.array([len(s) for s in digit_strings], dtype=np.int64)
    if np.any(width > MAX_DIGITS) or np.any(width == 0):
        raise ValueError(f"digit strings must have 1..{MAX_DIGITS} digits")
    values = np.array([float(int(s)) for s in digit_strings], dtype=np.float64)
    padded = np.array([len(s) > 1 and s[0] == "0" for s in digit_strings], dtype=bool)
    low = np.where(padded | (width == 1), 0.0, 10.0 ** (width - 1))
    high = 10.0 ** width - 1.0
    return NumberDomains(values, low, high, width)


def em_groups(domains: NumberDomains, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last number of each value's EM group."""
    size = domains.high - domains.low + 1.0
    n_blocks = np.maximum(1.0, np.floor(size / group_size))
    block = np.minimum(np.floor((domains.values - domains.low) / group_size), n_blocks - 1.0)
    first = domains.low + block * group_size
    last = np.where(block < n_blocks - 1.0, first + group_size - 1.0, domains.high)
    return first, last


def format_numbers(values: np.ndarray, width: np.ndarray) -> list[str]:
    """Digit strings of values, zero-padded to their width."""
    return [str(int(v)).zfill(int(w)) for v, w in zip(values, width)]


def _geometric_mass(decay: np.ndarray, n_terms: np.ndarray) -> np.ndarray:
    """Σ_{j=1..n} exp(-decay·j), stable for tiny decay."""
    return np.exp(-decay) * np.expm1(-decay * n_terms) / np.expm1(-decay)


def sample_two_sided_geometric(decay: np.ndarray, below: np.ndarray, above: np.ndarray,
                               rng: np.random.Generator) -> np.ndarray:
    """Offsets j in [-below, above] with P(j) ∝ exp(-decay·|j|), decay > 0, one per row."""
    n = decay.shape[0]
    mass_below = _geometric_mass(decay, below)
    mass_above = _geometric_mass(decay, above)
    total = 1.0 + mass_below + mass_above
    side = rng.random(n) * total
    go_below = (side >= 1.0) & (side < 1.0 + mass_below)
    go_above = side >= 1.0 + mass_below
    n_terms = np.where(go_below, below, above)
    # inverse CDF of j in 1..n_terms with P(j) ∝ exp(-decay·j)
    uniform = rng.random(n)
    tail = -np.expm1(-decay * n_terms)
    magnitude = np.ceil(-np.log1p(-uniform * tail) / decay)
    magnitude = np.clip(magnitude, 1.0, np.maximum(n_terms, 1.0))
    return np.where(go_below, -magnitude, np.where(go_above, magnitude, 0.0))

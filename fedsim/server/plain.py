"""Optimizer states as plain picklable data: every tensor becomes a numpy array, and back."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_plain(value: Any) -> Any:
    """`value` with every tensor (inside dicts, lists and tuples) copied to a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(item) for item in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of to_plain: every numpy array becomes a CPU tensor (a copy)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: from_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(item) for item in value)
    return value

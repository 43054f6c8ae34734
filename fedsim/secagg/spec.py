"""The named tensors one aggregation sums: names, shapes, and their flat layout."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsim.secagg.errors import TensorSpecError


@dataclass(frozen=True)
class TensorSpec:
    """Tensor names (sorted) and shapes; tensors are laid out flat in name order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, spec: TensorSpec | Mapping[str, tuple[int, ...]]) -> TensorSpec:
        """Build from a {name: shape} mapping (or return `spec` unchanged)."""
        if isinstance(spec, TensorSpec):
            return spec
        if not isinstance(spec, Mapping) or not spec:
            raise TensorSpecError(f"a tensor spec must be a non-empty {{name: shape}} mapping, got {spec!r}")
        names = tuple(sorted(spec))
        for name in names:
            if not isinstance(name, str):
                raise TensorSpecError(f"tensor names must be strings, got {name!r}")
        shapes = []
        for name in names:
            shape = tuple(int(d) for d in spec[name])
            if any(d < 0 for d in shape):
                raise TensorSpecError(f"tensor {name!r} has a negative dimension in shape {shape}")
            shapes.append(shape)
        return cls(names, tuple(shapes))

    @classmethod
    def from_update(cls, update: Mapping[str, np.ndarray]) -> TensorSpec:
        """The spec of an update {name: array}."""
        return cls.of({name: np.shape(value) for name, value in update.items()})

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    @property
    def total(self) -> int:
        """m, the number of coordinates of all tensors together."""
        return sum(self.sizes)

    def slices(self) -> dict[str, slice]:
        """Where each tensor lies in the flat vector."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def digest(self) -> bytes:
        """16 bytes identifying names and shapes; binds masks to this tensor set."""
        text = ";".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in zip(self.names, self.shapes))
        return hashlib.sha256(text.encode()).digest()[:16]

    def check(self, update: Mapping[str, np.ndarray], who: str) -> None:
        """Raise TensorSpecError naming any missing, extra, misshapen or non-finite tensor."""
        if not isinstance(update, Mapping):
            raise TensorSpecError(f"{who}: an update must be a {{name: array}} mapping, got {type(update).__name__}")
        missing = sorted(set(self.names) - set(update))
        extra = sorted(set(update) - set(self.names), key=str)
        if missing or extra:
            raise TensorSpecError(f"{who}: tensor names differ from the spec: missing {missing}, unexpected {extra}")
        for name, shape in zip(self.names, self.shapes):
            value = np.asarray(update[name])
            if value.shape != shape:
                raise TensorSpecError(f"{who}: tensor {name!r} has shape {value.shape}, the spec says {shape}")
            if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
                raise TensorSpecError(f"{who}: tensor {name!r} has non-numeric dtype {value.dtype}")
            if not np.all(np.isfinite(value)):
                raise TensorSpecError(f"{who}: tensor {name!r} contains NaN or infinite values")

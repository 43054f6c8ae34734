"""Messages that cross the simulated client/server boundary, and the byte ledger that counts them.

Bytes are counted in one place, `payload_nbytes`, from the real payload: array data, UTF-8 text and
tensor names; framing is not counted. Calls inside the server are not communication.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Direction = Literal["up", "down"]
SERVER = -1


def payload_nbytes(payload: Any) -> int:
    """Bytes a payload occupies on the wire (array data, UTF-8 text, names)."""
    if payload is None:
        return 0
    nbytes = getattr(payload, "nbytes", None)  # arrays and TopKResult: an int; secagg messages: a method
    if callable(nbytes):
        return int(nbytes())
    if isinstance(nbytes, (int, np.integer)) and not isinstance(payload, (bool, int, np.integer)):
        return int(nbytes)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return len(payload)
    if isinstance(payload, str):
        return len(payload.encode("utf-8"))
    if isinstance(payload, (bool, int, float, np.integer, np.floating)):
        return 8
    if isinstance(payload, dict):
        return sum(payload_nbytes(key) + payload_nbytes(value) for key, value in payload.items())
    if isinstance(payload, (list, tuple)):
        return sum(payload_nbytes(item) for item in payload)
    raise TypeError(f"cannot count the bytes of a payload of type {type(payload).__name__}")


@dataclass(frozen=True)
class Message:
    """One message between a client and the server: a kind, its endpoints and a payload."""

    kind: str
    sender: int
    receiver: int
    payload: Any = field(repr=False)

    @property
    def direction(self) -> Direction:
        return "up" if self.receiver == SERVER else "down"

    @property
    def nbytes(self) -> int:
        return payload_nbytes(self.payload)


@dataclass
class ByteLedger:
    """Bytes and message counts per round, kind and direction."""

    rows: dict[int, dict[str, list[int]]] = field(default_factory=lambda: defaultdict(dict))

    def record(self, round_index: int, kind: str, direction: Direction, nbytes: int, count: int = 1) -> None:
        """Add `count` messages totalling `nbytes` to a round."""
        key = f"{direction}/{kind}"
        entry = self.rows[round_index].setdefault(key, [0, 0])
        entry[0] += int(nbytes)
        entry[1] += int(count)

    def record_message(self, round_index: int, message: Message) -> int:
        """Count one message; returns its bytes."""
        nbytes = message.nbytes
        self.record(round_index, message.kind, message.direction, nbytes)
        return nbytes

    def round_bytes(self, round_index: int) -> dict[str, int]:
        """Bytes per 'direction/kind' in one round."""
        return {key: value[0] for key, value in sorted(self.rows.get(round_index, {}).items())}

    def direction_total(self, direction: Direction, round_index: int | None = None) -> int:
        """Bytes in one direction, for a round or for the whole run."""
        rounds = [round_index] if round_index is not None else list(self.rows)
        return sum(value[0] for r in rounds for key, value in self.rows.get(r, {}).items()
                   if key.startswith(direction + "/"))

    def to_dict(self) -> dict[str, Any]:
        return {str(r): {k: list(v) for k, v in kinds.items()} for r, kinds in self.rows.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ByteLedger":
        ledger = cls()
        for r, kinds in data.items():
            ledger.rows[int(r)] = {k: list(v) for k, v in kinds.items()}
        return ledger

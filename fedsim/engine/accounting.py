"""Accounting: every message's bytes, once, in the byte ledger, and the round's simulated duration."""
from __future__ import annotations

from typing import Any

from fedsim.algorithms.base import POOLED_CLIENT, ClientOutcome
from fedsim.clock import ClientProfiles, VirtualClock
from fedsim.comm import ByteLedger, Message
from fedsim.config import ExperimentConfig


class RoundAccounting:
    """The byte ledger and the virtual clock of one run."""

    def __init__(self, config: ExperimentConfig, profiles: ClientProfiles) -> None:
        self.config = config
        self.profiles = profiles
        self.bytes = ByteLedger()
        self.clock = VirtualClock()

    def account(self, round_index: int, messages: list[Message], outcomes: list[ClientOutcome],
                server_seconds: float = 0.0) -> float:
        """Count every message's bytes; advance the clock by the round's duration and return it.

        A client's time is its compute, the server LLM's time on its requests, and its own bytes over
        its bandwidth; the round lasts as long as its slowest client, then `server_seconds` (the
        server step).
        """
        up: dict[int, int] = {}
        down: dict[int, int] = {}
        for message in messages:
            nbytes = self.bytes.record_message(round_index, message)
            if message.direction == "up":
                up[message.sender] = up.get(message.sender, 0) + nbytes
            else:
                down[message.receiver] = down.get(message.receiver, 0) + nbytes
        duration = 0.0
        for outcome in outcomes:
            if outcome.client == POOLED_CLIENT:
                seconds = outcome.samples_processed * self.config.clients.seconds_per_sample.median
            else:
                compute, transfer = self.profiles.completion_time(outcome.client, outcome.samples_processed,
                                                                  down.get(outcome.client, 0),
                                                                  up.get(outcome.client, 0))
                seconds = compute + transfer + outcome.llm_seconds
            duration = max(duration, seconds)
        duration += server_seconds
        self.clock.advance(duration)
        return duration

    def row_fields(self, round_index: int | None) -> dict[str, Any]:
        """Bytes of a round (None: before any round) and of the run so far, and the simulated time."""
        fields: dict[str, Any] = {
            "bytes_up": self.bytes.direction_total("up", round_index) if round_index is not None else 0,
            "bytes_down": self.bytes.direction_total("down", round_index) if round_index is not None else 0,
            "bytes_up_total": self.bytes.direction_total("up"),
            "bytes_down_total": self.bytes.direction_total("down"),
        }
        if round_index is not None:
            fields.update({f"bytes/{key}": value for key, value in self.bytes.round_bytes(round_index).items()})
        return fields

    def state(self) -> dict[str, Any]:
        return {"clock": self.clock.now_s, "bytes": self.bytes.to_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.clock = VirtualClock(state["clock"])
        self.bytes = ByteLedger.from_dict(state["bytes"])

"""Progress inside a round: units of work expected and done, per stage (no Ray here).

The engine and the workers report to a `Progress`; what shows it is the caller's choice (the
runner draws one tqdm bar per stage from a Ray actor that collects the reports).
Stages used: "clients" (client steps), "llm prompts" (prompts answered by the server LLM) and
"evaluation" (test questions generated, per decoding mode and model).
"""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Where work in a round is reported."""

    def expect(self, stage: str, count: int) -> None:
        """`count` more units of `stage` are on their way."""

    def advance(self, stage: str, count: int = 1) -> None:
        """`count` units of `stage` are done."""


class NoProgress:
    """Reports nowhere: the default of in-process runs and tests."""

    def expect(self, stage: str, count: int) -> None:
        pass

    def advance(self, stage: str, count: int = 1) -> None:
        pass


class StageCounts:
    """Expected and done units per stage, in the order stages first appear."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def expect(self, stage: str, count: int) -> None:
        self.expected[stage] = self.expected.get(stage, 0) + count
        self.done.setdefault(stage, 0)

    def advance(self, stage: str, count: int = 1) -> None:
        self.expected.setdefault(stage, 0)
        self.done[stage] = self.done.get(stage, 0) + count

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """stage -> (done, expected)."""
        return {stage: (self.done[stage], self.expected[stage]) for stage in self.expected}

"""Progress of a round across actors: a board the workers report to, and the bars the driver draws."""
from __future__ import annotations

from typing import Any

import ray
from tqdm import tqdm

from fedsim.engine.progress import StageCounts


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Collects the round's progress reports of the coordinator and the workers."""

    def __init__(self) -> None:
        self.counts = StageCounts()

    def expect(self, stage: str, count: int) -> None:
        self.counts.expect(stage, count)

    def advance(self, stage: str, count: int = 1) -> None:
        self.counts.advance(stage, count)

    def reset(self) -> None:
        """Start counting afresh (once a round is over)."""
        self.counts = StageCounts()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return self.counts.snapshot()


class BoardProgress:
    """A `Progress` that reports to a ProgressBoard without waiting for it."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def expect(self, stage: str, count: int) -> None:
        if count:
            self.board.expect.remote(stage, count)

    def advance(self, stage: str, count: int = 1) -> None:
        if count:
            self.board.advance.remote(stage, count)


class StageBars:
    """One tqdm bar per stage of the running round, below the round bar; gone when the round ends."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def show(self, counts: dict[str, tuple[int, int]]) -> None:
        if not self.enabled:
            return
        for stage, (done, expected) in counts.items():
            if stage not in self.bars:
                self.bars[stage] = tqdm(total=expected, desc=f"{stage:>13}", position=len(self.bars) + 1,
                                        leave=False, dynamic_ncols=True)
            bar = self.bars[stage]
            bar.total = max(expected, done)
            bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def wait_showing(future: Any, board: Any, bars: StageBars, interval_s: float = 0.5) -> Any:
    """The result of `future`; until it is ready, the board's counts are drawn every `interval_s`."""
    while bars.enabled and not ray.wait([future], timeout=interval_s)[0]:
        bars.show(ray.get(board.snapshot.remote()))
    result = ray.get(future)
    ray.get(board.reset.remote())
    bars.close()
    return result

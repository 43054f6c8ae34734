"""fedavg_vector: FedAvg of a plain float32 vector with fixed work per client, for overhead benchmarks.

No language model: each client copies the global vector, adds a perturbation from its own keyed
stream, optionally spins for `synthetic.busy_ms`, and uploads the difference.
"""
from __future__ import annotations

import time
import numpy as np

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome
from fedsim.comm import SERVER, Message
from fedsim.rng import numpy_stream


def busy_wait(milliseconds: float) -> None:
    """Occupy the CPU for a fixed wall time (a stand-in for training compute)."""
    end = time.perf_counter() + milliseconds / 1000.0
    while time.perf_counter() < end:
        pass


class FedAvgVector(Algorithm):
    name = "fedavg_vector"
    needs_model = False
    summed_kind = "vector_delta"

    def initial_payload(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(self.config.synthetic.vector_size, dtype=np.float32)}

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        received = ctx.received("adapter")["w"]
        rng = numpy_stream(self.config.seed, ctx.client, ctx.round_index, "work")
        local = received.copy()
        local += rng.standard_normal(local.shape[0], dtype=np.float32) * np.float32(0.01)
        busy_wait(self.config.synthetic.busy_ms)
        upload = Message("vector_delta", ctx.client, SERVER, {"w": local - received})
        return ClientOutcome(ctx.client, [upload], 1, 1, {"loss": float(np.abs(local).mean())})

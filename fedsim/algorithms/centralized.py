"""Centralized upper bound: one model trained on the pooled data of all clients.

Each round it takes as many optimisation steps as the whole cohort does (local_steps x per_round),
and nothing crosses the wire.
"""
from __future__ import annotations

from typing import Any

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome
from fedsim.algorithms.lora_training import train_adapter


class Centralized(Algorithm):
    name = "centralized"
    pooled = True

    def download_kind(self) -> str | None:
        return None

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        steps = self.config.train.local_steps * self.config.clients.per_round
        adapter, stats = train_adapter(ctx, ctx.global_payload, steps=steps)
        return ClientOutcome(ctx.client, [], len(ctx.examples), stats.samples,
                             {"loss": stats.mean_loss}, server_payload=adapter)

    def aggregate(self, preset: str, global_payload: Any, outcomes: list[ClientOutcome]) -> Any:
        return outcomes[0].server_payload if outcomes else global_payload

"""Local-only baseline: every client trains its own adapter on its own data; nothing is sent."""
from __future__ import annotations

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome
from fedsim.algorithms.lora_training import train_adapter


class LocalOnly(Algorithm):
    name = "local"
    keeps_client_state = True

    def download_kind(self) -> str | None:
        return None

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        start = ctx.state.get("adapter", ctx.global_payload)
        adapter, stats = train_adapter(ctx, start)
        ctx.state["adapter"] = adapter
        return ClientOutcome(ctx.client, [], len(ctx.examples), stats.samples,
                             {"loss": stats.mean_loss}, state_changed=True)

"""FedAvg over LoRA adapters, weighted by client sample counts (one global adapter per SLM preset).

A and B are averaged separately, as in the reference implementation: mean(B)·mean(A) ≠ mean(B·A).
"""
from __future__ import annotations

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome
from fedsim.algorithms.fedavg import cast_for_wire
from fedsim.algorithms.lora_training import train_adapter
from fedsim.comm import SERVER, Message


class FedAvgLora(Algorithm):
    name = "fedavg_lora"
    summed_kind = "adapter_delta"

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        received = {name: value.astype("float32") for name, value in ctx.received("adapter").items()}
        adapter, stats = train_adapter(ctx, received)
        delta = {name: adapter[name] - received[name] for name in received}
        upload = Message("adapter_delta", ctx.client, SERVER, cast_for_wire(delta, self.config.comm.adapter_dtype))
        return ClientOutcome(ctx.client, [upload], len(ctx.examples), stats.samples,
                             {"loss": stats.mean_loss},
                             state_changed=self.config.train.keep_optimizer_state)

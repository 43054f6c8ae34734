"""centralized_llm: the server LLM's LoRA fine-tuned on the pooled data of all clients (no privacy).

FedCoLLM's reference point (algorithms.md §3): what the LLM reaches when it sees the clients' data
directly. Each round the LLM takes as many optimisation steps as the whole cohort of client SLMs
does (local_steps x per_round, minibatches of train.batch_size), with L_LM only; nothing crosses the
wire. The pooled examples reach the server as a pooled client's result, which is never counted as
communication (as for `centralized`).
"""
from __future__ import annotations

from typing import Any

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome, ServerContext
from fedsim.algorithms.server_models import LLM, evaluate_llm, prepare_llm


class CentralizedLLM(Algorithm):
    name = "centralized_llm"
    pooled = True
    needs_model = False    # no SLM: the workers only hand over the pooled examples
    needs_llm = True
    needs_trainer = True

    def download_kind(self) -> str | None:
        return None

    def initial_payload(self) -> dict:
        return {}

    def prepare_trainer(self, trainer: Any) -> None:
        prepare_llm(self.config, trainer)

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        return ClientOutcome(ctx.client, server_payload=ctx.examples)

    def server_step(self, ctx: ServerContext) -> None:
        examples = ctx.outcomes[0].server_payload
        train = self.config.train
        steps = train.local_steps * self.config.clients.per_round
        rows = ctx.trainer.encode(LLM, examples, train.target, self.config.server.max_len)
        report = ctx.trainer.train(LLM, rows, None, 0.0, 1.0, steps=steps, batch_size=train.batch_size)
        ctx.metrics.update({"loss": report.mean_lm_loss, "llm_lm_loss": report.mean_lm_loss,
                            "llm_adapter_version": ctx.trainer.publish(LLM)})

    def evaluate_server(self, trainer: Any, test: list) -> dict[str, float]:
        return evaluate_llm(self.config, trainer, test)

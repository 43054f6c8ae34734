"""FedCoLLM (algorithms.md §3): co-tuning of a server LLM and client SLMs by mutual distillation.

Each round: clients train their SLM LoRA on private data and upload the change (summed, through
secure aggregation when it is on, like FedAvg-LoRA); then the server step, on the server trainer,
over this round's public examples D_p:
  4a. the LLM's top-k logits on D_p (the teacher, under no_grad);
  4b. the SLM starts from the aggregate θ̄ and trains on D_p with L_LM + λ·T²·KL(p_LLM ‖ q_SLM);
  4c. the updated SLM's top-k logits on D_p;
  4d. the LLM's LoRA trains on D_p with L_LM + λ·T²·KL(p_SLM ‖ q_LLM), and is published to every
      replica of the LLM deployment;
and the distilled SLM adapter θ̄′ is what the next cohort downloads. Only SLM adapters cross the
wire; logits never leave the server. The KD term is the mean over answer positions
(fedsim.train.distill.KD_REDUCTION), not the reference's sum.
"""
from __future__ import annotations

from typing import Any

from fedsim.algorithms.base import ServerContext
from fedsim.algorithms.fedavg_lora import FedAvgLora
from fedsim.algorithms.server_models import LLM, evaluate_llm, prepare_llm, prepare_slm, public_round_examples


class FedCoLLM(FedAvgLora):
    name = "fedcollm"
    needs_llm = True       # the LLM deployment serves the published adapter
    needs_trainer = True

    def prepare_trainer(self, trainer: Any) -> None:
        prepare_llm(self.config, trainer)
        prepare_slm(self.config, trainer, self._preset())

    def _preset(self) -> str:
        return next(iter(self.config.clients.presets))

    def server_step(self, ctx: ServerContext) -> None:
        settings, trainer, preset = self.config.fedcollm, ctx.trainer, self._preset()
        examples = public_round_examples(ctx, settings.public_per_round)
        target, max_len = self.config.train.target, self.config.server.max_len
        k, batch = settings.top_k, self.config.server.batch_size
        llm_rows = trainer.encode(LLM, examples, target, max_len)
        slm_rows = trainer.encode(preset, examples, target, max_len)
        llm_topk = trainer.topk(LLM, llm_rows, k, batch)                                  # 4a
        trainer.set_adapter(preset, ctx.globals[preset])
        slm_report = trainer.train(preset, slm_rows, llm_topk, settings.kd_lambda, settings.temperature,
                                   epochs=settings.server_epochs)                        # 4b
        slm_topk = trainer.topk(preset, slm_rows, k, batch)                              # 4c
        llm_report = trainer.train(LLM, llm_rows, slm_topk, settings.kd_lambda, settings.temperature,
                                   epochs=settings.server_epochs)                        # 4d
        ctx.metrics["llm_adapter_version"] = trainer.publish(LLM)
        ctx.globals[preset] = trainer.get_adapter(preset)                                # θ̄′ for the next cohort
        ctx.metrics.update({"server_public_examples": len(examples),
                            "slm_kd_loss": slm_report.mean_kd_loss, "slm_lm_loss": slm_report.mean_lm_loss,
                            "llm_kd_loss": llm_report.mean_kd_loss, "llm_lm_loss": llm_report.mean_lm_loss})

    def evaluate_server(self, trainer: Any, test: list) -> dict[str, float]:
        return evaluate_llm(self.config, trainer, test)

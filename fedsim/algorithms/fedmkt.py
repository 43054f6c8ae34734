"""FedMKT (algorithms.md §5): mutual knowledge transfer between a server LLM and client SLMs of other
architectures and tokenizers, on the public examples D_p (a public data set every party holds).

Round t, client k (its own SLM LoRA, kept in its state):
  8. with the LLM's lists from round t-1 (on the LLM's tokenization, moved onto the SLM's with the
     LLM-to-SLM vocabulary map the server sent it once, and DTW; or moved by the server when
     fedmkt.align_on_server): train on D_p with alpha L_LM + (1 - alpha) T^2 KL toward, per example,
     the better of {itself, the LLM} (fedsim.train.selective);
  1. train on its private data with L_LM;
  2-3. upload its top-k lists and NLL per answer character on D_p (compact ragged arrays, counted).
Round t, server (the ServerTrainer):
  4-6. move each SLM's lists onto the LLM's tokenization (SLM-to-LLM map, DTW) and train the LLM's LoRA
       on D_p toward, per example, the best of {the LLM, SLM_1..SLM_K}; publish the adapter;
  7.   the LLM's lists and NLL after the update go to the next round's clients.
Step 8 of a round thus runs at the start of the client's next participation; the last round's lists
are not computed, as nobody would receive them. With llm_training false the LLM only teaches: its
lists of round 0 reach each client once and the clients keep them. With aggregate_freq n (one
preset: homogeneous), every n-th round the clients also upload their adapter change against the
global adapter (summed, under secure aggregation when it is on), and a client adopts the new global
adapter at its next participation.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome, ServerContext
from fedsim.algorithms.fedavg import cast_for_wire
from fedsim.algorithms.lora_training import train_adapter
from fedsim.algorithms.server_models import LLM, evaluate_llm, prepare_llm
from fedsim.comm import SERVER, Message
from fedsim.train.batching import encode_for_training

VOCAB_MAP_DIR = Path("~/.cache/fedsim/vocab-maps")  # vocabulary maps, keyed by both tokenizers' fingerprints
SLM_LISTS = "slm_pub_logits"
LLM_LISTS = "llm_pub_logits"
VOCAB_MAP = "vocab_map"


class FedMKT(Algorithm):
    name = "fedmkt"
    keeps_client_state = True
    needs_llm = True        # the LLM deployment serves the published adapter
    needs_trainer = True
    public_on_clients = True
    summed_kind = "adapter_delta"  # only in aggregation rounds (fedmkt.aggregate_freq)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._transfers: dict[tuple[bool, str], Any] = {}  # (to_llm, preset) -> ListTransfer of the public set

    # --- shared by both sides -------------------------------------------------------------
    @cached_property
    def llm_tokenizer(self) -> Any:
        from fedsim.models.presets import model_tokenizer

        return model_tokenizer(self.config.llm.model)

    def vocab_map(self, source: Any, target: Any) -> np.ndarray:
        from fedsim.align.vocab import vocab_map

        return vocab_map(source, target, VOCAB_MAP_DIR.expanduser())

    def _answer_chars(self, examples: list) -> list[int]:
        from fedsim.data.prompts import render_target

        return [len(render_target(example, self.config.train.target)) for example in examples]

    def cached_transfer(self, to_llm: bool, preset: str, examples: list, vocab_map: np.ndarray | None = None) -> Any:
        """`list_transfer` for a preset, built once per direction (the public examples do not change);
        `vocab_map` defaults to the map between the two tokenizers."""
        key = (to_llm, preset)
        if key not in self._transfers:
            from fedsim.models.presets import model_tokenizer

            slm_tokenizer = model_tokenizer(preset)
            if vocab_map is None:
                vocab_map = self.vocab_map(*((slm_tokenizer, self.llm_tokenizer) if to_llm
                                             else (self.llm_tokenizer, slm_tokenizer)))
            self._transfers[key] = self.list_transfer(to_llm, slm_tokenizer, list(examples), vocab_map)
        return self._transfers[key]

    def list_transfer(self, to_llm: bool, slm_tokenizer: Any, examples: list, vocab_map: np.ndarray) -> Any:
        """A ListTransfer of the public examples between the LLM's tokenization (rows of server.max_len)
        and an SLM's (rows of train.max_len): SLM to LLM when `to_llm`, else LLM to SLM."""
        from fedsim.align.transfer import ListTransfer
        from fedsim.align.vocab import token_texts

        target = self.config.train.target
        llm = (_token_rows(self.llm_tokenizer, examples, target, self.config.server.max_len),
               token_texts(self.llm_tokenizer))
        slm = (_token_rows(slm_tokenizer, examples, target, self.config.train.max_len), token_texts(slm_tokenizer))
        (sender_rows, sender_texts), (receiver_rows, receiver_texts) = (slm, llm) if to_llm else (llm, slm)
        return ListTransfer(sender_rows, receiver_rows, sender_texts, receiver_texts, vocab_map,
                            self.config.fedmkt.skip_unaligned)

    def _aggregation_round(self, round_index: int) -> bool:
        freq = self.config.fedmkt.aggregate_freq
        return freq is not None and (round_index + 1) % freq == 0

    # --- server ---------------------------------------------------------------------------
    def initial_server_state(self) -> dict[str, Any]:
        return {"llm_lists": None, "llm_nll": None, "llm_wire": [], "aligned": {}, "global_round": -1,
                "client_global": {}, "map_sent": [], "lists_sent": []}

    def prepare_trainer(self, trainer: Any) -> None:
        prepare_llm(self.config, trainer)

    def downloads(self, client: int, preset: str, wire: dict[str, Any], state: dict[str, Any]) -> list[Message]:
        """The new global adapter (homogeneous, once per aggregation), the LLM's lists (every round, or
        once with llm_training false) and, before a client's first client-side alignment, the map.
        Records in `state` what each client now holds."""
        settings, messages = self.config.fedmkt, []
        if state["client_global"].get(client, -1) < state["global_round"]:
            messages.append(Message("adapter", SERVER, client, wire[preset]))
            state["client_global"][client] = state["global_round"]
        if state["llm_lists"] is None or (not settings.llm_training and client in state["lists_sent"]):
            return messages
        lists = state["aligned"][preset] if settings.align_on_server else state["llm_wire"]
        messages.append(Message(LLM_LISTS, SERVER, client, {"topk": lists, "nll_per_char": state["llm_nll"]}))
        if not settings.llm_training:
            state["lists_sent"] = sorted({*state["lists_sent"], client})
        if not settings.align_on_server and client not in state["map_sent"]:
            messages.append(Message(VOCAB_MAP, SERVER, client, self._llm_to_slm_map(preset)))
            state["map_sent"] = sorted({*state["map_sent"], client})
        return messages

    def _llm_to_slm_map(self, preset: str) -> np.ndarray:
        from fedsim.models.presets import model_tokenizer

        return self.vocab_map(self.llm_tokenizer, model_tokenizer(preset))

    def server_step(self, ctx: ServerContext) -> None:
        settings, trainer = self.config.fedmkt, ctx.trainer
        public = list(ctx.public)
        rows = trainer.encode(LLM, public, self.config.train.target, self.config.server.max_len)
        chars = self._answer_chars(public)
        if ctx.state["llm_lists"] is None:  # round 0: the LLM's own lists before any update
            self._store_llm_lists(ctx, rows, chars)
        if settings.llm_training:
            self._train_llm(ctx, rows, chars)
        if self._aggregation_round(ctx.round_index):
            ctx.state["global_round"] = ctx.round_index
        last_round = ctx.round_index + 1 >= self.config.rounds
        if settings.llm_training and not last_round:
            self._store_llm_lists(ctx, rows, chars)  # step 7: after this round's update

    def _train_llm(self, ctx: ServerContext, rows: dict, chars: list[int]) -> None:
        """Steps 4-6: the SLMs' lists on the LLM's tokenization, then the LLM's selective distillation."""
        from fedsim.train.selective import select_teachers

        settings, trainer = self.config.fedmkt, ctx.trainer
        candidates, scores = [ctx.state["llm_lists"]], [ctx.state["llm_nll"]]
        matched = predicting = 0
        for outcome in ctx.outcomes:
            upload = next((m.payload for m in outcome.messages if m.kind == SLM_LISTS), None)
            if upload is None:
                continue
            transfer = self.cached_transfer(True, upload["preset"], ctx.public)
            projection = transfer.project([result.to_topk(settings.top_k) for result in upload["topk"]])
            candidates.append(projection.lists)
            scores.append(np.asarray(upload["nll_per_char"], dtype=np.float64))
            matched, predicting = matched + projection.matched_positions, predicting + projection.predicting_positions
        teachers, taught = select_teachers(candidates, np.stack(scores), settings.strategy, settings.temperature)
        report = trainer.train(LLM, rows, teachers, 1.0 - settings.kd_alpha, settings.temperature,
                               epochs=settings.server_epochs, lm_weight=settings.kd_alpha)
        ctx.metrics.update({
            "llm_lm_loss": report.mean_lm_loss, "llm_kd_loss": report.mean_kd_loss,
            "llm_adapter_version": trainer.publish(LLM),
            "llm_taught_by_slms": float(taught[1:].sum() / max(1.0, taught.sum())),
            "coverage_slm_to_llm": matched / predicting if predicting else 0.0})

    def _store_llm_lists(self, ctx: ServerContext, rows: dict, chars: list[int]) -> None:
        """The LLM's lists and NLL per answer character on D_p, and their wire form (made once, sent
        to every client): ragged lists on the LLM's tokens, or moved onto each preset's tokens when the
        server aligns."""
        from fedsim.models.topk import RaggedTopK
        from fedsim.train.selective import per_character

        lists, nll = ctx.trainer.topk_and_nll(LLM, rows, self.config.fedmkt.top_k, self.config.server.batch_size)
        ctx.state["llm_lists"], ctx.state["llm_nll"] = lists, per_character(nll, chars).astype(np.float32)
        if not self.config.fedmkt.align_on_server:
            ctx.state["llm_wire"] = [RaggedTopK.from_topk(result) for result in lists]
            return
        aligned = {}
        for preset in self.config.clients.presets:
            projection = self.cached_transfer(False, preset, ctx.public).project(lists)
            aligned[preset] = [RaggedTopK.from_topk(result) for result in projection.lists]
            ctx.metrics[f"coverage_llm_to/{preset}"] = projection.coverage
        ctx.state["aligned"] = aligned

    def evaluate_server(self, trainer: Any, test: list) -> dict[str, float]:
        return evaluate_llm(self.config, trainer, test)

    # --- client ---------------------------------------------------------------------------
    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        from fedsim.models.lora import get_adapter, set_adapter

        settings = self.config.fedmkt
        start = next((m.payload for m in ctx.downloads if m.kind == "adapter"), None)
        adapter = ({name: value.astype("float32") for name, value in start.items()} if start is not None
                   else ctx.state.get("adapter", ctx.global_payload))
        set_adapter(ctx.model, adapter)
        rows = encode_for_training(ctx.tokenizer, ctx.public, self.config.train.target, self.config.train.max_len)
        chars = self._answer_chars(ctx.public)
        metrics: dict[str, float] = {}
        teacher = self._llm_teacher(ctx)
        if teacher is not None:
            metrics.update(self._distill_from_llm(ctx, rows, chars, *teacher))
            adapter = get_adapter(ctx.model)
        adapter, stats = train_adapter(ctx, adapter)  # step 1: private data
        metrics["loss"] = stats.mean_loss
        messages = []
        if settings.llm_training:  # steps 2-3
            messages.append(Message(SLM_LISTS, ctx.client, SERVER, self._slm_upload(ctx, rows, chars)))
        if self._aggregation_round(ctx.round_index):
            delta = {name: adapter[name] - ctx.global_payload[name] for name in ctx.global_payload}
            messages.append(Message("adapter_delta", ctx.client, SERVER,
                                    cast_for_wire(delta, self.config.comm.adapter_dtype)))
        ctx.state["adapter"] = adapter
        return ClientOutcome(ctx.client, messages, len(ctx.examples), stats.samples, metrics, state_changed=True)

    def _llm_teacher(self, ctx: ClientContext) -> tuple[list, np.ndarray] | None:
        """The LLM's lists on this client's tokenization and its NLL per answer character: this
        round's download, or (one way) the ones kept from the first; None before any arrived."""
        received = next((m.payload for m in ctx.downloads if m.kind == LLM_LISTS), None)
        if received is None:
            kept = ctx.state.get("llm_teacher")
            return None if kept is None else (kept["lists"], kept["nll_per_char"])
        lists = [result.to_topk(self.config.fedmkt.top_k) for result in received["topk"]]
        if not self.config.fedmkt.align_on_server:
            vocab_map = next((m.payload for m in ctx.downloads if m.kind == VOCAB_MAP), None)
            if vocab_map is not None:
                ctx.state["vocab_map"] = vocab_map
            lists = self._client_transfer(ctx).project(lists).lists
        if not self.config.fedmkt.llm_training:
            ctx.state["llm_teacher"] = {"lists": lists, "nll_per_char": received["nll_per_char"]}
        return lists, received["nll_per_char"]

    def _client_transfer(self, ctx: ClientContext) -> Any:
        """LLM-to-SLM transfer of the public examples with the map the server sent this client (built
        once per preset on a worker: every client of a preset receives the same map)."""
        return self.cached_transfer(False, ctx.preset, ctx.public, ctx.state["vocab_map"])

    def _distill_from_llm(self, ctx: ClientContext, rows: dict, chars: list[int], llm_lists: list,
                          llm_nll: np.ndarray) -> dict[str, float]:
        """Step 8: selective distillation on D_p between the client's own lists and the LLM's."""
        from fedsim.rng import seed_torch_global, torch_stream
        from fedsim.train.distill import distill_steps
        from fedsim.train.local import make_optimizer
        from fedsim.train.selective import per_character, select_teachers

        settings, train = self.config.fedmkt, self.config.train
        own_lists, own_nll = _topk_and_nll(ctx.model, rows, settings.top_k, self.config.eval.batch_size)
        scores = np.stack([per_character(own_nll, chars), np.asarray(llm_nll, dtype=np.float64)])
        teachers, taught = select_teachers([own_lists, llm_lists], scores, settings.strategy, settings.temperature)
        seed_torch_global(self.config.seed, ctx.client, ctx.round_index, "public-dropout")
        steps = settings.public_epochs * max(1, len(ctx.public) // min(train.batch_size, len(ctx.public)))
        stats = distill_steps(ctx.model, rows, teachers, make_optimizer(ctx.model, train.lr, train.weight_decay),
                              steps, train.batch_size,
                              torch_stream(self.config.seed, ctx.client, ctx.round_index, "public-batches"),
                              1.0 - settings.kd_alpha, settings.temperature, settings.kd_alpha, train.max_grad_norm)
        return {"public_kd_loss": stats.mean_kd_loss, "public_lm_loss": stats.mean_lm_loss,
                "taught_by_llm": float(taught[1] / max(1.0, taught.sum()))}

    def _slm_upload(self, ctx: ClientContext, rows: dict, chars: list[int]) -> dict[str, Any]:
        from fedsim.models.topk import RaggedTopK
        from fedsim.train.selective import per_character

        lists, nll = _topk_and_nll(ctx.model, rows, self.config.fedmkt.top_k, self.config.eval.batch_size)
        return {"preset": ctx.preset, "topk": [RaggedTopK.from_topk(result) for result in lists],
                "nll_per_char": per_character(nll, chars).astype(np.float32)}


def _token_rows(tokenizer: Any, examples: list, target: str, max_len: int) -> list[np.ndarray]:
    """Each example's training-row token ids (prompt and target) without padding."""
    encoded = encode_for_training(tokenizer, examples, target, max_len)
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    return [encoded["input_ids"][row, :n].numpy() for row, n in enumerate(lengths)]


def _topk_and_nll(model: Any, rows: dict, k: int, batch_size: int) -> tuple[list, np.ndarray]:
    """The worker model's top-k lists and summed answer NLL on `rows`, in eval mode."""
    import torch

    from fedsim.train.local import batch_logits
    from fedsim.train.selective import topk_and_answer_nll

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return topk_and_answer_nll(lambda batch: batch_logits(model, rows, batch), rows, k, batch_size)
    finally:
        model.train(was_training)

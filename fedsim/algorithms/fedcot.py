"""FedCoT: federated chain-of-thought distillation (algorithms.md §2).

On its first participation a client renders each of its questions in the teacher's prompt format
(fedsim.train.batching.render_prompt, rationale mode), cuts the question to
`fedcot.max_prompt_tokens` tokens of the LLM's tokenizer (keeping its end, where the question is
asked), perturbs it with EM or AEM over the LLM's own input embeddings (fedsim.privacy.text), and
sends all its prompts to the server LLM in ONE generate request. It parses each answer into a
rationale and an answer ("rationale #### answer"), optionally recovers it locally (below), and
keeps the result in its state: later rounds train on the cached rationales and send nothing.

Each round the client trains its own LoRA adapter (kept in its state, as `local` does) with the
multi-task loss of §2.7, L = alpha * CE(rationale pair) + (1 - alpha) * CE(answer pair): the
rationale pair is "question -> LLM rationale #### LLM answer" (never the gold rationale: a client's
private data are questions and answers only), the answer pair is "question -> gold answer"; each
CE is the token mean over its own targets, on the same rows of the batch.

Privacy. The engine records the release before the client runs, on its first participation only:
PureEpsEntry(eps_per_token, count=max_prompt_tokens) under replace-one adjacency, "proven" for EM
(bounded range) and "claimed" for AEM. Each question is perturbed once, so composition across
examples is parallel and `count` bounds the perturbed units of any one prompt. Units the kit does
not perturb (punctuation, sub-word pieces, excluded classes) go out in clear; the outcome reports
their share. eps = inf (or mechanism "none") sends the questions unperturbed: that release is
recorded as a NonPrivate event (epsilon = inf), so a client with a finite budget is refused rather
than sending its raw questions.

Local recovery (fedcot.recover, §2.6). A rule-based stand-in for the paper's learned local decoder,
for the built-in task's rationale grammar ("a + b = c . c - d = e"): the client keeps what the LLM
contributed, the number of steps and whether each one adds or subtracts (its reading of the
words), and redoes the arithmetic with the question's own numbers (its digits are the start and
the moves, in order) on the ring of ten. A rationale that does not parse as one step per move is
kept as received. The decoder uses task knowledge (the ring) that a learned decoder would have to
learn, so it is an optimistic bound on what local recovery can give; it sees no data beyond the
client's own question and the LLM's answer, and sends nothing.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import torch
from dp_accounting.dp_event import NonPrivateDpEvent
from dp_accounting.privacy_accountant import NeighboringRelation

from fedsim.algorithms.base import Algorithm, ClientContext, ClientOutcome, PlannedRelease
from fedsim.comm import SERVER, Message
from fedsim.config import ExperimentConfig
from fedsim.data.task import RATIONALE_STEP_SEPARATOR, RING_SIZE, Example
from fedsim.privacy.accounting import PureEpsEntry
from fedsim.train.batching import ANSWER_MARKER, encode_for_training, extract_answer, render_prompt
from fedsim.train.local import TrainStats, batch_loss, check_steps, minibatches, optimizer_step

RELEASE = "fedcot_prompts"
REPLACE_ONE = NeighboringRelation.REPLACE_ONE
_STEP = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")
_DIGITS = re.compile(r"\d+")


class FedCoTConfigError(ValueError):
    """A setting FedCoT cannot honour."""


def protects(config: ExperimentConfig) -> bool:
    """Whether the configured mechanism changes the prompts (a finite eps and a mechanism)."""
    return config.fedcot.mechanism != "none" and math.isfinite(config.fedcot.eps_per_token)


def parse_output(text: str) -> tuple[str, str]:
    """(rationale, answer) of an LLM output "rationale #### answer"; without the marker the whole
    text is the rationale and the answer is its last number."""
    rationale = text.rsplit(ANSWER_MARKER, 1)[0] if ANSWER_MARKER in text else text
    return rationale.strip(), extract_answer(text)


def recover(rationale: str, question: str) -> tuple[str, str] | None:
    """The LLM's steps redone with the question's own numbers (see the module docstring), as
    (rationale, answer); None when the question is not a ring problem (its numbers are not digits of
    the ring) or the rationale does not parse as one step per move."""
    numbers = [int(n) for n in _DIGITS.findall(question)]
    steps = [_STEP.fullmatch(part.strip()) for part in rationale.split(RATIONALE_STEP_SEPARATOR.strip())]
    if len(numbers) < 2 or any(n >= RING_SIZE for n in numbers):
        return None
    if len(steps) != len(numbers) - 1 or any(step is None for step in steps):
        return None
    value, written = numbers[0], []
    for step, move in zip(steps, numbers[1:]):
        sign = step.group(2)
        result = (value + move) % RING_SIZE if sign == "+" else (value - move) % RING_SIZE
        written.append(f"{value} {sign} {move} = {result}")
        value = result
    return RATIONALE_STEP_SEPARATOR.join(written), str(value)


def question_body(example: Example) -> str:
    """The private text of a question as the prompt shows it: the question and its choices."""
    return example.question + (("\nChoices: " + " | ".join(example.choices)) if example.choices else "")


def cut_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """The longest end of `text`, starting at one of its token boundaries, that encodes to at most
    `max_tokens` tokens on its own (an exact substring, leading whitespace dropped)."""
    def encode(part: str) -> list[tuple[int, int]]:
        return tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    offsets = encode(text)
    if len(offsets) <= max_tokens:
        return text
    for keep in range(max_tokens, 0, -1):
        tail = text[offsets[len(offsets) - keep][0]:].lstrip()
        if len(encode(tail)) <= max_tokens:
            return tail
    raise ValueError(f"no end of the text fits in {max_tokens} tokens: {text[-40:]!r}")


@dataclass
class MultiTaskData:
    """Both encodings of one client's examples: `answer` has a row per example, `rationale` a row per
    example with a rationale; `rationale_row[i]` is example i's row there (-1: none)."""

    answer: dict[str, torch.Tensor]
    rationale: dict[str, torch.Tensor] | None
    rationale_row: torch.Tensor


def train_multitask(model: torch.nn.Module, data: MultiTaskData, optimizer: torch.optim.Optimizer, steps: int,
                    batch_size: int, alpha: float, generator: torch.Generator,
                    max_grad_norm: float | None = 1.0) -> TrainStats:
    """`steps` optimizer steps of L = alpha * CE(rationale) + (1 - alpha) * CE(answer) on the same
    rows; rows walk through successive random permutations, as in fedsim.train.local.train_steps
    (with alpha 0 or 1 the two produce the same updates). A task with weight 0 is not computed;
    a batch whose rows have no rationale takes the answer term alone."""
    check_steps(steps, batch_size)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha > 0 and data.rationale is None:
        raise ValueError("alpha > 0 needs rationales, and no example has one")
    num_rows = data.answer["input_ids"].shape[0]
    model.train()
    batches = minibatches(num_rows, batch_size, generator)
    losses, tokens = [], 0
    for _ in range(steps):
        rows = next(batches)
        loss = None
        rationale_rows = data.rationale_row[rows]
        rationale_rows = rationale_rows[rationale_rows >= 0]
        if alpha > 0 and rationale_rows.numel():
            rationale_loss, count = batch_loss(model, data.rationale, rationale_rows)
            loss, tokens = alpha * rationale_loss, tokens + count
        if alpha < 1:
            answer_loss, count = batch_loss(model, data.answer, rows)
            weighted = (1 - alpha) * answer_loss
            loss, tokens = (weighted if loss is None else loss + weighted), tokens + count
        if loss is None:  # alpha 1 and no rationale in this batch
            continue
        optimizer_step(optimizer, loss, max_grad_norm)
        losses.append(loss.item())
    if not losses:
        raise ValueError("no batch had a training target")
    return TrainStats(steps=len(losses), samples=len(losses) * min(batch_size, num_rows), tokens=tokens,
                      mean_loss=sum(losses) / len(losses), final_loss=losses[-1])


def build_multitask_data(tokenizer: Any, examples: list[Example], targets: list[tuple[str, str]],
                         max_len: int) -> MultiTaskData:
    """Encode the answer pairs (gold answers) and the rationale pairs (the LLM's (rationale, answer))."""
    if len(targets) != len(examples):
        raise ValueError(f"{len(targets)} rationales for {len(examples)} examples")
    usable = [i for i, (rationale, _) in enumerate(targets) if rationale]
    rationale_row = torch.full((len(examples),), -1, dtype=torch.long)
    rationale_row[usable] = torch.arange(len(usable))
    rationale = None
    if usable:
        taught = [replace(examples[i], rationale=targets[i][0], answer=targets[i][1]) for i in usable]
        rationale = encode_for_training(tokenizer, taught, "rationale", max_len)
    return MultiTaskData(encode_for_training(tokenizer, examples, "answer", max_len), rationale, rationale_row)


class TeacherSide:
    """What a worker needs of the server LLM's public assets: its tokenizer (to cut questions) and,
    when prompts are perturbed, the text privacy kit built from its input embeddings (once)."""

    def __init__(self, config: ExperimentConfig) -> None:
        from fedsim.models.presets import load_pretrained
        from fedsim.privacy.text import TextPrivacyKit, TokenPerturber

        settings = config.fedcot
        model, self.tokenizer = load_pretrained(config.llm.model)
        self.kit = None
        self.perturber = None
        if protects(config):
            embeddings = model.get_input_embeddings().weight.detach().to(torch.float32).numpy()
            self.kit = TextPrivacyKit.from_embeddings(self.tokenizer, embeddings, top_k=settings.top_k,
                                                      exclude=settings.exclude)
            self.perturber = TokenPerturber(self.kit, settings.mechanism, settings.eps_per_token,
                                            settings.aem_lap_fraction)


class FedCoT(Algorithm):
    name = "fedcot"
    keeps_client_state = True
    needs_llm = True

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        if not config.llm.model:
            raise FedCoTConfigError("fedcot needs llm.model: the server LLM's local directory (its tokenizer "
                                    "cuts the questions, its input embeddings build the perturbation kit)")
        if config.privacy.dp_sgd is not None:
            raise FedCoTConfigError("fedcot does not combine with privacy.dp_sgd: its multi-task training "
                                    "has no DP-SGD path")
        if config.fedcot.alpha > 0 and config.fedcot.max_new_tokens < 2:
            raise FedCoTConfigError("fedcot.max_new_tokens must leave room for a rationale (>= 2)")
        self._teacher: TeacherSide | None = None

    def download_kind(self) -> str | None:
        return None

    def planned_release(self, client: int, round_index: int, released: set[str]) -> PlannedRelease | None:
        """The perturbed prompts, on the client's first participation only."""
        if RELEASE in released:
            return None
        settings = self.config.fedcot
        params = {"mechanism": settings.mechanism, "eps_per_token": settings.eps_per_token,
                  "max_prompt_tokens": settings.max_prompt_tokens}
        if not protects(self.config):
            return PlannedRelease(RELEASE, NonPrivateDpEvent(), REPLACE_ONE, "proven", params)
        em = settings.mechanism == "em"
        entry = PureEpsEntry(settings.eps_per_token, count=settings.max_prompt_tokens, bounded_range=em)
        return PlannedRelease(RELEASE, entry, REPLACE_ONE, "proven" if em else "claimed", params)

    def teacher(self) -> TeacherSide:
        """The LLM's tokenizer and kit, loaded on first use (on the worker, never on the coordinator)."""
        if self._teacher is None:
            self._teacher = TeacherSide(self.config)
        return self._teacher

    def _ask_llm(self, ctx: ClientContext) -> tuple[list[tuple[str, str]], list[Message], dict[str, float]]:
        """Perturb, send one request, parse (and recover) the answers: (targets, messages, metrics)."""
        settings = self.config.fedcot
        if ctx.llm is None:
            raise FedCoTConfigError("fedcot clients need the server LLM, but the worker has no LLM client")
        teacher = self.teacher()
        bodies = [cut_to_tokens(teacher.tokenizer, question_body(example), settings.max_prompt_tokens)
                  for example in ctx.examples]
        metrics: dict[str, float] = {"fedcot_prompts": float(len(bodies))}
        if teacher.perturber is None:
            sent = bodies
            metrics.update(fedcot_units_perturbed=0.0, fedcot_units_changed=0.0, fedcot_unprotected_fraction=1.0)
        else:
            from fedsim.rng import numpy_stream

            rng = numpy_stream(self.config.seed, ctx.client, ctx.round_index, "fedcot-perturb")
            perturbed = teacher.perturber.perturb_batch(bodies, rng)
            largest = max(p.n_perturbable for p in perturbed)
            if largest > settings.max_prompt_tokens:
                raise RuntimeError(f"a prompt has {largest} perturbed units, more than the "
                                   f"{settings.max_prompt_tokens} the privacy ledger accounts for")
            sent = [p.text for p in perturbed]
            metrics.update(fedcot_units_perturbed=float(sum(p.n_perturbable for p in perturbed)),
                           fedcot_units_changed=float(sum(p.n_changed for p in perturbed)),
                           fedcot_unprotected_fraction=teacher.kit.unprotected_fraction(bodies))
        prompts = [render_prompt(Example(question=body, answer=""), "rationale") for body in sent]
        replies = ctx.llm.generate(prompts, {"max_new_tokens": settings.max_new_tokens, "temperature": 0.0})
        if len(replies) != len(prompts):
            raise RuntimeError(f"the LLM answered {len(replies)} of {len(prompts)} prompts")
        targets = [parse_output(reply) for reply in replies]
        metrics["fedcot_rationale_fraction"] = sum(bool(rationale) for rationale, _ in targets) / len(targets)
        metrics["fedcot_llm_accuracy"] = sum(answer == example.answer.strip() for (_, answer), example
                                             in zip(targets, ctx.examples)) / len(targets)
        if settings.recover:
            recovered = [recover(rationale, example.question) for (rationale, _), example
                         in zip(targets, ctx.examples)]
            metrics["fedcot_recovered_fraction"] = sum(r is not None for r in recovered) / len(targets)
            targets = [r if r is not None else t for r, t in zip(recovered, targets)]
        messages = [Message("prompts", ctx.client, SERVER, prompts), Message("rationales", SERVER, ctx.client, replies)]
        return targets, messages, metrics

    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        from fedsim.algorithms.lora_training import _detached_state
        from fedsim.models.lora import get_adapter, set_adapter
        from fedsim.rng import seed_torch_global, torch_stream
        from fedsim.train.local import make_optimizer

        messages: list[Message] = []
        metrics: dict[str, float] = {}
        if "rationales" not in ctx.state:
            ctx.state["rationales"], messages, metrics = self._ask_llm(ctx)
        config = self.config
        data = build_multitask_data(ctx.tokenizer, ctx.examples, ctx.state["rationales"], config.train.max_len)
        set_adapter(ctx.model, ctx.state.get("adapter", ctx.global_payload))
        seed_torch_global(config.seed, ctx.client, ctx.round_index, "dropout")
        batches = torch_stream(config.seed, ctx.client, ctx.round_index, "batches")
        optimizer = make_optimizer(ctx.model, config.train.lr, config.train.weight_decay)
        if config.train.keep_optimizer_state and "optimizer" in ctx.state:
            optimizer.load_state_dict(ctx.state["optimizer"])
        alpha = config.fedcot.alpha if data.rationale is not None else 0.0
        stats = train_multitask(ctx.model, data, optimizer, config.train.local_steps, config.train.batch_size,
                                alpha, batches, config.train.max_grad_norm)
        if config.train.keep_optimizer_state:
            ctx.state["optimizer"] = _detached_state(optimizer.state_dict())
        ctx.state["adapter"] = get_adapter(ctx.model)
        metrics["loss"] = stats.mean_loss
        return ClientOutcome(ctx.client, messages, len(ctx.examples), stats.samples, metrics, state_changed=True)

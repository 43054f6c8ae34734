"""FedCoT: federated chain-of-thought distillation (algorithms.md §2).

On its first participation a client renders each of its questions in the teacher's prompt format
(fedsim.data.prompts.render_prompt, rationale mode), cuts the question to
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

Local recovery (fedcot.recover, §2.6), before the client trains on the replies:
- `none`: the replies as received.
- `decoder`: the paper's kind, a learned local decoder (fedsim.algorithms.fedcot_decoder) that
  rewrites each reply given the client's clean question. The server trains it before any client
  uses it, on public data only: `fedcot.decoder.public_questions` questions of the task's public
  split, perturbed with the clients' own mechanism and eps (server-keyed streams), sent to the LLM
  in one request (server-internal traffic: not federated bytes, not on the clients' clock), the
  gold rationales as targets. It reaches each client as a `decoder` message on the client's first
  participation, its parameters counted by the byte ledger. In the simulation the worker hosting
  a client computes the decoder on the server's behalf, once per worker, from the same keyed
  streams, so every worker holds the same weights. A decoder output without a rationale leaves
  the reply as received.
- `oracle`: a rule-based stand-in for the built-in task's rationale grammar ("a + b = c . c - d =
  e"): the client keeps what the LLM contributed, the number of steps and whether each one adds or
  subtracts (its reading of the words), and redoes the arithmetic with the question's own numbers
  (its digits are the start and the moves, in order) on the ring of ten. A rationale that does
  not parse as one step per move is kept as received. It uses task knowledge (the ring) that no
  real client's decoder has, so it is an ORACLE, an optimistic bound on local recovery, labelled
  as such wherever it is reported; it sees no data beyond the client's question and the LLM's
  answer, and sends nothing.
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
from fedsim.algorithms.llm import LLMEndpoint, MeteredLLM
from fedsim.algorithms.fedcot_decoder import DECODER_KIND, LocalDecoder
from fedsim.comm import SERVER, Message
from fedsim.config import ExperimentConfig
from fedsim.data.prompts import ANSWER_MARKER, extract_answer, render_prompt
from fedsim.data.task import RATIONALE_STEP_SEPARATOR, RING_SIZE, Example
from fedsim.errors import FedsimError
from fedsim.privacy.accounting import PureEpsEntry
from fedsim.train.batching import encode_for_training
from fedsim.train.local import TrainStats, batch_loss, check_steps, minibatches, optimizer_step

RELEASE = "fedcot_prompts"
REPLACE_ONE = NeighboringRelation.REPLACE_ONE
_STEP = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")
_DIGITS = re.compile(r"\d+")


class FedCoTConfigError(FedsimError, ValueError):
    """A setting FedCoT cannot honour."""


def protects(config: ExperimentConfig) -> bool:
    """Whether the configured mechanism changes the prompts (a finite eps and a mechanism)."""
    return config.fedcot.mechanism != "none" and math.isfinite(config.fedcot.eps_per_token)


def parse_output(text: str) -> tuple[str, str]:
    """(rationale, answer) of an LLM output "rationale #### answer"; without the marker the whole
    text is the rationale and the answer is its last number."""
    rationale = text.rsplit(ANSWER_MARKER, 1)[0] if ANSWER_MARKER in text else text
    return rationale.strip(), extract_answer(text)


def oracle_recover(rationale: str, question: str) -> tuple[str, str] | None:
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


def perturbed_prompts(teacher: TeacherSide, settings: Any, examples: list[Example],
                      rng: Any) -> tuple[list[str], dict[str, float]]:
    """The LLM prompts of `examples` as a FedCoT client sends them: each question cut to
    `settings.max_prompt_tokens` LLM tokens, perturbed by the teacher's perturber (none: clean),
    in the rationale prompt format; and the perturbation's metrics."""
    bodies = [cut_to_tokens(teacher.tokenizer, question_body(example), settings.max_prompt_tokens)
              for example in examples]
    metrics: dict[str, float] = {"fedcot_prompts": float(len(bodies))}
    if teacher.perturber is None:
        sent = bodies
        metrics.update(fedcot_units_perturbed=0.0, fedcot_units_changed=0.0, fedcot_unprotected_fraction=1.0)
    else:
        perturbed = teacher.perturber.perturb_batch(bodies, rng)
        largest = max(p.n_perturbable for p in perturbed)
        if largest > settings.max_prompt_tokens:
            raise RuntimeError(f"a prompt has {largest} perturbed units, more than the "
                               f"{settings.max_prompt_tokens} the privacy ledger accounts for")
        sent = [p.text for p in perturbed]
        metrics.update(fedcot_units_perturbed=float(sum(p.n_perturbable for p in perturbed)),
                       fedcot_units_changed=float(sum(p.n_changed for p in perturbed)),
                       fedcot_unprotected_fraction=teacher.kit.unprotected_fraction(bodies))
    return [render_prompt(Example(question=body, answer=""), "rationale") for body in sent], metrics


def generation_params(config: ExperimentConfig) -> dict[str, Any]:
    """The LLM's generation parameters for FedCoT's rationales (greedy)."""
    return {"max_new_tokens": config.fedcot.max_new_tokens, "temperature": 0.0}


def train_public_decoder(config: ExperimentConfig, teacher: TeacherSide, llm: MeteredLLM) -> LocalDecoder:
    """The server's decoder (module docstring): the first `fedcot.decoder.public_questions` public
    questions perturbed as the clients perturb theirs, the LLM's replies in one request, every
    weight of `fedcot.decoder.model` fine-tuned to write the gold rationales."""
    from fedsim.algorithms.fedcot_decoder import load_decoder_base, train_decoder
    from fedsim.data.federated import build_federated_data
    from fedsim.rng import numpy_stream, stream_seed, torch_stream

    settings = config.fedcot.decoder
    public = build_federated_data(config).public[:settings.public_questions]
    if len(public) < settings.public_questions:
        raise FedCoTConfigError(f"fedcot.decoder.public_questions is {settings.public_questions}, but the "
                                f"task's public split holds {len(public)}")
    rng = numpy_stream(config.seed, SERVER, 0, "fedcot-decoder-perturb")
    prompts, _ = perturbed_prompts(teacher, config.fedcot, public, rng)
    replies = llm.generate(prompts, generation_params(config))
    base = load_decoder_base(settings.model, stream_seed(config.seed, SERVER, 0, "fedcot-decoder-init"))
    return train_decoder(base, public, [question_body(example) for example in public], replies, settings.steps,
                         settings.batch_size, settings.lr, settings.max_len,
                         torch_stream(config.seed, SERVER, 0, "fedcot-decoder-batches"))


def decode_targets(decoder: LocalDecoder, examples: list[Example], replies: list[str],
                   max_new_tokens: int) -> list[tuple[str, str]]:
    """The decoder's (rationale, answer) for each reply given the example's clean question; a
    reply whose decoding has no rationale is kept as received."""
    texts = decoder.rewrite([question_body(example) for example in examples], replies, max_new_tokens)
    decoded = [parse_output(text) for text in texts]
    return [d if d[0] else parse_output(reply) for d, reply in zip(decoded, replies)]


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
        self._decoder: tuple[LocalDecoder, dict[str, Any]] | None = None

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

    def decoder(self, endpoint: LLMEndpoint) -> tuple[LocalDecoder, dict[str, Any]]:
        """The server's decoder and its wire payload, trained on first use (see the module docstring);
        its LLM requests are the server's own: timed, not communication."""
        if self._decoder is None:
            server_llm = MeteredLLM(endpoint, SERVER, self.config.llm)
            decoder = train_public_decoder(self.config, self.teacher(), server_llm)
            self._decoder = decoder, decoder.payload()
        return self._decoder

    def _ask_llm(self, ctx: ClientContext) -> tuple[list[tuple[str, str]], list[Message], dict[str, float]]:
        """Perturb, send one request, parse (and recover) the answers: (targets, messages, metrics)."""
        from fedsim.rng import numpy_stream

        settings = self.config.fedcot
        if ctx.llm is None:
            raise FedCoTConfigError("fedcot clients need the server LLM, but the worker has no LLM client")
        decoder = self.decoder(ctx.llm.endpoint) if settings.recover == "decoder" else None
        rng = numpy_stream(self.config.seed, ctx.client, ctx.round_index, "fedcot-perturb")
        prompts, metrics = perturbed_prompts(self.teacher(), settings, ctx.examples, rng)
        replies = ctx.llm.generate(prompts, generation_params(self.config), "prompts", "rationales")  # counted there
        messages: list[Message] = []
        received = [parse_output(reply) for reply in replies]
        targets = received
        if settings.recover == "oracle":
            recovered = [oracle_recover(rationale, example.question) for (rationale, _), example
                         in zip(received, ctx.examples)]
            metrics["fedcot_recovered_fraction"] = sum(r is not None for r in recovered) / len(targets)
            targets = [r if r is not None else t for r, t in zip(recovered, received)]
        elif decoder is not None:
            messages.append(Message(DECODER_KIND, SERVER, ctx.client, decoder[1]))
            targets = decode_targets(decoder[0], ctx.examples, replies, settings.max_new_tokens)
            metrics["fedcot_decoder_changed_fraction"] = sum(t != r for t, r in zip(targets, received)) / len(targets)

        def accuracy(pairs: list[tuple[str, str]]) -> float:
            return sum(answer == example.answer.strip() for (_, answer), example in zip(pairs, ctx.examples)) / len(pairs)

        metrics["fedcot_rationale_fraction"] = sum(bool(rationale) for rationale, _ in received) / len(received)
        metrics["fedcot_llm_accuracy"] = accuracy(received)
        metrics["fedcot_target_accuracy"] = accuracy(targets)
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

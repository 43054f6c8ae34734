"""Staged pretraining of a preset on the built-in task: the teacher and the clients' pretrained bases.

A preset is trained from scratch, all of its weights, in two stages:

1. Ring arithmetic: random chains of 1 to 4 mod-10 steps written as rationales (" 3 + 8 = 1 .
   1 + 4 = 9", one direction per chain as in the task), the step results as the only targets.
2. Questions: public questions with their gold rationales in the rationale prompt format of
   fedsim.data.prompts ("Question: ...\\nRationale:" -> " steps #### answer"), with a quarter as
   many arithmetic chains mixed in so that the first stage is not forgotten. `domains` restricts
   these questions to some domains (a server LLM that the clients' other domains can teach).

Without the first stage a tiny model spends its budget learning the addition table from the word
problems (llama-0.3m, 1500 question steps x 32 from scratch: every step result stays at chance);
with 1500 arithmetic steps x 128 first, 2000 question steps x 32 reach 91.5% exact match, and 600
reach 13% (a weak base that the clients' data can improve). Each stage uses AdamW with a 5% linear
warm-up and cosine decay.

The model is saved as a Hugging Face directory, with its preset's tokenizer and a `pretrain.json`
report (the tokenizer's kind; exact match on the test split, all four domains, in both decoding
modes and per domain with rationales; the model is not trained to answer directly, so answer-only
is for reference). The directory appears complete or not at all, and one holding a complete model
is reused as it is unless `force` is given.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from fedsim.errors import FedsimError

if TYPE_CHECKING:  # torch is imported where it is used, so `fedsim --help` stays quick
    import torch

    from fedsim.data.task import Example

REPORT_FILE = "pretrain.json"
ARITHMETIC_BATCH_SIZE = 128
ARITHMETIC_CHAINS = 20000
TRAIN_MIN_STEPS, TRAIN_MAX_STEPS = 1, 4  # every question length a TaskConfig allows
MAX_LEN = 160


class PretrainError(FedsimError, ValueError):
    """Bad pretraining settings, or a directory that is not a complete pretrained model."""


@dataclass(frozen=True)
class PretrainSettings:
    """How a preset is pretrained (see the module docstring)."""

    preset: str
    arithmetic_steps: int
    steps: int  # question steps of the second stage (0: arithmetic only)
    seed: int = 0
    public_size: int = 4000
    batch_size: int = 32
    lr: float = 3e-3
    test_size: int = 200
    domains: tuple[str, ...] | None = None  # domains of the question stage (None: all)

    def check(self) -> None:
        """Raise PretrainError naming the first setting that is not allowed."""
        from fedsim.data.task import DOMAINS
        from fedsim.models.presets import PRESETS

        if self.preset not in PRESETS:
            raise PretrainError(f"pretrain preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        minimum = {"arithmetic_steps": 0, "steps": 0, "seed": 0, "public_size": 1, "batch_size": 1,
                   "test_size": 1}
        for name, least in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PretrainError(f"pretrain {name} must be an int >= {least}, got {value!r}")
        if self.arithmetic_steps + self.steps < 1:
            raise PretrainError("pretrain needs at least one step (arithmetic_steps + steps >= 1)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise PretrainError(f"pretrain lr must be a number > 0, got {self.lr!r}")
        if self.domains is not None:
            unknown = [name for name in self.domains if name not in DOMAINS]
            if not self.domains or unknown or len(set(self.domains)) < len(self.domains):
                problem = f"unknown domain(s) {unknown}" if unknown else f"got {list(self.domains)}"
                raise PretrainError(f"pretrain domains must be distinct known domains, at least one, "
                                    f"{problem}; known: {list(DOMAINS)}")


@dataclass(frozen=True)
class PretrainReport:
    """What was trained and how well it does (exact match on `settings.test_size` test questions)."""

    settings: PretrainSettings
    num_parameters: int
    train_seconds: float
    final_loss: float
    accuracy_rationale: float  # writes its steps, then the answer ("Rationale:" prompt)
    accuracy_answer: float     # answers directly ("Answer:" prompt; not trained for it)
    accuracy_by_domain: dict[str, float] = field(default_factory=dict)  # rationale-then-answer, per domain
    tokenizer: str = "bpe"  # the preset's built-in tokenizer (fedsim.models.tokenizer.TokenizerKind)

    def summary(self) -> str:
        """One line for the terminal."""
        s = self.settings
        stages = f"{s.arithmetic_steps} arithmetic steps x {ARITHMETIC_BATCH_SIZE}"
        if s.steps:
            stages += f" + {s.steps} question steps x {s.batch_size} on {s.public_size} public questions"
            if s.domains is not None:
                stages += f" of {', '.join(s.domains)}"
        by_domain = ", ".join(f"{name} {100 * value:.1f}%" for name, value in self.accuracy_by_domain.items())
        return (f"{s.preset} ({self.num_parameters / 1e6:.2f}M parameters), {stages} in "
                f"{self.train_seconds / 60:.1f} min; exact match on {s.test_size} test questions: "
                f"rationale-then-answer {100 * self.accuracy_rationale:.1f}%"
                + (f" ({by_domain})" if by_domain else "")
                + f", answer-only {100 * self.accuracy_answer:.1f}% (not trained to answer directly)")


def load_report(out_dir: str | Path) -> PretrainReport | None:
    """The report of a complete pretrained model in `out_dir`, or None when there is none (reports
    written before `domains`, `accuracy_by_domain` and `tokenizer` existed load with their defaults)."""
    path = Path(out_dir) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        settings = saved["settings"]
        if settings.get("domains") is not None:
            settings = settings | {"domains": tuple(settings["domains"])}
        return PretrainReport(**(saved | {"settings": PretrainSettings(**settings)}))
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise PretrainError(f"{path}: not a pretraining report ({error}); train again with --force") from None


def arithmetic_chains(tokenizer: Any, n: int, seed: int) -> dict[str, torch.Tensor]:
    """`n` random chains of ring arithmetic (one direction each), encoded for training with the
    step results (every token of " 7": one with the BPE, two with the Unigram) as the only targets."""
    import numpy as np
    import torch

    from fedsim.train.batching import IGNORE_INDEX, right_padded

    rng = np.random.default_rng(seed)
    chains = [_chain_segments(rng) for _ in range(n)]
    segments = [text for texts, _ in chains for text in texts]
    pieces = iter(tokenizer(segments, add_special_tokens=False)["input_ids"])
    rows, labels = [], []
    for texts, is_result in chains:
        encoded_texts = [next(pieces) for _ in texts]
        rows.append([token for piece in encoded_texts for token in piece])
        labels.append([token if result else IGNORE_INDEX
                       for piece, result in zip(encoded_texts, is_result) for token in piece])
    if rows[-1] != tokenizer.encode("".join(chains[-1][0]), add_special_tokens=False):  # one chain, as a check
        raise PretrainError("the tokenizer does not split ring arithmetic at its spaces")
    encoded = right_padded(rows, tokenizer.pad_token_id)
    for row, targets in enumerate(labels):
        encoded["labels"][row, : len(targets)] = torch.tensor(targets)
    return encoded


def _chain_segments(rng: Any) -> tuple[list[str], list[bool]]:
    """One random chain " 3 + 8 = 1 . 1 + 4 = 5" cut before each step result: the segments, and
    which of them are results."""
    from fedsim.data.task import RATIONALE_STEP_SEPARATOR, RING_SIZE

    value, sign = int(rng.integers(RING_SIZE)), ("+" if rng.random() < 0.5 else "-")
    texts, is_result = [], []
    for step in range(int(rng.integers(TRAIN_MIN_STEPS, TRAIN_MAX_STEPS + 1))):
        move = int(rng.integers(1, RING_SIZE))
        result = (value + move) % RING_SIZE if sign == "+" else (value - move) % RING_SIZE
        lead = RATIONALE_STEP_SEPARATOR.rstrip() if step else ""
        texts += [f"{lead} {value} {sign} {move} =", f" {result}"]
        is_result += [False, True]
        value = result
    return texts, is_result


def stage_two_questions(settings: PretrainSettings) -> list[Example]:
    """The public questions (with gold rationales) of the question stage: `settings.public_size`
    of them, of `settings.domains` only when it is given."""
    from fedsim.data.task import generate_examples

    weights = None if settings.domains is None else dict.fromkeys(settings.domains, 1.0)
    return generate_examples(settings.public_size, settings.seed, "public", weights, TRAIN_MIN_STEPS,
                             TRAIN_MAX_STEPS)


def _stacked(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows of several encodings in one, right-padded to the widest."""
    import torch

    from fedsim.train.batching import IGNORE_INDEX

    width = max(part["input_ids"].shape[1] for part in parts)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {key: torch.cat([torch.nn.functional.pad(part[key], (0, width - part[key].shape[1]), value=value)
                            for part in parts])
            for key, value in fill.items()}


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _train_stage(model: Any, encoded: dict[str, torch.Tensor], steps: int, batch_size: int, lr: float,
                 generator: torch.Generator, bar: tqdm) -> float:
    """`steps` AdamW steps on fresh random batches with warm-up and cosine decay; the last loss."""
    from fedsim.train.local import make_optimizer, train_steps

    optimizer = make_optimizer(model, lr)
    loss = math.nan
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = train_steps(model, encoded, optimizer, 1, batch_size, generator).final_loss
        bar.update(1)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss:.3f}")
    return loss


def pretrain(out_dir: str | Path, settings: PretrainSettings, threads: int | None = None,
             progress: bool = False) -> PretrainReport:
    """Train `settings.preset` from scratch and save it (model, tokenizer, report) in `out_dir`,
    replacing whatever was there. The directory appears complete or not at all.

    `threads`: torch threads to train with (default: every core this process may use);
    `progress`: show a progress bar per stage and for the evaluation."""
    import torch

    from fedsim.config import TaskConfig
    from fedsim.data.task import DOMAINS, generate_examples
    from fedsim.models.presets import PRESETS, load_model, num_parameters, save_pretrained
    from fedsim.train.batching import encode_for_training
    from fedsim.train.evaluate import exact_match

    settings.check()
    if threads is not None and threads < 1:
        raise PretrainError(f"threads must be at least 1, got {threads}")
    s = settings
    torch.set_num_threads(threads or available_cpus())
    model, tokenizer = load_model(s.preset, s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    started = time.perf_counter()
    chains = arithmetic_chains(tokenizer, ARITHMETIC_CHAINS, s.seed)
    final_loss = math.nan
    if s.arithmetic_steps:
        with tqdm(total=s.arithmetic_steps, desc=f"{s.preset} arithmetic", disable=not progress,
                  dynamic_ncols=True) as bar:
            final_loss = _train_stage(model, chains, s.arithmetic_steps, ARITHMETIC_BATCH_SIZE, s.lr, generator,
                                      bar)
    if s.steps:
        replay = {key: value[: max(1, s.public_size // 4)] for key, value in chains.items()}
        questions = encode_for_training(tokenizer, stage_two_questions(s), "rationale", MAX_LEN)
        with tqdm(total=s.steps, desc=f"{s.preset} questions", disable=not progress, dynamic_ncols=True) as bar:
            final_loss = _train_stage(model, _stacked([questions, replay], tokenizer.pad_token_id), s.steps,
                                      s.batch_size, s.lr, generator, bar)
    train_seconds = time.perf_counter() - started
    task = TaskConfig()
    test = generate_examples(s.test_size, s.seed, "test", None, task.min_steps, task.max_steps)
    by_domain = {name: [example for example in test if example.domain == name] for name in DOMAINS}
    with tqdm(total=2 * len(test), desc=f"{s.preset} evaluation", disable=not progress, dynamic_ncols=True) as bar:
        accuracy_by_domain = {name: exact_match(model, tokenizer, examples, "rationale", on_batch=bar.update)
                              for name, examples in by_domain.items() if examples}
        accuracy_answer = exact_match(model, tokenizer, test, "answer", on_batch=bar.update)
    accuracy_rationale = sum(value * len(by_domain[name]) for name, value in accuracy_by_domain.items()) / len(test)

    target = Path(out_dir)
    report = PretrainReport(s, num_parameters(model), train_seconds, final_loss, accuracy_rationale,
                            accuracy_answer, accuracy_by_domain, PRESETS[s.preset].tokenizer)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_pretrained(model, tokenizer, staging)
    (staging / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return report


def ensure_pretrained(out_dir: str | Path, settings: PretrainSettings, force: bool = False,
                      threads: int | None = None, progress: bool = False) -> tuple[PretrainReport, bool]:
    """The model in `out_dir` when it is complete (and not `force`), else one pretrained now with
    `settings` (see `pretrain` for `threads` and `progress`). Returns (report, trained_now)."""
    existing = None if force else load_report(out_dir)
    if existing is not None:
        return existing, False
    return pretrain(out_dir, settings, threads, progress), True

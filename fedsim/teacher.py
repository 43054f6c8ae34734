"""The server LLM of the built-in task: a preset fully fine-tuned on the public split, saved locally.

`fedsim teacher train` builds a preset larger than the clients' SLMs and trains all of its weights
in two stages: first on random chains of ring arithmetic written as rationales (" 3 + 8 = 1 .
1 - 4 = 7", the step results as targets), then on public questions with their gold rationales in
the rationale prompt format of fedsim.train.batching ("Question: ...\nRationale:" -> " steps ####
answer"), with a quarter as many arithmetic chains mixed in so that the first stage is not
forgotten. Without the first stage a small model spends its budget learning the addition table
from the word problems (measured on llama-1m, 600 question steps: the step results stay at chance,
loss ln 10; with 1000 arithmetic steps first they are learned). It measures exact match on the test
split in both decoding modes (the teacher is not trained to answer directly: answer-only is
reported for reference) and saves a Hugging Face model directory with a `teacher.json` report;
`llm.model` of a FedCoT experiment points at it.

A directory that already holds a complete teacher (its report is written last, and the whole
directory appears by one rename) is reused as it is unless `force` is given.

`InProcessLLM` answers `generate` with the project's Hugging Face backend in this process: the
LLMClient of in-process runs (tests, benchmarks), where Ray runs use the Serve deployment.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used, so `fedsim --help` stays quick
    import torch

REPORT_FILE = "teacher.json"
DEFAULT_DIR = "runs/teacher"
DEFAULT_PRESET = "llama-1m"
DEFAULT_ARITHMETIC_STEPS = 1000
DEFAULT_STEPS = 2000
DEFAULT_PUBLIC_SIZE = 4000
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 3e-3
ARITHMETIC_BATCH_SIZE = 128
ARITHMETIC_CHAINS = 20000
TRAIN_MIN_STEPS, TRAIN_MAX_STEPS = 1, 4  # every question length a TaskConfig allows
TEST_SIZE = 200
MAX_LEN = 128


class TeacherError(ValueError):
    """Bad teacher settings, or a directory that is not a complete teacher."""


@dataclass(frozen=True)
class TeacherReport:
    """What was trained and how well it does (exact match on `test_size` test questions)."""

    path: str
    preset: str
    arithmetic_steps: int
    steps: int
    seed: int
    public_size: int
    batch_size: int
    lr: float
    num_parameters: int
    train_seconds: float
    final_loss: float
    test_size: int
    accuracy_rationale: float  # writes its steps, then the answer ("Rationale:" prompt)
    accuracy_answer: float     # answers directly ("Answer:" prompt; not trained for it)

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"teacher {self.path}: {self.preset} ({self.num_parameters / 1e6:.1f}M parameters), "
                f"{self.arithmetic_steps} arithmetic + {self.steps} steps x {self.batch_size} on "
                f"{self.public_size} public questions in {self.train_seconds / 60:.1f} min; exact match on "
                f"{self.test_size} test questions: rationale-then-answer {100 * self.accuracy_rationale:.1f}%, "
                f"answer-only {100 * self.accuracy_answer:.1f}% (not trained to answer directly)")


def load_report(out_dir: str | Path) -> TeacherReport | None:
    """The report of a complete teacher in `out_dir`, or None when there is none."""
    path = Path(out_dir) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        return TeacherReport(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise TeacherError(f"{path}: not a teacher report ({error}); retrain with --force") from None


def _check_settings(preset: str, counts: dict[str, int], lr: float) -> None:
    from fedsim.models.presets import PRESETS

    if preset not in PRESETS:
        raise TeacherError(f"teacher preset must be one of {sorted(PRESETS)}, got {preset!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "arithmetic_steps" else 1):
            raise TeacherError(f"teacher {name} must be an int >= {0 if name == 'arithmetic_steps' else 1}, "
                               f"got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise TeacherError(f"teacher lr must be a number > 0, got {lr!r}")


def arithmetic_chains(tokenizer: Any, n: int, seed: int) -> dict[str, torch.Tensor]:
    """`n` random chains of 1 to 4 ring-arithmetic steps written as rationales (" 3 + 8 = 1 . 1 - 4 = 7"),
    encoded for training with the step results as the only targets (the operands are random)."""
    import numpy as np
    import torch

    from fedsim.data.task import RATIONALE_STEP_SEPARATOR, RING_SIZE
    from fedsim.train.batching import IGNORE_INDEX

    rng = np.random.default_rng(seed)
    equals = tokenizer.encode(" =", add_special_tokens=False)
    rows = []
    for _ in range(n):
        value, steps = int(rng.integers(RING_SIZE)), []
        for _ in range(int(rng.integers(TRAIN_MIN_STEPS, TRAIN_MAX_STEPS + 1))):
            sign, move = ("+" if rng.random() < 0.5 else "-"), int(rng.integers(1, RING_SIZE))
            result = (value + move) % RING_SIZE if sign == "+" else (value - move) % RING_SIZE
            steps.append(f"{value} {sign} {move} = {result}")
            value = result
        rows.append(tokenizer.encode(" " + RATIONALE_STEP_SEPARATOR.join(steps), add_special_tokens=False))
    if len(equals) != 1:
        raise TeacherError("the tokenizer does not write ' =' as one token")
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((n, width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    after_equals = torch.zeros_like(input_ids, dtype=torch.bool)
    after_equals[:, 1:] = input_ids[:, :-1] == equals[0]
    labels[after_equals] = input_ids[after_equals]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _stacked(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows of several encodings in one, right-padded to the widest."""
    import torch

    from fedsim.train.batching import IGNORE_INDEX

    width = max(part["input_ids"].shape[1] for part in parts)
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {key: torch.cat([torch.nn.functional.pad(part[key], (0, width - part[key].shape[1]), value=value)
                            for part in parts])
            for key, value in fill.items()}


def _lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to zero."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _train_stage(model: Any, encoded: dict[str, torch.Tensor], steps: int, batch_size: int, lr: float,
                 generator: torch.Generator) -> float:
    """`steps` AdamW steps on fresh random batches with warm-up and cosine decay; the last loss."""
    from fedsim.train.local import make_optimizer, train_steps

    optimizer = make_optimizer(model, lr)
    loss = math.nan
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss = train_steps(model, encoded, optimizer, 1, batch_size, generator).final_loss
    return loss


def train_teacher(out_dir: str | Path = DEFAULT_DIR, preset: str = DEFAULT_PRESET, steps: int = DEFAULT_STEPS,
                  seed: int = 0, public_size: int = DEFAULT_PUBLIC_SIZE,
                  arithmetic_steps: int = DEFAULT_ARITHMETIC_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                  lr: float = DEFAULT_LR, test_size: int = TEST_SIZE) -> TeacherReport:
    """Train a teacher from scratch and save it (model, tokenizer, report) in `out_dir`, replacing
    whatever was there. The directory appears complete or not at all."""
    import torch

    from fedsim.config import TaskConfig
    from fedsim.data.task import generate_examples
    from fedsim.models.presets import build_model, num_parameters, save_pretrained
    from fedsim.models.tokenizer import builtin_tokenizer
    from fedsim.train.batching import encode_for_training
    from fedsim.train.evaluate import exact_match

    _check_settings(preset, {"steps": steps, "arithmetic_steps": arithmetic_steps, "public_size": public_size,
                             "batch_size": batch_size, "test_size": test_size}, lr)
    torch.set_num_threads(1)
    tokenizer = builtin_tokenizer()
    model = build_model(preset, tokenizer, seed)
    public = generate_examples(public_size, seed, "public", None, TRAIN_MIN_STEPS, TRAIN_MAX_STEPS)
    task = TaskConfig()
    test = generate_examples(test_size, seed, "test", None, task.min_steps, task.max_steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    chains = arithmetic_chains(tokenizer, ARITHMETIC_CHAINS, seed)
    if arithmetic_steps:
        _train_stage(model, chains, arithmetic_steps, ARITHMETIC_BATCH_SIZE, lr, generator)
    replay = {key: value[: max(1, public_size // 4)] for key, value in chains.items()}  # keeps the arithmetic
    questions = encode_for_training(tokenizer, public, "rationale", MAX_LEN)
    final_loss = _train_stage(model, _stacked([questions, replay], tokenizer.pad_token_id), steps, batch_size, lr,
                              generator)
    train_seconds = time.perf_counter() - started
    accuracy = {mode: exact_match(model, tokenizer, test, mode) for mode in ("rationale", "answer")}

    target = Path(out_dir)
    report = TeacherReport(str(target), preset, arithmetic_steps, steps, seed, public_size, batch_size, lr,
                           num_parameters(model), train_seconds, final_loss, test_size, accuracy["rationale"],
                           accuracy["answer"])
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_pretrained(model, tokenizer, staging)
    (staging / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return report


def ensure_teacher(out_dir: str | Path = DEFAULT_DIR, force: bool = False, **settings: Any) -> tuple[TeacherReport, bool]:
    """The teacher in `out_dir`: the saved one when it is complete (and not `force`), else a new one
    trained with `settings` (train_teacher's keyword arguments). Returns (report, trained_now)."""
    existing = None if force else load_report(out_dir)
    if existing is not None:
        return existing, False
    return train_teacher(out_dir, **settings), True


class InProcessLLM:
    """An LLMClient over the project's Hugging Face backend, loaded in this process.

    `calls` holds every generate call as (prompts, replies), in order."""

    def __init__(self, model_dir: str | Path, max_batch_items: int = 64) -> None:
        from serve.backends.hf import HFBackend

        self.backend = HFBackend({"model_path": str(model_dir), "max_batch_items": max_batch_items})
        self.calls: list[tuple[list[str], list[str]]] = []

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        from serve.params import GenerationParams

        rows = GenerationParams(**params).rows(len(prompts))
        replies = [completion.text for completion in self.backend.generate(list(prompts), rows)]
        self.calls.append((list(prompts), replies))
        return replies


def _train_command(args: argparse.Namespace) -> int:
    requested = {"preset": args.preset, "steps": args.steps, "seed": args.seed, "public_size": args.public_size,
                 "arithmetic_steps": args.arithmetic_steps}
    report, trained = ensure_teacher(args.out, args.force, **requested)
    if trained:
        print(report.summary())
        return 0
    print(f"reusing the teacher already trained in {args.out} (pass --force to train a new one)")
    print(report.summary())
    saved = {key: getattr(report, key) for key in requested}
    differing = {key: (saved[key], value) for key, value in requested.items() if saved[key] != value}
    if differing:
        listed = ", ".join(f"{key} {old} (asked {new})" for key, (old, new) in differing.items())
        print(f"note: the saved teacher differs from the request: {listed}")
    return 0


def add_teacher_command(commands: argparse._SubParsersAction) -> None:
    """Register `fedsim teacher train` on the CLI's subcommands."""
    teacher = commands.add_parser("teacher", help="train and save the server LLM for the built-in task")
    teacher.set_defaults(handler=lambda args: teacher.error("choose a teacher subcommand: train"))
    actions = teacher.add_subparsers(dest="teacher_command")
    train = actions.add_parser("train", help="fully fine-tune a preset on the public split with gold rationales",
                               description=__doc__.split("\n\n")[1])
    train.add_argument("--out", default=DEFAULT_DIR, help=f"model directory (default {DEFAULT_DIR})")
    train.add_argument("--preset", default=DEFAULT_PRESET, help=f"model preset (default {DEFAULT_PRESET})")
    train.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimizer steps (default {DEFAULT_STEPS})")
    train.add_argument("--arithmetic-steps", type=int, default=DEFAULT_ARITHMETIC_STEPS,
                       help=f"steps of the ring-arithmetic stage first (default {DEFAULT_ARITHMETIC_STEPS})")
    train.add_argument("--seed", type=int, default=0, help="seed of the weights, data and batches (default 0)")
    train.add_argument("--public-size", type=int, default=DEFAULT_PUBLIC_SIZE,
                       help=f"public questions to train on (default {DEFAULT_PUBLIC_SIZE})")
    train.add_argument("--force", action="store_true", help="train again even if --out holds a teacher")
    train.set_defaults(handler=_train_command)

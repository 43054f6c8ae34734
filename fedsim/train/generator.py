"""FDKT's client generator: a causal LM fine-tuned to write questions for a condition, and sampled.

The generator learns "Domain: <d> | Question:" -> " <question>" + EOS (algorithms.md §4.2); an
example with choices (classification as generation, the Yelp / AG-News format, its label being its
answer) adds its label: "Domain: <d> | Label: <answer> | Question:" -> " <text>". The loss is on
the question tokens and EOS only: the condition and padding are masked. Sampling draws
`samples_per_condition` texts per condition and checks each; a text that fails a check is dropped
and counted under the first rule it fails, in the order of DROP_REASONS:

- "unfinished": no EOS within max_new_tokens (the text is cut off);
- "empty": nothing left after stripping whitespace and " -._~/*|#" (the reference's strip set);
- "marker": the text holds a condition marker ("Domain:", "Label:", "Question:"): the model ran on
  into another condition;
- "too_short" / "too_long": fewer than min_words or more than max_words whitespace words (after
  that strip; the reference drops texts under 10 words);
- "no_question_mark": with require_question_mark (the built-in task's questions), the text does not
  end with "?".

The DP-SGD training of the generator is fedsim.privacy.dp_generator (this layer may not import the
privacy layer).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from fedsim.data.task import Example
from fedsim.errors import FedsimError
from fedsim.train.batching import encode_pairs

DOMAIN_MARKER, LABEL_MARKER, QUESTION_MARKER = "Domain:", "Label:", "Question:"
CONDITION_MARKERS = (DOMAIN_MARKER, LABEL_MARKER, QUESTION_MARKER)
DROP_REASONS = ("unfinished", "empty", "marker", "too_short", "too_long", "no_question_mark")
_STRIP = " -._~/\\*|#\t\r\n"


class GeneratorSettingsError(FedsimError, ValueError):
    """A bad generator setting: the message names the field."""


@dataclass(frozen=True)
class GeneratorSettings:
    """How a client trains its generator and samples from it (defaults: algorithms.md §4.4).

    Training: DP-SGD at (eps, delta) with per-example clipping to max_grad_norm, Poisson batches of
    expected size batch_size (q = min(1, batch_size / n)), Adam at lr, for `steps` steps or `epochs`
    epochs (steps = ceil(epochs / q); give at most one, neither means 1 epoch); eps = math.inf
    trains with clipping and no noise (a non-private release). Rows hold at most max_len tokens.
    Sampling: samples_per_condition texts per condition in batches of generation_batch, with
    temperature, top_k (0: off), top_p and max_new_tokens; the checks of the module docstring.
    """

    eps: float = 3.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 2
    lr: float = 1e-4
    max_len: int = 256
    samples_per_condition: int = 20
    generation_batch: int = 32
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 128
    min_words: int = 10
    max_words: int | None = None
    require_question_mark: bool = False

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise GeneratorSettingsError(f"generator.{problem}")

    def _problem(self) -> str | None:
        """The first bad field, as "<field> must ..., got ...", or None."""
        min_words = self.min_words if _is_int(self.min_words, 0) else 0
        checks = [
            ("eps", _is_number(self.eps) and self.eps > 0, "a number > 0 (inf: no noise)"),
            ("delta", _is_number(self.delta) and 0 < self.delta < 1, "in (0, 1)"),
            ("max_grad_norm", _is_finite(self.max_grad_norm) and self.max_grad_norm > 0, "a finite number > 0"),
            ("steps", self.steps is None or _is_int(self.steps, 1), "an int >= 1 or None"),
            ("epochs", self.epochs is None or (_is_finite(self.epochs) and self.epochs > 0),
             "a finite number > 0 or None"),
            ("epochs", self.steps is None or self.epochs is None, "None when steps is given (give one)"),
            ("batch_size", _is_int(self.batch_size, 1), "an int >= 1"),
            ("lr", _is_finite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("max_len", _is_int(self.max_len, 2), "an int >= 2"),
            ("samples_per_condition", _is_int(self.samples_per_condition, 1), "an int >= 1"),
            ("generation_batch", _is_int(self.generation_batch, 1), "an int >= 1"),
            ("temperature", _is_finite(self.temperature) and self.temperature > 0, "a finite number > 0"),
            ("top_k", _is_int(self.top_k, 0), "an int >= 0 (0: off)"),
            ("top_p", _is_number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1]"),
            ("max_new_tokens", _is_int(self.max_new_tokens, 1), "an int >= 1"),
            ("min_words", _is_int(self.min_words, 0), "an int >= 0"),
            ("max_words", self.max_words is None or _is_int(self.max_words, max(1, min_words)),
             "None or an int >= max(1, min_words)"),
            ("require_question_mark", isinstance(self.require_question_mark, bool), "a bool"),
        ]
        for name, ok, rule in checks:
            if not ok:
                return f"{name} must be {rule}, got {getattr(self, name)!r}"
        return None

    @property
    def private(self) -> bool:
        """Whether training adds noise (eps is finite)."""
        return math.isfinite(self.eps)

    def sample_rate(self, num_examples: int) -> float:
        """Poisson sampling rate q of DP-SGD on `num_examples` examples."""
        if not _is_int(num_examples, 1):
            raise GeneratorSettingsError(f"the generator needs at least one training example, got {num_examples!r}")
        return min(1.0, self.batch_size / num_examples)

    def planned_steps(self, num_examples: int) -> int:
        """DP-SGD steps on `num_examples` examples: `steps`, or ceil(epochs / q)."""
        if self.steps is not None:
            return self.steps
        epochs = 1.0 if self.epochs is None else self.epochs
        self.sample_rate(num_examples)  # checks num_examples
        steps = epochs * num_examples / min(self.batch_size, num_examples)  # epochs / q
        return max(1, math.ceil(round(steps, 9)))  # round: 0.1 * 60 / 2 is 3.0000000000000004


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_finite(value: object) -> bool:
    return _is_number(value) and math.isfinite(value)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True, order=True)
class Condition:
    """What the generator is asked to write about: a domain, and a label for examples with choices."""

    domain: str
    label: str | None = None


def condition_of(example: Example) -> Condition:
    """An example's condition: its domain, and its answer as label when it has choices."""
    return Condition(example.domain, example.answer if example.choices else None)


def all_conditions(domains: Sequence[str], labels: Sequence[str] | None = None) -> list[Condition]:
    """Every (domain, label) pair, or every domain when there are no labels. Build them from what
    is public (the task's domains and choices): conditions read off a client's data would reveal,
    outside the DP guarantee, which domains and labels it holds."""
    if labels is None:
        return [Condition(domain) for domain in domains]
    return [Condition(domain, label) for domain, label in itertools.product(domains, labels)]


def render_condition(condition: Condition) -> str:
    """The generator's prompt: "Domain: <d> | Question:" (with " | Label: <y>" before "Question:")."""
    parts = [f"{DOMAIN_MARKER} {condition.domain}"]
    if condition.label is not None:
        parts.append(f"{LABEL_MARKER} {condition.label}")
    return " | ".join([*parts, QUESTION_MARKER])


def render_generator_target(example: Example) -> str:
    """What the generator learns to write after its condition (EOS is added by the encoder)."""
    return f" {example.question}"


def encode_generator_examples(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                              max_len: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels of condition + question + EOS, right-padded; labels
    are -100 on the condition and the padding. A long question is cut on the right (its EOS with
    it); the condition is always kept whole."""
    if not examples:
        raise GeneratorSettingsError("the generator needs at least one training example")
    pairs = [(render_condition(condition_of(example)), render_generator_target(example)) for example in examples]
    return encode_pairs(tokenizer, pairs, max_len, cut="target")


@dataclass(frozen=True)
class Sample:
    """One generated text that passed the checks, with the condition it was generated for."""

    condition: Condition
    text: str


@dataclass(frozen=True)
class SamplingResult:
    """Kept samples and the drop counts by reason: generated == len(samples) + sum(dropped)."""

    samples: list[Sample]
    generated: int
    dropped: Counter[str]

    @property
    def keep_rate(self) -> float:
        return len(self.samples) / self.generated if self.generated else 0.0


def drop_reason(text: str, finished: bool, settings: GeneratorSettings) -> str | None:
    """The first check (DROP_REASONS order) that `text` fails, or None to keep it; `finished`
    says whether the generation ended with EOS."""
    stripped = text.strip(_STRIP)
    words = len(stripped.split())
    failures = [
        ("unfinished", not finished),
        ("empty", not stripped),
        ("marker", any(marker in text for marker in CONDITION_MARKERS)),
        ("too_short", words < settings.min_words),
        ("too_long", settings.max_words is not None and words > settings.max_words),
        ("no_question_mark", settings.require_question_mark and not text.rstrip().endswith("?")),
    ]
    return next((reason for reason, failed in failures if failed), None)


@torch.no_grad()
def sample_questions(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                     conditions: Sequence[Condition], settings: GeneratorSettings,
                     generator: torch.Generator) -> SamplingResult:
    """samples_per_condition texts per condition from `model` (a causal LM or its peft wrapper),
    checked by `drop_reason`. `generator`
    seeds the sampling (torch's global RNG is restored afterwards), so a call is reproducible
    from its state; the model is in eval mode while sampling."""
    if not conditions:
        raise GeneratorSettingsError("sample_questions needs at least one condition")
    device = next(model.parameters()).device
    samples: list[Sample] = []
    dropped: Counter[str] = Counter()
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device)))
            for condition in conditions:
                for text, finished in _generate(model, tokenizer, render_condition(condition), settings, device):
                    reason = drop_reason(text, finished, settings)
                    if reason is None:
                        samples.append(Sample(condition, text.strip()))
                    else:
                        dropped[reason] += 1
    finally:
        model.train(was_training)
    return SamplingResult(samples, settings.samples_per_condition * len(conditions), dropped)


def _generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str,
              settings: GeneratorSettings, device: torch.device) -> list[tuple[str, bool]]:
    """samples_per_condition (text, ended with EOS) continuations of `prompt`, in batches of
    identical prompts (so no padding)."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(prompt_ids) + settings.max_new_tokens > limit:
        raise GeneratorSettingsError(
            f"generator.max_new_tokens must be <= {limit - len(prompt_ids)} for this model ({limit} positions, "
            f"a {len(prompt_ids)}-token condition), got {settings.max_new_tokens}")
    outputs: list[tuple[str, bool]] = []
    remaining = settings.samples_per_condition
    while remaining:
        rows = min(remaining, settings.generation_batch)
        input_ids = torch.tensor([prompt_ids] * rows, device=device)
        generated = model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
            temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id)
        outputs += [_decoded(tokenizer, row[len(prompt_ids):].tolist()) for row in generated]
        remaining -= rows
    return outputs


def _decoded(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> tuple[str, bool]:
    """The text before the first EOS of generated ids, and whether there was an EOS."""
    finished = tokenizer.eos_token_id in ids
    if finished:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True), finished

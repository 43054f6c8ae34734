"""The prompt format of the task, shared by training, evaluation, the tokenizer corpus and FedCoT.

Two modes share one format:
    answer:     "Question: {q}\\nAnswer:"     → " {answer}"
    rationale:  "Question: {q}\\nRationale:"  → " {rationale} #### {answer}"
A question with choices gets a "Choices: a | b | c" line after it. `extract_answer` reads the
answer back out of generated text.
"""
from __future__ import annotations

import re
from typing import Literal

from fedsim.data.task import Example

Mode = Literal["answer", "rationale"]
ANSWER_MARKER = "####"
_PROMPT_ENDINGS = {"answer": "Answer:", "rationale": "Rationale:"}
_LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def render_prompt(example: Example, mode: Mode) -> str:
    """The model input for `example`: the question (and choices) and the mode's cue."""
    if mode not in _PROMPT_ENDINGS:
        raise ValueError(f"mode must be 'answer' or 'rationale', got {mode!r}")
    lines = [f"Question: {example.question}"]
    if example.choices:
        lines.append("Choices: " + " | ".join(example.choices))
    lines.append(_PROMPT_ENDINGS[mode])
    return "\n".join(lines)


def render_target(example: Example, mode: Mode) -> str:
    """The text the model should produce after the prompt (without EOS)."""
    if mode == "answer":
        return f" {example.answer}"
    if mode == "rationale":
        if not example.rationale:
            raise ValueError(f"example has no rationale for mode 'rationale': {example.question[:60]!r}")
        return f" {example.rationale} {ANSWER_MARKER} {example.answer}"
    raise ValueError(f"mode must be 'answer' or 'rationale', got {mode!r}")


def extract_answer(generated_text: str) -> str:
    """The answer in generated text: what follows the last answer marker (first line of it),
    else the last number, else the first line, stripped."""
    if ANSWER_MARKER in generated_text:
        after = generated_text.rsplit(ANSWER_MARKER, 1)[1].strip()
        return after.splitlines()[0].strip() if after else ""
    numbers = _LAST_NUMBER.findall(generated_text)
    if numbers:
        return numbers[-1]
    stripped = generated_text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""

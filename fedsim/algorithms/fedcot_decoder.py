"""FedCoT's learned local decoder (`fedcot.recover: decoder`, algorithms.md §2.6).

A small causal LM that rewrites the server LLM's reply to a perturbed question into a rationale
for the client's clean question. Its input is the clean question and the reply,

    "Question: {clean question}\\nReply: {LLM reply}\\nRationale:" -> " {rationale} #### {answer}"

(the rationale prompt of fedsim.data.prompts with the reply appended to the question). The server
fine-tunes all of its weights on PUBLIC data only: public questions, perturbed with the clients'
own mechanism and eps, the LLM's replies to them, and the public gold rationales as targets. It
then ships the weights to each client once (their bytes are what `payload()` holds); a client runs
the decoder locally on each reply with its own clean question, so nothing private leaves it. The
decoder knows nothing about the task beyond what it learns from those public triples (no rule).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.data.prompts import render_prompt
from fedsim.data.task import Example
from fedsim.train.batching import encode_for_training
from fedsim.train.evaluate import generate_texts
from fedsim.train.local import TrainStats, make_optimizer, train_steps

DECODER_KIND = "decoder"  # the message that carries the decoder's weights to a client


def decoder_example(question: str, reply: str, gold: Example | None = None) -> Example:
    """The decoder's input for one reply (whitespace of the reply collapsed); with `gold`, its target."""
    text = f"{question}\nReply: {' '.join(reply.split())}"
    if gold is None:
        return Example(question=text, answer="")
    return Example(question=text, answer=gold.answer, rationale=gold.rationale, domain=gold.domain)


def load_decoder_base(name: str, seed: int) -> tuple[Any, Any]:
    """The model the decoder starts from (a preset built from `seed`, or a saved model) and its tokenizer."""
    from fedsim.models.presets import load_model

    return load_model(name, seed)


@dataclass
class LocalDecoder:
    """A trained decoder: its model and tokenizer, the public questions it was trained on, its training."""

    model: Any
    tokenizer: Any
    trained_on: tuple[str, ...]
    stats: TrainStats

    def payload(self) -> dict[str, np.ndarray]:
        """Its weights as shipped to a client: every parameter once (tied matrices once), float32."""
        return {name: parameter.detach().to(torch.float32).numpy().copy()
                for name, parameter in self.model.named_parameters()}

    def rewrite(self, questions: Sequence[str], replies: Sequence[str], max_new_tokens: int,
                batch_size: int = 64) -> list[str]:
        """The decoder's output for each (clean question, LLM reply): " rationale #### answer" text."""
        if len(questions) != len(replies):
            raise ValueError(f"{len(replies)} replies for {len(questions)} questions")
        prompts = [render_prompt(decoder_example(q, r), "rationale") for q, r in zip(questions, replies)]
        return generate_texts(self.model, self.tokenizer, prompts, max_new_tokens, batch_size)


def train_decoder(base: tuple[Any, Any], public: Sequence[Example], questions: Sequence[str],
                  replies: Sequence[str], steps: int, batch_size: int, lr: float, max_len: int,
                  generator: torch.Generator) -> LocalDecoder:
    """Fine-tune every weight of `base` (model, tokenizer) to map (questions[i], replies[i]) to
    public[i]'s gold rationale and answer; `questions` are the clean texts of the public examples
    as a client words its own."""
    if not (len(public) == len(questions) == len(replies)) or not public:
        raise ValueError(f"the decoder needs as many public examples ({len(public)}), questions "
                         f"({len(questions)}) and replies ({len(replies)}), at least one")
    if any(not example.rationale for example in public):
        raise ValueError("every public example the decoder trains on needs a gold rationale")
    model, tokenizer = base
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    encoded = encode_for_training(tokenizer, [decoder_example(q, r, e) for q, r, e in zip(questions, replies, public)],
                                  "rationale", max_len)
    stats = train_steps(model, encoded, make_optimizer(model, lr), steps, batch_size, generator)
    model.eval()
    return LocalDecoder(model, tokenizer, tuple(example.question for example in public), stats)

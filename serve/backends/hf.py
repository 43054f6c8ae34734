"""Hugging Face transformers backend: a local causal-LM directory on CPU or GPU.

Generation runs ``model.generate`` (KV cache on) over left-padded batches. One logits
processor gives every row its own decoding: greedy rows keep the model's argmax, sampled
rows draw from their own seeded generator (temperature, top-p), and each row stops at its
own max_new_tokens; a stopping criterion ends rows whose text reached a stop string.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessor,
                          LogitsProcessorList, StoppingCriteria, StoppingCriteriaList)
from transformers.utils import logging as hf_logging

from fedsim.models import lora as fedsim_lora
from serve.backends.base import LLMBackend, check_adapter_arrays, parse_options
from serve.errors import ModelLoadError, RequestError, ServeConfigError
from serve.params import Completion, GenerationParams, TokenizerInfo, TopKResult

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class HFOptions:
    """Options of the hf backend (serve.backend_options).

    max_batch_items bounds the rows of one forward pass; larger batches are split.
    lora: the fields of fedsim.models.lora.LoraSettings (r, alpha, dropout, target_modules,
    train_embeddings); attaches a LoRA that set_adapter replaces, named as get_adapter names it.
    """

    model_path: str
    device: str = "cpu"
    dtype: str = "float32"
    cpu_threads: int = 1
    max_batch_items: int = 64
    lora: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, str) or not self.model_path:
            raise ServeConfigError(f"backend_options.model_path must be a local directory, got {self.model_path!r}")
        if self.dtype not in DTYPES:
            raise ServeConfigError(f"backend_options.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ServeConfigError(f"backend_options.device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        for name in ("cpu_threads", "max_batch_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServeConfigError(f"backend_options.{name} must be an int >= 1, got {value!r}")
        if self.lora is not None:
            parse_options(fedsim_lora.LoraSettings, self.lora, "backend_options.lora")


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ServeConfigError(f"backend_options.device is {name!r} but no CUDA GPU is visible")
    return torch.device(name)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(positions)], True) if positions else (text, False)


class _RowDecoder(LogitsProcessor):
    """Turns greedy generate into per-row decoding.

    Rows past their own max_new_tokens are forced to EOS; sampled rows are forced to the
    token drawn (inverse CDF of the temperature-scaled top-p distribution) with a uniform
    number from the row's own generator, so greedy selection then picks exactly it.
    """

    def __init__(self, params: list[GenerationParams], prompt_len: int, eos_id: int | None):
        self._params = params
        self._prompt_len = prompt_len
        self._eos_id = eos_id
        self._budgets = torch.tensor([p.max_new_tokens for p in params])
        self._sampled = torch.tensor([not p.greedy for p in params])
        self._temperatures = torch.tensor([max(p.temperature, 1e-6) for p in params])
        self._top_ps = torch.tensor([p.top_p for p in params])
        self._generators: dict[int, torch.Generator] = {}

    def _uniform(self, row: int, device: torch.device) -> torch.Tensor:
        if row not in self._generators:
            generator = torch.Generator(device=device)
            seed = self._params[row].seed
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            self._generators[row] = generator
        return torch.rand((), generator=self._generators[row], device=device)

    def _sample(self, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        device = logits.device
        probs = torch.softmax(logits.float() / self._temperatures[rows, None].to(device), dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_probs.cumsum(-1) - sorted_probs) < self._top_ps[rows, None].to(device)
        cumulative = (sorted_probs * keep).cumsum(-1)
        uniforms = torch.stack([self._uniform(int(row), device) for row in rows])
        index = torch.searchsorted(cumulative, (uniforms * cumulative[:, -1])[:, None])
        return order.gather(-1, index.clamp(max=order.shape[-1] - 1)).squeeze(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self._prompt_len
        over_budget = self._budgets <= step
        rows = torch.nonzero(self._sampled & ~over_budget).flatten()
        if len(rows):
            tokens = self._sample(rows, scores[rows.to(scores.device)])
            forced = torch.full_like(scores[rows.to(scores.device)], float("-inf"))
            forced[torch.arange(len(rows), device=scores.device), tokens] = 0.0
            scores[rows.to(scores.device)] = forced
        if self._eos_id is not None and bool(over_budget.any()):
            over = over_budget.to(scores.device)
            scores[over] = float("-inf")
            scores[over, self._eos_id] = 0.0
        return scores


class _RowStopStrings(StoppingCriteria):
    """Ends each row whose generated text contains one of its own stop strings."""

    def __init__(self, tokenizer: Any, params: list[GenerationParams], prompt_len: int):
        self._tokenizer = tokenizer
        self._prompt_len = prompt_len
        self._rows = [(row, p.stop) for row, p in enumerate(params) if p.stop]

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, stops in self._rows:
            text = self._tokenizer.decode(input_ids[row, self._prompt_len:], skip_special_tokens=True)
            done[row] = any(s in text for s in stops)
        return done


class HFBackend(LLMBackend):
    """A transformers causal LM loaded from a local directory (never from a hub)."""

    def __init__(self, options: Mapping[str, Any] | HFOptions):
        self.options = parse_options(HFOptions, options, "serve.backend_options (hf)")
        path = Path(self.options.model_path).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"hf backend: model_path {str(path)!r} is not a directory; point it at a "
                                 "folder written by save_pretrained (config.json, weights, tokenizer)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"hf backend: model_path {str(path)!r} has no config.json; "
                                 "is it a folder written by save_pretrained?")
        self._path = path
        self._device = _resolve_device(self.options.device)
        if self._device.type == "cpu":
            torch.set_num_threads(self.options.cpu_threads)
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                         dtype=DTYPES[self.options.dtype])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"hf backend: cannot load a causal LM and tokenizer from "
                                 f"{str(path)!r}: {exc}") from exc
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ModelLoadError(f"hf backend: the tokenizer in {str(path)!r} has neither a pad "
                                     "nor an eos token; batched generation needs one of them")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self._tokenizer = tokenizer
        self._vocab_size = int(model.config.vocab_size)
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        self._adapter_shapes: dict[str, tuple[int, ...]] = {}
        if self.options.lora is not None:
            settings = parse_options(fedsim_lora.LoraSettings, self.options.lora, "backend_options.lora")
            try:
                model = fedsim_lora.attach_lora(model, settings)
            except ValueError as exc:
                raise ServeConfigError(f"backend_options.lora cannot be attached: {exc}") from exc
            self._adapter_shapes = {name: array.shape for name, array in fedsim_lora.get_adapter(model).items()}
        self._model = model.to(self._device).eval()

    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo(name=str(self._path), vocab_size=self._vocab_size,
                             pad_token_id=self._tokenizer.pad_token_id,
                             bos_token_id=self._tokenizer.bos_token_id,
                             eos_token_id=self._tokenizer.eos_token_id)

    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._adapter_shapes)

    def set_adapter(self, arrays: Mapping[str, np.ndarray]) -> None:
        fedsim_lora.set_adapter(self._model, check_adapter_arrays(arrays, self._adapter_shapes))

    def _check_length(self, n_tokens: int, what: str) -> None:
        if self._max_positions is not None and n_tokens > self._max_positions:
            raise RequestError(f"{what} needs {n_tokens} positions but the model has "
                               f"max_position_embeddings={self._max_positions}")

    def generate(self, prompts: list[str], params: list[GenerationParams]) -> list[Completion]:
        if len(prompts) != len(params):
            raise RequestError(f"got {len(prompts)} prompts but {len(params)} parameter sets")
        step = self.options.max_batch_items
        completions: list[Completion] = []
        for start in range(0, len(prompts), step):
            completions += self._generate_chunk(prompts[start:start + step], params[start:start + step])
        return completions

    def _generate_chunk(self, prompts: list[str], params: list[GenerationParams]) -> list[Completion]:
        encoded = self._tokenizer(prompts, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self._device)
        attention_mask = encoded["attention_mask"].to(self._device)
        prompt_len = input_ids.shape[1]
        prompt_tokens = attention_mask.sum(dim=1).tolist()
        for n_prompt, p in zip(prompt_tokens, params):
            self._check_length(n_prompt + p.max_new_tokens, "a prompt plus max_new_tokens")
        eos_id = self._tokenizer.eos_token_id
        stopping = StoppingCriteriaList()
        if any(p.stop for p in params):
            stopping.append(_RowStopStrings(self._tokenizer, params, prompt_len))
        with torch.no_grad():
            output = self._model.generate(
                input_ids=input_ids, attention_mask=attention_mask,
                max_new_tokens=max(p.max_new_tokens for p in params),
                do_sample=False, num_beams=1, use_cache=True,
                logits_processor=LogitsProcessorList([_RowDecoder(params, prompt_len, eos_id)]),
                stopping_criteria=stopping,
                pad_token_id=self._tokenizer.pad_token_id, eos_token_id=eos_id)
        end_ids = {eos_id, self._tokenizer.pad_token_id} - {None}
        completions = []
        for row, p in enumerate(params):
            tokens = output[row, prompt_len:prompt_len + p.max_new_tokens].tolist()
            ended = next((i for i, token in enumerate(tokens) if token in end_ids), None)
            if ended is not None:
                tokens = tokens[:ended]
            text, stopped = cut_at_stop(self._tokenizer.decode(tokens, skip_special_tokens=True), p.stop)
            completions.append(Completion(text=text, finish_reason="stop" if ended is not None or stopped
                                          else "length", prompt_tokens=int(prompt_tokens[row]),
                                          completion_tokens=len(tokens)))
        return completions

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self._vocab_size:
            raise RequestError(f"k must be an int in [1, {self._vocab_size}], got {k!r}")
        for index, tokens in enumerate(token_batches):
            if len(tokens) == 0:
                raise RequestError(f"token sequence {index} is empty")
            if min(tokens) < 0 or max(tokens) >= self._vocab_size:
                raise RequestError(f"token sequence {index} has ids outside [0, {self._vocab_size})")
            self._check_length(len(tokens), f"token sequence {index}")
        step = self.options.max_batch_items
        results: list[TopKResult] = []
        for start in range(0, len(token_batches), step):
            results += self._topk_chunk(token_batches[start:start + step], k)
        return results

    def _topk_chunk(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        lengths = [len(tokens) for tokens in token_batches]
        input_ids = torch.full((len(lengths), max(lengths)), self._tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, tokens in enumerate(token_batches):  # right padding: real positions start at 0
            input_ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            attention_mask[row, :len(tokens)] = 1
        # Without padding the mask changes nothing and only slows attention down.
        mask = None if min(lengths) == max(lengths) else attention_mask.to(self._device)
        with torch.no_grad():
            logits = self._model(input_ids=input_ids.to(self._device), attention_mask=mask,
                                 use_cache=False).logits
            values, ids = logits.topk(k, dim=-1)
        values = values.to(torch.float16).cpu().numpy()
        ids = ids.to(torch.int32).cpu().numpy()
        return [TopKResult(ids=np.ascontiguousarray(ids[row, :n]), values=np.ascontiguousarray(values[row, :n]))
                for row, n in enumerate(lengths)]

"""vLLM backend (optional extra ``fedsim[vllm]``, CUDA GPU only).

vllm is imported inside the constructor, so this module imports fine without it.
``topk_logits`` returns vLLM's top-k log-probabilities (prompt_logprobs), which differ
from raw logits by one constant per position; the renormalised sparse teacher of
algorithms.md §0.4 is unchanged by such a shift, at any temperature.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fedsim.models import lora as fedsim_lora
from serve.backends.base import LLMBackend, check_adapter_arrays, parse_options
from serve.errors import BackendUnavailableError, ModelLoadError, RequestError, ServeConfigError
from serve.params import Completion, GenerationParams, TokenizerInfo, TopKResult

PEFT_PREFIX = "base_model.model."  # peft's saved-adapter names = this prefix + fedsim's names
INSTALL_HINT = ("the vllm backend needs the optional extra and a CUDA GPU: "
                "pip install 'fedsim[vllm]' on a machine with a GPU, or use backend 'hf'")


@dataclass(frozen=True)
class VLLMOptions:
    """Options of the vllm backend (serve.backend_options); lora as for the hf backend."""

    model_path: str
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    max_logprobs: int = 20
    seed: int = 0
    lora: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, str) or not self.model_path:
            raise ServeConfigError(f"backend_options.model_path must be a local directory, got {self.model_path!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ServeConfigError("backend_options.gpu_memory_utilization must be in (0, 1], "
                                   f"got {self.gpu_memory_utilization!r}")
        if self.max_logprobs < 1 or self.tensor_parallel_size < 1:
            raise ServeConfigError("backend_options.max_logprobs and tensor_parallel_size must be >= 1")
        if self.lora is not None:
            settings = parse_options(fedsim_lora.LoraSettings, self.lora, "backend_options.lora")
            for option in ("train_embeddings", "train_norms"):
                if getattr(settings, option):
                    raise ServeConfigError(f"backend_options.lora.{option} is not supported by the vllm backend")


def _lora_layout(model_path: Path, settings: fedsim_lora.LoraSettings) -> tuple[dict[str, tuple[int, ...]], Any]:
    """fedsim adapter names and shapes for this model, and the peft LoraConfig it resolves to.

    Built with fedsim.models.lora on a meta-device skeleton, so nothing is loaded.
    """
    import torch
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    peft_model = fedsim_lora.attach_lora(skeleton, settings)
    shapes = {name.removeprefix(PEFT_PREFIX): tuple(array.shape)
              for name, array in get_peft_model_state_dict(peft_model).items()}
    peft_config = peft_model.peft_config["default"]
    peft_config.base_model_name_or_path = str(model_path)
    return shapes, peft_config


class VLLMBackend(LLMBackend):
    """A vLLM engine over a local model directory, with an optional replaceable LoRA."""

    def __init__(self, options: Mapping[str, Any] | VLLMOptions):
        self.options = parse_options(VLLMOptions, options, "serve.backend_options (vllm)")
        try:
            import vllm
        except ImportError as exc:
            raise BackendUnavailableError(f"vllm is not installed: {INSTALL_HINT}") from exc
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"no CUDA GPU is visible: {INSTALL_HINT}")
        path = Path(self.options.model_path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"vllm backend: model_path {str(path)!r} is not a folder with a config.json")
        self._path = path
        self._vllm = vllm
        self._lora = None if self.options.lora is None else parse_options(
            fedsim_lora.LoraSettings, self.options.lora, "backend_options.lora")
        engine_args: dict[str, Any] = dict(
            model=str(path), dtype=self.options.dtype, seed=self.options.seed,
            gpu_memory_utilization=self.options.gpu_memory_utilization,
            max_model_len=self.options.max_model_len, max_logprobs=self.options.max_logprobs,
            tensor_parallel_size=self.options.tensor_parallel_size)
        if self._lora is not None:
            engine_args.update(enable_lora=True, max_lora_rank=self._lora.r, max_loras=1)
        self._llm = vllm.LLM(**engine_args)
        self._adapter_shapes, self._peft_config = {}, None
        if self._lora is not None:
            self._adapter_shapes, self._peft_config = _lora_layout(path, self._lora)
        self._lora_request: Any = None
        self._adapter_version = 0
        self._adapter_dirs: list[tempfile.TemporaryDirectory] = []  # the current one and the one before

    def tokenizer_info(self) -> TokenizerInfo:
        from transformers import AutoConfig

        tokenizer = self._llm.get_tokenizer()
        vocab_size = AutoConfig.from_pretrained(self._path, local_files_only=True).vocab_size
        return TokenizerInfo(name=str(self._path), vocab_size=int(vocab_size),
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)

    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._adapter_shapes)

    def set_adapter(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the arrays as a peft adapter folder and route later requests to it."""
        from safetensors.numpy import save_file
        from vllm.lora.request import LoRARequest

        checked = check_adapter_arrays(arrays, self._adapter_shapes)
        folder = tempfile.TemporaryDirectory(prefix="fedsim-vllm-lora-")
        self._peft_config.save_pretrained(folder.name)  # adapter_config.json
        save_file({PEFT_PREFIX + name: array for name, array in checked.items()},
                  str(Path(folder.name, "adapter_model.safetensors")))
        self._adapter_version += 1
        self._lora_request = LoRARequest(f"fedsim-adapter-{self._adapter_version}", self._adapter_version,
                                         folder.name)
        self._adapter_dirs.append(folder)
        while len(self._adapter_dirs) > 2:
            self._adapter_dirs.pop(0).cleanup()

    def generate(self, prompts: list[str], params: list[GenerationParams]) -> list[Completion]:
        if len(prompts) != len(params):
            raise RequestError(f"got {len(prompts)} prompts but {len(params)} parameter sets")
        sampling = [self._vllm.SamplingParams(n=1, temperature=p.temperature, top_p=p.top_p,
                                              max_tokens=p.max_new_tokens, stop=list(p.stop) or None,
                                              seed=p.seed) for p in params]
        outputs = self._llm.generate(prompts, sampling, lora_request=self._lora_request, use_tqdm=False)
        return [Completion(text=out.outputs[0].text,
                           finish_reason="length" if out.outputs[0].finish_reason == "length" else "stop",
                           prompt_tokens=len(out.prompt_token_ids),
                           completion_tokens=len(out.outputs[0].token_ids)) for out in outputs]

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        if not 1 <= k <= self.options.max_logprobs:
            raise RequestError(f"k must be in [1, backend_options.max_logprobs={self.options.max_logprobs}], got {k}")
        if any(len(tokens) == 0 for tokens in token_batches):
            raise RequestError("token sequences must not be empty")
        sampling = self._vllm.SamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=k, logprobs=k)
        prompts = [{"prompt_token_ids": list(tokens)} for tokens in token_batches]
        outputs = self._llm.generate(prompts, sampling, lora_request=self._lora_request, use_tqdm=False)
        results = []
        for out in outputs:
            # prompt_logprobs[t] scores token t from its prefix (t=0 has none); the last
            # position's distribution is that of the one generated token.
            positions = list(out.prompt_logprobs[1:]) + [out.outputs[0].logprobs[0]]
            ids = np.empty((len(positions), k), dtype=np.int32)
            values = np.empty((len(positions), k), dtype=np.float16)
            for row, entries in enumerate(positions):
                best = sorted(entries.items(), key=lambda item: -item[1].logprob)[:k]
                ids[row] = [token for token, _ in best]
                values[row] = [logprob.logprob for _, logprob in best]
            results.append(TopKResult(ids=ids, values=values))
        return results

"""Benchmark the real checkpoint SmolLM2-135M-Instruct on CPU.

Each measurement runs in a fresh process, so its RSS high-water mark is its own:
  convert   a fresh conversion of the GGUF file into a temporary directory (fedsim.models.checkpoints)
  load      loading the installed directory (fedsim.models.presets.load_pretrained)
  generate  greedy decoding of 16 chat prompts: one batch of 16 (left-padded) against the 16 one by one,
            the same max_new_tokens; tokens = generated tokens up to the EOS; with 1 and 2 torch threads
  lora      one LoRA training step (r 8, all linear layers, AdamW) on a batch of 8 x 64 tokens
Prints a table and writes experiments/bench/results/smollm2.json.

    python experiments/bench/smollm2.py [--max-new-tokens 32] [--threads 1 2] [--skip-convert]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "smollm2.json"
NAME = "smollm2-135m"
COUNTRIES = ["France", "Germany", "Japan", "Spain", "Canada", "Egypt", "Brazil", "India",
             "Kenya", "Norway", "Peru", "Chile", "Greece", "Poland", "Turkey", "Mexico"]
LORA_BATCH, LORA_TOKENS, LORA_STEPS = 8, 64, 3


def in_fresh_process(function: Any, *args: Any) -> dict[str, Any]:
    """Run `function(*args)` in a new spawned process and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def measure_convert() -> dict[str, Any]:
    from fedsim.models.checkpoints import checkpoint, convert, peak_rss_mb

    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        manifest = convert(checkpoint(NAME), Path(directory) / NAME)
        seconds = time.perf_counter() - started
        size = (Path(directory) / NAME / "model.safetensors").stat().st_size
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mb(), "safetensors_bytes": size,
            "parameters": manifest["parameters"]}


def measure_load() -> dict[str, Any]:
    from fedsim.models.checkpoints import peak_rss_mb
    from fedsim.models.presets import load_pretrained

    started = time.perf_counter()
    load_pretrained(NAME)
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mb()}


def _generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """Greedy continuations (token ids up to the EOS) of `prompts` in one left-padded batch, and seconds."""
    import torch

    encoded = [tokenizer.encode(prompt, add_special_tokens=False) for prompt in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention_mask[row, width - len(ids):] = 1
    started = time.perf_counter()
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)
    seconds = time.perf_counter() - started
    rows = []
    for row in output[:, width:].tolist():
        rows.append(row[:row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row)
    return rows, seconds


def measure_generate(threads: int, max_new_tokens: int) -> dict[str, Any]:
    import torch

    from fedsim.models.presets import load_pretrained

    torch.set_num_threads(threads)
    model, tokenizer = load_pretrained(NAME)
    model.eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"What is the capital of {country}?"}],
                                             add_generation_prompt=True, tokenize=False) for country in COUNTRIES]
    _generate(model, tokenizer, prompts[:2], 4)  # warm-up
    batched, batched_s = _generate(model, tokenizer, prompts, max_new_tokens)
    single, single_s = [], 0.0
    for prompt in prompts:
        rows, seconds = _generate(model, tokenizer, [prompt], max_new_tokens)
        single += rows
        single_s += seconds
    batched_tokens, single_tokens = sum(map(len, batched)), sum(map(len, single))
    return {"threads": threads, "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "batched_tokens": batched_tokens, "batched_s": batched_s, "batched_tok_s": batched_tokens / batched_s,
            "unbatched_tokens": single_tokens, "unbatched_s": single_s, "unbatched_tok_s": single_tokens / single_s,
            "same_texts": [tokenizer.decode(r) for r in batched] == [tokenizer.decode(r) for r in single],
            "example": tokenizer.decode(single[0])}


def measure_lora(threads: int) -> dict[str, Any]:
    import torch

    from fedsim.models.checkpoints import peak_rss_mb
    from fedsim.models.lora import LoraSettings, attach_lora
    from fedsim.models.presets import load_pretrained
    from fedsim.train.local import make_optimizer, optimizer_step
    from fedsim.train.losses import causal_lm_loss

    torch.set_num_threads(threads)
    model, tokenizer = load_pretrained(NAME)
    torch.manual_seed(0)
    model = attach_lora(model, LoraSettings(r=8, alpha=16, dropout=0.05, target_modules="all-linear"))
    model.train()
    optimizer = make_optimizer(model, lr=1e-4)
    input_ids = torch.randint(0, len(tokenizer), (LORA_BATCH, LORA_TOKENS), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(LORA_STEPS + 1):  # the first step is a warm-up
        started = time.perf_counter()
        loss = causal_lm_loss(model(input_ids=input_ids).logits, input_ids)
        optimizer_step(optimizer, loss, max_grad_norm=1.0)
        times.append(time.perf_counter() - started)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"threads": threads, "batch": LORA_BATCH, "tokens": LORA_TOKENS, "step_s": sum(times[1:]) / LORA_STEPS,
            "steps_timed": LORA_STEPS, "lora_parameters": trainable, "peak_rss_mib": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip-convert", action="store_true", help="do not time a fresh conversion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from fedsim.models.checkpoints import install

    install(NAME)  # the other measurements load the installed directory
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "load_average_1m_at_start": os.getloadavg()[0]}}
    if not args.skip_convert:
        report["convert"] = in_fresh_process(measure_convert)
    report["load"] = in_fresh_process(measure_load)
    report["generate"] = [in_fresh_process(measure_generate, t, args.max_new_tokens) for t in args.threads]
    report["lora_step"] = [in_fresh_process(measure_lora, t) for t in args.threads]
    report["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]

    print(f"SmolLM2-135M-Instruct on CPU (load average {report['machine']['load_average_1m_at_start']:.1f} "
          f"at start, {report['machine']['load_average_1m_at_end']:.1f} at end, {os.cpu_count()} CPUs)")
    if "convert" in report:
        c = report["convert"]
        print(f"convert   {c['seconds']:6.1f} s   peak RSS {c['peak_rss_mib']:6.0f} MiB   "
              f"{c['safetensors_bytes'] / 1e6:.0f} MB float32, {c['parameters']:,} parameters")
    print(f"load      {report['load']['seconds']:6.1f} s   peak RSS {report['load']['peak_rss_mib']:6.0f} MiB")
    print(f"{'threads':>7}  {'batched tok/s':>13}  {'unbatched tok/s':>15}  {'speedup':>7}  {'tokens':>11}  same texts")
    for g in report["generate"]:
        print(f"{g['threads']:>7}  {g['batched_tok_s']:>13.1f}  {g['unbatched_tok_s']:>15.1f}  "
              f"{g['batched_tok_s'] / g['unbatched_tok_s']:>6.1f}x  {g['batched_tokens']:>5}/{g['unbatched_tokens']:<5}  "
              f"{g['same_texts']}")
    print(f"(16 chat prompts, greedy, max_new_tokens {args.max_new_tokens}; e.g. {report['generate'][0]['example']!r})")
    for step in report["lora_step"]:
        print(f"LoRA step {step['threads']} thread(s): {step['step_s']:.2f} s (batch {step['batch']} x "
              f"{step['tokens']} tokens, r 8 all-linear, {step['lora_parameters']:,} trainable, "
              f"peak RSS {step['peak_rss_mib']:.0f} MiB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Does reasoning matter on the built-in task? Two students of the same preset, one trained on
answers alone and one on rationales + answers, with the same steps, data, seed and optimiser,
are evaluated by exact match on the test split (the answer student answers directly, the
rationale student writes its steps first). Optionally the same pair is trained with LoRA.

Both students start from the same base: by default the preset pretrained on ring arithmetic
alone (fedsim.pretrain, --base-steps arithmetic steps, no questions; saved under runs/bases and
reused), the way a real student starts from a pretrained model that can already add; with
--base-steps 0 both start from random weights.

    python experiments/bench/rationale_check.py                       # full fine-tuning
    python experiments/bench/rationale_check.py --methods full lora   # also LoRA (default recipe)

Prints a table and writes experiments/bench/results/rationale_check.json. Runs on one thread.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fedsim.data.task import generate_examples
from fedsim.models.lora import LoraSettings, adapter_num_params, attach_lora
from fedsim.models.presets import PRESETS, load_model, num_parameters
from fedsim.pretrain import PretrainSettings, ensure_pretrained
from fedsim.train.batching import encode_for_training
from fedsim.train.evaluate import exact_match
from fedsim.train.local import make_optimizer, train_steps

RESULTS = Path(__file__).resolve().parent / "results" / "rationale_check.json"
TARGETS = ("answer", "rationale")
MAX_LEN = 160


def train_and_evaluate(args: argparse.Namespace, method: str, target: str, train, test) -> dict:
    """Train one student and return its row of results."""
    model, tokenizer = load_model(str(args.base_dir) if args.base_steps else args.preset, args.seed)
    if method == "lora":
        model = attach_lora(model, LoraSettings(r=args.lora_r, alpha=2 * args.lora_r))
        trained = adapter_num_params(model)
    else:
        trained = num_parameters(model)
    encoded = encode_for_training(tokenizer, train, target, MAX_LEN)
    optimizer = make_optimizer(model, lr=args.lr if method == "full" else args.lora_lr)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    stats = train_steps(model, encoded, optimizer, args.steps, args.batch_size, generator)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = exact_match(model, tokenizer, test, target)
    return {
        "method": method, "target": target, "trained_params": trained,
        "exact_match": accuracy, "final_loss": stats.final_loss, "mean_loss": stats.mean_loss,
        "target_tokens": stats.tokens, "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="llama-0.3m", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--lora-r", type=int, default=LoraSettings.r)
    parser.add_argument("--methods", nargs="+", default=["full"], choices=["full", "lora"])
    parser.add_argument("--base-steps", type=int, default=1500,
                        help="ring-arithmetic pretraining steps of the students' base (0: random weights)")
    parser.add_argument("--base-dir", type=Path, help="where the base is saved (default runs/bases/...)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = None
    if args.base_steps:
        args.base_dir = args.base_dir or Path("runs/bases") / f"{args.preset}-arithmetic-{args.base_steps}"
        base, _ = ensure_pretrained(args.base_dir, PretrainSettings(
            preset=args.preset, arithmetic_steps=args.base_steps, steps=0, seed=args.seed + 1), threads=1)
        print(base.summary(), flush=True)

    train = generate_examples(args.n_train, args.seed, "train")
    test = generate_examples(args.n_test, args.seed, "test")
    rows = []
    for method in args.methods:
        for target in TARGETS:
            rows.append(train_and_evaluate(args, method, target, train, test))
            row = rows[-1]
            print(f"  {method:>4} {target:>9}: exact match {row['exact_match']:.3f} "
                  f"({row['train_seconds']:.0f} s training)", flush=True)

    start = f"base {args.base_dir}" if base else "random weights"
    print(f"\npreset {args.preset} from {start}, {args.steps} steps x batch {args.batch_size}, {args.n_train} train / "
          f"{args.n_test} test examples, seed {args.seed}")
    print(f"{'method':<7}{'target':<11}{'trained params':>15}{'exact match':>13}{'final loss':>12}{'train s':>9}")
    for row in rows:
        print(f"{row['method']:<7}{row['target']:<11}{row['trained_params']:>15,}{row['exact_match']:>13.3f}"
              f"{row['final_loss']:>12.3f}{row['train_seconds']:>9.0f}")
    gaps = {}
    for method in args.methods:
        by_target = {row["target"]: row["exact_match"] for row in rows if row["method"] == method}
        gaps[method] = by_target["rationale"] - by_target["answer"]
        print(f"{method}: rationale - answer = {100 * gaps[method]:+.1f} points")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    args.out.write_text(json.dumps({
        "config": config, "base_report": asdict(base) if base else None, "rows": rows, "gap_points": {m: 100 * g for m, g in gaps.items()},
        "torch_threads": torch.get_num_threads(), "machine": platform.platform(),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

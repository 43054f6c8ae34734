"""The server LLM of the built-in task: a preset larger than the clients' SLMs, pretrained in stages.

`fedsim teacher train` pretrains the teacher preset with fedsim.pretrain (ring arithmetic, then the
public questions with gold rationales) and saves it as a local Hugging Face model in runs/teacher,
with its accuracy in `pretrain.json`; `llm.model` of a FedCoT experiment points at it. A saved
teacher is reused unless --force is given. `fedsim pretrain` exposes the same training for any
preset and output directory (the clients' pretrained bases are built with it). `--domains` limits
the question stage to some domains, for a server LLM that knows only those.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from fedsim.pretrain import PretrainSettings, available_cpus, ensure_pretrained

DEFAULT_DIR = "runs/teacher"
TEACHER = PretrainSettings(preset="llama-1m", arithmetic_steps=1500, steps=2000)


def _pretrain_command(args: argparse.Namespace) -> int:
    requested = PretrainSettings(**{field.name: getattr(args, field.name) for field in fields(PretrainSettings)})
    report, trained = ensure_pretrained(args.out, requested, args.force, args.threads, progress=not args.quiet)
    if not trained:
        print(f"reusing the model already trained in {args.out} (pass --force to train a new one)")
    print(f"{args.out}: {report.summary()}")
    differing = [field.name for field in fields(PretrainSettings)
                 if getattr(report.settings, field.name) != getattr(requested, field.name)]
    if differing:
        listed = ", ".join(f"{name} {getattr(report.settings, name)} (asked {getattr(requested, name)})"
                           for name in differing)
        print(f"note: the saved model differs from the request: {listed}")
    return 0


def _domain_list(text: str) -> tuple[str, ...]:
    """`--domains shopping,travel` as a tuple (PretrainSettings.check names unknown ones)."""
    return tuple(name.strip() for name in text.split(","))


def _add_settings_arguments(parser: argparse.ArgumentParser, defaults: PretrainSettings, out: str | None) -> None:
    if out is None:
        parser.add_argument("--out", required=True, help="model directory to write")
    else:
        parser.add_argument("--out", default=out, help=f"model directory (default {out})")
    helps = {"preset": "model preset", "arithmetic_steps": "steps of the ring-arithmetic stage",
             "steps": "steps on public questions with rationales", "seed": "seed of weights, data and batches",
             "public_size": "public questions to train on", "batch_size": "questions per step",
             "lr": "peak learning rate", "test_size": "test questions the report scores",
             "domains": "comma-separated domains of the question stage"}
    for field in fields(PretrainSettings):
        default = getattr(defaults, field.name)
        kind = _domain_list if field.name == "domains" else type(default)
        shown = "all" if default is None else default
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                            help=f"{helps[field.name]} (default {shown})")
    parser.add_argument("--force", action="store_true", help="train again even if --out holds a model")
    parser.add_argument("--threads", type=int, default=available_cpus(),
                        help=f"torch threads to train with (default {available_cpus()}: every core this process may use)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_pretrain_command)


def add_teacher_command(commands: argparse._SubParsersAction) -> None:
    """Register `fedsim teacher train` and `fedsim pretrain` on the CLI's subcommands."""
    teacher = commands.add_parser("teacher", help="train and save the server LLM for the built-in task")
    teacher.set_defaults(handler=lambda args: teacher.error("choose a teacher subcommand: train"))
    actions = teacher.add_subparsers(dest="teacher_command")
    train = actions.add_parser("train", help="pretrain the teacher preset on the public split with rationales",
                               description=__doc__.split("\n\n")[1])
    _add_settings_arguments(train, TEACHER, DEFAULT_DIR)
    pretrain = commands.add_parser("pretrain", help="pretrain any preset in stages (arithmetic, then questions)")
    _add_settings_arguments(pretrain, PretrainSettings(preset="llama-0.3m", arithmetic_steps=1500, steps=0), None)

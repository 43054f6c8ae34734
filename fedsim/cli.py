"""The `fedsim` command: run an experiment, resume it, report on it.

A FedsimError (bad input) is printed as one line `fedsim: error: ...` with exit status 2; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedsim.config import ConfigError, load_config
from fedsim.errors import FedsimError


def _run(args: argparse.Namespace) -> int:
    from actors.runner import print_summary, resume_experiment, run_experiment

    if args.resume:
        if args.config or args.set:
            raise ConfigError("--resume takes only the run folder; its config.yaml is reused as written")
        run_dir, summaries = resume_experiment(Path(args.resume), progress=not args.quiet)
    else:
        if not args.config:
            raise ConfigError("give an experiment YAML file, or --resume runs/<run>")
        config = load_config(args.config, args.set)
        run_dir, summaries = run_experiment(config, progress=not args.quiet)
    print_summary(run_dir, summaries)
    from fedsim.results import write_plots

    for path in write_plots(run_dir):
        print(f"plot: {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from fedsim.results import format_table, load_summaries, write_plots

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    print(format_table(load_summaries(run_dir)))
    for path in write_plots(run_dir):
        print(f"plot: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment (or --resume a run folder)")
    run.add_argument("config", nargs="?", help="experiment YAML file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set clients.num=200 (repeatable)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run after its last completed round")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)
    report = commands.add_parser("report", help="print a run's table and write its PNG plots")
    report.add_argument("run_dir")
    report.set_defaults(handler=_report)
    from fedsim.models.checkpoints import add_models_command
    from fedsim.teacher import add_teacher_command

    add_teacher_command(commands)
    add_models_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FedsimError as error:
        print(f"fedsim: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

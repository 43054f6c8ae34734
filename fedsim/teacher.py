"""`fedsim teacher train`: a larger preset trained on the public split, saved as a local HF model."""
from __future__ import annotations

import argparse


def add_teacher_command(commands: argparse._SubParsersAction) -> None:
    """Register `fedsim teacher ...` on the CLI's subcommands."""
    teacher = commands.add_parser("teacher", help="train and save the server LLM for the built-in task")
    teacher.set_defaults(handler=lambda args: teacher.error("choose a teacher subcommand"))

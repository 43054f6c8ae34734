"""Checkpoints of the round engine and the run folder's outputs (rows, privacy ledger).

A checkpoint is written atomically after each completed round; resuming reads it and discards
whatever an interrupted attempt left past it.
"""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

from fedsim.privacy.ledger import PrivacyLedger
from fedsim.results import ROWS_JSONL, atomic_write, remove_temporaries, write_jsonl, write_rows

CHECKPOINT_FILE = "checkpoint.pkl"
PRIVACY_JSONL = "privacy.jsonl"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write the engine's state (atomically: the old checkpoint stays until the new one is whole)."""
    atomic_write(run_dir / CHECKPOINT_FILE, lambda handle: pickle.dump(state, handle))


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint's state, or None; first removes what an interrupted attempt left.

    `.tmp` files of unfinished writes go; without a checkpoint nothing was committed, so rows.jsonl
    and privacy.jsonl go too (with one, the caller rewrites them from the checkpoint).
    """
    remove_temporaries(run_dir)
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        for name in (ROWS_JSONL, PRIVACY_JSONL):
            (run_dir / name).unlink(missing_ok=True)
        return None
    with open(path, "rb") as handle:
        return pickle.load(handle)


def write_outputs(run_dir: Path, rows: list[dict[str, Any]], ledger: PrivacyLedger | None) -> None:
    """Rewrite rows.jsonl and, when privacy is accounted (`ledger` given), privacy.jsonl."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_rows(run_dir, rows)
    if ledger is not None:
        write_jsonl(run_dir / PRIVACY_JSONL, [dataclasses.asdict(r) for r in ledger.rows()])

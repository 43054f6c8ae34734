"""End to end on Ray: the worker pool, the Coordinator actor, the runner, resume and the CLI."""
import json

import pytest
import yaml

from actors.runner import pool_size, resume_experiment, run_experiment
from fedsim.cli import main
from fedsim.config import validate
from fedsim.errors import ResourceError


def vector_config(tmp_path, **extra):
    raw = {"name": "vec", "algorithms": ["fedavg_vector"], "rounds": 3, "seed": 1,
           "clients": {"num": 40, "per_round": 6}, "synthetic": {"vector_size": 500},
           "task": {"test_size": 4, "public_size": 0}, "output_dir": str(tmp_path),
           "engine": {"num_workers": 2, "num_cpus_per_worker": 0.5}}
    raw.update(extra)
    return validate(raw)


def strip(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


@pytest.fixture(scope="module")
def full_run(ray_session, tmp_path_factory):
    """One uninterrupted 3-round run of vector_config: checked as it is, and the reference of a resumed run."""
    return run_experiment(vector_config(tmp_path_factory.mktemp("full")), progress=False)


def test_run_writes_rows_summary_and_config(full_run):
    run_dir, summaries = full_run
    rows = [json.loads(line) for line in (run_dir / "fedavg_vector" / "rows.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [1, 2, 3]
    assert summaries[0]["bytes_up"] == sum(row["bytes_up"] for row in rows) > 0
    assert (run_dir / "fedavg_vector" / "rows.parquet").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["clients"]["num"] == 40


def test_resume_continues_after_the_last_completed_round(ray_session, full_run, tmp_path):
    full_dir, _ = full_run
    partial_config = vector_config(tmp_path / "partial", rounds=1)
    partial_dir, _ = run_experiment(partial_config, progress=False)
    # Pretend the run was interrupted after round 1 of 3: drop its summary, restore the planned rounds.
    (partial_dir / "fedavg_vector" / "summary.json").unlink()
    (partial_dir / "config.yaml").write_text((full_dir / "config.yaml").read_text())
    resumed_dir, _ = resume_experiment(partial_dir, progress=False)
    full = [json.loads(l) for l in (full_dir / "fedavg_vector" / "rows.jsonl").read_text().splitlines()]
    resumed = [json.loads(l) for l in (resumed_dir / "fedavg_vector" / "rows.jsonl").read_text().splitlines()]
    assert strip(resumed) == strip(full)


def test_pool_must_fit_the_cluster(ray_session, tmp_path):
    config = vector_config(tmp_path, engine={"num_workers": 3, "num_cpus_per_worker": 1})
    with pytest.raises(ResourceError, match="do not fit"):
        pool_size(config)
    assert pool_size(vector_config(tmp_path, engine={"num_cpus_per_worker": 0.5})) == 4


def test_cli_reports_bad_config_without_starting(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("clients:\n  num: 5\n  per_round: 9\n")
    assert main(["run", str(path)]) == 2
    assert "clients.per_round (9) must be <= clients.num (5)" in capsys.readouterr().err


def test_secure_aggregation_across_worker_actors(ray_session, tmp_path):
    secure_config = vector_config(tmp_path / "secure", rounds=2,
                                  secagg={"mode": "protocol", "clip_range": 0.2, "dropout_rate": 0.2})
    secure_dir, _ = run_experiment(secure_config, progress=False)
    rows = [json.loads(l) for l in (secure_dir / "fedavg_vector" / "rows.jsonl").read_text().splitlines()]
    assert all(row["secagg"] == "protocol" and not row["secagg_aborted"] for row in rows)
    assert sum(row["clients_dropped"] for row in rows) > 0
    assert rows[0]["bytes/up/secagg_masked_input"] == rows[0]["clients_selected"] * (500 + 2) * 8 - \
        rows[0]["clients_dropped"] * (500 + 2) * 8


def lora_config(tmp_path, workers, **extra):
    raw = {"name": "det", "algorithms": ["fedavg_lora"], "rounds": 2, "seed": 11,
           "clients": {"num": 6, "per_round": 4, "presets": {"llama-0.3m": 1, "gpt2-0.3m": 1}},
           "task": {"test_size": 16, "public_size": 0, "train_per_client": 12},
           "train": {"local_steps": 2, "batch_size": 4, "max_len": 64}, "eval": {"every": 2, "mode": "answer"},
           "output_dir": str(tmp_path), "engine": {"num_workers": workers, "num_cpus_per_worker": 1}}
    raw.update(extra)
    return validate(raw)


def test_same_metrics_with_one_and_two_workers(ray_session, tmp_path):
    """Determinism: heterogeneous LoRA clients on real models, 1 worker vs 2 workers."""
    results = []
    for workers in (1, 2):
        run_dir, summaries = run_experiment(lora_config(tmp_path / str(workers), workers), progress=False)
        rows = [json.loads(l) for l in (run_dir / "fedavg_lora" / "rows.jsonl").read_text().splitlines()]
        results.append((strip(rows), summaries[0]["workers"]))
    (one, one_workers), (two, two_workers) = results
    assert (one_workers, two_workers) == (1, 2)
    assert one == two
    assert one[-1]["accuracy"] is not None and {"test_accuracy/llama-0.3m/answer", "test_accuracy/gpt2-0.3m/answer"} <= set(one[-1])


def test_dedicated_workers_one_per_client(ray_session, tmp_path):
    # 2 clients: a pool sized by resources would have 4 workers (2 CPUs / 0.5), a dedicated one has 2
    config = lora_config(tmp_path, "auto", algorithms=["local"], rounds=1,
                         clients={"num": 2, "per_round": 2, "presets": {"llama-0.3m": 1}},
                         engine={"dedicated": True, "num_cpus_per_worker": 0.5}, eval={"every": 0})
    assert pool_size(lora_config(tmp_path, "auto", engine={"num_cpus_per_worker": 0.5})) == 4
    run_dir, summaries = run_experiment(config, progress=False)
    assert summaries[0]["workers"] == 2
    assert (run_dir / "local" / "client_state").is_dir()
    assert len(list((run_dir / "local" / "client_state").iterdir())) == 2


def test_pool_too_large_for_a_running_cluster_leaves_no_run_folder(ray_session, tmp_path):
    """With Ray already up (as on a ray_address cluster) the pool is checked right after connecting."""
    config = vector_config(tmp_path / "runs", engine={"num_workers": 5, "num_cpus_per_worker": 1})
    with pytest.raises(ResourceError, match="5 workers"):
        run_experiment(config, progress=False)
    assert not (tmp_path / "runs").exists()

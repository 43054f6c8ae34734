"""The `fedsim` command end to end (Ray for `run`)."""
import pytest
import yaml

from fedsim.cli import main


def test_run_prints_the_table_and_writes_plots(ray_session, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "cli", "algorithms": ["fedavg_vector"], "rounds": 2,
                                    "clients": {"num": 30, "per_round": 5}, "synthetic": {"vector_size": 100},
                                    "task": {"test_size": 4, "public_size": 0},
                                    "engine": {"num_workers": 1, "num_cpus_per_worker": 0.5}}))
    assert main(["run", str(path), "--quiet", "--set", f"output_dir={tmp_path / 'runs'}",
                 "--set", "clients.per_round=4"]) == 0
    out = capsys.readouterr().out
    assert "fedavg_vector" in out and "bytes up" in out and "accuracy_vs_round.png" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["clients"]["per_round"] == 4
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0  # already complete: reports again


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a fedsim run folder" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), str(tmp_path / "x.yaml")]) == 2


# ----- every bad input is one line, exit 2, before Ray starts and before any run folder exists --------

def small_config(tmp_path, **extra):
    raw = {"name": "bad", "algorithms": ["fedavg_lora"], "rounds": 2,
           "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1}},
           "task": {"test_size": 4, "public_size": 0, "train_per_client": 8},
           "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 0},
           "engine": {"num_workers": 1, "num_cpus_per_worker": 0.5}, "output_dir": str(tmp_path / "runs")}
    raw.update(extra)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def refused(capsys, tmp_path, argv):
    """Run the CLI; return its one error line after checking exit 2 and that no run folder was made."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ")
    assert not (tmp_path / "runs").exists()
    return err


def test_malformed_data_file_names_file_line_and_field(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1 + 1 =", "answer": "2"}\n{"question": "2 + 2 ="}\n')
    err = refused(capsys, tmp_path, ["run", str(small_config(tmp_path)), "--set", "task.source=file",
                                     "--set", f"task.path={data}"])
    assert f"{data}, line 2: field 'answer' is missing" in err


def test_data_file_with_too_few_records(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1 + 1 =", "answer": "2"}\n')
    err = refused(capsys, tmp_path, ["run", str(small_config(tmp_path)), "--set", "task.source=file",
                                     "--set", f"task.path={data}"])
    assert "has 1 records: too few" in err










# (test id, --set overrides of small_config, what the error line must say); "{tmp}" is the test's tmp_path
REFUSED_OVERRIDES = [
    ("several_config_errors_in_one_line", ["rounds=0", "clients.per_round=9"],
     ["rounds: Input should be greater than or equal to 1", "clients"]),
    ("fedcot_without_llm_model", ["algorithms=[fedcot]"], ["fedcot needs llm.model"]),
    ("llm_model_that_is_not_a_model_directory", ["algorithms=[fedcot]", "llm.model={tmp}"], ["{tmp}: not a preset"]),
    ("unknown_preset_path", ["clients.presets={/no/such/model: 1}"], ["/no/such/model: not a preset"]),
    ("dp_sgd_with_centralized", ["algorithms=[centralized]", "privacy.dp_sgd={noise_multiplier: 1.0}"],
     ["privacy.dp_sgd does not apply to centralized"]),
    ("keep_optimizer_state_without_client_state", ["algorithms=[local, fedavg_lora]", "train.keep_optimizer_state=true"],
     ["train.keep_optimizer_state", "fedavg_lora keeps none"]),
    ("privacy_release_over_the_budget", ["privacy.budget_eps=0.5", "privacy.dp_sgd={noise_multiplier: 0.5}"],
     ["privacy.budget_eps=0.5", "alone exceeds it"]),
    ("secure_aggregation_the_engine_rejects", ["secagg.mode=protocol", "secagg.threshold=3"],
     ["secagg.threshold=3 exceeds the largest cohort (2 clients)"]),
    ("pool_too_large_for_the_cluster", ["engine.num_workers=500"], ["500 workers", "do not fit the cluster"]),
]


@pytest.mark.parametrize("overrides, expected", [case[1:] for case in REFUSED_OVERRIDES],
                         ids=[case[0] for case in REFUSED_OVERRIDES])
def test_a_bad_setting_is_refused_in_one_line(tmp_path, capsys, overrides, expected):
    argv = ["run", str(small_config(tmp_path))]
    for override in overrides:
        argv += ["--set", override.replace("{tmp}", str(tmp_path))]
    err = refused(capsys, tmp_path, argv)
    for text in expected:
        assert text.replace("{tmp}", str(tmp_path)) in err



def test_resume_of_a_folder_whose_config_is_broken(tmp_path, capsys):
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("rounds: -1\n")
    err = refused(capsys, tmp_path, ["run", "--resume", str(run_dir)])
    assert f"cannot resume {run_dir}: invalid config: rounds" in err


def test_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch):
    import actors.runner

    def broken(config, run_dir=None, progress=True):
        raise ValueError("a bug deep in training")

    monkeypatch.setattr(actors.runner, "run_experiment", broken)
    with pytest.raises(ValueError, match="a bug deep in training"):
        main(["run", str(small_config(tmp_path))])

"""The `fedsim` command end to end (Ray for `run`)."""
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

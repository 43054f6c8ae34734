"""The progress board across actors and the bars the driver draws while it waits."""
import ray

from actors.progress import BoardProgress, ProgressBoard, StageBars, wait_showing


@ray.remote(num_cpus=0)
def _work(board, steps):
    progress = BoardProgress(board)
    progress.expect("clients", steps)
    for _ in range(steps):
        progress.advance("clients")
    ray.get(board.snapshot.remote())  # the board has the reports of this caller before it returns
    return steps


def test_reports_reach_the_board_and_the_board_starts_over_after_each_wait(ray_session, capsys):
    board = ProgressBoard.remote()
    future = _work.remote(board, 5)
    assert ray.get(future) == 5
    assert ray.get(board.snapshot.remote()) == {"clients": (5, 5)}
    bars = StageBars(enabled=True)
    bars.show(ray.get(board.snapshot.remote()))
    assert "clients" in capsys.readouterr().err
    assert wait_showing(_work.remote(board, 2), board, bars, interval_s=0.01) == 2
    assert ray.get(board.snapshot.remote()) == {} and bars.bars == {}
    ray.kill(board)

"""Helpers of the tests of algorithms whose server learns: running an engine to its end and comparing runs."""
import numpy as np

from fedsim.algorithms.server_models import LLM

WALL_CLOCK_FIELDS = ("wall_s", "server_step_s", "sim_round_s", "sim_time_s", "llm_adapter_version")


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without the fields that depend on wall time (or on the endpoint's publishing history)."""
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]


def run_to_end(engine) -> None:
    """Run every remaining round of `engine`."""
    while not engine.done:
        engine.run_round()


def assert_same_llm_adapter(trainer, expected_trainer) -> None:
    """The two trainers hold the same LLM adapter, bit for bit."""
    for name, value in expected_trainer.get_adapter(LLM).items():
        np.testing.assert_array_equal(trainer.get_adapter(LLM)[name], value)

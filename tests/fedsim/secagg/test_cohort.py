"""Which secrets the server must rebuild, and when that is impossible."""
import pytest

from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.cost import Dropouts
from fedsim.secagg.errors import SecAggAbort, SecAggProtocolError


def test_secrets_needed_and_holders():
    cohort = SecAggCohort(["a", "b", "c", "d"], SecAggConfig(threshold=0.5), 0)
    everyone = frozenset(range(4))
    masked = frozenset({0, 1})
    assert cohort.secrets_needed(frozenset({0, 1, 2}), masked) == {0: "self-mask seed", 1: "self-mask seed",
                                                                   2: "mask key"}
    assert cohort.holders(2, frozenset({0, 1, 2})) == {0, 1, 2}
    assert cohort.threshold(2, everyone) == 2
    cohort.check_recoverable(everyone, frozenset({0, 1, 2}), masked, masked, "test")
    with pytest.raises(SecAggAbort, match="seed of client 'a' needs 2 shares but only 1"):
        cohort.check_recoverable(everyone, frozenset({0, 1, 2}), masked, frozenset({0}), "test")
    with pytest.raises(SecAggAbort, match="no masked input"):
        cohort.check_recoverable(everyone, everyone, frozenset(), frozenset(), "test")


def test_dropouts_map_to_stage_sets():
    cohort = SecAggCohort(["a", "b", "c", "d"], SecAggConfig(), 0)
    sets = Dropouts(frozenset({"a"}), frozenset({"b"}), frozenset({"c"})).stage_sets(cohort)
    assert sets == ({0, 1, 2, 3}, {1, 2, 3}, {2, 3}, {3})
    with pytest.raises(SecAggProtocolError, match="one stage only"):
        Dropouts(frozenset({"a"}), frozenset({"a"})).stage_sets(cohort)

"""Device profiles, cohort sampling and the virtual clock."""
import pytest

from fedsim.clock import ClientProfiles, plan_cohort, sample_online, sample_poisson
from fedsim.config import validate


def profiles(num=1000, availability=1.0):
    config = validate({"clients": {"num": num, "per_round": 10, "availability": availability,
                                   "presets": {"llama-1m": 1, "gpt2-1m": 1}}})
    return ClientProfiles.draw(config.clients, seed=7)


def test_profiles_are_seeded_and_heterogeneous():
    a, b = profiles(), profiles()
    assert (a.seconds_per_sample == b.seconds_per_sample).all()
    assert a.seconds_per_sample.std() > 0 and len(set(a.presets)) == 2
    assert {a.preset_of(c) for c in range(100)} == {"llama-1m", "gpt2-1m"}


def test_sampling_is_distinct_online_and_deterministic():
    p = profiles(availability=0.5)
    drawn = sample_online(p, 7, 3, 20)
    assert len(set(drawn)) == 20 and drawn == sample_online(p, 7, 3, 20)
    assert all(p.is_online(7, c, 3) for c in drawn)
    assert drawn != sample_online(p, 7, 4, 20)
    online = sum(p.is_online(7, c, 0) for c in range(1000))
    assert 400 < online < 600


def test_poisson_cohort_has_variable_size_with_the_right_rate():
    p = profiles()
    sizes = [len(sample_poisson(p, 7, r, 0.05)) for r in range(200)]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.05)
    assert len(set(sizes)) > 10
    cohort = sample_poisson(p, 7, 0, 0.05)
    assert len(set(cohort)) == len(cohort) and max(cohort) < 1000 and cohort == sample_poisson(p, 7, 0, 0.05)


def test_cohort_keeps_fastest_and_applies_deadline():
    p = profiles()
    planned = {1: 5.0, 2: 1.0, 3: 3.0, 4: 50.0}
    cohort = plan_cohort(p, [1, 2, 3, 4], keep=2, planned_s=planned, deadline_s=10.0)
    assert cohort.selected == [2, 3] and cohort.stragglers == [1] and cohort.missed_deadline == [4]


def test_completion_time_is_compute_plus_transfer():
    p = profiles()
    compute, transfer = p.completion_time(0, samples=10, bytes_down=1000, bytes_up=1000)
    assert compute == pytest.approx(10 * float(p.seconds_per_sample[0]))
    assert transfer == pytest.approx(16000 / float(p.bandwidth_bps[0]))

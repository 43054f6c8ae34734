"""Tests of serve/stats.py."""
import pytest

from serve.stats import MethodStats


def test_summary_counts_batches_and_latency_percentiles():
    stats = MethodStats()
    assert stats.summary()["mean_batch_requests"] is None
    stats.record_batch(n_requests=3, n_items=12)
    stats.record_batch(n_requests=1, n_items=4)
    for latency in [0.01 * i for i in range(1, 101)]:
        stats.record_request(latency, ok=True)
    stats.record_request(2.0, ok=False)
    summary = stats.summary()
    assert summary["batches"] == 2 and summary["items"] == 16
    assert summary["mean_batch_requests"] == 2.0 and summary["mean_batch_items"] == 8.0
    assert summary["max_batch_requests"] == 3
    assert summary["requests"] == 101 and summary["failed_requests"] == 1
    assert summary["latency_p50_s"] == pytest.approx(0.51)
    assert 0.95 <= summary["latency_p95_s"] <= 0.97
    stats.reset()
    assert stats.summary()["requests"] == 0

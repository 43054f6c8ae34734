"""Batch-size and latency records of one batched deployment method (no Ray)."""
from __future__ import annotations

from collections import deque

import numpy as np


class MethodStats:
    """Counts batches, requests and items, and keeps the latest request latencies.

    Batch sizes are counted in requests (caller calls merged) and in items (prompts or
    token sequences over those requests). Percentiles use the last ``window`` latencies.
    """

    def __init__(self, window: int = 100_000):
        self._window = window
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.batches = 0
        self.batched_requests = 0
        self.batched_items = 0
        self.max_batch_requests = 0
        self.requests = 0
        self.failed_requests = 0
        self._latencies: deque[float] = deque(maxlen=self._window)

    def record_batch(self, n_requests: int, n_items: int) -> None:
        """One backend batch that merged ``n_requests`` requests holding ``n_items`` items."""
        self.batches += 1
        self.batched_requests += n_requests
        self.batched_items += n_items
        self.max_batch_requests = max(self.max_batch_requests, n_requests)

    def record_request(self, latency_s: float, ok: bool) -> None:
        """One finished caller request and its wall-clock latency in seconds."""
        self.requests += 1
        self.failed_requests += 0 if ok else 1
        self._latencies.append(latency_s)

    def summary(self) -> dict[str, float | int | None]:
        """Counts, mean batch sizes and p50/p95 latency (None before any request)."""
        latencies = np.asarray(self._latencies, dtype=np.float64)
        has_batches = self.batches > 0
        return {
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "batches": self.batches,
            "items": self.batched_items,
            "mean_batch_requests": self.batched_requests / self.batches if has_batches else None,
            "mean_batch_items": self.batched_items / self.batches if has_batches else None,
            "max_batch_requests": self.max_batch_requests,
            "latency_p50_s": float(np.percentile(latencies, 50)) if latencies.size else None,
            "latency_p95_s": float(np.percentile(latencies, 95)) if latencies.size else None,
        }

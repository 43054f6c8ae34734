"""The current LoRA adapter of an LLM deployment, kept where every replica, restarted ones too, reads it.

A small named, detached Ray actor per application holds the latest published (version, arrays). It
lives on the head node, as the Serve controller does, so losing a worker node loses no version.
`publish_adapter` (serve.app) checks the arrays and writes them here before telling the running
replicas; a replica reads the store when it starts and before each batch, and loads the arrays
only when the store holds a newer version than its own. Versions are ints that only increase:
0 is the adapter the backend loads, every publish names a larger one.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import ray

from serve.errors import AdapterError

STORE_NAMESPACE = "fedsim-serve"


def store_name(app_name: str) -> str:
    """The store actor's name for application `app_name`."""
    return f"{app_name}-adapter-store"


@ray.remote(num_cpus=0, max_restarts=0)
class AdapterStore:
    """The latest published adapter version and its arrays (calls run one at a time)."""

    def __init__(self) -> None:
        self._version = 0
        self._arrays: dict[str, np.ndarray] | None = None

    def publish(self, version: int | None, arrays: Mapping[str, np.ndarray]) -> int:
        """Keep `arrays` as adapter `version` (None: the next one); returns the version."""
        version = self._version + 1 if version is None else version
        if isinstance(version, bool) or not isinstance(version, int) or version <= self._version:
            raise AdapterError(f"adapter version {version!r} is not newer than the current version {self._version}; "
                               f"publish a version > {self._version}")
        self._version, self._arrays = version, dict(arrays)
        return version

    def version(self) -> int:
        """The current version (0 until the first publish)."""
        return self._version

    def newer_than(self, version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """(current version, its arrays) when the current version is newer than `version`, else None."""
        return (self._version, self._arrays) if self._version > version else None


def start_store(app_name: str) -> Any:
    """Create the application's store (a fresh one: version 0) on the head node."""
    stop_store(app_name)
    return AdapterStore.options(name=store_name(app_name), namespace=STORE_NAMESPACE, lifetime="detached",
                                resources={"node:__internal_head__": 0.001}).remote()


def find_store(app_name: str) -> Any:
    """The application's store actor (raises AdapterError when the application has none)."""
    try:
        return ray.get_actor(store_name(app_name), namespace=STORE_NAMESPACE)
    except ValueError:
        raise AdapterError(f"LLM deployment {app_name!r} has no adapter store (was it started by "
                           f"start_llm_deployment?)") from None


def stop_store(app_name: str, timeout_s: float = 30.0) -> None:
    """Remove the application's store, if it has one, and wait until its name is free again."""
    try:
        ray.kill(ray.get_actor(store_name(app_name), namespace=STORE_NAMESPACE))
    except ValueError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(store_name(app_name), namespace=STORE_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the adapter store of {app_name!r} was killed but is still registered after {timeout_s} s")

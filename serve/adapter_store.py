"""The current LoRA adapter of an LLM deployment, kept where replicas that Serve restarts can read it.

A small named Ray actor per application holds the latest published (version, arrays); the arrays
sit in the object store, so any node of the cluster reaches them. `publish_adapter` (serve.app)
writes it before telling the running replicas; a replica reads it when it starts. Versions are ints
that only increase: 0 is the adapter the backend loads, every publish names a larger one.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import ray

from serve.errors import AdapterError

STORE_NAMESPACE = "fedsim-serve"


def store_name(app_name: str) -> str:
    """The store actor's name for application `app_name`."""
    return f"{app_name}-adapter-store"


@ray.remote(num_cpus=0)
class AdapterStore:
    """The latest published adapter version and its arrays."""

    def __init__(self) -> None:
        self.version = 0
        self.arrays: dict[str, np.ndarray] | None = None

    def publish(self, version: int, arrays: Mapping[str, np.ndarray]) -> int:
        if isinstance(version, bool) or not isinstance(version, int) or version <= self.version:
            raise AdapterError(f"adapter version {version!r} is not newer than the current version {self.version}; "
                               f"publish a version > {self.version}")
        self.version, self.arrays = version, dict(arrays)
        return version

    def current(self) -> tuple[int, dict[str, np.ndarray] | None]:
        return self.version, self.arrays


def start_store(app_name: str) -> Any:
    """Create the application's store (a fresh one: version 0)."""
    stop_store(app_name)
    return AdapterStore.options(name=store_name(app_name), namespace=STORE_NAMESPACE, lifetime="detached").remote()


def find_store(app_name: str) -> Any:
    """The application's store actor (raises AdapterError when the application has none)."""
    try:
        return ray.get_actor(store_name(app_name), namespace=STORE_NAMESPACE)
    except ValueError:
        raise AdapterError(f"LLM deployment {app_name!r} has no adapter store (was it started by "
                           f"start_llm_deployment?)") from None


def stop_store(app_name: str) -> None:
    """Remove the application's store, if it has one."""
    try:
        ray.kill(ray.get_actor(store_name(app_name), namespace=STORE_NAMESPACE))
    except ValueError:
        pass

"""Start and stop the server-LLM deployment, and talk to all of its replicas.

    handle = start_llm_deployment(settings)            # handles only, no HTTP proxy
    texts = handle.generate.remote(prompts, params).result()
    publish_adapter(handle, arrays, version)            # every replica, and any that restarts, serves it
    stop_llm_deployment()

The returned DeploymentHandle can be passed to Ray actors: from a sync method call
``handle.generate.remote(...).result()``, from an async one ``await handle.generate.remote(...)``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import ray
from ray import serve as ray_serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from serve.adapter_store import find_store, start_store, stop_store
from serve.backends import check_backend_options
from serve.backends.base import check_adapter_arrays
from serve.deployment import build_llm_app
from serve.errors import DeploymentStartError, ServeConfigError
from serve.settings import ServeSettings

DEFAULT_APP_NAME = "fedsim-llm"


def start_llm_deployment(settings: ServeSettings, name: str = DEFAULT_APP_NAME, http: bool = False,
                         host: str = "127.0.0.1", port: int = 8000) -> DeploymentHandle:
    """Deploy the LLM as Serve application ``name`` and return its handle.

    With http=False Serve runs without an HTTP proxy (handles only). With http=True the
    OpenAI-compatible route is served at http://{host}:{port}/v1/completions; the proxy
    settings are fixed when Serve first starts, so Serve must not already run without one.
    Blocks until the replicas are up; if a replica fails to start, the application is
    deleted and DeploymentStartError carries the replica's error line.
    """
    check_backend_options(settings.backend, settings.backend_options)
    if http:
        ray_serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        if not ray_serve.status().proxies:
            raise ServeConfigError("Serve is already running without an HTTP proxy; call "
                                   "stop_llm_deployment() first to serve the HTTP route")
    else:
        ray_serve.start(proxy_location="Disabled")
    start_store(name)
    try:
        return ray_serve.run(build_llm_app(settings), name=name, route_prefix="/" if http else None)
    except RuntimeError as exc:
        reason = _failure_reason(name) or str(exc)
        stop_llm_deployment(name)
        raise DeploymentStartError(f"LLM deployment {name!r} failed to start: {reason}") from exc


def _failure_reason(name: str) -> str | None:
    """The last line of the first failed deployment's message (the replica's exception)."""
    application = ray_serve.status().applications.get(name)
    if application is None:
        return None
    for deployment in application.deployments.values():
        lines = [line for line in (deployment.message or "").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return None


def stop_llm_deployment(name: str = DEFAULT_APP_NAME) -> None:
    """Delete application ``name`` and its adapter store; shut Serve down when no application is left."""
    ray_serve.delete(name)
    stop_store(name)
    if not ray_serve.status().applications:
        ray_serve.shutdown()


def publish_adapter(handle: DeploymentHandle, arrays: Mapping[str, np.ndarray], version: int,
                    timeout_s: float | None = 120.0) -> int:
    """Serve `arrays` as adapter `version` (> the current one) on every replica; returns the version.

    The arrays are checked against the served LoRA (AdapterError), kept in the application's
    adapter store (AdapterError for a version not above the current one), then loaded by every
    running replica before this returns. A replica reads the store before each batch and before it
    serves at all, so no request that starts after this returns is answered by an older adapter:
    neither on a replica that missed the broadcast while it started, nor on one that Serve restarts.
    A replica that died meanwhile is skipped: its replacement loads the version from the store.
    """
    checked = check_adapter_arrays(arrays, handle.adapter_shapes.remote().result(timeout_s=timeout_s))
    published = ray.get(find_store(handle.app_name).publish.remote(version, checked), timeout=timeout_s)
    outcomes = handle.broadcast("sync_adapter").results(timeout_s=timeout_s, return_exceptions=True)
    failures = [outcome for outcome in outcomes
                if isinstance(outcome, Exception) and not isinstance(outcome, RayActorError)]
    if failures:
        raise failures[0]
    return published


def current_adapter_version(handle: DeploymentHandle) -> int:
    """The version of the adapter the deployment serves (0: the one the backend loaded)."""
    return ray.get(find_store(handle.app_name).version.remote())


def replica_stats(handle: DeploymentHandle, timeout_s: float | None = 30.0) -> list[dict[str, Any]]:
    """The stats() of every replica (batch sizes, latencies, adapter version)."""
    return handle.broadcast("stats").results(timeout_s=timeout_s)

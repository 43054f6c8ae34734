"""ServerTrainer: the Ray actor that trains the server's models (fedsim.server.ServerTrainer inside).

It runs with its own resources (`server.num_cpus`, `server.num_gpus`, fractions allowed) and
publishes the LLM's adapter to every replica of the LLM deployment. `RemoteTrainer` is what the
round engine and the algorithms hold: the runtime's interface, one blocking call per method.
"""
from __future__ import annotations

import os
from typing import Any

import ray

from fedsim.config import ExperimentConfig
from fedsim.server.settings import ServerTrainerSettings


def trainer_settings(config: ExperimentConfig) -> ServerTrainerSettings:
    """The runtime's settings from the experiment's `server` section."""
    server = config.server
    return ServerTrainerSettings(engine=server.engine, lr=server.lr, epochs=server.epochs,
                                 batch_size=server.batch_size, max_grad_norm=server.max_grad_norm).check()


class DeploymentPublisher:
    """Publishes adapters to the LLM deployment, each under the next version the deployment has not seen."""

    def __init__(self, handle: Any) -> None:
        from serve.app import current_adapter_version

        self.handle = handle
        self.version = current_adapter_version(handle)

    def __call__(self, arrays: dict[str, Any]) -> int:
        from serve.app import publish_adapter

        self.version = publish_adapter(self.handle, arrays, self.version + 1)
        return self.version


@ray.remote
class ServerTrainerActor:
    """Holds the runtime; every call is a method of fedsim.server.ServerTrainer."""

    def __init__(self, config: ExperimentConfig, llm_handle: Any = None) -> None:
        import torch

        from fedsim.server.trainer import ServerTrainer

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(max(1, int(config.server.num_cpus)))
        publisher = DeploymentPublisher(llm_handle) if llm_handle is not None else None
        self.runtime = ServerTrainer(trainer_settings(config), config.seed, publisher)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.runtime, method)(*args, **kwargs)


def start_server_trainer(config: ExperimentConfig, llm_handle: Any = None) -> "RemoteTrainer":
    """Start the actor on the resources of the `server` section."""
    actor = ServerTrainerActor.options(num_cpus=config.server.num_cpus, num_gpus=config.server.num_gpus)
    return RemoteTrainer(actor.remote(config, llm_handle))


class RemoteTrainer:
    """The actor behind the runtime's interface (see fedsim.server.ServerTrainer for each method)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return ray.get(self.actor.call.remote(method, *args, **kwargs))

    def add_model(self, *args: Any) -> None:
        self._call("add_model", *args)

    def encode(self, *args: Any) -> Any:
        return self._call("encode", *args)

    def topk(self, *args: Any) -> Any:
        return self._call("topk", *args)

    def topk_and_nll(self, *args: Any) -> Any:
        return self._call("topk_and_nll", *args)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("train", *args, **kwargs)

    def get_adapter(self, name: str) -> Any:
        return self._call("get_adapter", name)

    def set_adapter(self, name: str, arrays: Any) -> None:
        self._call("set_adapter", name, arrays)

    def publish(self, name: str) -> int:
        return self._call("publish", name)

    def evaluate(self, *args: Any) -> Any:
        return self._call("evaluate", *args)

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._call("load_state_dict", state)

    def kill(self) -> None:
        ray.kill(self.actor)

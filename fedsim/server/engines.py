"""Training engines of the server trainer: plain torch AdamW, or DeepSpeed ZeRO stage 2 with the
optimizer offloaded to CPU (single process, world size 1).

An engine owns one model's optimizer: it runs the forward pass, takes a step on a loss, and
exports or restores the optimizer's state as plain data (fedsim.server.plain).
"""
from __future__ import annotations

import os
import socket
from types import ModuleType
from typing import Any, Protocol

import torch

from fedsim.errors import FedsimError
from fedsim.server.plain import from_plain, to_plain
from fedsim.server.settings import ServerTrainerSettings
from fedsim.train.local import make_optimizer, optimizer_step

BETAS = (0.9, 0.95)  # AdamW betas of both engines (algorithms.md §1.3); no weight decay
EPS = 1e-8
DEEPSPEED_INSTALL = "pip install 'fedsim[deepspeed]' (deepspeed==0.19.8)"
# The parts of a ZeRO-1/2 optimizer's state_dict that its load_state_dict reads back (the fp32
# master weights are refreshed from the model's parameters instead).
_ZERO_STATE_KEYS = ("base_optimizer_state", "param_alignment_paddings", "clip_grad", "dynamic_loss_scale",
                    "overflow", "ds_version")


class DeepSpeedMissingError(FedsimError, ImportError):
    """The deepspeed engine was asked for but DeepSpeed cannot be imported."""


class Engine(Protocol):
    """What the server trainer needs from an engine."""

    device: torch.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] of the model."""

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` and take one optimizer step."""

    def params_changed(self) -> None:
        """The trainable parameters were overwritten in place (a new adapter): resync any copy."""

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state (moments, step counts) as plain data."""

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore what optimizer_state returned (after the adapter it goes with is loaded)."""


class TorchEngine:
    """AdamW in plain torch on `settings.device`."""

    def __init__(self, model: torch.nn.Module, settings: ServerTrainerSettings) -> None:
        self.device = _torch_device(settings.device)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(self.model, settings.lr, betas=BETAS)
        self.max_grad_norm = settings.max_grad_norm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def step(self, loss: torch.Tensor) -> None:
        optimizer_step(self.optimizer, loss, self.max_grad_norm)

    def params_changed(self) -> None:
        """AdamW reads the parameters themselves: nothing to resync."""

    def optimizer_state(self) -> dict[str, Any]:
        return to_plain(self.optimizer.state_dict())

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(from_plain(state))


class DeepSpeedEngine:
    """DeepSpeed ZeRO stage 2, optimizer states and fp32 master weights offloaded to CPU
    (DeepSpeedCPUAdam in AdamW mode, compiled on first use), one process."""

    def __init__(self, model: torch.nn.Module, settings: ServerTrainerSettings) -> None:
        deepspeed = import_deepspeed()
        init_single_process(deepspeed)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=trainable, config=deepspeed_config(settings))
        self.device = torch.device(self.engine.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.engine(input_ids=input_ids, attention_mask=attention_mask).logits

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def params_changed(self) -> None:
        self.optimizer.refresh_fp32_params()  # the fp32 master partitions follow the parameters

    def optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        return to_plain({key: state[key] for key in _ZERO_STATE_KEYS})

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict([from_plain(state)], load_optimizer_states=True,
                                       load_from_fp32_weights=False)
        self._replay_beta_powers()

    def _replay_beta_powers(self) -> None:
        """Rebuild the CPU-Adam kernel's bias-correction powers as a running product, as training made them.

        The kernel keeps beta^t by multiplying once per step; restored at step t it would compute
        pow(beta, t) instead, which differs in the last bit. Replaying steps 1..t on empty tensors
        updates only those powers, so a restored run continues bit for bit.
        """
        adam = self.optimizer.optimizer
        group = adam.param_groups[0]
        steps = int(adam.state.get(group["params"][0], {}).get("step", 0))
        empty = torch.empty(0)
        beta1, beta2 = group["betas"]
        for step in range(1, steps + 1):
            adam.ds_opt_adam.adam_update(adam.opt_id, step, group["lr"], beta1, beta2, group["eps"],
                                         group["weight_decay"], group["bias_correction"], empty, empty, empty, empty)


def make_engine(model: torch.nn.Module, settings: ServerTrainerSettings) -> Engine:
    """The engine `settings.engine` names, holding `model`'s optimizer."""
    if settings.engine == "deepspeed":
        return DeepSpeedEngine(model, settings)
    return TorchEngine(model, settings)


def deepspeed_config(settings: ServerTrainerSettings) -> dict[str, Any]:
    """A ZeRO-2 configuration with CPU optimizer offload and the torch engine's AdamW hyperparameters."""
    return {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "gradient_accumulation_steps": 1,
        "steps_per_print": 2**31 - 1,
        "optimizer": {"type": "AdamW", "params": {"lr": settings.lr, "betas": list(BETAS), "eps": EPS,
                                                  "weight_decay": 0.0}},
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
        "gradient_clipping": settings.max_grad_norm or 0.0,
    }


def import_deepspeed() -> ModuleType:
    """The deepspeed module, or a one-line DeepSpeedMissingError naming the extra to install."""
    try:
        import deepspeed
    except ImportError as error:
        raise DeepSpeedMissingError(
            f"the deepspeed engine needs DeepSpeed, which cannot be imported ({error}); {DEEPSPEED_INSTALL}"
        ) from None
    return deepspeed


def init_single_process(deepspeed: ModuleType) -> None:
    """Initialise torch.distributed for one process (gloo on CPU), setting MASTER_ADDR, a free
    MASTER_PORT, RANK, LOCAL_RANK and WORLD_SIZE where the environment lacks them."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    accelerator = deepspeed.accelerator.get_accelerator()
    backend = "gloo" if accelerator.device_name() == "cpu" else accelerator.communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torch_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

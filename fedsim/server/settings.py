"""Settings of the server trainer, checked with one-line errors that name the bad field."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fedsim.errors import FedsimError

EngineName = Literal["torch", "deepspeed"]
ENGINES: tuple[str, ...] = ("torch", "deepspeed")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class ServerTrainerError(FedsimError, ValueError):
    """A bad server-trainer setting or call: the message names the field or the model."""


@dataclass(frozen=True)
class ServerTrainerSettings:
    """How the server trains its models: AdamW (betas 0.9, 0.95, no weight decay) for `epochs`
    passes over the rows in minibatches of `batch_size`, gradient norm clipped to `max_grad_norm`
    (None: no clipping).

    `device` places the torch engine's models ("auto": CUDA when available); DeepSpeed places them
    on its own accelerator, so it takes only "auto".
    """

    engine: EngineName = "torch"
    lr: float = 3e-4
    epochs: int = 1
    batch_size: int = 4
    max_grad_norm: float | None = 1.0
    device: str = "auto"

    def check(self) -> ServerTrainerSettings:
        """Raise ServerTrainerError naming the first bad field; return self."""
        if self.engine not in ENGINES:
            raise ServerTrainerError(f"server trainer engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if not _positive_number(self.lr):
            raise ServerTrainerError(f"server trainer lr must be a finite number > 0, got {self.lr!r}")
        if not _positive_int(self.epochs):
            raise ServerTrainerError(f"server trainer epochs must be an int >= 1, got {self.epochs!r}")
        if not _positive_int(self.batch_size):
            raise ServerTrainerError(f"server trainer batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.max_grad_norm is not None and not _positive_number(self.max_grad_norm):
            raise ServerTrainerError(
                f"server trainer max_grad_norm must be a finite number > 0 or None, got {self.max_grad_norm!r}")
        if self.device not in DEVICES:
            raise ServerTrainerError(f"server trainer device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.engine == "deepspeed" and self.device != "auto":
            raise ServerTrainerError(f"server trainer device must be 'auto' with the deepspeed engine (it "
                                     f"places models on its accelerator), got {self.device!r}")
        return self


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)

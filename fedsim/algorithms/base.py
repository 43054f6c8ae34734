"""The algorithm interface: a client step, an aggregation and the messages between them.

Algorithms never import Ray: the engine moves their messages and keeps their state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedsim.algorithms.fedavg import Arrays, apply_update
from fedsim.comm import Message
from fedsim.config import ExperimentConfig

POOLED_CLIENT = -2  # the client id of the pooled data set (centralized training)


class LLMClient(Protocol):
    """How a client reaches the server LLM: one call carries all of its prompts."""

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]: ...


@dataclass(frozen=True)
class PlannedRelease:
    """A private release a client will make in a round, known before it runs (checked against budget)."""

    mechanism: str
    release: Any              # a dp-accounting DpEvent or fedsim.privacy.accounting.PureEpsEntry
    adjacency: Any            # dp_accounting NeighboringRelation
    status: str = "proven"
    params: dict = field(default_factory=dict)


@dataclass
class ClientContext:
    """Everything a client step may use, handed to it by the worker that hosts the client."""

    client: int
    round_index: int
    config: ExperimentConfig
    preset: str
    examples: list            # list[fedsim.data.task.Example]
    download: Message | None  # what the server sent this client this round (counted as bytes)
    state: dict[str, Any]     # the client's persistent state (empty at first); mutate in place
    global_payload: Any = None  # the server's current payload for this preset (not communicated)
    model: Any = None         # the worker's peft model for this client's architecture
    tokenizer: Any = None
    dp_noise_multiplier: float | None = None  # DP-SGD noise for this client (None: no DP-SGD)
    llm: LLMClient | None = None  # the server LLM (algorithms with needs_llm)


@dataclass
class ClientOutcome:
    """What a client step returns: messages for the server and what it did."""

    client: int
    messages: list[Message] = field(default_factory=list)
    num_samples: int = 0          # aggregation weight (n_k)
    samples_processed: int = 0    # for the virtual clock
    metrics: dict[str, float] = field(default_factory=dict)
    state_changed: bool = False
    server_payload: Any = None    # a result that never crosses the wire (pooled training only)
    secagg: Any = None            # what the client hands to secure aggregation instead of its update


class Algorithm(ABC):
    """One federated algorithm. Global state is a mapping from SLM preset to its payload."""

    name: str = ""
    needs_model: bool = True        # False for workloads without a language model
    keeps_client_state: bool = False  # True when clients carry state across rounds
    pooled: bool = False            # True when one pooled client replaces the cohort (centralized)
    summed_kind: str | None = None  # message kind summed across clients (secure aggregation applies)
    needs_llm: bool = False         # True when clients query the server LLM deployment

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config

    def planned_release(self, client: int, round_index: int, released: set[str]) -> PlannedRelease | None:
        """The private release `client` would make this round (None: nothing private).

        `released` holds the mechanisms already recorded in the client's ledger (e.g. a one-shot
        release made in an earlier round).
        """
        return None

    def download_kind(self) -> str | None:
        """Kind of the message every sampled client receives (None: nothing is sent)."""
        return "adapter"

    @abstractmethod
    def client_step(self, ctx: ClientContext) -> ClientOutcome:
        """Run one client's round on its worker."""

    def aggregate(self, preset: str, global_payload: Any, outcomes: list[ClientOutcome]) -> Any:
        """One preset's new global payload from its client outcomes, for algorithms without a summed
        kind (unchanged by default); summed updates go through the engine's aggregation pipeline."""
        return global_payload

    def apply_mean(self, preset: str, global_payload: Any, mean: Arrays | None) -> Any:
        """The new global payload given the clients' mean update (None: nobody reported)."""
        return apply_update(global_payload, mean)

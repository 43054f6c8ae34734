"""The algorithm interface: what the server sends, a client step, an aggregation, a server step.

Algorithms never import Ray: the engine moves their messages and keeps their state.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.algorithms.fedavg import Arrays, apply_update
from fedsim.algorithms.llm import MeteredLLM
from fedsim.comm import SERVER, Message
from fedsim.config import ExperimentConfig
from fedsim.rng import numpy_stream

POOLED_CLIENT = -2  # the client id of the pooled data set (centralized training)


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
    downloads: list[Message]  # what the server sent this client this round (counted as bytes)
    state: dict[str, Any]     # the client's persistent state (empty at first); mutate in place
    global_payload: Any = None  # the server's current payload for this preset (not communicated)
    model: Any = None         # the worker's peft model for this client's architecture
    tokenizer: Any = None
    dp_noise_multiplier: float | None = None  # DP-SGD noise for this client (None: no DP-SGD)
    llm: MeteredLLM | None = None  # the server LLM (algorithms with needs_llm); its traffic is counted
    public: list = field(default_factory=list)  # the public examples (algorithms with public_on_clients)

    def received(self, kind: str) -> Any:
        """The payload of the download of `kind` (raises when the server sent none)."""
        for message in self.downloads:
            if message.kind == kind:
                return message.payload
        raise KeyError(f"client {self.client} received no {kind!r} message this round "
                       f"(it got {[m.kind for m in self.downloads]})")


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
    llm_seconds: float = 0.0      # the server LLM's time on this client's requests (virtual clock)


@dataclass
class ServerContext:
    """Everything a server step may use, after the round's aggregation, on the coordinator."""

    round_index: int
    config: ExperimentConfig
    globals: dict[str, Any]       # every preset's global payload after aggregation; the step may replace them
    public: list                  # the server's public examples (list[fedsim.data.task.Example])
    state: dict[str, Any]         # the algorithm's server state; checkpointed with the engine after each round
    outcomes: list[ClientOutcome]  # what arrived from this round's clients
    llm: MeteredLLM | None = None  # the served LLM; the server's own calls are timed, not communication
    trainer: Any = None           # the server trainer (fedsim.server.ServerTrainerClient) when the algorithm has one
    sends: list[Message] = field(default_factory=list)  # messages to clients now (counted this round)
    metrics: dict[str, float] = field(default_factory=dict)  # added to the round's row

    def rng(self, purpose: str) -> np.random.Generator:
        """The server's keyed random stream for `purpose` in this round."""
        return numpy_stream(self.config.seed, SERVER, self.round_index, purpose)


class Algorithm(ABC):
    """One federated algorithm. Global state is a mapping from SLM preset to its payload."""

    name: str = ""
    needs_model: bool = True        # False for workloads without a language model
    keeps_client_state: bool = False  # True when clients carry state across rounds
    pooled: bool = False            # True when one pooled client replaces the cohort (centralized)
    summed_kind: str | None = None  # message kind summed across clients (secure aggregation applies)
    needs_llm: bool = False         # True when clients or the server step query the server LLM deployment
    needs_trainer: bool = False     # True when the server step trains models (a ServerTrainer is started)
    public_on_clients: bool = False  # True when clients read the public examples (a public data set: not counted)

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

    def downloads(self, client: int, preset: str, wire: dict[str, Any], state: dict[str, Any]) -> list[Message]:
        """What a selected client receives at the start of a round: by default its preset's global
        payload as it travels (`wire`), as one message of `download_kind`. `state` is the server
        state the server step keeps, for algorithms that send more kinds or per-client payloads."""
        kind = self.download_kind()
        return [] if kind is None else [Message(kind, SERVER, client, wire[preset])]

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

    def prepare_trainer(self, trainer: Any) -> None:
        """Load the models the server step trains onto the server trainer (algorithms with needs_trainer)."""

    def evaluate_server(self, trainer: Any, test: list) -> dict[str, float]:
        """Row fields scoring the server's own models on the test split (e.g. the LLM's accuracy)."""
        return {}

    def initial_server_state(self) -> dict[str, Any]:
        """The server state before the first round (see ServerContext.state)."""
        return {}

    def server_step(self, ctx: ServerContext) -> None:
        """Server-side work after aggregation (distillation, publishing, ...); nothing by default."""

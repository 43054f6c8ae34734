"""Secure aggregation after Bonawitz et al. (CCS 2017), with an optional SecAgg+ sparse graph.

Modes: "protocol" (real X25519 keys, Shamir shares, AEAD, PRG masks mod 2^k), "cost" (plaintext
sum of the same quantised integers, and the protocol's exact messages and sizes), "off".
fedsim.engine.secure_sum drives SecAggClient / SecAggServer stage by stage.
"""
from fedsim.secagg.client import SecAggClient
from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.cost import Dropouts, cost_aggregate, cost_messages
from fedsim.secagg.encoding import AggregateResult, decode_sum, encode_update
from fedsim.secagg.errors import SecAggAbort, SecAggConfigError, SecAggProtocolError, TensorSpecError
from fedsim.secagg.graph import neighbour_graph, resolve_degree
from fedsim.secagg.messages import KINDS, CostMessage, EncryptedShares, MaskedInput, PeerKeys, PublicKeys, \
    SecAggMessage, UnmaskRequest, UnmaskShares
from fedsim.secagg.server import SecAggServer
from fedsim.secagg.sizes import MESSAGE_ROUNDS
from fedsim.secagg.spec import TensorSpec

__all__ = [
    "AggregateResult", "CostMessage", "Dropouts", "EncryptedShares", "KINDS", "MESSAGE_ROUNDS", "MaskedInput",
    "PeerKeys", "PublicKeys", "SecAggAbort", "SecAggClient", "SecAggCohort", "SecAggConfig", "SecAggConfigError",
    "SecAggMessage", "SecAggProtocolError", "SecAggServer", "TensorSpec", "TensorSpecError", "UnmaskRequest",
    "UnmaskShares", "cost_aggregate", "cost_messages", "decode_sum", "encode_update", "neighbour_graph",
    "resolve_degree",
]

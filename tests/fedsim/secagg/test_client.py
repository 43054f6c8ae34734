"""The client state machine: stage order, routing checks, and never both secrets of one peer."""
import pickle

import numpy as np
import pytest

from fedsim.comm import SERVER
from fedsim.secagg.client import SecAggClient
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.errors import SecAggConfigError, SecAggProtocolError
from fedsim.secagg.messages import EncryptedShares, PeerKeys, UnmaskRequest
from fedsim.secagg.server import SecAggServer

SPEC = {"w": (4,)}


def _through_masking(n=4, drop=()):
    """Run stages 0-2 for n clients; clients in `drop` send no masked input."""
    config = SecAggConfig(threshold=0.5)
    server = SecAggServer(config, 0, list(range(n)), SPEC)
    clients = {i: SecAggClient(i, 0, SPEC, config, rng_seed=i) for i in range(n)}
    for client in clients.values():
        server.receive_keys(client.advertise_keys())
    for message in server.broadcast_keys():
        server.receive_shares(clients[message.receiver].share_keys(message))
    for message in server.forward_shares():
        if message.receiver not in drop:
            server.receive_masked_input(clients[message.receiver].masked_input({"w": np.ones(4) * 0.1}, 3, message))
    return server, clients


def test_each_peer_gets_one_secret_revealed_and_unmask_runs_once():
    server, clients = _through_masking(5, drop={1, 3})
    for request in server.request_unmask():
        reply = clients[request.receiver].unmask(request)
        assert not set(reply.self_mask_shares) & set(reply.mask_key_shares)
        assert set(reply.mask_key_shares) == {1, 3}
        assert request.receiver in reply.self_mask_shares
        with pytest.raises(SecAggProtocolError, match="next stage is done"):
            clients[request.receiver].unmask(request)


def test_unmask_request_naming_a_stranger_is_refused():
    _, clients = _through_masking(4)
    with pytest.raises(SecAggProtocolError, match=r"survivors \[9\]"):
        clients[0].unmask(UnmaskRequest(SERVER, 0, 0, frozenset({1, 9})))


def test_stage_order_and_routing_are_checked():
    config = SecAggConfig()
    client = SecAggClient(7, 2, SPEC, config, rng_seed=0)
    with pytest.raises(SecAggProtocolError, match="next stage is advertise_keys"):
        client.masked_input({"w": np.zeros(4)}, 1, EncryptedShares(SERVER, 7, 2, {}))
    assert client.advertise_keys().nbytes() == 64
    with pytest.raises(SecAggProtocolError, match="for round 3"):
        client.share_keys(PeerKeys(SERVER, 7, 3, 0, {}))
    with pytest.raises(SecAggProtocolError, match="to 8"):
        client.share_keys(PeerKeys(SERVER, 8, 2, 0, {}))
    assert client.share_keys(PeerKeys(SERVER, 7, 2, 0, {1: (b"\x09" * 32, b"\x09" * 32)})).nbytes() == 94
    with pytest.raises(SecAggConfigError, match="protocol mode only"):
        SecAggClient(7, 2, SPEC, SecAggConfig(mode="cost"), rng_seed=0)


def _three_clients_after_sharing() -> tuple[SecAggServer, dict[int, SecAggClient]]:
    """A server and clients 0-2 of round 0 that have advertised keys and shared their secrets."""
    config = SecAggConfig()
    server = SecAggServer(config, 0, [0, 1, 2], SPEC)
    clients = {i: SecAggClient(i, 0, SPEC, config, rng_seed=i) for i in range(3)}
    for client in clients.values():
        server.receive_keys(client.advertise_keys())
    for message in server.broadcast_keys():
        server.receive_shares(clients[message.receiver].share_keys(message))
    return server, clients


def test_tampered_shares_are_rejected():
    server, clients = _three_clients_after_sharing()
    forwarded = {m.receiver: m for m in server.forward_shares()}
    ciphertexts = dict(forwarded[0].ciphertexts)
    ciphertexts[1] = ciphertexts[2]  # a share meant from client 2, presented as from client 1
    with pytest.raises(SecAggProtocolError, match="authentication"):
        clients[0].masked_input({"w": np.zeros(4)}, 1, EncryptedShares(SERVER, 0, 0, ciphertexts))


def test_client_and_server_state_survive_pickling_between_stages():
    server, clients = _three_clients_after_sharing()
    server = pickle.loads(pickle.dumps(server))
    clients = {i: pickle.loads(pickle.dumps(client)) for i, client in clients.items()}
    forwarded = pickle.loads(pickle.dumps(server.forward_shares()))
    for message in forwarded:
        server.receive_masked_input(clients[message.receiver].masked_input({"w": np.full(4, 0.25)}, 2, message))
    for request in server.request_unmask():
        server.receive_unmask(clients[request.receiver].unmask(request))
    result = server.finish()
    np.testing.assert_allclose(result.weighted_sum["w"], np.full(4, 1.5), atol=1e-5)

"""The server role: malformed or out-of-order traffic is refused (what it receives is tested on values in
tests/fedsim/engine/test_secure_sum.py)."""
import numpy as np
import pytest

from fedsim.comm import SERVER
from fedsim.secagg.client import SecAggClient
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.errors import SecAggConfigError, SecAggProtocolError
from fedsim.secagg.messages import EncryptedShares, MaskedInput, PublicKeys, UnmaskShares
from fedsim.secagg.server import SecAggServer


def _server(config=SecAggConfig(), ids=(0, 1, 2)):
    return SecAggServer(config, 0, list(ids), {"w": (4,)})


def test_server_refuses_out_of_order_duplicate_and_foreign_messages():
    server = _server()
    keys = PublicKeys(0, SERVER, 0, b"\x01" * 32, b"\x02" * 32)
    server.receive_keys(keys)
    with pytest.raises(SecAggProtocolError, match="second PublicKeys"):
        server.receive_keys(keys)
    with pytest.raises(SecAggProtocolError, match="not a client"):
        server.receive_keys(PublicKeys(9, SERVER, 0, b"\x01" * 32, b"\x02" * 32))
    with pytest.raises(SecAggProtocolError, match="for round 1"):
        server.receive_keys(PublicKeys(1, SERVER, 1, b"\x01" * 32, b"\x02" * 32))
    with pytest.raises(SecAggProtocolError, match="not 32 bytes"):
        server.receive_keys(PublicKeys(1, SERVER, 0, b"\x01" * 31, b"\x02" * 32))
    with pytest.raises(SecAggProtocolError, match="during stage keys"):
        server.receive_masked_input(MaskedInput(0, SERVER, 0, np.zeros(6, np.uint64)))
    with pytest.raises(SecAggProtocolError, match="cannot close stage shares"):
        server.forward_shares()


def test_server_accepts_only_masked_integer_vectors_of_the_right_length():
    server = _server(ids=(0,))
    server.receive_keys(PublicKeys(0, SERVER, 0, b"\x01" * 32, b"\x02" * 32))
    server.broadcast_keys()
    server.receive_shares(EncryptedShares(0, SERVER, 0, {}))
    server.forward_shares()
    for vector in (np.zeros(6, np.float64), np.zeros(6, np.uint32), np.zeros(5, np.uint64), [0] * 6):
        with pytest.raises(SecAggProtocolError, match="uint64 vector of length 6"):
            server.receive_masked_input(MaskedInput(0, SERVER, 0, vector))


def test_server_checks_shares_address_neighbours_and_config_fits():
    server = _server()
    for client in range(3):
        server.receive_keys(PublicKeys(client, SERVER, 0, bytes([client + 1]) * 32, b"\x02" * 32))
    server.broadcast_keys()
    with pytest.raises(SecAggProtocolError, match="its neighbours are"):
        server.receive_shares(EncryptedShares(0, SERVER, 0, {1: b"x" * 90}))
    with pytest.raises(SecAggProtocolError, match="not 90 bytes"):
        server.receive_shares(EncryptedShares(0, SERVER, 0, {1: b"x" * 90, 2: b"x" * 89}))
    with pytest.raises(SecAggConfigError, match="threshold 5 exceeds the 3 share holders"):
        _server(SecAggConfig(threshold=5))
    with pytest.raises(SecAggConfigError, match="reserved for the server"):
        _server(ids=(0, SERVER))
    with pytest.raises(SecAggConfigError, match="distinct"):
        _server(ids=(0, 0))


def test_inconsistent_key_shares_are_detected():
    config = SecAggConfig(threshold=0.5)
    spec = {"w": (4,)}
    server = SecAggServer(config, 0, [0, 1, 2, 3], spec)
    clients = {i: SecAggClient(i, 0, spec, config, rng_seed=i) for i in range(4)}
    for client in clients.values():
        server.receive_keys(client.advertise_keys())
    for message in server.broadcast_keys():
        server.receive_shares(clients[message.receiver].share_keys(message))
    for message in server.forward_shares():
        if message.receiver != 3:
            server.receive_masked_input(clients[message.receiver].masked_input({"w": np.zeros(4)}, 1, message))
    for request in server.request_unmask():
        reply = clients[request.receiver].unmask(request)
        forged = {3: bytes(33 - 1) + b"\x05"}
        server.receive_unmask(UnmaskShares(reply.sender, SERVER, 0, reply.self_mask_shares, forged))
    with pytest.raises(SecAggProtocolError, match="mask key of 3"):
        server.finish()

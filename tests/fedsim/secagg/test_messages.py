"""Message sizes come from real payloads and plug into the byte ledger of fedsim.comm."""
import numpy as np

from fedsim.comm import SERVER, ByteLedger, Message
from fedsim.secagg.messages import MaskedInput, PeerKeys, UnmaskShares


def test_nbytes_counts_payloads_and_directions():
    keys = PeerKeys(SERVER, 3, 0, 3, {1: (b"e" * 32, b"m" * 32), 2: (b"e" * 32, b"m" * 32)})
    masked = MaskedInput(3, SERVER, 0, np.zeros(10, np.uint64))
    unmask = UnmaskShares(3, SERVER, 0, {3: b"s" * 33}, {1: b"k" * 33})
    assert (keys.nbytes(), masked.nbytes(), unmask.nbytes()) == (4 + 2 * 68, 80, 2 * 37)
    assert (keys.direction, masked.direction) == ("down", "up")
    assert unmask.kind == "secagg_unmask" and unmask.direction == "up"


def test_messages_are_counted_by_the_byte_ledger():
    masked = MaskedInput(3, SERVER, 0, np.zeros(10, np.uint64))
    ledger = ByteLedger()
    ledger.record_message(0, Message(masked.kind, masked.sender, masked.receiver, masked))
    assert ledger.round_bytes(0) == {"up/secagg_masked_input": 80}

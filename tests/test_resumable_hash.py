"""The hash state an upload session carries (chalicelib/resumable_hash.py): resumed anywhere, it
gives hashlib's digest; a state that does not describe the bytes received is refused."""
from __future__ import annotations

import hashlib
import os

import pytest

from chalicelib.resumable_hash import InvalidState, ResumableHash


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_hash_resumed_after_any_split_gives_hashlibs_digest(algorithm):
    data = os.urandom(300_007)
    for split in (0, 1, 63, 64, 127, 128, 129, 4096, 299_999, len(data)):
        first = ResumableHash(algorithm)
        first.update(data[:split])
        resumed = ResumableHash.resume(first.state(), split)
        assert resumed.algorithm == algorithm and resumed.size == split
        resumed.update(data[split:])
        assert resumed.hexdigest() == hashlib.new(algorithm, data).hexdigest(), split
        assert resumed.hexdigest() == resumed.hexdigest()       # hexdigest does not consume it


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_state_that_does_not_describe_the_bytes_received_is_refused(algorithm):
    h = ResumableHash(algorithm)
    h.update(b"x" * 1000)
    state = h.state()
    for offset in (999, 1001, 0):
        with pytest.raises(InvalidState):
            ResumableHash.resume(state, offset)
    for damaged in (state[:-1], b"S999v1" + state[6:], b"", state[:6] + b"\xff" * (len(state) - 6)):
        with pytest.raises(InvalidState):
            ResumableHash.resume(damaged, 1000)

"""Feast's Redis layout, the pure parts: spliced HMGETs and packed commands are hiredis' bytes."""

from __future__ import annotations

import hiredis
import pytest
from redis.exceptions import AskError, MovedError, ResponseError, TryAgainError

from core.redis_layout import (
    Router,
    _Pass,
    hmget_parts,
    pack,
    splice_hmgets,
    timestamp_bytes,
    timestamp_s,
    timestamp_us,
)


def test_spliced_hmget_equals_hiredis_packing() -> None:
    fields = [b"\x8f\x01\xa2\x7f", b"_ts:user_profile", b"", "café".encode()]
    keys = [b"k", b"\x02\x00\x00\x00user_id\r\n\x00fraud", b""]
    spliced = splice_hmgets(hmget_parts(fields), keys)
    packed = [hiredis.pack_command((b"HMGET", key, *fields)) for key in keys]  # type: ignore[arg-type]
    assert spliced == packed and len(spliced) == 3
    assert pack(b"HMGET", keys[0], *fields) == packed[0]


def test_timestamps_round_trip_to_the_microsecond() -> None:
    for epoch_us in (1, 1_764_000_000_123_456, 1_764_000_000_000_000):
        raw = timestamp_bytes(epoch_us)
        assert timestamp_us(raw) == epoch_us
        assert timestamp_s(raw) == epoch_us // 1_000_000 + (epoch_us % 1_000_000) * 1000 / 1e9
    assert timestamp_s(None) is None and timestamp_s(b"") is None


def test_standalone_router_sends_every_key_to_its_one_pool() -> None:
    pool = object()
    assert Router(pool).route([b"a", b"b", b"c"]) == {pool: range(3)}


def test_a_cluster_pass_keeps_answers_and_sorts_redirects() -> None:
    """MOVED (a MovedError is also an AskError) asks for a map refresh, ASK names its node,
    TRYAGAIN is resent, and any other error reply is raised, not taken for an answer."""
    replies: list[object] = [None] * 5
    done = _Pass()
    answer = [
        b"v0",
        MovedError("3999 127.0.0.1:7001"),
        AskError("3999 127.0.0.1:7002"),
        TryAgainError("TRYAGAIN"),
        [b"a", None],
    ]
    done.settle([0, 1, 2, 3, 4], answer, replies)
    assert replies == [b"v0", None, None, None, [b"a", None]]
    assert done.moved and done.redo == [1, 2, 3]
    assert done.ask == {2: ("127.0.0.1", 7002)}
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        _Pass().settle([0], [ResponseError("WRONGTYPE")], replies)

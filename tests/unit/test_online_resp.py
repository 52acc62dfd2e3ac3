"""The HMGETs the online reader splices together are the bytes hiredis would pack."""

from __future__ import annotations

import hiredis

from serving.online import _hmget_parts


def test_spliced_hmget_equals_hiredis_packing() -> None:
    fields: list[bytes | str] = [b"\x8f\x01\xa2\x7f", "_ts:user_profile", b"", "café"]
    head, tail = _hmget_parts(fields)
    for key in (b"k", b"\x02\x00\x00\x00user_id\r\n\x00fraud", b""):
        spliced = b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail)
        packed = hiredis.pack_command((b"HMGET", key, *fields))  # type: ignore[arg-type]
        assert spliced == packed  # (the stub types its argument as a 1-tuple)

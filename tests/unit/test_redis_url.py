"""Feast's Redis connection string: switching databases keeps credentials; none is printed."""

from __future__ import annotations

import pytest

from core.redis_url import describe, parse, with_db
from core.settings import Settings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:6379", "localhost:6379,db=8"),
        ("localhost:6379,db=3", "localhost:6379,db=8"),
        ("h:1,db=2,password=pw", "h:1,password=pw,db=8"),
        ("h:1,username=u,password=pw,ssl=true", "h:1,username=u,password=pw,ssl=true,db=8"),
    ],
)
def test_with_db_replaces_only_the_database(given: str, expected: str) -> None:
    assert with_db(given, 8) == expected
    *_, params = parse(with_db(given, 8))
    assert params["db"] == 8 and params.get("password") == parse(given)[2].get("password")


def test_no_password_in_descriptions_or_settings_repr() -> None:
    conn = "redis.internal:6380,username=scorer,password=s3cret,db=4"
    assert describe(conn) == "redis.internal:6380 as user scorer, db 4"
    settings = Settings(redis_connection_string=conn)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)

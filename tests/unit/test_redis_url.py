"""Feast's Redis connection string: parsed as Feast parses it; switching databases keeps
credentials; none is printed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore

from core.cli import UserError
from core.redis_url import describe, parse, with_db
from core.settings import Settings

AS_FEAST_READS_THEM = [
    "localhost:6379",
    "redis.internal:6380,db=4",
    "h:1,db=2,password=pw",
    "db=2,h:1,password=pw",
    "password=pw,ssl=true,h:1,username=u,db=9",
    "h:1,username=u,password=pw,ssl=true",
    "h:1,password=123",
    "h:1,password=a=b",
    "n1:7000,n2:7001,n3:7002,skip_full_coverage_check=true,ssl=true,password=pw",
    "n1:7000,password= spaced pw ,n2:7001",
    " h:1,db= 3",
    "h:1,ssl=false,socket_timeout=0.5",
]


@pytest.mark.parametrize("conn", AS_FEAST_READS_THEM)
def test_parse_equals_feast(conn: str) -> None:
    nodes, params = RedisOnlineStore._parse_connection_string(conn)
    target = parse(conn)
    assert [(n["host"], int(n["port"])) for n in nodes] == list(target.nodes)
    assert params == target.params
    assert len(target.nodes) == len(nodes) >= 1


@pytest.mark.parametrize(("conn", "message"), [("h:x", "bad port"), ("h:1,db=x", "bad db")])
def test_parse_refuses_in_one_line(conn: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse(conn)


def test_a_missing_port_is_redis_default() -> None:
    assert parse("localhost,db=1").nodes == (("localhost", 6379),)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:6379", "localhost:6379,db=8"),
        ("localhost:6379,db=3", "localhost:6379,db=8"),
        ("h:1,db=2,password=pw", "h:1,password=pw,db=8"),
        ("db=2,h:1,password=pw", "h:1,password=pw,db=8"),
        ("h:1,username=u,password=pw,ssl=true", "h:1,username=u,password=pw,ssl=true,db=8"),
    ],
)
def test_with_db_replaces_only_the_database(given: str, expected: str) -> None:
    assert with_db(given, 8) == expected
    params = parse(with_db(given, 8)).params
    assert params["db"] == 8 and params.get("password") == parse(given).params.get("password")


def test_no_password_in_descriptions_or_settings_repr() -> None:
    conn = "redis.internal:6380,username=scorer,password=s3cret,db=4"
    assert describe(conn) == "redis.internal:6380 as user scorer, db 4"
    settings = Settings(redis_connection_string=conn)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_devservices_and_the_parser_do_not_import_feast() -> None:
    """Importing Feast costs seconds, which every `make` target would pay through devservices."""
    code = (
        "import sys, core.redis_url, devservices;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'feast'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

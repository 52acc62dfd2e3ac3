"""Feast's Redis online store, with one clear line when feature_store.yaml's variables are unset.

Feast substitutes ``${VAR}`` with ``os.path.expandvars`` while it loads the config: no defaults,
and an unset variable's text stays in place. The literal then failed late and unclearly:
``redis_type`` as a multi-line pydantic error, ``connection_string`` as ``KeyError: 'port'`` at
the first Redis call. Every feast command validates this config class before anything else
(feature_store.yaml names it as the online store's ``type``), so the check here covers them
all. The store itself is Feast's, unchanged.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import click
from feast.infra.online_stores import redis as feast_redis
from pydantic import model_validator

TYPE = "core.online_store.RedisOnlineStore"

# What to export, per variable feature_store.yaml reads.
HINTS = {
    "REDIS_CONNECTION_STRING": "host:port[,password=...][,db=N], e.g. localhost:6379",
    "REDIS_TYPE": "redis, or redis_cluster",
}

_UNSET = re.compile(r"\$\{(\w+)\}")  # the form feature_store.yaml uses


class UnsetVariables(click.ClickException):
    """A ClickException, so the feast CLI prints it as one ``Error:`` line (exit code 1)."""


def unset_variables(values: dict[str, Any]) -> list[str]:
    """The variable names that expandvars left in ``values`` (unset when the yaml was read)."""
    found = [_UNSET.findall(value) for value in values.values() if isinstance(value, str)]
    return list(dict.fromkeys(name for names in found for name in names))


def message(names: list[str]) -> str:
    needs = "; ".join(f"{name} ({HINTS[name]})" if name in HINTS else name for name in names)
    return f"feature_store.yaml needs {needs}: export it before running feast"


class RedisOnlineStoreConfig(feast_redis.RedisOnlineStoreConfig):
    """Feast's Redis config; it refuses the text of an unset variable before any field."""

    type: Literal["core.online_store.RedisOnlineStore"] = TYPE  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _variables_set(cls, values: Any) -> Any:
        if isinstance(values, dict) and (names := unset_variables(values)):
            raise UnsetVariables(message(names))
        return values


class RedisOnlineStore(feast_redis.RedisOnlineStore):
    """Feast's Redis online store; Feast finds the config class by this name + ``Config``."""

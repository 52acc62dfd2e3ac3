"""One clear line from ``feast apply``/``feast plan`` when feature_store.yaml's variables are unset.

Feast substitutes ``${VAR}`` with ``os.path.expandvars``: no defaults, and an unset variable's
text stays in place, so the store was configured with the literal ``${REDIS_CONNECTION_STRING}``
and failed late with ``KeyError: 'port'``. Feast imports every module of the repo before it
touches the online store, so this one stops it first. (``feast materialize`` imports no repo
module; there, an unset variable still fails at the first Redis call.)
"""

import os

REQUIRED = {
    "REDIS_CONNECTION_STRING": "host:port[,password=...][,db=N], e.g. localhost:6379",
    "REDIS_TYPE": "redis, or redis_cluster",
}

_missing = [name for name in REQUIRED if not os.environ.get(name)]
if _missing:
    raise SystemExit(
        "feature_store.yaml needs "
        + "; ".join(f"{name} ({REQUIRED[name]})" for name in _missing)
        + ": export it before running feast"
    )

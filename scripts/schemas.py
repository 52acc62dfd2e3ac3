"""``make schemas``: the event contract's JSON Schemas, generated from the pydantic models.

    python -m scripts.schemas            # (re)write schemas/*.schema.json
    python -m scripts.schemas --check    # exit 1 if a committed file is stale

``schemas/transaction.schema.json`` is what producers send on ``STREAM_TRANSACTIONS_TOPIC``
(``core.events.Transaction``: unknown properties are allowed, the stream ignores them);
``schemas/score.schema.json`` is what the stream sends on ``STREAM_SCORES_TOPIC``
(``core.events.ScoreRecord``). ``tests/unit/test_schemas.py`` fails when they are stale.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from core.cli import Parser, run_cli
from core.events import ScoreRecord, Transaction
from core.settings import PROJECT_ROOT

SCHEMAS_DIR = PROJECT_ROOT / "schemas"
MODELS: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
    "transaction": (Transaction, "validation"),  # what a producer may send
    "score": (ScoreRecord, "serialization"),  # what the stream sends
}


def schema(name: str) -> dict[str, Any]:
    model, mode = MODELS[name]
    body = model.model_json_schema(mode=mode)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fraud-scoring.example/schemas/{name}.schema.json",
        **body,
    }


def rendered(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=True) + "\n"


def path(name: str, root: Path = SCHEMAS_DIR) -> Path:
    return root / f"{name}.schema.json"


def stale(root: Path = SCHEMAS_DIR) -> list[str]:
    """The schemas whose committed file differs from the models (or is missing)."""
    return [
        n for n in MODELS if not path(n, root).exists() or path(n, root).read_text() != rendered(n)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m scripts.schemas", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    if args.check:
        old = stale()
        for name in old:
            print(f"stale: {path(name)} (run `make schemas`)")
        return 1 if old else 0
    SCHEMAS_DIR.mkdir(exist_ok=True)
    for name in MODELS:
        path(name).write_text(rendered(name))
        print(f"wrote {path(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""One result shape for every proof, printed as a table and written as JSON beside benchmarks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.settings import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Check:
    """One measured figure of one case, and whether it keeps the promise."""

    case: str  # e.g. "redis killed during online load"
    measure: str  # e.g. "non-503 errors"
    value: str  # what was measured, with its unit
    ok: bool


def table(checks: Sequence[Check]) -> str:
    """A fixed-width table, one row per check."""
    header = ("case", "measure", "value", "ok")
    rows = [(c.case, c.measure, c.value, "yes" if c.ok else "NO") for c in checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    rule = "  ".join("-" * w for w in widths)
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join([head, rule, *lines])


def write_json(name: str, checks: Sequence[Check], extra: dict[str, object] | None = None) -> Path:
    """bench/results/<name>.json (gitignored), for the closing note and CI artifacts."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"checks": [asdict(c) for c in checks], **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path

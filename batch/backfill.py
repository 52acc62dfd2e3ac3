"""Score a date range in order, skipping dates whose partition is already complete.

Completeness is read from disk (manifest plus the files and rows it lists), so a
backfill killed on any date resumes there, without a state file that could drift.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from batch import output
from batch.score import ScoreOptions, output_root, run_score
from core.settings import Settings

log = logging.getLogger(__name__)


def dates(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def run_backfill(
    settings: Settings, start: date, end: date, opts: ScoreOptions
) -> list[tuple[date, dict[str, Any] | None]]:
    """(date, manifest) per date; the manifest is None where the date was already done."""
    root = output_root(settings)
    done: list[tuple[date, dict[str, Any] | None]] = []
    for day in dates(start, end):
        if output.is_complete(output.partition(root, day)):
            log.info("%s: complete, skipped", day)
            done.append((day, None))
            continue
        done.append((day, run_score(settings, replace(opts, day=day))))
    return done

"""Rows/s and ETA: a tqdm bar on a terminal, a periodic log line otherwise (cron, compose)."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, total: int, label: str, log_every_s: float = 10.0) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.started = time.monotonic()
        self.logged = self.started
        self.log_every_s = log_every_s
        self.bar = (
            tqdm(total=total, unit="rows", unit_scale=True, desc=label, file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        now = time.monotonic()
        if now - self.logged >= self.log_every_s or self.done >= self.total:
            self.logged = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "%s: %d/%d rows (%.0f%%), %.0f rows/s, ETA %.0fs",
                self.label,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                rate,
                eta,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

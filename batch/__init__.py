"""Offline mode: window-aggregate backfill and (nightly) batch scoring."""

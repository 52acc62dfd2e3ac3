"""Deterministic synthetic card-transaction data (the shipped example domain)."""

"""Online mode: a FastAPI service that scores a transaction from the Feast online store."""

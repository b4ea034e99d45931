"""Ingest preparation: decode, validate, price and compute rollup deltas for a batch (pure, no I/O)."""

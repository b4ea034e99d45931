"""The server-side library behind the broker: pricing, ingest preparation, stores, alerts, reconciliation.

Workers, the TUI, the HTTP API and the CLI build on it; it imports the kernel and
``spendtrace.sdk.context`` only, never an application.
"""

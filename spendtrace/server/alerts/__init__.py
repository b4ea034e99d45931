"""Alerts: rules (``rules``), their evaluation (``evaluate``), webhook delivery and the local-mode runner."""

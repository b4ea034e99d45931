"""Reconciliation against the AWS bill: Cost Explorer access (``costexplorer``) and the report (``report``)."""

"""Fixtures for the HTTP API tests (defined in ``_api_fixtures`` so tests can import its constants too)."""

from _api_fixtures import api_db, live_api, live_api_token

__all__ = ["api_db", "live_api", "live_api_token"]

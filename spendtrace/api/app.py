"""FastAPI application over a store opened by ``open_store``: every endpoint is one query-layer call.

Bad parameters answer 422 with a message (FastAPI's validation, plus ``ConfigError`` from the
time parser); names only ever reach SQL as bound parameters (the query layer's rule). With a
token configured, every route but ``/health`` wants ``Authorization: Bearer <token>``, the OpenAPI
document and its pages (``/openapi.json``, ``/docs``, ``/redoc``) included, and ``/health`` no
longer names the database file.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from spendtrace.errors import ConfigError, SpendtraceError
from spendtrace.server.model.alerts import mask_url
from spendtrace.server.store.base import (
    AlertStore,
    open_alert_store,
    open_store,
    parse_store_url,
    resolve_store_url,
)

__all__ = ["MAX_LIMIT", "create_app", "serve"]

#: Largest ``limit`` any endpoint answers with; larger requests are capped, not refused.
MAX_LIMIT = 1000

Start = Annotated[str | None, Query(description="inclusive: YYYY-MM-DD, ISO datetime (UTC) or epoch ns")]
End = Annotated[str | None, Query(description="exclusive: YYYY-MM-DD, ISO datetime (UTC) or epoch ns")]
Name = Annotated[str | None, Query(max_length=1024)]
Limit = Annotated[int, Query(ge=1, description=f"rows to return (at most {MAX_LIMIT})")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _cap(limit: int) -> int:
    return min(limit, MAX_LIMIT)


def _time(value: str | None) -> str | int | None:
    # epoch ns arrive as digit strings; the query layer takes ints for those
    if value is not None and value.isdigit():
        return int(value)
    return value


def create_app(
    db_path: str | os.PathLike[str] | None = None, *, token: str | None = None, store: str | None = None
) -> FastAPI:
    """The API over the store at ``store`` (a URL) or the SQLite file ``db_path`` (default: ``SPENDTRACE_STORE``,
    else ``SPENDTRACE_DB`` or ``cost_data.db``); ``token`` (or ``SPENDTRACE_API_TOKEN``) enables bearer auth."""
    url = parse_store_url(resolve_store_url(store, db_path))
    storage = open_store(url.raw)
    alert_store: AlertStore = open_alert_store(url.raw)
    # what /health names (never a password): the file of a SQLite store, else the URL with secrets masked
    location = url.path if url.scheme == "sqlite" else mask_url(url.raw)
    token = token if token is not None else os.environ.get("SPENDTRACE_API_TOKEN") or None
    app = FastAPI(
        title="spendtrace",
        version="0.1.0",
        description="Feature-, tenant- and request-level spend, modelled from instrumented usage.",
        # FastAPI's own /openapi.json, /docs and /redoc routes take no dependencies, so a token could
        # not guard them; the same three are declared below with the others.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.storage = storage
    scrape_lock = threading.Lock()

    def scrape_store() -> Any:
        """The store ``/metrics`` reads: a connection of its own, opened on the first scrape.

        Each store serialises its queries, so a scrape (several statements) on ``storage`` would hold
        every other request for its length; on its own connection the two run side by side.
        """
        with scrape_lock:
            if getattr(app.state, "scrape_storage", None) is None:
                app.state.scrape_storage = open_store(url.raw)
            return app.state.scrape_storage

    @app.exception_handler(SpendtraceError)
    async def _bad_input(request: Request, exc: SpendtraceError) -> JSONResponse:
        status = 422 if isinstance(exc, ConfigError | ValueError) else 500
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def auth(request: Request) -> None:
        if token is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    guarded = [Depends(auth)]

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, Any]:
        """Liveness: the database answers (its path is shown only when no token is configured)."""
        if token is not None:  # the one open route says nothing about the host
            return {"status": "ok", "data_version": storage.change_token()}
        return {"status": "ok", "db": location, "data_version": storage.change_token()}

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=guarded, include_in_schema=False)
    def swagger_page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", dependencies=guarded, include_in_schema=False)
    def redoc_page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{app.title} - ReDoc")

    @app.get("/metrics", dependencies=guarded, tags=["meta"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus exposition text of the stored spend (and this process's exporter counters)."""
        from spendtrace.server.metrics import render_store_metrics

        text = render_store_metrics(scrape_store())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/aggregate/feature", dependencies=guarded, tags=["aggregates"])
    def by_feature(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Spend per feature, most expensive first, with ``service_costs``."""
        return storage.aggregate_by_feature(
            _time(start),
            _time(end),
            feature=feature,
            user_id=user_id,
            endpoint=endpoint,
            service=service,
            limit=_cap(limit),
        )

    @app.get("/aggregate/user", dependencies=guarded, tags=["aggregates"])
    def by_user(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Spend per user / tenant."""
        return storage.aggregate_by_user(
            _time(start),
            _time(end),
            feature=feature,
            user_id=user_id,
            endpoint=endpoint,
            service=service,
            limit=_cap(limit),
        )

    @app.get("/aggregate/endpoint", dependencies=guarded, tags=["aggregates"])
    @app.get("/v2/endpoint", dependencies=guarded, tags=["aggregates"])
    def by_endpoint(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Spend per endpoint."""
        return storage.aggregate_by_endpoint(
            _time(start),
            _time(end),
            feature=feature,
            user_id=user_id,
            endpoint=endpoint,
            service=service,
            limit=_cap(limit),
        )

    @app.get("/api/services", dependencies=guarded, tags=["aggregates"])
    def by_service(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Spend per service (dynamodb, s3, bedrock, openai ...)."""
        return storage.aggregate_by_service(
            _time(start), _time(end), feature=feature, user_id=user_id, endpoint=endpoint, limit=_cap(limit)
        )

    @app.get("/v2/feature-breakdown", dependencies=guarded, tags=["aggregates"])
    def breakdown(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Direct vs fully-loaded cost per feature."""
        return storage.get_feature_cost_breakdown(
            _time(start), _time(end), feature=feature, user_id=user_id, endpoint=endpoint, limit=_cap(limit)
        )

    @app.get("/v2/request", dependencies=guarded, tags=["requests"])
    def requests(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        limit: Limit = 20,
        offset: Offset = 0,
        order: Annotated[str, Query(pattern="^(recent|cost)$")] = "recent",
    ) -> list[dict[str, Any]]:
        """Cost per request, newest (or costliest) first."""
        return storage.get_request_cost(
            _cap(limit),
            order,
            start=_time(start),
            end=_time(end),
            feature=feature,
            user_id=user_id,
            endpoint=endpoint,
            offset=offset,
        )

    @app.get("/v2/request/{request_id}/tree", dependencies=guarded, tags=["requests"])
    def request_tree(request_id: Annotated[str, Path(max_length=128)]) -> list[dict[str, Any]]:
        """One request's call tree, depth-first, with direct and subtree cost per span."""
        nodes = storage.get_request_subtree(request_id)
        if not nodes:
            raise HTTPException(status_code=404, detail="no spans stored for this request id")
        return nodes

    @app.get("/total", dependencies=guarded, tags=["aggregates"])
    def total(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
    ) -> dict[str, Any]:
        """Total spend with optional filters, and how much usage was unpriced."""
        return storage.total(
            _time(start), _time(end), feature=feature, user_id=user_id, endpoint=endpoint, service=service
        )

    @app.get("/transactions", dependencies=guarded, tags=["requests"])
    def transactions(
        start: Start = None,
        end: End = None,
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
        request_id: Annotated[str | None, Query(max_length=128)] = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> list[dict[str, Any]]:
        """Raw spans, newest first; page with ``limit`` and ``offset``."""
        return storage.transactions(
            _time(start),
            _time(end),
            feature=feature,
            user_id=user_id,
            endpoint=endpoint,
            service=service,
            request_id=request_id,
            limit=_cap(limit),
            offset=offset,
        )

    @app.get("/trend", dependencies=guarded, tags=["aggregates"])
    def trend(
        feature: Name = None,
        user_id: Name = None,
        endpoint: Name = None,
        service: Name = None,
        days: Annotated[int, Query(ge=1, le=3660)] = 30,
    ) -> list[dict[str, Any]]:
        """Daily cost for the last ``days`` UTC days, zero-filled, oldest first."""
        return storage.get_cost_trend(feature, days, user_id=user_id, endpoint=endpoint, service=service)

    @app.get("/alerts", dependencies=guarded, tags=["alerts"])
    def alerts(limit: Limit = 100) -> dict[str, Any]:
        """Alert rules (webhook secrets masked) and the newest alert events."""
        from spendtrace.server.alerts.rules import list_alerts

        events = [
            {
                "id": e.id,
                "rule_id": e.rule_id,
                "rule_name": e.rule_name,
                "fired_ns": e.fired_ns,
                "scope": e.scope,
                "scope_value": e.scope_value,
                "value_nano": e.value_nano,
                "threshold_nano": e.threshold_nano,
                "message": e.message,
                "delivery": e.delivery,
            }
            for e in alert_store.latest_events(_cap(limit))
        ]
        return {"rules": [r.to_dict(mask=True) for r in list_alerts(url.raw)], "events": events}

    @app.get("/reconciliation/latest", dependencies=guarded, tags=["reconciliation"])
    def reconciliation_latest() -> dict[str, Any]:
        """The most recently saved reconciliation report."""
        from spendtrace.server.reconcile.report import latest_report

        report = latest_report(url.raw)
        if report is None:
            raise HTTPException(status_code=404, detail="no reconciliation has been run on this database")
        return report

    @app.middleware("http")
    async def _no_store(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def serve(
    db_path: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    token: str | None = None,
    store: str | None = None,
) -> None:
    """Run the API with uvicorn until interrupted (binds to loopback unless told otherwise)."""
    import uvicorn

    uvicorn.run(create_app(db_path, token=token, store=store), host=host, port=port, log_level="info")


_default_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``app``: the API over the default store, made on first use, for ``uvicorn spendtrace.api.app:app``.

    The store is ``$SPENDTRACE_STORE`` (any store URL), else ``$SPENDTRACE_DB`` or ``cost_data.db``;
    ``$SPENDTRACE_API_TOKEN`` enables auth as with ``spendtrace api``.
    """
    global _default_app
    if name != "app":
        raise AttributeError(f"module 'spendtrace.api.app' has no attribute {name!r}")
    if _default_app is None:
        from spendtrace.server.store.base import resolve_store_url

        _default_app = create_app(store=resolve_store_url())
    return _default_app

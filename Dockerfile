# The spendtrace workers and tools: `spendtrace-consumer`, `spendtrace` (its HTTP API, its OTLP receiver), `spendtrace-tui`,
# demo traffic.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY spendtrace ./spendtrace
COPY consumers ./consumers
COPY tui ./tui
RUN pip install ".[consumer,tui,api,clickhouse,otlp]"

RUN useradd --create-home --uid 1000 spendtrace && mkdir -p /data && chown spendtrace /data
USER spendtrace
VOLUME ["/data"]
ENV SPENDTRACE_DB=/data/cost_data.db
CMD ["spendtrace-consumer", "--help"]

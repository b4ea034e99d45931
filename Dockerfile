# The spendtrace workers and tools: `spendtrace-consumer`, `spendtrace` (its HTTP API, its OTLP receiver), `spendtrace-tui`,
# demo traffic.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY spendtrace ./spendtrace
COPY consumers ./consumers
COPY tui ./tui
# gcc only for the install: it builds the OTLP receiver's C reader (spendtrace/server/otlp/_c/wire.c), then goes
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install ".[consumer,tui,api,clickhouse,otlp]" \
    && cd / && python -c "import spendtrace.server.otlp._c.wire" && cd /app \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 spendtrace && mkdir -p /data && chown spendtrace /data
USER spendtrace
VOLUME ["/data"]
ENV SPENDTRACE_DB=/data/cost_data.db
CMD ["spendtrace-consumer", "--help"]

"""The ClickHouse backend (``clickhouse`` extra): schema in ``_ddl``, ``_client`` connects, writes in ``_ingest``."""

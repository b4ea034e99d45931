"""The ClickHouse backend (the ``clickhouse`` extra): schema and migrations in ``_ddl``, connecting in ``_client``."""

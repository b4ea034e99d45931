"""spendtrace consumer workers: price spans from Kafka and store them in SQLite, exactly once."""

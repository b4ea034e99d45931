"""The SQLite schema, versions 1 to 4. ``PRAGMA user_version`` carries the version (see MIGRATIONS.md).

Conventions, relied on by every writer and reader:
- money is INTEGER nano-dollars (1e-9 USD), already multiplied by the span's sample weight;
- ``var_nano2`` columns hold the Horvitz-Thompson variance term sum(w*(w-1)*c^2) in nano-dollars^2
  (c = unweighted cost), so a reader can print a standard error = sqrt(var) for sampled data;
- time buckets are INTEGER epoch seconds (UTC) of the bucket's start (minute / hour / day);
- dimension columns of rollups are NOT NULL with '' meaning "none", so they can be primary keys;
- in ``rollup_*`` the row with ``service = ''`` carries the span-level totals (cost, calls, spans,
  errors) and rows with a service name carry that service's share of the cost;
- ``loaded_*`` rollups hold fully-loaded cost: each span's cost added once to every distinct
  feature on its path to the root;
- ``rollup_*.requests`` counts each distinct request id once, on the ``service = ''`` row of its
  head span in the batch that first stored it (``spendtrace.server.store.sqlite._ingest``), so requests per
  user / endpoint come from rollups (the ``requests`` table is too big to group);
- ``dash_hour`` / ``dash_day`` are those rollups summed over all dimensions but one (``dim`` =
  'feature' | 'user_id' | 'endpoint', ``value`` its value), kept equal to them by
  ``spendtrace.server.store.sqlite._dash`` (ingest adds its deltas, restatement rebuilds, retention deletes),
  so dashboards read one primary-key range instead of every tenant x endpoint x feature row.
"""

from __future__ import annotations

SCHEMA_VERSION = 4

_ROLLUP = """
CREATE TABLE IF NOT EXISTS {name} (
    bucket      INTEGER NOT NULL,
    feature     TEXT    NOT NULL,
    user_id     TEXT    NOT NULL DEFAULT '',
    endpoint    TEXT    NOT NULL DEFAULT '',
    service     TEXT    NOT NULL DEFAULT '',
    cost_nano   INTEGER NOT NULL DEFAULT 0,
    calls       REAL    NOT NULL DEFAULT 0,  -- weighted span count (estimate of calls made)
    spans       INTEGER NOT NULL DEFAULT 0,  -- spans actually stored
    errors      INTEGER NOT NULL DEFAULT 0,
    unpriced    INTEGER NOT NULL DEFAULT 0,  -- usage items with no price
    var_nano2   REAL    NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,  -- distinct request ids, each counted once; service='' row
    PRIMARY KEY (bucket, feature, user_id, endpoint, service)
) WITHOUT ROWID;
"""

_LOADED = """
CREATE TABLE IF NOT EXISTS {name} (
    bucket      INTEGER NOT NULL,
    feature     TEXT    NOT NULL,
    cost_nano   INTEGER NOT NULL DEFAULT 0,
    calls       REAL    NOT NULL DEFAULT 0,
    spans       INTEGER NOT NULL DEFAULT 0,
    var_nano2   REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, feature)
) WITHOUT ROWID;
"""

_DASH = """
CREATE TABLE IF NOT EXISTS {name} (
    dim         TEXT    NOT NULL,           -- 'feature' | 'user_id' | 'endpoint'
    service     TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    cost_nano   INTEGER NOT NULL DEFAULT 0,
    calls       REAL    NOT NULL DEFAULT 0,
    spans       INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    unpriced    INTEGER NOT NULL DEFAULT 0,
    var_nano2   REAL    NOT NULL DEFAULT 0,
    requests    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY ({key})
) WITHOUT ROWID;
"""

#: The dashboard rollups alone, also created by the ingest on files made before they existed.
#: Hours are read for the edges of a range (bucket before value); days for whole ranges, per value
#: (value before bucket: "per tenant, all time" needs no sort), with an index for short ranges.
_DASH_SUMS = ("cost_nano", "calls", "spans", "errors", "unpriced", "var_nano2", "requests")
_DASH_ALL_ADD = (
    "INSERT INTO dash_all (dim, service, value, " + ", ".join(_DASH_SUMS) + ") VALUES (NEW.dim, NEW.service, "
    "NEW.value, {values}) ON CONFLICT (dim, service, value) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _DASH_SUMS)
)
#: ``dash_all``: ``dash_day`` summed over every bucket (the "all" window, one row per value), kept equal to
#: it by triggers, so every path that changes ``dash_day`` (ingest, restatement's rebuild, retention)
#: keeps it right; a value whose last day row goes leaves it. Indexed by cost, so "the top 100
#: tenants of all time" reads 100 index entries instead of summing every day of every tenant.
DASH_ALL: tuple[str, ...] = (
    _DASH.format(name="dash_all", key="dim, value, service").replace("    bucket      INTEGER NOT NULL,\n", ""),
    "CREATE INDEX IF NOT EXISTS dash_all_cost ON dash_all (dim, service, cost_nano DESC, value)",
    "CREATE TRIGGER IF NOT EXISTS dash_all_ins AFTER INSERT ON dash_day BEGIN "
    + _DASH_ALL_ADD.format(values=", ".join(f"NEW.{c}" for c in _DASH_SUMS))
    + "; END",
    "CREATE TRIGGER IF NOT EXISTS dash_all_upd AFTER UPDATE ON dash_day BEGIN "
    + _DASH_ALL_ADD.format(values=", ".join(f"NEW.{c} - OLD.{c}" for c in _DASH_SUMS))
    + "; END",
    "CREATE TRIGGER IF NOT EXISTS dash_all_del AFTER DELETE ON dash_day BEGIN "
    "UPDATE dash_all SET " + ", ".join(f"{c} = {c} - OLD.{c}" for c in _DASH_SUMS)
    + " WHERE dim = OLD.dim AND service = OLD.service AND value = OLD.value; "
    "DELETE FROM dash_all WHERE dim = OLD.dim AND service = OLD.service AND value = OLD.value AND NOT EXISTS "
    "(SELECT 1 FROM dash_day WHERE dim = OLD.dim AND service = OLD.service AND value = OLD.value); END",
    # fully-loaded cost of a page of features over a long window: per feature, not per day, from the index
    # alone (with the cost in it: 100 features of a year were 36,500 lookups into the table, 30-75 ms)
    "CREATE INDEX IF NOT EXISTS loaded_day_feature_cost ON loaded_day (feature, bucket, cost_nano)",
    "DROP INDEX IF EXISTS loaded_day_feature",
)

DASH_TABLES: tuple[str, ...] = (
    _DASH.format(name="dash_hour", key="dim, service, bucket, value"),
    _DASH.format(name="dash_day", key="dim, service, value, bucket"),
    # a window's ranking by cost (value, cost per day) from the index alone: one entry per value and day
    # instead of a table lookup each (dash_day_bucket, its prefix, was that lookup; replaced)
    "CREATE INDEX IF NOT EXISTS dash_day_cost ON dash_day (dim, service, bucket, value, cost_nano)",
    "DROP INDEX IF EXISTS dash_day_bucket",
    *DASH_ALL,
)

DDL_V1: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
    # One row per span, priced. ``usage`` is a JSON array of the span's usage items, each with its
    # units, cost_nano, priced flag and the price version that priced it.
    """
    CREATE TABLE IF NOT EXISTS spans (
        span_id       TEXT PRIMARY KEY,
        parent_id     TEXT,
        request_id    TEXT    NOT NULL,
        feature       TEXT    NOT NULL,
        operation     TEXT,
        endpoint      TEXT,
        user_id       TEXT,
        start_ns      INTEGER NOT NULL,
        duration_ns   INTEGER NOT NULL,
        cpu_ns        INTEGER NOT NULL,
        error         INTEGER NOT NULL,
        error_type    TEXT,
        weight        REAL    NOT NULL,
        path          TEXT    NOT NULL,   -- JSON array of distinct features root..self
        usage         TEXT    NOT NULL,   -- JSON array of priced usage items
        cost_nano     INTEGER NOT NULL,   -- weighted direct cost of the priced items
        unpriced      INTEGER NOT NULL,   -- number of usage items with no price
        var_nano2     REAL    NOT NULL,
        price_version TEXT    NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS spans_request ON spans (request_id)",
    "CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns)",
    # One row per request (request_id), maintained incrementally at ingest.
    """
    CREATE TABLE IF NOT EXISTS requests (
        request_id   TEXT PRIMARY KEY,
        endpoint     TEXT,
        user_id      TEXT,
        root_feature TEXT,
        start_ns     INTEGER NOT NULL,
        end_ns       INTEGER NOT NULL,
        cost_nano    INTEGER NOT NULL DEFAULT 0,
        spans        INTEGER NOT NULL DEFAULT 0,
        errors       INTEGER NOT NULL DEFAULT 0,
        unpriced     INTEGER NOT NULL DEFAULT 0,
        var_nano2    REAL    NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX IF NOT EXISTS requests_start ON requests (start_ns)",
    "CREATE INDEX IF NOT EXISTS requests_cost ON requests (cost_nano)",
    _ROLLUP.format(name="rollup_minute"),
    _ROLLUP.format(name="rollup_hour"),
    _ROLLUP.format(name="rollup_day"),
    _LOADED.format(name="loaded_minute"),
    _LOADED.format(name="loaded_hour"),
    _LOADED.format(name="loaded_day"),
    *DASH_TABLES,
    # Usage that no price covered, aggregated by key, so totals can say what they leave out.
    """
    CREATE TABLE IF NOT EXISTS unpriced_usage (
        key          TEXT    NOT NULL,
        service      TEXT    NOT NULL DEFAULT '',
        feature      TEXT    NOT NULL,
        items        INTEGER NOT NULL DEFAULT 0,
        count        REAL    NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        bytes        INTEGER NOT NULL DEFAULT 0,
        first_ns     INTEGER NOT NULL,
        last_ns      INTEGER NOT NULL,
        PRIMARY KEY (key, service, feature)
    ) WITHOUT ROWID
    """,
    # Price book versions that priced stored rows (spans.price_version refers here).
    """
    CREATE TABLE IF NOT EXISTS price_versions (
        version    TEXT PRIMARY KEY,
        created_ns INTEGER NOT NULL,
        source     TEXT NOT NULL,
        book       TEXT NOT NULL       -- JSON of the entries
    )
    """,
    # Kafka offsets reached, written in the same transaction as the spans (effectively once).
    """
    CREATE TABLE IF NOT EXISTS consumer_offsets (
        group_id    TEXT    NOT NULL,
        topic       TEXT    NOT NULL,
        partition   INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        updated_ns  INTEGER NOT NULL,
        PRIMARY KEY (group_id, topic, partition)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS dead_letters (
        id          INTEGER PRIMARY KEY,
        received_ns INTEGER NOT NULL,
        topic       TEXT    NOT NULL,
        partition   INTEGER NOT NULL,
        "offset"    INTEGER NOT NULL,
        key         BLOB,
        value       BLOB,
        reason      TEXT    NOT NULL,
        UNIQUE (topic, partition, "offset")
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS restatements (
        id          INTEGER PRIMARY KEY,
        created_ns  INTEGER NOT NULL,
        who         TEXT    NOT NULL,
        why         TEXT    NOT NULL,
        start_date  TEXT    NOT NULL,
        end_date    TEXT    NOT NULL,
        factor      REAL,
        factors     TEXT    NOT NULL DEFAULT '{}',  -- JSON {service: factor}
        undone_ns   INTEGER,
        spans_changed INTEGER NOT NULL DEFAULT 0,   -- raw spans rewritten
        delta_nano  INTEGER NOT NULL DEFAULT 0      -- change of the daily rollups' total (new - old)
    )
    """,
    # Pre- and post-restatement values, so an undo restores every total exactly (and, for a row that
    # changed again since, removes only the restatement's own delta).
    """
    CREATE TABLE IF NOT EXISTS restatement_undo (
        restatement_id INTEGER NOT NULL,
        tbl            TEXT    NOT NULL,
        row_key        TEXT    NOT NULL,   -- JSON of the row's primary key
        old_cost_nano  INTEGER NOT NULL,
        old_extra      TEXT,               -- JSON of other columns changed (e.g. spans.usage)
        new_cost_nano  INTEGER NOT NULL DEFAULT 0,
        old_var_nano2  REAL    NOT NULL DEFAULT 0,
        new_var_nano2  REAL    NOT NULL DEFAULT 0,
        PRIMARY KEY (restatement_id, tbl, row_key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS alert_rules (
        id           INTEGER PRIMARY KEY,
        name         TEXT    NOT NULL UNIQUE,
        kind         TEXT    NOT NULL,      -- threshold | budget | rate
        scope        TEXT    NOT NULL,      -- feature | user | endpoint | total
        scope_value  TEXT    NOT NULL DEFAULT '',
        threshold_nano INTEGER,
        window_minutes INTEGER,
        cooldown_minutes INTEGER NOT NULL DEFAULT 60,
        params       TEXT    NOT NULL DEFAULT '{}',  -- JSON: budget period/percentages, rate factor ...
        webhook      TEXT,
        webhook_format TEXT  NOT NULL DEFAULT 'slack',
        enabled      INTEGER NOT NULL DEFAULT 1,
        created_ns   INTEGER NOT NULL,
        updated_ns   INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS alert_state (
        rule_id      INTEGER NOT NULL,
        state_key    TEXT    NOT NULL DEFAULT '',  -- e.g. budget period + percentage
        last_fired_ns INTEGER,
        PRIMARY KEY (rule_id, state_key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS alert_events (
        id          INTEGER PRIMARY KEY,
        rule_id     INTEGER NOT NULL,
        rule_name   TEXT    NOT NULL,
        fired_ns    INTEGER NOT NULL,
        scope       TEXT    NOT NULL,
        scope_value TEXT    NOT NULL,
        value_nano  INTEGER NOT NULL,
        threshold_nano INTEGER,
        message     TEXT    NOT NULL,
        delivery    TEXT    NOT NULL DEFAULT 'pending'  -- pending | sending | delivered | failed | none
    )
    """,
    "CREATE INDEX IF NOT EXISTS alert_events_fired ON alert_events (fired_ns)",
    """
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        id          INTEGER PRIMARY KEY,
        event_id    INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        at_ns       INTEGER NOT NULL,
        status      INTEGER,
        error       TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reconciliations (
        id          INTEGER PRIMARY KEY,
        created_ns  INTEGER NOT NULL,
        start_date  TEXT    NOT NULL,
        end_date    TEXT    NOT NULL,
        report      TEXT    NOT NULL   -- JSON of ReconciliationReport.to_dict()
    )
    """,
)

#: Version 2: a restatement row says what kind it is (``restate``: a calibration factor; ``reprice``:
#: stored usage priced again from a price book), which features it was limited to, and its detail
#: (a reprice's per-service totals before and after, as JSON).
DDL_V2: tuple[str, ...] = (
    "ALTER TABLE restatements ADD COLUMN kind TEXT NOT NULL DEFAULT 'restate'",
    "ALTER TABLE restatements ADD COLUMN features TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE restatements ADD COLUMN detail TEXT NOT NULL DEFAULT '{}'",
)

#: Version 3: ``dash_names``, the names ``dash_all`` holds (one row per dimension and value, kept by triggers
#: on ``dash_all``: a value's name arrives with its first all-time row and leaves with its last), and
#: ``dash_names_fts``, a trigram index of them (FTS5, external content), so a search of 100,000 tenants'
#: names for a substring of 3 or more characters reads the few names that contain it instead of scanning
#: every name. Filled from the ``dash_all`` rows the file holds.
DDL_V3: tuple[str, ...] = (
    *DASH_TABLES,  # the triggers below are on dash_all, which a file from before it may lack yet
    """
    CREATE TABLE IF NOT EXISTS dash_names (
        id    INTEGER PRIMARY KEY,
        dim   TEXT NOT NULL,
        value TEXT NOT NULL,
        UNIQUE (dim, value)
    )
    """,
    "CREATE VIRTUAL TABLE IF NOT EXISTS dash_names_fts USING fts5(value, content='dash_names', content_rowid='id',"
    " tokenize='trigram')",
    "CREATE TRIGGER IF NOT EXISTS dash_names_fts_ins AFTER INSERT ON dash_names BEGIN"
    " INSERT INTO dash_names_fts (rowid, value) VALUES (NEW.id, NEW.value); END",
    "CREATE TRIGGER IF NOT EXISTS dash_names_fts_del AFTER DELETE ON dash_names BEGIN"
    " INSERT INTO dash_names_fts (dash_names_fts, rowid, value) VALUES ('delete', OLD.id, OLD.value); END",
    "CREATE TRIGGER IF NOT EXISTS dash_names_add AFTER INSERT ON dash_all WHEN NEW.service = '' BEGIN"
    " INSERT OR IGNORE INTO dash_names (dim, value) VALUES (NEW.dim, NEW.value); END",
    "CREATE TRIGGER IF NOT EXISTS dash_names_drop AFTER DELETE ON dash_all WHEN OLD.service = '' BEGIN"
    " DELETE FROM dash_names WHERE dim = OLD.dim AND value = OLD.value; END",
    "INSERT OR IGNORE INTO dash_names (dim, value) SELECT dim, value FROM dash_all WHERE service = ''",
)

#: ``dash_block``: each value's cost (the ``service = ''`` rows of ``dash_day``) summed over whole weeks (``days`` = 7)
#: and whole 28-day blocks (``days`` = 28, four of those weeks), both counted from Monday 1970-01-05 (epoch second
#: ``BLOCK_ORIGIN``). A window of days ranks its values from the blocks that fit in it and the day rows of its
#: edges: 90 days of 10,000 features are about 30,000 rows to sum instead of 83,000. Kept by triggers on
#: ``dash_day``, like ``dash_all``, so ingest, restatement's rebuild, repricing and retention keep it exact; a
#: block row leaves with its last day row. Only what ranking needs: the cost.
BLOCK_ORIGIN = 345_600
BLOCK_DAYS = (7, 28)


def _block(col: str, days: int) -> str:
    """The start (epoch s) of the ``days``-day block holding bucket ``col`` (SQLite's % keeps the sign: made >= 0)."""
    size = days * 86_400
    return f"({col} - ((({col} - {BLOCK_ORIGIN}) % {size}) + {size}) % {size})"


DASH_BLOCKS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS dash_block (
        dim       TEXT    NOT NULL,
        days      INTEGER NOT NULL,   -- 7 | 28
        bucket    INTEGER NOT NULL,   -- the block's first day (epoch s)
        value     TEXT    NOT NULL,
        cost_nano INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (dim, days, bucket, value)
    ) WITHOUT ROWID
    """,
    "CREATE TRIGGER IF NOT EXISTS dash_block_ins AFTER INSERT ON dash_day WHEN NEW.service = '' BEGIN "
    "INSERT INTO dash_block (dim, days, bucket, value, cost_nano) VALUES "
    + ", ".join(f"(NEW.dim, {d}, {_block('NEW.bucket', d)}, NEW.value, NEW.cost_nano)" for d in BLOCK_DAYS)
    + " ON CONFLICT (dim, days, bucket, value) DO UPDATE SET cost_nano = cost_nano + excluded.cost_nano; END",
    # an update of a dash_day row changes its sums, never its key (as dash_all_upd assumes)
    "CREATE TRIGGER IF NOT EXISTS dash_block_upd AFTER UPDATE OF cost_nano ON dash_day"
    " WHEN NEW.service = '' AND NEW.cost_nano != OLD.cost_nano BEGIN "
    + " ".join(
        f"UPDATE dash_block SET cost_nano = cost_nano + NEW.cost_nano - OLD.cost_nano WHERE dim = NEW.dim"
        f" AND days = {d} AND bucket = {_block('NEW.bucket', d)} AND value = NEW.value;"
        for d in BLOCK_DAYS
    )
    + " END",
    "CREATE TRIGGER IF NOT EXISTS dash_block_del AFTER DELETE ON dash_day WHEN OLD.service = '' BEGIN "
    + " ".join(
        f"UPDATE dash_block SET cost_nano = cost_nano - OLD.cost_nano WHERE dim = OLD.dim"
        f" AND days = {d} AND bucket = {_block('OLD.bucket', d)} AND value = OLD.value;"
        f" DELETE FROM dash_block WHERE dim = OLD.dim AND days = {d} AND bucket = {_block('OLD.bucket', d)}"
        f" AND value = OLD.value AND NOT EXISTS (SELECT 1 FROM dash_day WHERE dim = OLD.dim AND service = ''"
        f" AND value = OLD.value AND bucket >= {_block('OLD.bucket', d)}"
        f" AND bucket < {_block('OLD.bucket', d)} + {d * 86_400});"
        for d in BLOCK_DAYS
    )
    + " END",
)

#: Version 4: ``dash_block`` (above), filled from the ``dash_day`` rows the file holds.
DDL_V4: tuple[str, ...] = (
    *DASH_BLOCKS,
    "DELETE FROM dash_block",
    *(
        f"INSERT INTO dash_block (dim, days, bucket, value, cost_nano) SELECT dim, {d}, {_block('bucket', d)}, value,"
        f" sum(cost_nano) FROM dash_day WHERE service = '' GROUP BY dim, {_block('bucket', d)}, value"
        for d in BLOCK_DAYS
    ),
)

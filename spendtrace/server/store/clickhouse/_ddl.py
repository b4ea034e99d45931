"""The ClickHouse schema and its versioned migrations (``schema_migrations`` records the versions applied).

Layout (same conventions as the SQLite schema: integer nano-dollars, bucket = epoch seconds of the
bucket's start, '' for "no value" in rollup dimensions, the ``service = ''`` rollup row carries the
span-level totals and rows with a service name that service's share):

- ``spans``: one row per stored span, a MergeTree partitioned by month of ``start_ns`` and ordered by
  ``start_ns`` (the raw reads are time ranges, newest first); ``request_id`` and ``span_id`` have
  bloom-filter skip indexes (a request tree and the ingest's "already stored?" check read a few
  granules). ``batch`` is the deduplication token of the batch that stored the row.
- Materialized views turn every inserted block of ``spans`` into rollup rows, in ClickHouse:
  ``spans`` -> ``span_rows`` (Null engine: one row per span and per (span, service), minute bucket)
  -> ``rollup_minute`` / ``rollup_hour`` / ``rollup_day``; ``spans`` -> ``loaded_rows`` (Null: one row
  per distinct feature on the span's path) -> ``loaded_*``; ``spans`` -> ``requests`` and
  ``unpriced_usage``. Targets are AggregatingMergeTree with ``SimpleAggregateFunction`` columns.
  Request counts come from the ``new_request`` column of ``spans`` (1 on the head span of a request
  not stored before, set by ``_ingest`` as the SQLite writer does) summed into ``requests``: each
  request counted once, exact, with the SQLite backend's semantics. (A ``uniq`` state per rollup row
  was tried first: merging the states took 30-50 ms of a 1M-span dashboard read whose sums took 3 ms.)
  Parts merge lazily: **every read aggregates** (``sum`` ... ``GROUP BY``).
- Every MergeTree that an ingest writes (``spans`` and every view's target) has
  ``non_replicated_deduplication_window`` set, so an insert repeated with the same
  ``insert_deduplication_token`` is dropped by each table on its own (see ``_ingest``).
- ``dim_all`` (v4): the day tables summed over every bucket, per (dimension, service, value), for the
  dashboard's "all" window; fed by views on ``rollup_day`` / ``loaded_day`` (so deltas inserted there
  reach it too), deduplicated like every target; retention negates the day rows it deletes.
- ``dim_days`` (v6): the days each dimension value has span rows in ``rollup_day``, by value (first and
  last day of a page of values by key); fed by a view on ``rollup_day``, its old days go with retention.
- ``request_index`` (v8): ``requests`` again, keyed by (``request_day``, ``request_id``), the day the request
  was first stored (fixed: ``_ingest`` stamps it on every span), so the newest requests are a key range.
- ``batch_ranges`` (v3): each partition's range of the batch being written, recorded before its rows
  (the "begun" state of the storage interface's contract 4.); ``consumer_offsets`` is the "done".
- Restatements and their undo insert delta rows into the rollup targets and ``requests``
  (``restatement_deltas`` keeps them, so an undo inserts their negation): exact, no mutation of a
  rollup; raw spans are rewritten by a mutation (``restatement_spans`` keeps their old values).
"""

from __future__ import annotations

__all__ = [
    "CLAIM_WINDOW",
    "DEDUP_WINDOW",
    "DIM_ALL_SELECT",
    "DIM_DAYS_SELECT",
    "DIM_LOADED_SELECT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
]

#: Insert blocks each table remembers for deduplication (per table: ClickHouse's own default for
#: replicated tables is 1000 on recent versions; a worker replays at most its last few batches).
DEDUP_WINDOW = 1000
_DEDUP = f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
_MONTH = "toYYYYMM(toDateTime(intDiv({col}, {div}), 'UTC'))"

_SUM = "SimpleAggregateFunction(sum, {t})"

_SPANS = f"""
CREATE TABLE IF NOT EXISTS spans (
    span_id       String,
    parent_id     Nullable(String),
    request_id    String,
    feature       LowCardinality(String),
    operation     Nullable(String),
    endpoint      Nullable(String),
    user_id       Nullable(String),
    start_ns      Int64,
    duration_ns   Int64,
    cpu_ns        Int64,
    error         UInt8,
    error_type    Nullable(String),
    weight        Float64,
    path          String,
    usage         String,
    cost_nano     Int64,
    unpriced      Int64,
    var_nano2     Float64,
    price_version LowCardinality(String),
    batch         String DEFAULT '',
    new_request   UInt8 DEFAULT 0,
    INDEX spans_request request_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX spans_id span_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY {_MONTH.format(col="start_ns", div=1_000_000_000)}
ORDER BY (start_ns, span_id)
{_DEDUP}
"""

#: One row per span (service '') and per (span, service): the minute rollups' input, never stored.
_SPAN_ROWS = """
CREATE TABLE IF NOT EXISTS span_rows (
    bucket Int64, feature String, user_id String, endpoint String, service String,
    cost_nano Int64, calls Float64, spans Int64, errors Int64, unpriced Int64, var_nano2 Float64,
    requests Int64
) ENGINE = Null
"""

# A span's '' row (its totals) and one row per usage item (its service's share: cost, unpriced); the
# rollup views sum them per service. A sampled span's per-service variance w*(w-1)*su^2 (su: the
# service's unweighted cost in the span, as in prepare) is spread over its items as w*(w-1)*u*su.
_SPAN_ROWS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS span_rows_mv TO span_rows AS
SELECT bucket, feature, user_id, endpoint, r.1 AS service, r.2 AS cost_nano, r.3 AS calls, r.4 AS spans,
    r.5 AS errors, r.6 AS unpriced, r.7 AS var_nano2, if(r.1 = '', toInt64(new_request), 0) AS requests
FROM (
    WITH JSONExtract(usage,
            'Array(Tuple(service String, cost_nano Int64, unit_cost_nano Nullable(Int64), priced Bool))') AS items
    SELECT intDiv(start_ns, 60000000000) * 60 AS bucket, toString(feature) AS feature,
        ifNull(user_id, '') AS user_id, ifNull(endpoint, '') AS endpoint, new_request,
        arrayJoin(arrayConcat(
            [tuple('', cost_nano, weight, toInt64(1), toInt64(error), unpriced, var_nano2)],
            arrayMap(i -> tuple(
                i.service, i.cost_nano, toFloat64(0), toInt64(0), toInt64(0), toInt64(NOT i.priced),
                if(weight = 1, 0.,
                   weight * (weight - 1.) * toFloat64(ifNull(i.unit_cost_nano, 0))
                   * toFloat64(arraySum(arrayMap(j -> if(j.service = i.service, ifNull(j.unit_cost_nano, 0), 0),
                                                 items))))
            ), items)
        )) AS r
    FROM spans
)
"""

_ROLLUP = f"""
CREATE TABLE IF NOT EXISTS rollup_{{g}} (
    bucket    Int64,
    feature   LowCardinality(String),
    user_id   String,
    endpoint  LowCardinality(String),
    service   LowCardinality(String),
    cost_nano {_SUM.format(t="Int64")},
    calls     {_SUM.format(t="Float64")},
    spans     {_SUM.format(t="Int64")},
    errors    {_SUM.format(t="Int64")},
    unpriced  {_SUM.format(t="Int64")},
    var_nano2 {_SUM.format(t="Float64")},
    requests  {_SUM.format(t="Int64")}
) ENGINE = AggregatingMergeTree
PARTITION BY {{part}}
ORDER BY (service, bucket, feature, user_id, endpoint)
{_DEDUP}
"""

_ROLLUP_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_{g}_mv TO rollup_{g} AS
SELECT intDiv(bucket, {size}) * {size} AS bucket, feature, user_id, endpoint, service,
    sum(cost_nano) AS cost_nano, sum(calls) AS calls, sum(spans) AS spans, sum(errors) AS errors,
    sum(unpriced) AS unpriced, sum(var_nano2) AS var_nano2, sum(requests) AS requests
FROM span_rows GROUP BY bucket, feature, user_id, endpoint, service
"""

_LOADED_ROWS = """
CREATE TABLE IF NOT EXISTS loaded_rows (
    bucket Int64, feature String, cost_nano Int64, calls Float64, spans Int64, var_nano2 Float64
) ENGINE = Null
"""

# fully-loaded: a span's cost added once to every distinct feature on its path (and its own)
_LOADED_ROWS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS loaded_rows_mv TO loaded_rows AS
SELECT intDiv(start_ns, 60000000000) * 60 AS bucket, f AS feature, cost_nano, weight AS calls,
    toInt64(1) AS spans, var_nano2
FROM spans ARRAY JOIN arrayDistinct(arrayPushBack(JSONExtract(path, 'Array(String)'), toString(feature))) AS f
"""

_LOADED = f"""
CREATE TABLE IF NOT EXISTS loaded_{{g}} (
    bucket    Int64,
    feature   LowCardinality(String),
    cost_nano {_SUM.format(t="Int64")},
    calls     {_SUM.format(t="Float64")},
    spans     {_SUM.format(t="Int64")},
    var_nano2 {_SUM.format(t="Float64")}
) ENGINE = AggregatingMergeTree
PARTITION BY {{part}}
ORDER BY (bucket, feature)
{_DEDUP}
"""

_LOADED_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS loaded_{g}_mv TO loaded_{g} AS
SELECT intDiv(bucket, {size}) * {size} AS bucket, feature, sum(cost_nano) AS cost_nano, sum(calls) AS calls,
    sum(spans) AS spans, sum(var_nano2) AS var_nano2
FROM loaded_rows GROUP BY bucket, feature
"""

def _request_columns(names: str) -> str:
    """A request's merged columns after its id; ``names``: the endpoint and root feature type (v7: a dictionary)."""
    any_of = "SimpleAggregateFunction(any, {})"
    return f"""root_endpoint {any_of.format(names)},
    endpoint      {any_of.format(names)},
    root_user_id  {any_of.format("Nullable(String)")},
    user_id       {any_of.format("Nullable(String)")},
    root_feature  {any_of.format(names)},
    start_ns      SimpleAggregateFunction(min, Int64),
    end_ns        SimpleAggregateFunction(max, Int64),
    cost_nano     {_SUM.format(t="Int64")},
    spans         {_SUM.format(t="Int64")},
    errors        {_SUM.format(t="Int64")},
    unpriced      {_SUM.format(t="Int64")},
    var_nano2     {_SUM.format(t="Float64")}"""


_REQUESTS = f"""
CREATE TABLE IF NOT EXISTS requests (
    request_id    String,
    {_request_columns("Nullable(String)")}
) ENGINE = AggregatingMergeTree
ORDER BY request_id
{_DEDUP}
"""

_REQUESTS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS requests_mv TO requests AS
SELECT rid AS request_id,
    anyIf(e, root) AS root_endpoint, any(e) AS endpoint, anyIf(u, root) AS root_user_id, any(u) AS user_id,
    anyIf(f, root) AS root_feature, min(t0) AS start_ns, max(t1) AS end_ns, sum(c) AS cost_nano,
    toInt64(count()) AS spans, toInt64(sum(err)) AS errors, sum(n) AS unpriced, sum(v) AS var_nano2
FROM (
    SELECT request_id AS rid, endpoint AS e, user_id AS u, toNullable(toString(feature)) AS f,
        parent_id IS NULL AS root, start_ns AS t0, start_ns + duration_ns AS t1, cost_nano AS c, error AS err,
        unpriced AS n, var_nano2 AS v
    FROM spans
)
GROUP BY rid
"""

#: one ``requests`` / ``request_index`` row per request of an inserted block of spans (v8: with its day)
_REQUEST_ROWS = """
SELECT rid AS request_id, min(day) AS first_day,
    anyIf(e, root) AS root_endpoint, any(e) AS endpoint, anyIf(u, root) AS root_user_id, any(u) AS user_id,
    anyIf(f, root) AS root_feature, min(t0) AS start_ns, max(t1) AS end_ns, sum(c) AS cost_nano,
    toInt64(count()) AS spans, toInt64(sum(err)) AS errors, sum(n) AS unpriced, sum(v) AS var_nano2
FROM (
    SELECT request_id AS rid, request_day AS day, endpoint AS e, user_id AS u, toNullable(toString(feature)) AS f,
        parent_id IS NULL AS root, start_ns AS t0, start_ns + duration_ns AS t1, cost_nano AS c, error AS err,
        unpriced AS n, var_nano2 AS v
    FROM spans
)
GROUP BY rid
"""
_REQUESTS_MV_V8 = "CREATE MATERIALIZED VIEW IF NOT EXISTS requests_mv TO requests AS " + _REQUEST_ROWS
#: ``request_index`` rows: the same, keyed by the day (one per request: every span of a batch carries its day)
_INDEX_SELECT = (
    "SELECT first_day AS request_day, request_id, root_endpoint, endpoint, root_user_id, user_id, root_feature,"
    " start_ns, end_ns, cost_nano, spans, errors, unpriced, var_nano2 FROM (" + _REQUEST_ROWS + ")"
)

_UNPRICED = f"""
CREATE TABLE IF NOT EXISTS unpriced_usage (
    key           String,
    service       LowCardinality(String),
    feature       LowCardinality(String),
    items         {_SUM.format(t="Int64")},
    count         {_SUM.format(t="Float64")},
    input_tokens  {_SUM.format(t="Int64")},
    output_tokens {_SUM.format(t="Int64")},
    bytes         {_SUM.format(t="Int64")},
    first_ns      SimpleAggregateFunction(min, Int64),
    last_ns       SimpleAggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (key, service, feature)
{_DEDUP}
"""

_UNPRICED_ITEM = (
    "Array(Tuple(key String, service String, count Float64, input_tokens Int64, output_tokens Int64, "
    "bytes Int64, priced Bool))"
)
_UNPRICED_MV = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS unpriced_usage_mv TO unpriced_usage AS
SELECT i.key AS key, i.service AS service, f AS feature, toInt64(count()) AS items,
    sum(i.count) AS count, sum(i.input_tokens) AS input_tokens, sum(i.output_tokens) AS output_tokens,
    sum(i.bytes) AS bytes, min(t) AS first_ns, max(t) AS last_ns
FROM (
    SELECT arrayJoin(JSONExtract(usage, '{_UNPRICED_ITEM}')) AS i, toString(feature) AS f, start_ns AS t FROM spans
)
WHERE NOT i.priced
GROUP BY i.key, i.service, f
"""

_GRAINS = (
    ("minute", 60, "toYYYYMMDD(toDateTime(bucket, 'UTC'))"),
    ("hour", 3600, "toYYYYMM(toDateTime(bucket, 'UTC'))"),
    ("day", 86400, "toYear(toDateTime(bucket, 'UTC'))"),
)

_V1: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS meta (key String, value String, updated_ns Int64)
    ENGINE = ReplacingMergeTree(updated_ns) ORDER BY key
    """,
    _SPANS,
    *(_ROLLUP.format(g=g, part=part) for g, _, part in _GRAINS),
    *(_LOADED.format(g=g, part=part) for g, _, part in _GRAINS),
    _REQUESTS,
    _UNPRICED,
    # the Null inputs and their views; the targets exist first, so no view misses a block
    _SPAN_ROWS,
    _LOADED_ROWS,
    *(_ROLLUP_MV.format(g=g, size=size) for g, size, _ in _GRAINS),
    *(_LOADED_MV.format(g=g, size=size) for g, size, _ in _GRAINS),
    _SPAN_ROWS_MV,
    _LOADED_ROWS_MV,
    _REQUESTS_MV,
    _UNPRICED_MV,
    """
    CREATE TABLE IF NOT EXISTS price_versions (version String, created_ns Int64, source String, book String)
    ENGINE = ReplacingMergeTree ORDER BY version
    """,
    # Kafka offsets reached: written after the batch's spans (see _ingest); the newest row wins.
    """
    CREATE TABLE IF NOT EXISTS consumer_offsets (
        group_id String, topic String, partition Int32, next_offset Int64, updated_ns Int64
    ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY (group_id, topic, partition)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS dead_letters (
        received_ns Int64, topic String, partition Int32, offset Int64,
        key Nullable(String), value Nullable(String), reason String
    ) ENGINE = ReplacingMergeTree ORDER BY (topic, partition, offset)
    {_DEDUP}
    """,
    """
    CREATE TABLE IF NOT EXISTS restatements (
        id UInt64, created_ns Int64, who String, why String, start_date String, end_date String,
        factor Nullable(Float64), factors String, undone_ns Nullable(Int64), spans_changed Int64,
        delta_nano Int64, version Int64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY id
    """,
    # the spans a restatement rewrote, old and new: its undo puts back those still as it left them
    """
    CREATE TABLE IF NOT EXISTS restatement_spans (
        restatement_id UInt64, span_id String, start_ns Int64, old_usage String, old_cost_nano Int64,
        old_var_nano2 Float64, new_usage String, new_cost_nano Int64, new_var_nano2 Float64
    ) ENGINE = MergeTree ORDER BY (restatement_id, span_id)
    """,
    # the delta rows a restatement inserted, per table: its undo inserts their negation
    """
    CREATE TABLE IF NOT EXISTS restatement_deltas (
        restatement_id UInt64, tbl String, row_key String, cost_nano Int64, var_nano2 Float64
    ) ENGINE = MergeTree ORDER BY (restatement_id, tbl)
    """,
)

#: Version 2: a restatement says its kind (``restate`` | ``reprice``), features and detail (JSON); a
#: reprice keeps the delta rows it inserted (``reprice_deltas``: every value column, as JSON) and the
#: spans it rewrote (``reprice_spans``), so its undo inserts the negation and puts the spans back.
_V2: tuple[str, ...] = (
    "ALTER TABLE restatements ADD COLUMN IF NOT EXISTS kind String DEFAULT 'restate'",
    "ALTER TABLE restatements ADD COLUMN IF NOT EXISTS features String DEFAULT '[]'",
    "ALTER TABLE restatements ADD COLUMN IF NOT EXISTS detail String DEFAULT '{}'",
    """
    CREATE TABLE IF NOT EXISTS reprice_deltas (
        restatement_id UInt64, tbl String, row_key String, vals String
    ) ENGINE = MergeTree ORDER BY (restatement_id, tbl)
    """,
    """
    CREATE TABLE IF NOT EXISTS reprice_spans (
        restatement_id UInt64, span_id String, start_ns Int64, old_usage String, old_cost_nano Int64,
        old_unpriced Int64, old_var_nano2 Float64, old_price_version String, new_usage String, new_cost_nano Int64,
        new_unpriced Int64, new_var_nano2 Float64
    ) ENGINE = MergeTree ORDER BY (restatement_id, span_id)
    """,
)

# v3: the ranges a batch was begun with, per partition (contract 4. of the storage interface): written
# before the batch's rows; the batch is done once ``consumer_offsets`` reaches the range's end.
_V3: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS batch_ranges (
        group_id String, topic String, partition Int32, first_offset Int64, next_offset Int64,
        token String, updated_ns Int64
    ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY (group_id, topic, partition)
    """,
)

#: the all-time figures per dimension value: what ``rollup_day`` / ``loaded_day`` hold summed over every bucket
_DIM_ALL = f"""
CREATE TABLE IF NOT EXISTS dim_all (
    dim       LowCardinality(String),
    service   LowCardinality(String),
    value     String,
    cost_nano {_SUM.format(t="Int64")},
    calls     {_SUM.format(t="Float64")},
    spans     {_SUM.format(t="Int64")},
    errors    {_SUM.format(t="Int64")},
    unpriced  {_SUM.format(t="Int64")},
    var_nano2 {_SUM.format(t="Float64")},
    requests  {_SUM.format(t="Int64")}
) ENGINE = AggregatingMergeTree
ORDER BY (dim, service, value)
{_DEDUP}
"""

#: ``rollup_day`` rows, each under its three dimensions (the day rollups' own inserts and delta rows)
DIM_ALL_SELECT = """
SELECT d.1 AS dim, service, d.2 AS value, sum(cost_nano) AS cost_nano, sum(calls) AS calls, sum(spans) AS spans,
    sum(errors) AS errors, sum(unpriced) AS unpriced, sum(var_nano2) AS var_nano2, sum(requests) AS requests
FROM rollup_day
ARRAY JOIN [('feature', toString(feature)), ('user_id', user_id), ('endpoint', toString(endpoint))] AS d
{where}GROUP BY dim, service, value
"""

#: ``loaded_day`` rows under dimension ``loaded`` (fully-loaded cost per feature)
DIM_LOADED_SELECT = """
SELECT 'loaded' AS dim, '' AS service, toString(feature) AS value, sum(cost_nano) AS cost_nano,
    sum(calls) AS calls, sum(spans) AS spans, toInt64(0) AS errors, toInt64(0) AS unpriced,
    sum(var_nano2) AS var_nano2, toInt64(0) AS requests
FROM loaded_day {where}GROUP BY value
"""

# v4: ``dim_all``, the "all" window of the dashboard per (dimension, value, service) without summing every
# day: fed by views on the day tables themselves, so every row those get (an ingest's, a restatement's or
# a reprice's delta, an undo's negation) reaches it under the same deduplication token; retention inserts
# the negation of the day rows it is about to delete (``_admin.retire_all``). Filled from the day tables
# the migration finds (workers stopped: a block stored between the view's creation and the fill would count
# twice).
_V4: tuple[str, ...] = (
    _DIM_ALL,
    "CREATE MATERIALIZED VIEW IF NOT EXISTS dim_all_mv TO dim_all AS " + DIM_ALL_SELECT.format(where=""),
    "CREATE MATERIALIZED VIEW IF NOT EXISTS dim_loaded_mv TO dim_all AS " + DIM_LOADED_SELECT.format(where=""),
    "INSERT INTO dim_all " + DIM_ALL_SELECT.format(where=""),
    "INSERT INTO dim_all " + DIM_LOADED_SELECT.format(where=""),
)

#: Blocks the claim tables remember for deduplication: a claim whose token fell out of this window
#: (10,000 later claims while its caller was between its read and its insert) could be taken twice.
CLAIM_WINDOW = 10_000
_CLAIM_DEDUP = f"SETTINGS non_replicated_deduplication_window = {CLAIM_WINDOW}"

# v5: alert state and reconciliation records in ClickHouse (``_alerts``, ``_reconcile``). ClickHouse has
# no transaction, so every "exactly one caller" step is a *claim*: one insert whose
# ``insert_deduplication_token`` names what is claimed (a rule's next firing after the one it saw, an event
# id, an event's delivery), carrying a random nonce; the table keeps the first block with that token and
# drops the others (the deduplication log is checked and the part committed under one lock), so reading the
# row back tells each caller whether its nonce won.
_V5: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS alert_rules (
        id UInt64, name String, kind String, scope String, scope_value String, threshold_nano Nullable(Int64),
        window_minutes Nullable(Int64), cooldown_minutes Int64, params String, webhook Nullable(String),
        webhook_format String, enabled UInt8, created_ns Int64, updated_ns Int64, deleted UInt8 DEFAULT 0
    ) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY id
    """,
    f"""
    CREATE TABLE IF NOT EXISTS alert_claims (
        rule_id UInt64, claim String, nonce String, state_key String, fired_ns Int64, at_ns Int64
    ) ENGINE = MergeTree ORDER BY (rule_id, claim)
    {_CLAIM_DEDUP}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS alert_events (
        id UInt64, rule_id UInt64, rule_name String, fired_ns Int64, scope String, scope_value String,
        value_nano Int64, threshold_nano Nullable(Int64), message String, nonce String
    ) ENGINE = MergeTree ORDER BY id
    {_CLAIM_DEDUP}
    """,
    """
    CREATE TABLE IF NOT EXISTS alert_deliveries (
        event_id UInt64, ver Int64, attempt Nullable(Int64), at_ns Int64, status Nullable(Int64),
        error Nullable(String), final Nullable(String)
    ) ENGINE = MergeTree ORDER BY (event_id, ver)
    """,
    """
    CREATE TABLE IF NOT EXISTS reconciliations (
        id UInt64, created_ns Int64, start_date String, end_date String, report String, nonce String
    ) ENGINE = MergeTree ORDER BY id
    """ + _CLAIM_DEDUP,
    """
    CREATE TABLE IF NOT EXISTS ce_cache (
        start_date String, end_date String, group_by String, fetched_ns Int64, pages String, ver Int64
    ) ENGINE = ReplacingMergeTree(ver) ORDER BY (start_date, end_date, group_by)
    """,
)

#: ``rollup_day``'s span rows, one per dimension value and day (a restatement's delta rows give the same keys again)
DIM_DAYS_SELECT = """
SELECT DISTINCT d.1 AS dim, d.2 AS value, bucket
FROM rollup_day
ARRAY JOIN [('feature', toString(feature)), ('user_id', user_id), ('endpoint', toString(endpoint))] AS d
WHERE service = ''
"""

# v6: ``dim_days``, the days each dimension value has span rows in ``rollup_day``, ordered by value, so the
# first and last day of a page of values (``/aggregate/*?limit=N``'s first_seen / last_seen) are key reads
# instead of a scan of every day row. Rows repeat until parts merge (ReplacingMergeTree; a repeat changes no
# min or max, so the fill may overlap the view). Retention deletes its old days with the day tables; readers
# also ignore days before the day rollups' first, so a read between those deletes is exact too.
_V6: tuple[str, ...] = (
    f"""
    CREATE TABLE IF NOT EXISTS dim_days (
        dim    LowCardinality(String),
        value  String,
        bucket Int64
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYear(toDateTime(bucket, 'UTC'))
    ORDER BY (dim, value, bucket)
    {_DEDUP}
    """,
    "CREATE MATERIALIZED VIEW IF NOT EXISTS dim_days_mv TO dim_days AS " + DIM_DAYS_SELECT,
    "INSERT INTO dim_days " + DIM_DAYS_SELECT,
)

# v7: the request list's endpoint and root feature columns as LowCardinality. The page of newest or costliest
# requests is one ``FINAL`` scan of ``requests`` (the order needs each request's merged start and cost), and
# those strings were most of what it read: at 5,000,000 spans (1.3 M requests) 49 -> 39 ms. A few thousand
# endpoints and features suit a dictionary; tenants (100,000 here) do not, and stay plain strings (LowCardinality
# made that read slower). The ALTER rewrites the columns' parts as a mutation in the background; reads stay exact
# meanwhile.
_V7: tuple[str, ...] = (
    "ALTER TABLE requests"
    + ",".join(
        f" MODIFY COLUMN {col} SimpleAggregateFunction(any, LowCardinality(Nullable(String)))"
        for col in ("root_endpoint", "endpoint", "root_feature")
    ),
)

#: the UTC day (epoch seconds of its start) of a ``start_ns``, in SQL
_DAY_OF = "intDiv({col}, 86400000000000) * 86400"

#: ``requests`` rows as ``request_index`` rows, one per request, on the day of its first start (the v8 fill)
_INDEX_FILL = f"""
INSERT INTO request_index
SELECT {_DAY_OF.format(col="min(start_ns)")} AS request_day, request_id,
    any(root_endpoint), any(endpoint), any(root_user_id), any(user_id), any(root_feature), min(start_ns),
    max(end_ns), sum(cost_nano), sum(spans), sum(errors), sum(unpriced), sum(var_nano2)
FROM requests GROUP BY request_id HAVING min(start_ns) < 9223372036854775807 ORDER BY request_id
SETTINGS insert_deduplication_token = 'v8-fill', max_threads = 1, max_insert_threads = 1
"""

# v8: ``request_index``, the request list ordered by time. ``requests`` is keyed by request id (the ingest
# and the restatements look requests up by id), so the newest page was one ``FINAL`` scan of every request
# (1.3 M at 5,000,000 spans: 41-49 ms, a search 96-135). ``request_index`` holds the same merged columns keyed
# by (``request_day``, ``request_id``): the day the request was first stored, fixed for good (``_ingest``
# stamps it on every span as ``spans.request_day``: the day of the request's first stored batch's earliest
# span, or the ``first_day`` ``requests`` already holds), so every row of a request shares one key and merges,
# and the newest page reads the last days' granules only (``_dashboard``). A request's first start can fall on
# a day before its key (a late span in a later batch), never on a later one. Restatement and reprice deltas reach it
# beside ``requests``; retention deletes its rows first. Old spans and spans of an older worker get the day of
# their own start by default. The fill copies every request: **stop the workers first** (as for v4); it is
# one deterministic insert under a token, so a second migrating process (or a rerun) adds nothing.
_V8: tuple[str, ...] = (
    f"ALTER TABLE spans ADD COLUMN IF NOT EXISTS request_day Int64 DEFAULT {_DAY_OF.format(col='start_ns')}",
    "ALTER TABLE requests ADD COLUMN IF NOT EXISTS first_day SimpleAggregateFunction(min, Int64) "
    f"DEFAULT {_DAY_OF.format(col='start_ns')}",
    f"""
    CREATE TABLE IF NOT EXISTS request_index (
        request_day   Int64,
        request_id    String,
        {_request_columns("LowCardinality(Nullable(String))")}
    ) ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(toDateTime(request_day, 'UTC'))
    ORDER BY (request_day, request_id)
    {_DEDUP}
    """,
    # requests_mv again, now also keeping each request's first_day (the views are replaced, not altered)
    "DROP VIEW IF EXISTS requests_mv",
    _REQUESTS_MV_V8,
    "CREATE MATERIALIZED VIEW IF NOT EXISTS request_index_mv TO request_index AS " + _INDEX_SELECT,
    _INDEX_FILL,
)

#: version -> statements; a store at version n runs every later version's statements in order.
MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6, 7: _V7, 8: _V8}
SCHEMA_VERSION = max(MIGRATIONS)

-- The ledger's tables: one per stream (named after the old service's logs
-- where there was one), each partitioned by day on `stream_time`, the time
-- JetStream stored the message. That time is the same on every delivery of
-- a message, so (stream_seq, stream_time) is the idempotency key a
-- redelivery conflicts on (ON CONFLICT DO NOTHING), and whole days are
-- dropped for retention (ledger_drop_days_before) instead of deleting rows.
-- Partitions are created by ledger_ensure_day before a batch that needs one.

-- WEBHOOKS: raw webhooks as the ingress stored them, and the orders the
-- fetcher fetched (old service: webhook_logs).
CREATE TABLE webhook_logs (
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    subject text NOT NULL,
    -- raw | fetched
    kind text NOT NULL,
    provider text NOT NULL,
    account text,
    tenant text,
    webhook_id text NOT NULL,
    received_at timestamptz NOT NULL,
    notification_event text,
    replay_of text,
    -- the hub's headers (Orderhub-*, Content-Type) as {"name": ["value", ...]}
    headers jsonb NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);
CREATE INDEX webhook_logs_webhook_id ON webhook_logs (webhook_id);
CREATE INDEX webhook_logs_provider_time ON webhook_logs (provider, stream_time);

-- ORDERS: canonical orders on their way to the backends (old service:
-- provider_order_logs).
CREATE TABLE provider_order_logs (
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    subject text NOT NULL,
    provider text NOT NULL,
    tenant text NOT NULL,
    webhook_id text NOT NULL,
    provider_order_id text NOT NULL,
    event text NOT NULL,
    replay_of text,
    "order" jsonb NOT NULL,
    PRIMARY KEY (stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);
CREATE INDEX provider_order_logs_order ON provider_order_logs (provider, provider_order_id);
CREATE INDEX provider_order_logs_webhook_id ON provider_order_logs (webhook_id);
CREATE INDEX provider_order_logs_provider_time ON provider_order_logs (provider, stream_time);

-- STATUS: the restaurants' (and the hub's) decisions about orders.
CREATE TABLE status_decisions (
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    subject text NOT NULL,
    provider text NOT NULL,
    account text NOT NULL,
    tenant text NOT NULL,
    status_id text NOT NULL,
    provider_order_id text NOT NULL,
    action text NOT NULL,
    origin text NOT NULL,
    decided_at timestamptz NOT NULL,
    order_webhook_id text,
    decision jsonb NOT NULL,
    PRIMARY KEY (stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);
CREATE INDEX status_decisions_order ON status_decisions (provider, provider_order_id);
CREATE INDEX status_decisions_provider_time ON status_decisions (provider, stream_time);

-- OUTCOMES: each step of each message at each stage (orderhub.outcome.v1).
CREATE TABLE order_outcomes (
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    at timestamptz NOT NULL,
    stage text NOT NULL,
    kind text NOT NULL,
    provider text NOT NULL,
    account text,
    tenant text,
    webhook_id text,
    provider_order_id text,
    event text,
    action text,
    status_id text,
    ok boolean NOT NULL,
    already_done boolean NOT NULL,
    http_status integer,
    duration_ms bigint,
    error_class text,
    error text,
    source_stream text,
    source_seq bigint,
    source_delivery bigint,
    order_seq bigint,
    step integer NOT NULL,
    PRIMARY KEY (stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);
CREATE INDEX order_outcomes_order ON order_outcomes (provider, provider_order_id);
CREATE INDEX order_outcomes_webhook_id ON order_outcomes (webhook_id);
CREATE INDEX order_outcomes_provider_time ON order_outcomes (provider, stream_time);

-- DLQ: dead letters with the original body (old service: delivery_error_logs).
CREATE TABLE delivery_error_logs (
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    subject text NOT NULL,
    stage text NOT NULL,
    original_stream text NOT NULL,
    original_seq bigint NOT NULL,
    original_subject text NOT NULL,
    provider text NOT NULL,
    account text,
    tenant text,
    webhook_id text,
    provider_order_id text,
    deliveries bigint NOT NULL,
    first_failure timestamptz NOT NULL,
    last_failure timestamptz NOT NULL,
    error_class text NOT NULL,
    error text NOT NULL,
    moved_by text NOT NULL,
    headers jsonb NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);
CREATE INDEX delivery_error_logs_order ON delivery_error_logs (provider, provider_order_id);
CREATE INDEX delivery_error_logs_webhook_id ON delivery_error_logs (webhook_id);
CREATE INDEX delivery_error_logs_provider_time ON delivery_error_logs (provider, stream_time);

-- Any message of any stream the ledger could not read or store in its
-- table, kept whole (never lost, never blocking its batch).
CREATE TABLE ledger_unparsed (
    stream text NOT NULL,
    stream_seq bigint NOT NULL,
    stream_time timestamptz NOT NULL,
    subject text NOT NULL,
    reason text NOT NULL,
    headers jsonb NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (stream, stream_seq, stream_time)
) PARTITION BY RANGE (stream_time);

-- Creates the day's partition of every table (UTC days). Serialised by an
-- advisory lock: replicas and the five consumer loops may ask at once.
CREATE FUNCTION ledger_ensure_day(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    PERFORM pg_advisory_xact_lock(20261216);
    FOREACH t IN ARRAY ARRAY['webhook_logs', 'provider_order_logs', 'status_decisions',
                             'order_outcomes', 'delivery_error_logs', 'ledger_unparsed'] LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            t || '_p' || to_char(day, 'YYYYMMDD'), t,
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;

-- Drops every day partition of a day before `cutoff`; returns how many.
-- A DROP of a partition takes a brief exclusive lock on its parent: the
-- caller sets lock_timeout, so it gives up (and retries later) rather than
-- queueing behind a long query with every insert queued behind it.
CREATE FUNCTION ledger_drop_days_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(20261216);
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relnamespace = current_schema()::regnamespace
          AND p.relname IN ('webhook_logs', 'provider_order_logs', 'status_decisions',
                            'order_outcomes', 'delivery_error_logs', 'ledger_unparsed')
          AND c.relname ~ '_p[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

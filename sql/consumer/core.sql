-- The consumer core's tables (crate `consumer`), in a database a consuming
-- service writes to: the inventory database and the write database (the
-- order reactor) get them in one migration; the read database grew the same
-- tables over sql/read/V1-V8. Each row below is written in the same
-- transaction as the service's own change, so the change and the record that
-- it was made can never disagree.

-- One row per event id that took effect: a redelivery finds its row and is skipped.
CREATE TABLE inbox (
    event_id          uuid PRIMARY KEY,
    event_type        text        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    processed_at      timestamptz NOT NULL DEFAULT now(),
    occurred_at       timestamptz,
    -- clock_timestamp() as the batch inserts its inbox rows (the last
    -- statements before its commit): with occurred_at, each event's latency.
    applied_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX inbox_applied_at ON inbox (applied_at);

-- The last aggregate_version applied per aggregate: version applied+1 applies,
-- versions <= applied are redeliveries, later ones park.
CREATE TABLE aggregate_versions (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Events that arrived after a gap in their aggregate's versions, bytes and
-- all, until the missing version is applied; then they apply in order.
CREATE TABLE parked_events (
    event_id          uuid PRIMARY KEY,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    event_type        text        NOT NULL,
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    record_key        bytea,
    header_names      bytea[]     NOT NULL,
    header_values     bytea[]     NOT NULL,
    record_value      bytea,
    waiting_for       bigint      NOT NULL,
    parked_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_events_aggregate ON parked_events (aggregate_type, aggregate_id, aggregate_version);

-- Records that could not be decoded or applied, exactly as they came, with a
-- life cycle: open until an operator replays or discards them.
CREATE TABLE dead_letters (
    id                bigserial PRIMARY KEY,
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    reason            text        NOT NULL,
    failed_at         timestamptz NOT NULL DEFAULT now(),
    key_bytes         bytea,
    header_names      bytea[]     NOT NULL,
    header_values     bytea[]     NOT NULL,
    value_bytes       bytea,
    -- What could be read off the record (NULL when unreadable).
    event_id          uuid,
    event_type        text,
    aggregate_type    text,
    aggregate_id      text,
    aggregate_version bigint,
    attempts          integer     NOT NULL DEFAULT 1,
    status            text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'replayed', 'discarded')),
    resolved_at       timestamptz,
    resolution        text,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_open ON dead_letters (aggregate_type, aggregate_id) WHERE status = 'open';

-- The consumer's position, with its data: the next offset per partition and group.
CREATE TABLE consumer_positions (
    group_id        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);

-- One row per consumer process: what it applied and what it turned away.
CREATE TABLE consumer_runs (
    run_id             uuid        PRIMARY KEY,
    group_id           text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    batches            bigint      NOT NULL DEFAULT 0,
    events_applied     bigint      NOT NULL DEFAULT 0,
    duplicates_skipped bigint      NOT NULL DEFAULT 0,
    stale_skipped      bigint      NOT NULL DEFAULT 0
);

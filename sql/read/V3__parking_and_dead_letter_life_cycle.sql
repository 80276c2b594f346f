-- Failure isolation: one version policy for every aggregate, parked events
-- behind a gap, and dead letters that keep the record's bytes and a life cycle.

-- The last aggregate_version applied per aggregate. The projector applies
-- version applied+1, skips versions <= applied (redeliveries) and parks the rest.
CREATE TABLE aggregate_versions (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

INSERT INTO aggregate_versions (aggregate_type, aggregate_id, version)
SELECT aggregate_type, aggregate_id, max(aggregate_version)
FROM inbox GROUP BY aggregate_type, aggregate_id;

-- Events that arrived after a gap in their aggregate's versions. They wait
-- here, bytes and all, until the missing version is applied (redelivery,
-- dead-letter replay), then apply in version order.
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

-- Dead letters keep the record exactly: key, header names and values, value as bytes.
ALTER TABLE dead_letters
    ADD COLUMN key_bytes         bytea,
    ADD COLUMN header_names      bytea[],
    ADD COLUMN header_values     bytea[],
    ADD COLUMN value_bytes       bytea,
    -- What could be read off the record (NULL when unreadable).
    ADD COLUMN event_id          uuid,
    ADD COLUMN event_type        text,
    ADD COLUMN aggregate_type    text,
    ADD COLUMN aggregate_id      text,
    ADD COLUMN aggregate_version bigint,
    ADD COLUMN attempts          integer     NOT NULL DEFAULT 1,
    -- open: waiting for an operator; replayed: applied later; discarded: given up, with a reason.
    ADD COLUMN status            text        NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'replayed', 'discarded')),
    ADD COLUMN resolved_at       timestamptz,
    ADD COLUMN resolution        text;

UPDATE dead_letters SET
    key_bytes     = convert_to(record_key, 'UTF8'),
    value_bytes   = convert_to(payload, 'UTF8'),
    header_names  = ARRAY(SELECT convert_to(k, 'UTF8') FROM jsonb_each_text(headers) AS h(k, v) ORDER BY k),
    header_values = ARRAY(SELECT convert_to(v, 'UTF8') FROM jsonb_each_text(headers) AS h(k, v) ORDER BY k);

ALTER TABLE dead_letters
    DROP COLUMN record_key,
    DROP COLUMN headers,
    DROP COLUMN payload,
    ALTER COLUMN header_names SET NOT NULL,
    ALTER COLUMN header_values SET NOT NULL;

CREATE INDEX dead_letters_open ON dead_letters (aggregate_type, aggregate_id) WHERE status = 'open';

-- Read models no longer guard versions themselves; kept for readers.
COMMENT ON COLUMN order_view.last_version IS 'aggregate_version of the last event applied to this order';

-- When each event's effect was written: clock_timestamp() as the batch inserts
-- its inbox rows, the last statements before the commit (now() would be the
-- transaction's start). With the event's occurred_at it gives the
-- commit-to-read-model latency of every event.
ALTER TABLE inbox
    ADD COLUMN occurred_at timestamptz,
    ADD COLUMN applied_at  timestamptz NOT NULL DEFAULT clock_timestamp();

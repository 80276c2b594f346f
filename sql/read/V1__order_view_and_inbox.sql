-- Read side: projections maintained by the projector, its inbox and dead letters.

-- One row per processed event id. Inserted in the same transaction as the
-- projection change, so an event has exactly one effect however often it is delivered.
CREATE TABLE inbox (
    event_id          uuid PRIMARY KEY,
    event_type        text        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    aggregate_version bigint      NOT NULL,
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    processed_at      timestamptz NOT NULL DEFAULT now()
);

-- Records the projector could not decode or apply; kept for inspection and replay.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    record_key      text,
    headers         jsonb       NOT NULL,
    payload         text,
    reason          text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);

-- Denormalized order projection: everything a screen needs in one row.
CREATE TABLE order_view (
    order_id          uuid PRIMARY KEY,
    customer_id       text        NOT NULL,
    status            text        NOT NULL,
    currency          char(3)     NOT NULL,
    total_cents       bigint      NOT NULL,
    lines             jsonb       NOT NULL,
    line_count        integer     NOT NULL,
    payment_reference text,
    carrier           text,
    tracking_number   text,
    cancel_reason     text,
    placed_at         timestamptz NOT NULL,
    paid_at           timestamptz,
    shipped_at        timestamptz,
    cancelled_at      timestamptz,
    -- aggregate_version of the last event applied; events apply strictly in order.
    last_version      bigint      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_view_customer ON order_view (customer_id);

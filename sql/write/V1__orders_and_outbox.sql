-- Write model of the order service, its transactional outbox and Debezium's heartbeat.

CREATE TABLE orders (
    order_id          uuid PRIMARY KEY,
    customer_id       text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    currency          char(3)     NOT NULL,
    total_cents       bigint      NOT NULL CHECK (total_cents >= 0),
    payment_reference text,
    carrier           text,
    tracking_number   text,
    cancel_reason     text,
    -- Version of the aggregate = aggregate_version of its last outbox event.
    version           bigint      NOT NULL CHECK (version >= 1),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE order_lines (
    order_id         uuid    NOT NULL REFERENCES orders (order_id),
    line_no          integer NOT NULL CHECK (line_no >= 1),
    sku              text    NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Written only in the transaction that changes the state it describes; read by
-- Debezium from the WAL. Rows are never updated.
CREATE TABLE outbox (
    id                uuid PRIMARY KEY,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    event_type        text        NOT NULL,
    schema_version    integer     NOT NULL CHECK (schema_version >= 1),
    aggregate_version bigint      NOT NULL CHECK (aggregate_version >= 1),
    occurred_at       timestamptz NOT NULL,
    traceparent       text        NOT NULL DEFAULT '',
    payload           jsonb       NOT NULL,
    -- One event per aggregate version: concurrent writers cannot both append version N.
    UNIQUE (aggregate_type, aggregate_id, aggregate_version)
);

-- Debezium upserts here every heartbeat.interval.ms so the slot's confirmed LSN
-- advances even while the outbox is idle (otherwise the slot pins WAL).
CREATE TABLE debezium_heartbeat (
    id      integer PRIMARY KEY,
    beat_at timestamptz NOT NULL
);

CREATE PUBLICATION outbox_publication FOR TABLE outbox, debezium_heartbeat;

GRANT SELECT ON outbox TO debezium;
GRANT SELECT, INSERT, UPDATE ON debezium_heartbeat TO debezium;

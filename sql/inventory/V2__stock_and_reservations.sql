-- The inventory service's own state (its database, `inventory`): stock per
-- SKU, one reservation per order it heard of, a ledger of every change of the
-- units on hand, and its transactional outbox. V1 is the consumer core's
-- tables (sql/consumer/core.sql): the service consumes order events.

-- Units in the warehouse (on_hand) and how many of them are held for
-- confirmed orders (reserved); available = on_hand - reserved, never negative.
CREATE TABLE stock (
    sku        text        PRIMARY KEY,
    on_hand    bigint      NOT NULL CHECK (on_hand >= 0),
    reserved   bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Every change of on_hand or reserved, counted from 1: the stock read model
    -- keeps the level with the highest version, whichever event brought it.
    version    bigint      NOT NULL CHECK (version >= 1),
    -- aggregate_version of the SKU's last stock event (StockSet, StockRestocked).
    events     bigint      NOT NULL DEFAULT 0 CHECK (events >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (reserved <= on_hand)
);

-- The inventory's reply to each order, and where the reserved units went.
-- reserved: held for the order; rejected: not enough stock, nothing held;
-- released: held, then given back (the order was cancelled: compensation);
-- shipped: held, then gone with the order.
CREATE TABLE reservations (
    order_id   uuid        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'shipped')),
    -- The order's units per SKU: [{"sku": ..., "quantity": ...}].
    lines      jsonb       NOT NULL,
    -- aggregate_version of the reservation's last event (1: reserved or rejected).
    version    bigint      NOT NULL CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every change of units on hand: a person's set and restock, and units that
-- shipped. For every SKU, on_hand = the last set + restocks since - shipped
-- since (the chaos suite's oracle checks it from this table alone).
CREATE TABLE stock_movements (
    id       bigserial   PRIMARY KEY,
    sku      text        NOT NULL REFERENCES stock (sku),
    kind     text        NOT NULL CHECK (kind IN ('set', 'restock', 'ship')),
    quantity bigint      NOT NULL CHECK (quantity >= 0),
    order_id uuid,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX stock_movements_sku ON stock_movements (sku, id);

-- The inventory's transactional outbox: written only in the transaction that
-- changes the state it describes, read by its own Debezium connector from the
-- WAL. The same shape as the order service's (sql/write/V1), so one Event
-- Router configuration serves both.
CREATE TABLE outbox (
    id                uuid PRIMARY KEY,
    aggregate_type    text        NOT NULL CHECK (aggregate_type IN ('reservation', 'stock')),
    aggregate_id      text        NOT NULL,
    event_type        text        NOT NULL,
    schema_version    integer     NOT NULL CHECK (schema_version >= 1),
    aggregate_version bigint      NOT NULL CHECK (aggregate_version >= 1),
    occurred_at       timestamptz NOT NULL,
    traceparent       text        NOT NULL DEFAULT '',
    payload           jsonb       NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, aggregate_version)
);

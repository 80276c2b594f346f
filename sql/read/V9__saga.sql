-- The stock-reservation saga on the read side.
-- order_view: the saga's outcome is the order's status (placed -> confirmed |
-- rejected); a rejection keeps the inventory's reason, when it was decided.
ALTER TABLE order_view
    ADD COLUMN confirmed_at  timestamptz,
    ADD COLUMN rejected_at   timestamptz,
    ADD COLUMN reject_reason text;

-- Stock per SKU as the inventory last reported it: every inventory event
-- carries the levels after it with a per-SKU version, and the row keeps the
-- highest, so it converges whatever order events of different orders and SKUs
-- arrive in.
CREATE TABLE stock_view (
    sku        text        PRIMARY KEY,
    on_hand    bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    available  bigint      GENERATED ALWAYS AS (on_hand - reserved) STORED,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- People and dashboards see it, as the other read models (V7).
DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON %I.stock_view TO orders_reader', current_schema());
END
$$;

-- Three read models: order_view (now with the customer's current name and
-- e-mail), customer_summary and product_sales_daily. Each owns its tables.

ALTER TABLE order_view
    ADD COLUMN customer_name    text,
    ADD COLUMN customer_email   text,
    ADD COLUMN shipping_address jsonb,
    ADD COLUMN delivered_at     timestamptz,
    ADD COLUMN refunded_at      timestamptz,
    ADD COLUMN refunded_cents   bigint,
    ADD COLUMN refund_reason    text;

-- order_view's own copy of each customer's latest name and e-mail, so an order
-- whose customer events arrived first still shows them.
CREATE TABLE order_view_customers (
    customer_id  text PRIMARY KEY,
    name         text   NOT NULL,
    email        text   NOT NULL,
    last_version bigint NOT NULL
);

-- One row per customer: who they are and how they buy.
CREATE TABLE customer_summary (
    customer_id      text PRIMARY KEY,
    name             text,
    email            text,
    city             text,
    country          text,
    -- Version of the last customer event applied (0: none seen yet).
    customer_version bigint      NOT NULL DEFAULT 0,
    orders_placed    integer     NOT NULL DEFAULT 0,
    -- Placed, paid or shipped: not yet delivered, cancelled or refunded.
    open_orders      integer     NOT NULL DEFAULT 0,
    -- Currency code -> cents paid minus cents refunded, e.g. {"EUR": 4610}.
    lifetime_value   jsonb       NOT NULL DEFAULT '{}',
    last_order_at    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Which customer each order belongs to (order events after OrderPlaced do not say).
CREATE TABLE customer_summary_orders (
    order_id    uuid PRIMARY KEY,
    customer_id text NOT NULL
);

-- Units and revenue per SKU and day of placement, net of cancellations and refunds.
CREATE TABLE product_sales_daily (
    day           date    NOT NULL,
    sku           text    NOT NULL,
    currency      char(3) NOT NULL,
    units         bigint  NOT NULL,
    revenue_cents bigint  NOT NULL,
    PRIMARY KEY (day, sku, currency)
);

-- What product_sales_daily counted for each order, so a cancellation or refund
-- takes back exactly that, once.
CREATE TABLE product_sales_orders (
    order_id uuid PRIMARY KEY,
    day      date    NOT NULL,
    currency char(3) NOT NULL,
    lines    jsonb   NOT NULL,
    counted  boolean NOT NULL
);

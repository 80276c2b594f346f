-- Customers become an aggregate of their own; orders reference them and record
-- where they ship to, and the life cycle gains delivered and refunded.

CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    street      text        NOT NULL,
    city        text        NOT NULL,
    postal_code text        NOT NULL,
    country     char(2)     NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- NOT VALID: enforced for new orders; orders placed before customers existed stay as they are.
ALTER TABLE orders
    ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (customer_id) NOT VALID,
    ADD COLUMN shipping_address jsonb,
    ADD COLUMN refund_reason    text,
    ADD COLUMN refunded_cents   bigint;

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'));

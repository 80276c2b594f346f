-- `stack bench --scale` (history growth): :n placed orders in one transaction, each with two lines and
-- its OrderPlaced event in the outbox, exactly as bench/place_order.sql writes one (the same rows and
-- payload, relayed and projected like any other event); the customers `bench-c-1` .. `bench-c-100`
-- must exist (stack bench registers them). Run: psql -v n=50000 -f bench/grow_history.sql
BEGIN;
CREATE TEMP TABLE grow ON COMMIT DROP AS
SELECT gen_random_uuid() AS order_id,
       'bench-c-' || (1 + floor(random() * 100))::int AS customer_id,
       (1 + floor(random() * 4))::int AS q1,
       (1 + floor(random() * 4))::int AS q2,
       (100 + floor(random() * 9901))::bigint AS p1,
       (100 + floor(random() * 9901))::bigint AS p2
FROM generate_series(1, :n);
INSERT INTO orders (order_id, customer_id, status, currency, total_cents, shipping_address, version, created_at, updated_at)
SELECT order_id, customer_id, 'placed', 'EUR', q1 * p1 + q2 * p2,
       '{"street": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}', 1, now(), now()
FROM grow;
INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents)
SELECT order_id, 1, 'SKU-A', q1, p1 FROM grow
UNION ALL
SELECT order_id, 2, 'SKU-B', q2, p2 FROM grow;
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, traceparent, payload)
SELECT gen_random_uuid(), 'order', order_id, 'OrderPlaced', 2, 1, now(), '',
       jsonb_build_object('order_id', order_id, 'customer_id', customer_id, 'currency', 'EUR',
         'lines', jsonb_build_array(
           jsonb_build_object('sku', 'SKU-A', 'quantity', q1, 'unit_price_cents', p1),
           jsonb_build_object('sku', 'SKU-B', 'quantity', q2, 'unit_price_cents', p2)),
         'total_cents', q1 * p1 + q2 * p2,
         'shipping_address', jsonb_build_object('street', '1 Main St', 'city', 'Berlin', 'postal_code', '10115', 'country', 'DE'))
FROM grow;
COMMIT;

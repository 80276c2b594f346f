-- pgbench: exactly the statements `writer order place` issues for a two-line
-- order (see writer/src/store.rs), in one transaction: lock the (new) order
-- row, share-lock the customer, insert the order, its two lines and its outbox
-- event. The order id is derived from two random numbers in every statement
-- (the writer makes it on the client side, so pgbench must not spend a round trip on it).
-- The customers `bench-c-1` .. `bench-c-100` must exist
-- (stack bench registers them). Run: pgbench -n -M prepared -f bench/place_order.sql
\set c random(1, 100)
\set r1 random(0, 2147483647)
\set r2 random(0, 2147483647)
\set q1 random(1, 4)
\set q2 random(1, 4)
\set p1 random(100, 10000)
\set p2 random(100, 10000)
\set t :q1 * :p1 + :q2 * :p2
BEGIN;
SELECT status, currency, total_cents, payment_reference IS NOT NULL AND refunded_cents IS NULL, version FROM orders WHERE order_id = md5(:r1::text || '-' || :r2::text)::uuid FOR UPDATE;
SELECT name, email, street, city, postal_code, country, version FROM customers WHERE customer_id = 'bench-c-' || :c::text FOR SHARE;
INSERT INTO orders (order_id, customer_id, status, currency, total_cents, shipping_address, version, created_at, updated_at) VALUES (md5(:r1::text || '-' || :r2::text)::uuid, 'bench-c-' || :c::text, 'placed', 'EUR', :t::bigint, '{"street": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}', 1, now(), now());
INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES (md5(:r1::text || '-' || :r2::text)::uuid, 1, 'SKU-A', :q1::int, :p1::bigint);
INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES (md5(:r1::text || '-' || :r2::text)::uuid, 2, 'SKU-B', :q2::int, :p2::bigint);
INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, traceparent, payload) VALUES (gen_random_uuid(), 'order', md5(:r1::text || '-' || :r2::text)::uuid, 'OrderPlaced', 2, 1, now(), '', jsonb_build_object('order_id', md5(:r1::text || '-' || :r2::text)::uuid, 'customer_id', 'bench-c-' || :c::text, 'currency', 'EUR', 'lines', jsonb_build_array(jsonb_build_object('sku', 'SKU-A', 'quantity', :q1::int, 'unit_price_cents', :p1::bigint), jsonb_build_object('sku', 'SKU-B', 'quantity', :q2::int, 'unit_price_cents', :p2::bigint)), 'total_cents', :t::bigint, 'shipping_address', jsonb_build_object('street', '1 Main St', 'city', 'Berlin', 'postal_code', '10115', 'country', 'DE')));
COMMIT;

-- The stock-reservation saga: a placed order is confirmed or rejected by the
-- inventory's reply (through the order reactor) before it may be paid, so the
-- life cycle gains confirmed and rejected (outbox_events::OrderStatus; a test
-- compares the two).
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('placed', 'confirmed', 'rejected', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'));

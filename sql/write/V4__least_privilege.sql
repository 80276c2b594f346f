-- The writer's role: exactly what its commands do (sql/bootstrap.sql creates the roles).
-- DELETE on the outbox is for `writer outbox prune` (retention); nothing else is ever deleted.
GRANT SELECT, INSERT, UPDATE ON orders, order_lines, customers, idempotency_keys TO orders_writer;
GRANT SELECT, INSERT, DELETE ON outbox TO orders_writer;

-- Retention (`writer outbox prune`): rows go by age, oldest first, in batches.
CREATE INDEX outbox_occurred_at ON outbox (occurred_at);
-- The prune reads the relay's last heartbeat: it never deletes what the relay may not have read yet.
GRANT SELECT ON debezium_heartbeat TO orders_writer;
-- Pruning is not an event: deleted outbox rows are not decoded for the relay at all.
ALTER PUBLICATION outbox_publication SET (publish = 'insert, update');

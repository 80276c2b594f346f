-- Idempotent retries: a command sent with an idempotency key commits once;
-- a retry with the same key and the same command gets the first result back,
-- a retry with the same key and another command is refused.
CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    -- The validated command, as the writer saw it; a retry must match it exactly.
    request         text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    -- The outbox events the command committed, in order.
    event_ids       uuid[]      NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now()
);

-- The projector's position lives with its data: the next offset to read per
-- partition, written in the same transaction as the inbox rows and the read
-- models. On partition assignment the projector seeks here; Kafka's committed
-- offsets are kept for monitoring tools only. Keyed by consumer group, so a
-- rebuild (its own group) has positions of its own.
CREATE TABLE consumer_positions (
    group_id        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);

-- One row per projector process: what it applied, how many redeliveries its
-- inbox and version policy turned away, and how many records it skipped
-- because another owner of the partition had applied them already. Written with each batch, so the
-- figures survive a crash exactly (no scrape needed).
CREATE TABLE projector_runs (
    run_id             uuid        PRIMARY KEY,
    group_id           text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    batches            bigint      NOT NULL DEFAULT 0,
    events_applied     bigint      NOT NULL DEFAULT 0,
    duplicates_skipped bigint      NOT NULL DEFAULT 0,
    -- Records below the stored position, skipped unread (a second owner of a partition).
    stale_skipped      bigint      NOT NULL DEFAULT 0
);

-- Retention (`projector inbox prune`): inbox rows go by age, oldest first.
-- aggregate_versions, dead letters and parked events are never pruned.
CREATE INDEX inbox_applied_at ON inbox (applied_at);

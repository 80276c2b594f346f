-- Idempotency keys keep a SHA-256 digest of the command (hex), not its text:
-- the text held names, e-mails and addresses for as long as the keys lived.
-- Existing rows get the digest of the text they held (the writer computes the
-- same digest of the same text). Keys are pruned with the outbox
-- (`writer outbox prune`): a key is honoured for the outbox's retention window.
ALTER TABLE idempotency_keys RENAME COLUMN request TO request_sha256;
UPDATE idempotency_keys SET request_sha256 = encode(sha256(convert_to(request_sha256, 'UTF8')), 'hex');
CREATE INDEX idempotency_keys_committed_at ON idempotency_keys (committed_at);
GRANT DELETE ON idempotency_keys TO orders_writer;

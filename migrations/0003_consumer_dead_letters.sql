-- Consumers that survive poison: in the consumer's own database, the failed
-- attempts of messages a consumer group could not handle yet, and the
-- messages it gave up on (dead letters). Idempotent.
--
-- outbox_consumer_attempt: one row per (group, message id) that failed at
-- least once and is neither done nor dead; removed when the message is
-- handled or dead-lettered. The count survives a consumer restart (brokers
-- differ in what they count themselves; this is the same for all of them).
CREATE TABLE IF NOT EXISTS outbox_consumer_attempt (
  group_name      text        NOT NULL,
  message_id      text        NOT NULL,
  attempts        integer     NOT NULL,
  errors          jsonb       NOT NULL DEFAULT '[]', -- [{"at", "attempt", "error"}, ...]
  first_failed_at timestamptz NOT NULL,
  last_failed_at  timestamptz NOT NULL,
  PRIMARY KEY (group_name, message_id));

-- outbox_consumer_dead_letter: body is the message exactly as the broker
-- delivered it; attrs, for binary-mode messages, the ce_* attributes as a
-- JSON array of alternating names and values (NULL: structured mode).
-- requeued_at set (outboxctl consumer-dlq requeue): the group's consumers
-- hand the message to their handler again; the row is removed when it
-- succeeds and becomes a plain dead letter again when it fails for good.
CREATE TABLE IF NOT EXISTS outbox_consumer_dead_letter (
  id              bigserial   PRIMARY KEY,
  group_name      text        NOT NULL,
  message_id      text        NOT NULL,
  topic           text        NOT NULL,
  key             text        NOT NULL DEFAULT '',
  type            text,
  body            bytea       NOT NULL,
  attrs           jsonb,
  attempts        integer     NOT NULL,
  reason          text        NOT NULL CHECK (reason IN ('max_attempts', 'rejected')),
  last_error      text,
  errors          jsonb       NOT NULL DEFAULT '[]',
  first_failed_at timestamptz NOT NULL,
  last_failed_at  timestamptz NOT NULL,
  dead_at         timestamptz NOT NULL DEFAULT now(),
  requeued_at     timestamptz,
  UNIQUE (group_name, message_id));

CREATE INDEX IF NOT EXISTS outbox_consumer_dead_letter_requeued
  ON outbox_consumer_dead_letter (group_name, id) WHERE requeued_at IS NOT NULL;

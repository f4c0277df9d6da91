-- The outbox, its dead letters and the consumers' inbox.
-- Rows are claimed by state (pending, due), never by an id cursor.

CREATE TABLE IF NOT EXISTS outbox (
    seq             bigserial   PRIMARY KEY,          -- insertion order; per-key order
    id              uuid        NOT NULL UNIQUE,      -- event id, stable across retries
    topic           text        NOT NULL CHECK (topic <> ''),
    type            text        NOT NULL CHECK (type <> ''),
    key             text        NOT NULL,             -- aggregate id
    -- keys hash to 64 lanes; a lane is owned by one relay worker at a time
    lane            smallint    GENERATED ALWAYS AS ((hashtext(key) & 2147483647) % 64) STORED,
    payload         json        NOT NULL,             -- json keeps the producer's text
    headers         jsonb,
    traceparent     text,
    source          text        NOT NULL DEFAULT '/outbox',
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    errors          jsonb       NOT NULL DEFAULT '[]'  -- [{at, error}], newest last, capped
);
CREATE INDEX IF NOT EXISTS outbox_lane_seq ON outbox (lane, seq);
CREATE INDEX IF NOT EXISTS outbox_key_seq ON outbox (key, seq);

CREATE TABLE IF NOT EXISTS outbox_dead_letter (
    seq             bigint      PRIMARY KEY,          -- the outbox seq it had
    id              uuid        NOT NULL UNIQUE,
    topic           text        NOT NULL,
    type            text        NOT NULL,
    key             text        NOT NULL,
    payload         json        NOT NULL,
    headers         jsonb,
    traceparent     text,
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL,
    last_error      text,
    errors          jsonb       NOT NULL DEFAULT '[]',
    reason          text        NOT NULL DEFAULT 'max_attempts', -- or 'rejected', 'parked'
    dead_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_dead_letter_key ON outbox_dead_letter (key);
CREATE INDEX IF NOT EXISTS outbox_dead_letter_dead_at ON outbox_dead_letter (dead_at);

CREATE TABLE IF NOT EXISTS outbox_inbox (
    consumer     text        NOT NULL,
    message_id   uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS outbox_inbox_processed_at ON outbox_inbox (processed_at);

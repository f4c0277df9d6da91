-- Engine v2: time-ordered ids in SQL, acknowledgement modes, priority, and
-- one outbox table per service.
--
-- outbox_uuid_v7(): an RFC 9562 version 7 UUID (48-bit Unix milliseconds,
-- then random bits), so a producer writing the outbox with plain SQL need not
-- supply the event id. Built on gen_random_uuid() (PostgreSQL 13+).
CREATE OR REPLACE FUNCTION outbox_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $fn$
  SELECT encode(
           set_bit(set_bit(
             overlay(uuid_send(gen_random_uuid())
                     PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                     FROM 1 FOR 6),
             52, 1), 53, 1),
           'hex')::uuid
$fn$;

-- outbox_create_table(name): the outbox table NAME and its dead letters
-- NAME_dead_letter, with their indexes. Idempotent; also upgrades a table made
-- by an earlier version. Pending rows are found through partial indexes, so
-- rows kept as 'processed' (acknowledgement mode "mark") do not bloat them.
CREATE OR REPLACE FUNCTION outbox_create_table(name text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF name !~ '^[a-z_][a-z0-9_]{0,47}$' THEN
    RAISE EXCEPTION 'outbox table name "%" must match [a-z_][a-z0-9_]{0,47}', name;
  END IF;
  -- relays starting together: one creates, the others find it made
  PERFORM pg_advisory_xact_lock(hashtext('outbox_create_table'));
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I (
      seq             bigserial   PRIMARY KEY,
      id              uuid        NOT NULL UNIQUE DEFAULT outbox_uuid_v7(),
      topic           text        NOT NULL CHECK (topic <> ''),
      type            text        NOT NULL CHECK (type <> ''),
      key             text        NOT NULL,
      lane            smallint    GENERATED ALWAYS AS ((hashtext(key) & 2147483647) %% 64) STORED,
      payload         json        NOT NULL,
      headers         jsonb,
      traceparent     text,
      source          text        NOT NULL DEFAULT '/outbox',
      created_at      timestamptz NOT NULL DEFAULT now(),
      attempts        integer     NOT NULL DEFAULT 0,
      next_attempt_at timestamptz NOT NULL DEFAULT now(),
      last_error      text,
      errors          jsonb       NOT NULL DEFAULT '[]')$ddl$, name);
  EXECUTE format($ddl$
    ALTER TABLE %1$I
      ALTER COLUMN id SET DEFAULT outbox_uuid_v7(),
      ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0,
      ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'pending'
          CHECK (status IN ('pending', 'processed')),
      ADD COLUMN IF NOT EXISTS processed_at timestamptz$ddl$, name);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (lane, seq) WHERE status = ''pending''',
                 name || '_pending_lane', name);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (key, seq) WHERE status = ''pending''',
                 name || '_pending_key', name);
  -- the claim walks pending rows in seq order, and checks "an earlier event
  -- of the key is not due yet" through the few rows that are not due
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (seq) WHERE status = ''pending''',
                 name || '_pending_seq', name);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (next_attempt_at) WHERE status = ''pending''',
                 name || '_pending_due', name);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (lane, priority DESC, seq)'
                 ' WHERE status = ''pending'' AND priority > 0', name || '_pending_priority', name);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (processed_at) WHERE status = ''processed''',
                 name || '_processed_at', name);
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I (
      seq             bigint      PRIMARY KEY,
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
      reason          text        NOT NULL DEFAULT 'max_attempts',
      dead_at         timestamptz NOT NULL DEFAULT now())$ddl$, name || '_dead_letter');
  EXECUTE format('ALTER TABLE %1$I ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0',
                 name || '_dead_letter');
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (key)', name || '_dead_letter_key',
                 name || '_dead_letter');
  EXECUTE format('CREATE INDEX IF NOT EXISTS %1$I ON %2$I (dead_at)', name || '_dead_letter_dead_at',
                 name || '_dead_letter');
END
$fn$;

-- The default table: upgrade in place, then swap the full indexes of 0001
-- for the partial ones.
SELECT outbox_create_table('outbox');
DROP INDEX IF EXISTS outbox_lane_seq;
DROP INDEX IF EXISTS outbox_key_seq;

-- transactions-service: accounts (opened from UserCreated events), money
-- transactions and the double-entry ledger. Amounts are bigint minor units.

-- One account per user, plus the "external" account (the nil UUID): the
-- world outside the system. A deposit (no fromUserId) debits it, a
-- withdrawal (no toUserId) credits it; it alone may go negative, so the sum
-- of all balances is always 0 and the users' sum changes only by deposits
-- and withdrawals.
CREATE TABLE IF NOT EXISTS accounts (
    user_id     uuid        PRIMARY KEY,
    kind        text        NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'external')),
    balance     bigint      NOT NULL DEFAULT 0,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_no_overdraft CHECK (kind = 'external' OR balance >= 0)
);
INSERT INTO accounts (user_id, kind) VALUES ('00000000-0000-0000-0000-000000000000', 'external')
ON CONFLICT (user_id) DO NOTHING;

CREATE TABLE IF NOT EXISTS transactions (
    id           uuid        PRIMARY KEY,
    amount       bigint      NOT NULL CHECK (amount > 0),
    description  text        NOT NULL DEFAULT '',
    from_user_id uuid,                      -- NULL: a deposit
    to_user_id   uuid,                      -- NULL: a withdrawal
    status       text        NOT NULL DEFAULT 'PENDING'
                             CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    reason       text,                      -- why it FAILED
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (from_user_id IS NOT NULL OR to_user_id IS NOT NULL),
    CHECK (from_user_id IS DISTINCT FROM to_user_id),
    CHECK ((status = 'FAILED') = (reason IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS transactions_pending ON transactions (created_at) WHERE status = 'PENDING';

-- The double-entry ledger: a COMPLETED transaction has exactly one DEBIT
-- (money leaves that account) and one CREDIT (money enters) of its amount;
-- the unique key makes a second debit for one transaction impossible.
CREATE TABLE IF NOT EXISTS ledger_entries (
    id             bigserial   PRIMARY KEY,
    transaction_id uuid        NOT NULL REFERENCES transactions (id),
    account_id     uuid        NOT NULL REFERENCES accounts (user_id),
    side           text        NOT NULL CHECK (side IN ('DEBIT', 'CREDIT')),
    amount         bigint      NOT NULL CHECK (amount > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, side)
);
CREATE INDEX IF NOT EXISTS ledger_entries_account ON ledger_entries (account_id, id);

-- Decides and applies one transaction, inside the caller's transaction
-- (which also holds the inbox record and the outcome event). Locks the
-- transaction row, then both accounts in user_id order (so concurrent
-- processors cannot deadlock). o_applied is false when the transaction is
-- missing (o_status NULL) or already decided (its status and reason).
CREATE OR REPLACE FUNCTION ledger_apply(p_tx uuid, OUT o_applied boolean, OUT o_status text,
                                        OUT o_reason text, OUT o_amount bigint,
                                        OUT o_from uuid, OUT o_to uuid)
LANGUAGE plpgsql AS $$
DECLARE
    ext CONSTANT uuid := '00000000-0000-0000-0000-000000000000';
    t transactions%ROWTYPE;
    src uuid;
    dst uuid;
    bal bigint;
BEGIN
    o_applied := false;
    SELECT * INTO t FROM transactions WHERE id = p_tx FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    o_amount := t.amount;
    o_from := t.from_user_id;
    o_to := t.to_user_id;
    IF t.status <> 'PENDING' THEN
        o_status := t.status;
        o_reason := t.reason;
        RETURN;
    END IF;
    src := coalesce(t.from_user_id, ext);
    dst := coalesce(t.to_user_id, ext);
    PERFORM 1 FROM accounts WHERE user_id IN (src, dst) ORDER BY user_id FOR UPDATE;
    SELECT balance INTO bal FROM accounts WHERE user_id = src AND (kind = 'user' OR src = ext);
    IF NOT FOUND THEN
        o_reason := 'unknown user ' || src || ' (fromUserId): no account';
    ELSIF NOT EXISTS (SELECT 1 FROM accounts WHERE user_id = dst) THEN
        o_reason := 'unknown user ' || dst || ' (toUserId): no account';
    ELSIF src <> ext AND bal < t.amount THEN
        o_reason := 'insufficient funds';
    END IF;
    IF o_reason IS NULL THEN
        INSERT INTO ledger_entries (transaction_id, account_id, side, amount)
        VALUES (p_tx, src, 'DEBIT', t.amount), (p_tx, dst, 'CREDIT', t.amount);
        UPDATE accounts SET balance = balance - t.amount, updated_at = now() WHERE user_id = src;
        UPDATE accounts SET balance = balance + t.amount, updated_at = now() WHERE user_id = dst;
        o_status := 'COMPLETED';
    ELSE
        o_status := 'FAILED';
    END IF;
    UPDATE transactions SET status = o_status, reason = o_reason, updated_at = now()
    WHERE id = p_tx;
    o_applied := true;
END
$$;

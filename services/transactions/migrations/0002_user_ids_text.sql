-- User ids in a transaction request are the caller's words: our users' own
-- example sends "fromUserId": "user-1". They are kept as given (text); one
-- that names no account (not a UUID, or no UserCreated seen) makes the
-- transaction FAILED with "unknown user", as the issue asks.
ALTER TABLE transactions
    ALTER COLUMN from_user_id TYPE text USING from_user_id::text,
    ALTER COLUMN to_user_id TYPE text USING to_user_id::text;

DROP FUNCTION IF EXISTS ledger_apply(uuid);
CREATE FUNCTION ledger_apply(p_tx uuid, OUT o_applied boolean, OUT o_status text,
                             OUT o_reason text, OUT o_amount bigint,
                             OUT o_from text, OUT o_to text)
LANGUAGE plpgsql AS $$
DECLARE
    ext CONSTANT uuid := '00000000-0000-0000-0000-000000000000';
    uuid_re CONSTANT text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
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
    -- NULL when the id is not a UUID: no account can have it
    src := CASE WHEN t.from_user_id IS NULL THEN ext
                WHEN t.from_user_id ~ uuid_re THEN t.from_user_id::uuid END;
    dst := CASE WHEN t.to_user_id IS NULL THEN ext
                WHEN t.to_user_id ~ uuid_re THEN t.to_user_id::uuid END;
    PERFORM 1 FROM accounts WHERE user_id IN (src, dst) ORDER BY user_id FOR UPDATE;
    SELECT balance INTO bal FROM accounts WHERE user_id = src AND (kind = 'user' OR src = ext);
    IF NOT FOUND THEN
        o_reason := 'unknown user ' || t.from_user_id || ' (fromUserId): no account';
    ELSIF dst IS NULL OR NOT EXISTS (SELECT 1 FROM accounts WHERE user_id = dst) THEN
        o_reason := 'unknown user ' || t.to_user_id || ' (toUserId): no account';
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

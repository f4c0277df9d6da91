-- pgbench: the ceiling of POST /orders' transaction, statement for statement
-- and round trip for round trip as services/orders/api.c (create_order),
-- src/http/idempotency.c and outbox_enqueue (src/store/pg/pg.c) send it:
-- four round trips. BEGIN, key lock and key lookup (a pipeline,
-- outbox__idem_begin_tx); order + items (one statement); the event (no
-- pg_notify: the relay's watcher needs no hint, and outbox_enqueue sends none
-- by default) and the key record (a pipeline, outbox__idem_enqueue_store);
-- COMMIT. Used by bench/bench_orders.sh:
--   pgbench -n -M prepared -c 32 -j 2 -T 30 -f bench/orders_write.sql DBURL
-- Differences from the API, all small: the order id comes from the database's
-- outbox_uuid_v7() (the API makes the same UUIDv7 in C and binds it); the
-- items and the stored response are literals of the API's sizes; the event
-- payload is concatenated in SQL around the real order id (the API binds all
-- three as parameters); the body fingerprint is a fixed string; the
-- created_at format's colons are chr(58) (pgbench would read ":MI" as a
-- variable). Items: one or two, as outbox-load sends them.
\set k random(1, 9000000000000000000)
\set nitems random(1, 2)
\set amount random(1, 6) * 500
\startpipeline
BEGIN;
SELECT pg_try_advisory_xact_lock(hashtextextended('orders' || E'\n' || ('pgbench-' || :k), 0));
SELECT fingerprint, status, content_type, body FROM outbox_http_idempotency WHERE scope = 'orders' AND key = 'pgbench-' || :k AND expires_at > now();
\endpipeline
\if :nitems = 1
WITH req AS (SELECT sku, quantity FROM json_to_recordset('[{"sku":"SKU-1","quantity":2}]'::json) AS i(sku text, quantity int)), missing AS (SELECT r.sku FROM req r LEFT JOIN inventory v ON v.sku = r.sku WHERE v.sku IS NULL), o AS (INSERT INTO orders (id, user_id, amount) SELECT outbox_uuid_v7(), 'user-' || :client_id, :amount::bigint WHERE NOT EXISTS (SELECT 1 FROM missing) RETURNING id, created_at), it AS (INSERT INTO order_items (order_id, sku, quantity) SELECT o.id, r.sku, r.quantity FROM req r CROSS JOIN o) SELECT (SELECT id FROM o) AS order_id, (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"') FROM o) AS created, (SELECT min(sku) FROM missing) AS missing_sku, (SELECT count(*) FROM missing) AS nmissing \gset
\else
WITH req AS (SELECT sku, quantity FROM json_to_recordset('[{"sku":"SKU-2","quantity":3},{"sku":"SKU-3","quantity":1}]'::json) AS i(sku text, quantity int)), missing AS (SELECT r.sku FROM req r LEFT JOIN inventory v ON v.sku = r.sku WHERE v.sku IS NULL), o AS (INSERT INTO orders (id, user_id, amount) SELECT outbox_uuid_v7(), 'user-' || :client_id, :amount::bigint WHERE NOT EXISTS (SELECT 1 FROM missing) RETURNING id, created_at), it AS (INSERT INTO order_items (order_id, sku, quantity) SELECT o.id, r.sku, r.quantity FROM req r CROSS JOIN o) SELECT (SELECT id FROM o) AS order_id, (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"') FROM o) AS created, (SELECT min(sku) FROM missing) AS missing_sku, (SELECT count(*) FROM missing) AS nmissing \gset
\endif
\startpipeline
INSERT INTO "outbox" (id, topic, type, key, payload, headers, traceparent, source, priority) VALUES (outbox_uuid_v7(), 'orders', 'OrderCreated', :order_id, ('{"order_id":"' || :order_id || '","user_id":"user-' || :client_id || '","amount":' || :amount || ',"items":[{"sku":"SKU-2","quantity":3},{"sku":"SKU-3","quantity":1}],"status":"pending","created_at":"' || :created || '"}')::json, NULL::jsonb, NULL, '/orders', 0::smallint);
INSERT INTO outbox_http_idempotency AS k (scope, key, fingerprint, status, content_type, body, expires_at) VALUES ('orders', 'pgbench-' || :k, 'e3559304cd18311327fda585cd8a7f95bfa8deabfd560af196b403145dbad8de', 201::int, 'application/json', '{"status":"success","order_id":"01a22911-18f3-76e2-83d3-0bde9789f6b9","order_status":"pending","user_id":"user-0","amount":3000,"items":[{"sku":"SKU-2","quantity":3},{"sku":"SKU-3","quantity":1}],"event_id":"01a22911-18f5-716d-8f46-3f8ffb2b0697","created_at":"2026-11-29T20:48:36.078864Z"}', now() + 86400000::bigint * interval '1 millisecond') ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, content_type = EXCLUDED.content_type, body = EXCLUDED.body, created_at = now(), expires_at = EXCLUDED.expires_at WHERE k.expires_at <= now();
\endpipeline
COMMIT;

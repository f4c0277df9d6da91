/* The configuration table and everything it drives. See conf.h. */
#include "core/conf.h"

#include "core/buf.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

#define MS_S 1000LL
#define MS_H (3600LL * MS_S)
#define MS_D (24LL * MS_H)

/* secret: 1 = never shown; 2 = a URL/conninfo whose password is redacted. */
static const outbox_conf_prop_t props[] = {
    /* ---- database ---- */
    {"database_url", OUTBOX_CT_STR, "", "DATABASE_URL", 0, 0, 2, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL conninfo or URI; when empty it is built from DB_HOST, DB_PORT, DB_USER, "
     "DB_PASSWORD, DB_NAME"},
    {"db_host", OUTBOX_CT_STR, "localhost", "DB_HOST", 0, 0, 0, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL host (used when database_url is empty)"},
    {"db_port", OUTBOX_CT_INT, "5432", "DB_PORT", 1, 65535, 0, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL port"},
    {"db_user", OUTBOX_CT_STR, "postgres", "DB_USER", 0, 0, 0, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL user"},
    {"db_password", OUTBOX_CT_STR, "postgres", "DB_PASSWORD", 0, 0, 1, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL password"},
    {"db_name", OUTBOX_CT_STR, "outbox_db", "DB_NAME", 0, 0, 0, NULL, OUTBOX_SCOPE_DB,
     "PostgreSQL database"},

    /* ---- relay engine ---- */
    {"workers", OUTBOX_CT_INT, "2", "OUTBOX_WORKERS", 1, 256, 0, NULL, OUTBOX_SCOPE_RELAY,
     "relay worker threads, each with its own database session and broker connection (more "
     "for a slow broker; each worker's claim reads past the other workers' lanes, so more cost "
     "the database more per event: docs/BENCHMARKS.md has the curve)"},
    {"batch_size", OUTBOX_CT_INT, "2000", "OUTBOX_BATCH_SIZE", 1, 10000, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "most events claimed per batch (a batch is one transaction; docs/BENCHMARKS.md has the "
     "curve)"},
    {"poll_interval", OUTBOX_CT_DURATION, "1s", "OUTBOX_POLL_INTERVAL", 1, MS_H, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "longest idle wait between claims (a wake-up hint ends it sooner); alias "
     "OUTBOX_WORKER_INTERVAL"},
    {"poll_min_interval", OUTBOX_CT_DURATION, "1ms", "OUTBOX_POLL_MIN_INTERVAL", 0, MS_H, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "low latency for producers that send no wake-up hint (plain SQL): a watcher thread looks "
     "at the newest due events this often while new ones keep coming, backing off (doubling) to "
     "poll_interval when none do, and wakes only the workers whose lanes have work; under a "
     "heavy load a busy worker spaces its claims itself, up to 32ms or 4 intervals (e.g. 1ms; "
     "0 = off: such events wait up to poll_interval)"},
    {"synchronous_ack", OUTBOX_CT_BOOL, "false", "OUTBOX_SYNCHRONOUS_ACK", 0, 0, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "wait for the database to flush each acknowledgement (a batch's commit) to disk; false: "
     "the relay's commits do not wait (synchronous_commit=off for its sessions only), and an "
     "acknowledgement lost in a PostgreSQL crash only means its events are published again "
     "(at least once; consumers' inbox drops the duplicates). Producers' commits are unaffected"},
    {"ack_on_claim", OUTBOX_CT_BOOL, "true", "OUTBOX_ACK_ON_CLAIM", 0, 0, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "PostgreSQL: the claim deletes (ack_mode delete) or marks (mark) the events it hands out "
     "in the same statement, inside the batch's transaction, and a batch whose events were all "
     "published just commits; when some were not, that transaction is rolled back and only the "
     "published ones are acknowledged, before the failures are recorded. false: the claim locks "
     "and a second statement acknowledges after publishing (docs/BENCHMARKS.md compares both)"},
    {"notify", OUTBOX_CT_BOOL, "false", "OUTBOX_NOTIFY", 0, 0, 0, NULL, OUTBOX_SCOPE_RELAY,
     "the relay LISTENs for the wake-up hint (pg_notify('<table>_wakeup')); in a producer "
     "process, OUTBOX_NOTIFY=true makes outbox_enqueue send it. Off by default: the watcher "
     "(poll_min_interval) gives millisecond latency without it, and the hint costs producers' "
     "commit throughput (NOTIFY serialises commits)"},
    {"publish_timeout", OUTBOX_CT_DURATION, "10s", "OUTBOX_PUBLISH_TIMEOUT", 10, MS_H, 0, NULL,
     OUTBOX_SCOPE_RELAY | OUTBOX_SCOPE_SINK,
     "longest wait for broker confirmation of a batch; also bounds each relay transaction"},
    {"outbox_table", OUTBOX_CT_STR, "outbox", "OUTBOX_TABLE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_DB | OUTBOX_SCOPE_RELAY,
     "outbox table to read (one per service is allowed); its dead letters are in "
     "TABLE_dead_letter"},
    {"ack_mode", OUTBOX_CT_ENUM, "delete", "OUTBOX_ACK_MODE", 0, 0, 0, "delete|mark",
     OUTBOX_SCOPE_RELAY,
     "on broker confirmation, delete the row, or mark it status='processed' with processed_at and "
     "keep it"},
    {"processed_retention", OUTBOX_CT_DURATION, "7d", "OUTBOX_PROCESSED_RETENTION", 0, 3650 * MS_D,
     0, NULL, OUTBOX_SCOPE_RELAY,
     "ack_mode=mark: processed rows older than this are purged (0 = keep)"},
    {"max_attempts", OUTBOX_CT_INT, "10", "OUTBOX_MAX_ATTEMPTS", 1, 100000, 0, NULL,
     OUTBOX_SCOPE_RELAY, "publish attempts before an event moves to the dead-letter table"},
    {"backoff_base", OUTBOX_CT_DURATION, "500ms", "OUTBOX_BACKOFF_BASE", 1, MS_H, 0, NULL,
     OUTBOX_SCOPE_RELAY, "first retry delay; doubles per attempt, with full jitter"},
    {"backoff_max", OUTBOX_CT_DURATION, "60s", "OUTBOX_BACKOFF_MAX", 1, MS_D, 0, NULL,
     OUTBOX_SCOPE_RELAY, "longest retry delay (also caps broker-down probing)"},
    {"broker_probe_max", OUTBOX_CT_DURATION, "5s", "OUTBOX_BROKER_PROBE_MAX", 10, 10 * 60 * MS_S, 0,
     NULL, OUTBOX_SCOPE_RELAY,
     "longest wait between reachability probes while the broker is down (resume delay)"},
    {"maintenance_interval", OUTBOX_CT_DURATION, "30s", "OUTBOX_MAINTENANCE_INTERVAL", 100, MS_D, 0,
     NULL, OUTBOX_SCOPE_RELAY,
     "how often worker-1 purges expired dead letters and inbox rows (and parks, in park mode); "
     "while a backlog drains in full batches it waits, at most one more interval"},
    {"vacuum_after", OUTBOX_CT_INT, "20000", "OUTBOX_VACUUM_AFTER", 0, 1000000000, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "PostgreSQL: after this many events acknowledged by this relay, worker-1 runs VACUUM "
     "(SKIP_LOCKED) on the outbox table, at most once a second and not while draining a backlog "
     "(0 = off: autovacuum only). Each "
     "acknowledgement leaves a dead row that claims and inserts walk past until a vacuum, and "
     "autovacuum looks at most once a minute (docs/OPERATIONS.md)"},
    {"dlq_mode", OUTBOX_CT_ENUM, "hold", "OUTBOX_DLQ_MODE", 0, 0, 0, "hold|park",
     OUTBOX_SCOPE_RELAY,
     "after a dead letter, later events of its key wait (hold) or are dead-lettered too (park)"},
    {"dlq_retention", OUTBOX_CT_DURATION, "7d", "OUTBOX_DLQ_RETENTION", 0, 3650 * MS_D, 0, NULL,
     OUTBOX_SCOPE_RELAY, "dead letters older than this are purged (0 = keep)"},
    {"inbox_retention", OUTBOX_CT_DURATION, "7d", "OUTBOX_INBOX_RETENTION", 0, 3650 * MS_D, 0, NULL,
     OUTBOX_SCOPE_RELAY | OUTBOX_SCOPE_SERVICE,
     "inbox records older than this are purged (0 = keep); must exceed the longest redelivery "
     "window"},
    {"rebalance_interval", OUTBOX_CT_DURATION, "1s", "OUTBOX_REBALANCE_INTERVAL", 10,
     10 * 60 * MS_S, 0, NULL, OUTBOX_SCOPE_RELAY,
     "how often workers re-divide lanes (takeover time after a relay dies)"},
    {"shutdown_timeout", OUTBOX_CT_DURATION, "10s", "OUTBOX_SHUTDOWN_TIMEOUT", 0, MS_H, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "on SIGTERM/SIGINT, longest wait for batches in flight (relay workers, a service's consumer "
     "threads)"},
    {"metrics_addr", OUTBOX_CT_STR, "127.0.0.1:9464", "OUTBOX_METRICS_ADDR", 0, 0, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "host:port for the admin server: /metrics, /healthz, /readyz, dashboard (empty or \"off\" "
     "disables)"},
    {"admin_token", OUTBOX_CT_STR, "", "OUTBOX_ADMIN_TOKEN", 0, 0, 1, NULL, OUTBOX_SCOPE_RELAY,
     "bearer token for the admin API's actions (dead-letter requeue); required when "
     "metrics_addr is not loopback"},
    {"relay_name", OUTBOX_CT_STR, "", "OUTBOX_RELAY_NAME", 0, 0, 0, NULL, OUTBOX_SCOPE_RELAY,
     "name shown in outboxctl status (default host:pid)"},
    {"fault_publish_fail_rate", OUTBOX_CT_STR, "0", "OUTBOX_FAULT_PUBLISH_FAIL_RATE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_RELAY,
     "testing only: fraction (0..1) of publishes failed on purpose before sending"},
    {"fault_ack_delay", OUTBOX_CT_DURATION, "0", "OUTBOX_FAULT_ACK_DELAY", 0, 10 * 60 * MS_S, 0,
     NULL, OUTBOX_SCOPE_RELAY,
     "testing only: pause between broker confirmation and acknowledgement (widens the crash "
     "window)"},
    {"fault_poison_type", OUTBOX_CT_STR, "", "OUTBOX_FAULT_POISON_TYPE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_RELAY, "testing only: events of this type always fail to publish (poison)"},

    /* ---- sinks ---- */
    {"sink", OUTBOX_CT_STR, "", "OUTBOX_SINK", 0, 0, 2, NULL, OUTBOX_SCOPE_SINK,
     "broker URL: redis://, redis+pubsub://, kafka://, amqp://, nats://, http(s)://, "
     "opensearch+http(s)://, stdout:, file:PATH (default redis://REDIS_ADDR)"},
    {"redis_addr", OUTBOX_CT_STR, "localhost:6379", "REDIS_ADDR", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE, "Redis host:port (default sink and consumers)"},
    {"redis_password", OUTBOX_CT_STR, "", "REDIS_PASSWORD", 0, 0, 1, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE, "Redis password (AUTH)"},
    {"redis_stream_maxlen", OUTBOX_CT_INT, "0", "OUTBOX_REDIS_MAXLEN", 0, INT64_MAX, 0, NULL,
     OUTBOX_SCOPE_SINK, "approximate MAXLEN trim per stream on XADD (0 = never trim)"},
    {"content_mode", OUTBOX_CT_ENUM, "structured", "OUTBOX_CONTENT_MODE", 0, 0, 0,
     "structured|binary", OUTBOX_SCOPE_SINK,
     "CloudEvents mode where the broker has headers: whole document as body (structured) or "
     "attributes as headers (binary)"},
    {"webhook_secret", OUTBOX_CT_STR, "", "OUTBOX_WEBHOOK_SECRET", 0, 0, 1, NULL, OUTBOX_SCOPE_SINK,
     "HTTP sink: HMAC-SHA256 key for the signature header (empty = unsigned)"},
    /* ---- services: HTTP layer (src/http/) ---- */
    {"port", OUTBOX_CT_INT, "8080", "PORT", 1, 65535, 0, NULL, OUTBOX_SCOPE_HTTP,
     "HTTP port of the service API"},
    {"http_addr", OUTBOX_CT_STR, "0.0.0.0", "OUTBOX_HTTP_ADDR", 0, 0, 0, NULL, OUTBOX_SCOPE_HTTP,
     "IPv4 address the service API listens on"},
    {"http_max_body", OUTBOX_CT_INT, "65536", "OUTBOX_HTTP_MAX_BODY", 64, 64 * 1024 * 1024, 0, NULL,
     OUTBOX_SCOPE_HTTP, "largest accepted request body in bytes (larger: 413)"},
    {"http_max_connections", OUTBOX_CT_INT, "512", "OUTBOX_HTTP_MAX_CONNECTIONS", 1, 100000, 0,
     NULL, OUTBOX_SCOPE_HTTP, "concurrent HTTP connections (one thread each)"},
    {"http_timeout", OUTBOX_CT_DURATION, "30s", "OUTBOX_HTTP_TIMEOUT", 1000, MS_H, 0, NULL,
     OUTBOX_SCOPE_HTTP,
     "idle HTTP connections are closed after this long; a request body must arrive within it"},
    {"http_header_timeout", OUTBOX_CT_DURATION, "10s", "OUTBOX_HTTP_HEADER_TIMEOUT", 100, MS_H, 0,
     NULL, OUTBOX_SCOPE_HTTP,
     "a request head (line and headers) must arrive within this, else 408 (slow clients)"},
    {"http_token", OUTBOX_CT_STR, "", "OUTBOX_HTTP_TOKEN", 0, 0, 1, NULL, OUTBOX_SCOPE_HTTP,
     "bearer token every API request must carry (Authorization: Bearer ...), but /healthz and "
     "/readyz; empty = no authentication"},
    {"db_pool_size", OUTBOX_CT_INT, "32", "OUTBOX_DB_POOL_SIZE", 1, 1000, 0, NULL,
     OUTBOX_SCOPE_HTTP | OUTBOX_SCOPE_SERVICE,
     "database connections shared by the HTTP request threads (as many as concurrent clients: "
     "commits that wait for the disk together share its flush; 16 reached 0.59 of the "
     "database's ceiling at 32 clients, 32 reached 0.80, docs/BENCHMARKS.md)"},
    {"idempotency_retention", OUTBOX_CT_DURATION, "24h", "OUTBOX_IDEMPOTENCY_RETENTION", 1000,
     3650 * MS_D, 0, NULL, OUTBOX_SCOPE_HTTP,
     "how long an Idempotency-Key and its stored response are kept (then purged)"},
    {"idempotency_key_required", OUTBOX_CT_BOOL, "false", "OUTBOX_IDEMPOTENCY_KEY_REQUIRED", 0, 0,
     0, NULL, OUTBOX_SCOPE_HTTP,
     "POST requests without an Idempotency-Key header are refused (400)"},
    /* ---- services: which parts run in this process; consumers ---- */
    {"api", OUTBOX_CT_BOOL, "true", "OUTBOX_RUN_API", 0, 0, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "run the HTTP API in this process (--no-api to leave it to another process)"},
    {"relay", OUTBOX_CT_BOOL, "true", "OUTBOX_RUN_RELAY", 0, 0, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "run the relay worker pool in this process (--no-relay)"},
    {"consumers", OUTBOX_CT_BOOL, "true", "OUTBOX_RUN_CONSUMERS", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SERVICE, "run the service's consumers in this process (--no-consumers)"},
    {"consumer_source", OUTBOX_CT_STR, "", "OUTBOX_CONSUMER_SOURCE", 0, 0, 2, NULL,
     OUTBOX_SCOPE_SERVICE,
     "broker URL consumers read from: redis:// (Streams) or redis+pubsub:// (default: the sink, "
     "else redis://REDIS_ADDR)"},
    {"consumer_claim_idle", OUTBOX_CT_DURATION, "30s", "OUTBOX_CONSUMER_CLAIM_IDLE", 10, MS_D, 0,
     NULL, OUTBOX_SCOPE_SERVICE,
     "Redis Streams: entries pending this long at a crashed consumer are taken over (XAUTOCLAIM)"},
    {"consumer_stream_retention", OUTBOX_CT_DURATION, "1h", "OUTBOX_CONSUMER_STREAM_RETENTION", 0,
     3650 * MS_D, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "Redis Streams consumer: trims its streams (XTRIM MINID, about once a minute) of the "
     "entries older than this that every consumer group has acknowledged (0 = never trim: "
     "the stream grows without bound)"},
    {"consumer_threads", OUTBOX_CT_INT, "2", "OUTBOX_CONSUMER_THREADS", 1, 64, 0, NULL,
     OUTBOX_SCOPE_SERVICE,
     "threads per consumer group in a service process (each its own broker and database session)"},
    {"consumer_batch", OUTBOX_CT_INT, "100", "OUTBOX_CONSUMER_BATCH", 1, 10000, 0, NULL,
     OUTBOX_SCOPE_SERVICE, "messages read per consumer poll"},
    {"order_batch", OUTBOX_CT_INT, "32", "OUTBOX_ORDER_BATCH", 1, 1000, 0, NULL,
     OUTBOX_SCOPE_SERVICE,
     "orders: POST /orders that arrive together are written in one transaction, at most this "
     "many (each keeps its own answer and Idempotency-Key; 1 = one transaction per order)"},
    {"consumer_batch_transaction", OUTBOX_CT_BOOL, "true", "OUTBOX_CONSUMER_BATCH_TRANSACTION", 0,
     0, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "consumers whose application gives a batch hook apply the messages of one poll in one "
     "database transaction (a savepoint each, one COMMIT, acknowledged after it); false: one "
     "transaction per message"},
    {"search_database_url", OUTBOX_CT_STR, "", "SEARCH_DATABASE_URL", 0, 0, 2, NULL,
     OUTBOX_SCOPE_SERVICE,
     "cars: PostgreSQL conninfo or URI of the search database the projection writes and "
     "GET /cars/search reads (empty = the primary database's server, database <name>_search)"},
    {"consumer_max_attempts", OUTBOX_CT_INT, "10", "OUTBOX_CONSUMER_MAX_ATTEMPTS", 1, 100000, 0,
     NULL, OUTBOX_SCOPE_SERVICE,
     "consumer: failed handler attempts (counted in the consumer's database) before a message "
     "moves to outbox_consumer_dead_letter"},
    {"consumer_retry_backoff", OUTBOX_CT_DURATION, "200ms", "OUTBOX_CONSUMER_RETRY_BACKOFF", 1,
     MS_H, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "consumer: first delay before a failed message is handled again; doubles per attempt"},
    {"consumer_retry_backoff_max", OUTBOX_CT_DURATION, "20s", "OUTBOX_CONSUMER_RETRY_BACKOFF_MAX",
     1, MS_D, 0, NULL, OUTBOX_SCOPE_SERVICE,
     "consumer: longest delay between two attempts of a failed message (keep it below "
     "consumer_claim_idle; while the consumer's database is down it is probed at least every "
     "5 s)"},
    {"consumer_dead_letters", OUTBOX_CT_BOOL, "true", "OUTBOX_CONSUMER_DEAD_LETTERS", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SERVICE,
     "consumer: count attempts and keep dead letters in the consumer's database (database_url); "
     "off: a failing message is retried for ever"},
    {"nats_stream_create", OUTBOX_CT_BOOL, "true", "OUTBOX_NATS_STREAM_CREATE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS: create the JetStream stream <TOPIC> (subjects <topic>.>) when no stream captures them"},
    {"nats_stream_storage", OUTBOX_CT_ENUM, "file", "OUTBOX_NATS_STREAM_STORAGE", 0, 0, 0,
     "file|memory", OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS: storage of streams that outbox creates"},
    {"nats_stream_replicas", OUTBOX_CT_INT, "1", "OUTBOX_NATS_STREAM_REPLICAS", 1, 5, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS: replicas of streams that outbox creates (clustered JetStream)"},
    {"nats_stream_max_age", OUTBOX_CT_DURATION, "0", "OUTBOX_NATS_STREAM_MAX_AGE", 0, 3650 * MS_D,
     0, NULL, OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS: messages older than this leave streams that outbox creates (0 = keep)"},
    {"nats_dup_window", OUTBOX_CT_DURATION, "2m", "OUTBOX_NATS_DUP_WINDOW", 100, 7 * MS_D, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS: duplicate window of created streams; a re-publish of an event id within it is dropped"},
    {"nats_ack_wait", OUTBOX_CT_DURATION, "30s", "OUTBOX_NATS_ACK_WAIT", 100, MS_H, 0, NULL,
     OUTBOX_SCOPE_SERVICE,
     "NATS consumer: a message not acknowledged within this long is redelivered"},
    {"nats_nak_delay", OUTBOX_CT_DURATION, "1s", "OUTBOX_NATS_NAK_DELAY", 0, MS_H, 0, NULL,
     OUTBOX_SCOPE_SERVICE,
     "NATS consumer: shortest redelivery delay after the handler fails (negative "
     "acknowledgement; consumer_retry_backoff applies above it)"},
    {"nats_ca_file", OUTBOX_CT_STR, "", "OUTBOX_NATS_CA_FILE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "NATS over TLS (nats+tls://): CA certificates (PEM) to verify the server with (empty = the "
     "system store)"},
    {"nats_fetch_batch", OUTBOX_CT_INT, "100", "OUTBOX_NATS_FETCH_BATCH", 1, 10000, 0, NULL,
     OUTBOX_SCOPE_SERVICE, "NATS consumer: messages fetched per poll"},
    {"webhook_batch", OUTBOX_CT_BOOL, "false", "OUTBOX_WEBHOOK_BATCH", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "HTTP sink: POST each batch as one application/cloudevents-batch+json array instead of one "
     "request per event"},
    {"webhook_ca_file", OUTBOX_CT_STR, "", "OUTBOX_WEBHOOK_CA_FILE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "HTTP sink: PEM file of CA certificates that verify https:// endpoints (empty = system "
     "store)"},
    {"webhook_insecure_skip_verify", OUTBOX_CT_BOOL, "false", "OUTBOX_WEBHOOK_INSECURE_SKIP_VERIFY",
     0, 0, 0, NULL, OUTBOX_SCOPE_SINK,
     "HTTP sink: DANGEROUS, testing only: accept any TLS certificate and host name"},
    {"opensearch_index", OUTBOX_CT_STR, "", "OUTBOX_OPENSEARCH_INDEX", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "OpenSearch sink: index for every event (empty = URL path prefix + topic, lower-cased)"},
    {"opensearch_delete_suffix", OUTBOX_CT_STR, "Deleted", "OUTBOX_OPENSEARCH_DELETE_SUFFIX", 0, 0,
     0, NULL, OUTBOX_SCOPE_SINK,
     "OpenSearch sink: an event whose type ends with this deletes the document (empty = never)"},
    {"opensearch_username", OUTBOX_CT_STR, "", "OUTBOX_OPENSEARCH_USERNAME", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "OpenSearch sink: HTTP basic-auth user (user:password@ in the URL also works)"},
    {"opensearch_password", OUTBOX_CT_STR, "", "OUTBOX_OPENSEARCH_PASSWORD", 0, 0, 1, NULL,
     OUTBOX_SCOPE_SINK, "OpenSearch sink: HTTP basic-auth password"},
    {"opensearch_ca_file", OUTBOX_CT_STR, "", "OUTBOX_OPENSEARCH_CA_FILE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "OpenSearch sink: PEM file of CA certificates that verify opensearch+https:// (empty = system "
     "store)"},
    {"opensearch_insecure_skip_verify", OUTBOX_CT_BOOL, "false",
     "OUTBOX_OPENSEARCH_INSECURE_SKIP_VERIFY", 0, 0, 0, NULL, OUTBOX_SCOPE_SINK,
     "OpenSearch sink: DANGEROUS, testing only: accept any TLS certificate and host name"},
    {"kafka_properties", OUTBOX_CT_STR, "", "OUTBOX_KAFKA_PROPERTIES", 0, 0, 1, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "Kafka: extra librdkafka properties \"k=v,k=v\" for producer and consumer, applied last (e.g. "
     "security.protocol=SASL_SSL)"},
    {"kafka_linger", OUTBOX_CT_DURATION, "5ms", "OUTBOX_KAFKA_LINGER", 0, 60 * MS_S, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "Kafka producer linger.ms: how long to gather a batch before sending (flush ends it early)"},
    {"kafka_compression", OUTBOX_CT_ENUM, "none", "OUTBOX_KAFKA_COMPRESSION", 0, 0, 0,
     "none|gzip|snappy|lz4|zstd", OUTBOX_SCOPE_SINK, "Kafka producer compression.type"},
    {"kafka_offset_reset", OUTBOX_CT_ENUM, "earliest", "OUTBOX_KAFKA_OFFSET_RESET", 0, 0, 0,
     "earliest|latest", OUTBOX_SCOPE_SERVICE,
     "Kafka consumer: where a group without a committed offset starts (auto.offset.reset)"},
    {"amqp_mandatory", OUTBOX_CT_BOOL, "false", "OUTBOX_AMQP_MANDATORY", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK,
     "AMQP sink: publish with the mandatory flag, so an event no queue is bound for is returned "
     "and retried instead of dropped by the broker"},
    {"amqp_prefetch", OUTBOX_CT_INT, "100", "OUTBOX_AMQP_PREFETCH", 1, 65535, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "AMQP consumer: unacknowledged messages the broker may send ahead (basic.qos)"},
    {"amqp_heartbeat", OUTBOX_CT_DURATION, "30s", "OUTBOX_AMQP_HEARTBEAT", 0, MS_H, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "AMQP consumer: heartbeat interval (0 = off); a handler running longer than twice this loses "
     "the connection"},
    {"amqp_ca_file", OUTBOX_CT_STR, "", "OUTBOX_AMQP_CA_FILE", 0, 0, 0, NULL,
     OUTBOX_SCOPE_SINK | OUTBOX_SCOPE_SERVICE,
     "AMQP over TLS (amqps://): CA certificates (PEM) to verify the broker with"},
    /* Sink-specific rows (kafka_*, amqp_*, nats_*, webhook_*, opensearch_*) go here. */

    /* ---- logging ---- */
    {"log_level", OUTBOX_CT_ENUM, "info", "OUTBOX_LOG_LEVEL", 0, 0, 0, "debug|info|warn|error",
     OUTBOX_SCOPE_LOG, "lowest level logged"},
    {"log_format", OUTBOX_CT_ENUM, "json", "OUTBOX_LOG_FORMAT", 0, 0, 0, "json|text",
     OUTBOX_SCOPE_LOG, "one JSON object per line, or plain text"},
};

#define NPROPS ((int)(sizeof(props) / sizeof(props[0])))

struct outbox_conf_s {
    char *vals[NPROPS];
    unsigned char set[NPROPS]; /* 1: set by the user (env, flag, outbox_conf_set) */
    char *dburl;               /* cache for outbox__conf_database_url */
};

const outbox_conf_prop_t *outbox__conf_props(int *n)
{
    *n = NPROPS;
    return props;
}

static int prop_index(const char *name)
{
    char norm[64];
    size_t i;
    for (i = 0; i < sizeof(norm) - 1 && name[i]; i++)
        norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    norm[i] = '\0';
    for (int k = 0; k < NPROPS; k++)
        if (!strcmp(props[k].name, norm))
            return k;
    return -1;
}

outbox_conf_t *outbox_conf_new(void)
{
    outbox_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    for (int k = 0; k < NPROPS; k++) {
        if (!(c->vals[k] = strdup(props[k].def))) {
            outbox_conf_destroy(c);
            return NULL;
        }
    }
    return c;
}

outbox_conf_t *outbox_conf_dup(const outbox_conf_t *conf)
{
    outbox_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    for (int k = 0; k < NPROPS; k++) {
        if (!(c->vals[k] = strdup(conf->vals[k]))) {
            outbox_conf_destroy(c);
            return NULL;
        }
        c->set[k] = conf->set[k];
    }
    return c;
}

void outbox_conf_destroy(outbox_conf_t *conf)
{
    if (!conf)
        return;
    for (int k = 0; k < NPROPS; k++)
        free(conf->vals[k]);
    free(conf->dburl);
    free(conf);
}

static int parse_bool(const char *v, int *out)
{
    static const char *t[] = {"1", "true", "yes", "on"}, *f[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, t[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, f[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    *out = x;
    return 0;
}

static int enum_has(const char *vals, const char *v)
{
    size_t n = strlen(v);
    const char *p = vals;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n))
            return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

static outbox_err_t validate(const outbox_conf_prop_t *p, const char *value, const char *origin,
                             char *errstr, size_t errstr_size)
{
    int64_t x;
    int b;
    switch (p->type) {
    case OUTBOX_CT_STR:
        return OUTBOX_OK;
    case OUTBOX_CT_BOOL:
        if (parse_bool(value, &b))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: \"%s\" is not a boolean (use true/false, 1/0, yes/no, on/off)",
                               origin, value);
        return OUTBOX_OK;
    case OUTBOX_CT_INT:
        if (parse_int(value, &x))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: \"%s\" is not an integer", origin, value);
        if (x < p->min || x > p->max)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: %lld is out of range [%lld, %lld]", origin, (long long)x,
                               (long long)p->min, (long long)p->max);
        return OUTBOX_OK;
    case OUTBOX_CT_DURATION:
        if (outbox__parse_duration_ms(value, &x))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: \"%s\" is not a duration (e.g. 250ms, 1s, 5m, 24h, 7d)", origin,
                               value);
        if (x < p->min || x > p->max)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: %s is out of range [%lldms, %lldms]", origin, value,
                               (long long)p->min, (long long)p->max);
        return OUTBOX_OK;
    case OUTBOX_CT_ENUM:
        if (!enum_has(p->enum_vals, value))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "%s: \"%s\" is not one of %s", origin, value, p->enum_vals);
        return OUTBOX_OK;
    }
    return OUTBOX_OK;
}

static outbox_err_t set_idx(outbox_conf_t *conf, int k, const char *value, const char *origin,
                            char *errstr, size_t errstr_size)
{
    outbox_err_t err = validate(&props[k], value, origin, errstr, errstr_size);
    if (err)
        return err;
    char *v = strdup(value);
    if (!v)
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    free(conf->vals[k]);
    conf->vals[k] = v;
    conf->set[k] = 1;
    free(conf->dburl);
    conf->dburl = NULL;
    return OUTBOX_OK;
}

outbox_err_t outbox_conf_set(outbox_conf_t *conf, const char *name, const char *value, char *errstr,
                             size_t errstr_size)
{
    if (!conf || !name || !value)
        return outbox__err(OUTBOX_ERR_INVALID_ARG, errstr, errstr_size,
                           "conf, name and value are required");
    int k = prop_index(name);
    if (k < 0)
        return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                           "unknown configuration property \"%s\"", name);
    return set_idx(conf, k, value, props[k].name, errstr, errstr_size);
}

outbox_err_t outbox_conf_from_env(outbox_conf_t *conf, char *errstr, size_t errstr_size)
{
    for (int k = 0; k < NPROPS; k++) {
        const char *v = props[k].env ? getenv(props[k].env) : NULL;
        if (!v && !strcmp(props[k].name, "poll_interval"))
            v = getenv("OUTBOX_WORKER_INTERVAL"); /* seed-style alias */
        if (!v)
            continue;
        outbox_err_t err = set_idx(conf, k, v, props[k].env, errstr, errstr_size);
        if (err)
            return err;
    }
    return OUTBOX_OK;
}

const char *outbox_conf_get(const outbox_conf_t *conf, const char *name)
{
    int k = prop_index(name);
    return k < 0 ? NULL : conf->vals[k];
}

int outbox__conf_is_set(const outbox_conf_t *conf, const char *name)
{
    int k = prop_index(name);
    return k >= 0 && conf->set[k];
}

static int must_index(const char *name, outbox_conf_type_t type)
{
    int k = prop_index(name);
    if (k < 0 || props[k].type != type) {
        fprintf(stderr, "outbox: internal error: configuration property %s missing or mistyped\n",
                name);
        abort();
    }
    return k;
}

const char *outbox__conf_str(const outbox_conf_t *conf, const char *name)
{
    int k = prop_index(name);
    if (k < 0 || (props[k].type != OUTBOX_CT_STR && props[k].type != OUTBOX_CT_ENUM)) {
        fprintf(stderr, "outbox: internal error: configuration property %s missing or mistyped\n",
                name);
        abort();
    }
    return conf->vals[k];
}

int64_t outbox__conf_int(const outbox_conf_t *conf, const char *name)
{
    int64_t x = 0;
    parse_int(conf->vals[must_index(name, OUTBOX_CT_INT)], &x);
    return x;
}

int outbox__conf_bool(const outbox_conf_t *conf, const char *name)
{
    int b = 0;
    parse_bool(conf->vals[must_index(name, OUTBOX_CT_BOOL)], &b);
    return b;
}

int64_t outbox__conf_ms(const outbox_conf_t *conf, const char *name)
{
    int64_t x = 0;
    outbox__parse_duration_ms(conf->vals[must_index(name, OUTBOX_CT_DURATION)], &x);
    return x;
}

/* Appends key='value' to a conninfo string, quoting per libpq rules. */
static void conninfo_add(char *buf, size_t size, const char *key, const char *val)
{
    size_t n = strlen(buf);
    if (n + 1 >= size)
        return;
    int w = snprintf(buf + n, size - n, "%s%s='", n ? " " : "", key);
    if (w < 0 || (size_t)w >= size - n)
        return;
    n += (size_t)w;
    for (const char *p = val; *p && n + 3 < size; p++) {
        if (*p == '\'' || *p == '\\')
            buf[n++] = '\\';
        buf[n++] = *p;
    }
    if (n + 1 < size)
        buf[n++] = '\'';
    buf[n] = '\0';
}

/* The cache is filled on first use, possibly by several threads of one relay
 * at once: fill it under a lock. Setters run before threads start. */
static pthread_mutex_t dburl_lock = PTHREAD_MUTEX_INITIALIZER;

const char *outbox__conf_database_url(const outbox_conf_t *conf)
{
    outbox_conf_t *c = (outbox_conf_t *)conf; /* cache only */
    pthread_mutex_lock(&dburl_lock);
    if (!c->dburl) {
        const char *url = outbox__conf_str(conf, "database_url");
        if (url[0]) {
            c->dburl = strdup(url);
        } else {
            char buf[2048] = "";
            conninfo_add(buf, sizeof(buf), "host", outbox__conf_str(conf, "db_host"));
            conninfo_add(buf, sizeof(buf), "port", conf->vals[prop_index("db_port")]);
            conninfo_add(buf, sizeof(buf), "user", outbox__conf_str(conf, "db_user"));
            conninfo_add(buf, sizeof(buf), "password", outbox__conf_str(conf, "db_password"));
            conninfo_add(buf, sizeof(buf), "dbname", outbox__conf_str(conf, "db_name"));
            c->dburl = strdup(buf);
        }
    }
    const char *r = c->dburl ? c->dburl : "";
    pthread_mutex_unlock(&dburl_lock);
    return r;
}

outbox_err_t outbox__conf_parse_args(outbox_conf_t *conf, int argc, char **argv, int *argi,
                                     int *help, char *errstr, size_t errstr_size)
{
    int i = 1;
    *help = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            *help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            break;
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof(name))
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "unknown option %s", a);
        memcpy(name, a + 2, nlen);
        name[nlen] = '\0';
        int k = prop_index(name);
        if (k < 0 && !eq && !strncmp(name, "no-", 3)) {
            int kb = prop_index(name + 3);
            if (kb >= 0 && props[kb].type == OUTBOX_CT_BOOL) {
                outbox_err_t err = set_idx(conf, kb, "false", a, errstr, errstr_size);
                if (err)
                    return err;
                continue;
            }
        }
        if (k < 0)
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size,
                               "unknown option %s (see --help)", a);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (props[k].type == OUTBOX_CT_BOOL)
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return outbox__err(OUTBOX_ERR_CONFIG, errstr, errstr_size, "option %s needs a value",
                               a);
        outbox_err_t err = set_idx(conf, k, val, a, errstr, errstr_size);
        if (err)
            return err;
    }
    *argi = i;
    return OUTBOX_OK;
}

outbox_conf_t *outbox__conf_load(const char *prog, int argc, char **argv, void (*usage)(FILE *fp),
                                 int *argi, int *exit_code)
{
    char err[1024];
    int first = argc, help = 0;
    outbox_conf_t *conf = outbox_conf_new();
    *exit_code = 2;
    if (!conf || outbox_conf_from_env(conf, err, sizeof(err)) ||
        outbox__conf_parse_args(conf, argc, argv, &first, &help, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", prog, conf ? err : "out of memory");
        outbox_conf_destroy(conf);
        return NULL;
    }
    if (help) {
        usage(stdout);
        outbox_conf_destroy(conf);
        *exit_code = 0;
        return NULL;
    }
    if (!argi && first < argc) {
        fprintf(stderr, "%s: unexpected argument \"%s\" (see --help)\n", prog, argv[first]);
        outbox_conf_destroy(conf);
        return NULL;
    }
    if (argi)
        *argi = first;
    outbox__log_setup(outbox__conf_str(conf, "log_level"), outbox__conf_str(conf, "log_format"));
    return conf;
}

static const char *type_name(const outbox_conf_prop_t *p)
{
    switch (p->type) {
    case OUTBOX_CT_STR:
        return "string";
    case OUTBOX_CT_INT:
        return "integer";
    case OUTBOX_CT_BOOL:
        return "boolean";
    case OUTBOX_CT_DURATION:
        return "duration";
    case OUTBOX_CT_ENUM:
        return p->enum_vals;
    }
    return "?";
}

void outbox__conf_print_help(FILE *fp, unsigned scopes)
{
    for (int k = 0; k < NPROPS; k++) {
        const outbox_conf_prop_t *p = &props[k];
        if (!(p->scope & scopes))
            continue;
        char flag[80];
        snprintf(flag, sizeof(flag), "--%s", p->name);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_')
                *c = '-';
        fprintf(fp, "  %-26s %s\n", flag, p->doc);
        fprintf(fp, "  %-26s [%s; env %s; default %s%s%s]\n", "", type_name(p),
                p->env ? p->env : "-", p->secret == 1 ? "(secret)" : (p->def[0] ? "\"" : "none"),
                p->secret == 1 ? "" : p->def, p->secret == 1 || !p->def[0] ? "" : "\"");
    }
}

void outbox__conf_print_markdown(FILE *fp)
{
    fprintf(fp, "# Configuration reference\n"
                "\n"
                "Every option is one row of a single table (`src/core/conf.c`). That table\n"
                "drives command-line flags, environment variables, `--help`, the redaction of\n"
                "secrets in logs, and this page. Regenerate the page with\n"
                "`build/bin/outboxctl config-doc > docs/CONFIGURATION.md`. Flags win over the\n"
                "environment. Durations take `ms`, `s`, `m`, `h`, `d` (a bare number is\n"
                "milliseconds). Booleans take `true/false`, `1/0`, `yes/no`, `on/off`.\n"
                "\n"
                "Database: `DATABASE_URL` (a libpq conninfo or URI) wins. When it is empty, the\n"
                "connection is built from the seed-style `DB_HOST DB_PORT DB_USER DB_PASSWORD\n"
                "DB_NAME`. Redis for the default sink and the consumers: `REDIS_ADDR`,\n"
                "`REDIS_PASSWORD`. Sinks are chosen by URL (`OUTBOX_SINK`); see\n"
                "[sinks/](sinks/).\n"
                "\n"
                "Options marked *testing only* inject faults; never set them in production.\n"
                "\n");
    fprintf(fp, "| property / flag | environment | type | default | description |\n");
    fprintf(fp, "|---|---|---|---|---|\n");
    for (int k = 0; k < NPROPS; k++) {
        const outbox_conf_prop_t *p = &props[k];
        char flag[80];
        snprintf(flag, sizeof(flag), "--%s", p->name);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_')
                *c = '-';
        char type[160];
        if (p->type == OUTBOX_CT_ENUM) { /* "a|b" would split the table cell */
            size_t n = 0;
            for (const char *v = p->enum_vals; *v && n + 8 < sizeof(type);) {
                size_t len = strcspn(v, "|");
                n += (size_t)snprintf(type + n, sizeof(type) - n, "%s`%.*s`", n ? ", " : "one of ",
                                      (int)len, v);
                v += len + (v[len] == '|');
            }
        } else {
            snprintf(type, sizeof(type), "%s", type_name(p));
        }
        fprintf(fp, "| `%s` | `%s` | %s | %s%s%s | %s%s |\n", flag, p->env ? p->env : "-", type,
                p->def[0] ? "`" : "", p->def[0] ? p->def : "(empty)", p->def[0] ? "`" : "", p->doc,
                p->secret == 1 ? " (secret: never logged)" : "");
    }
}

/* "name=value" pairs of the given scopes, space-separated, secrets and URL
 * passwords redacted. Caller frees; NULL on ENOMEM. */
static char *dump(const outbox_conf_t *conf, unsigned scopes, const char *sep)
{
    outbox__buf_t b = {0};
    for (int k = 0; k < NPROPS; k++) {
        const outbox_conf_prop_t *p = &props[k];
        if (!(p->scope & scopes))
            continue;
        char shown[512];
        if (p->secret == 1)
            snprintf(shown, sizeof(shown), "%s", conf->vals[k][0] ? "****" : "");
        else if (p->secret == 2)
            outbox__redact_url(conf->vals[k], shown, sizeof(shown));
        else
            snprintf(shown, sizeof(shown), "%s", conf->vals[k]);
        outbox__buf_printf(&b, "%s%s=%s", b.len ? sep : "", p->name, shown);
    }
    if (!b.p)
        outbox__buf_add(&b, "", 0);
    if (b.broken) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *outbox_conf_dump(const outbox_conf_t *conf)
{
    return conf ? dump(conf, OUTBOX_SCOPE_ALL, "\n") : NULL;
}

void outbox__conf_log(const outbox_conf_t *conf, const char *component, unsigned scopes)
{
    char *line = dump(conf, scopes, " ");
    outbox__log(OUTBOX_LOG_INFO, component, "config", line ? line : "(out of memory)", NULL);
    free(line);
}

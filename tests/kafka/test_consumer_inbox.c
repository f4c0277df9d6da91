/* The Kafka consumer with the inbox applies each effect once although Kafka
 * delivers messages again: the relay publishes 800 events in binary mode
 * and, while the consumers run, 100 of them a second time (as after a relay
 * crash between publish and acknowledge); consumer processes of one
 * group (kafka_consume_helper) apply them with outbox_inbox_record in their
 * transaction. One fails every 7th delivery after committing (redelivery by
 * seek) and is SIGKILLed mid-stream (redelivery from the last committed
 * offset to the survivors). In the end: 800 effects, one per event id, in
 * per-key order, and more deliveries than effects. */
#include <signal.h>

#include "kafka_common.h"

#define TOTAL 800
#define NKEYS 40

static pid_t spawn_helper(const kt_cluster_t *cl, const char *ci, const char *name,
                          const char *fail_every, const char *log)
{
    static char env[8][512];
    snprintf(env[0], sizeof(env[0]), "KT_BOOTSTRAPS=%s", cl->bootstraps);
    snprintf(env[1], sizeof(env[1]), "KT_DB=%s", ci);
    snprintf(env[2], sizeof(env[2]), "KT_TOPIC=payments");
    snprintf(env[3], sizeof(env[3]), "KT_GROUP=ledger");
    snprintf(env[4], sizeof(env[4]), "KT_TYPE=PaymentCaptured");
    snprintf(env[5], sizeof(env[5]),
             "OUTBOX_KAFKA_PROPERTIES=session.timeout.ms=3000,heartbeat.interval.ms=300");
    snprintf(env[6], sizeof(env[6]), "OUTBOX_LOG_LEVEL=warn");
    char *envp[12] = {env[0], env[1], env[2], env[3], env[4], env[5], env[6], NULL};
    snprintf(env[7], sizeof(env[7]), "KT_NAME=%s", name);
    char fail_env[64];
    snprintf(fail_env, sizeof(fail_env), "KT_FAIL_EVERY=%s", fail_every);
    envp[7] = env[7];
    envp[8] = fail_env; /* copied by the child before exec */
    envp[9] = NULL;
    char *argv[] = {(char *)KT_HELPER, NULL};
    return tu_spawn(argv, envp, log);
}

static long long q(PGconn *db, const char *sql)
{
    return tu_query_ll(db, sql);
}

int main(void)
{
    PGconn *db;
    const char *ci = kt_setup_db("kafka_consumer_inbox", &db);
    PQclear(tu_exec(db, "CREATE TABLE deliveries (n bigserial, id uuid NOT NULL);"
                        "CREATE TABLE effects (n bigserial, id uuid NOT NULL, key text NOT NULL, "
                        "seq int NOT NULL)"));
    kt_cluster_t cl;
    kt_cluster_start(&cl, 3);
    kt_topic(&cl, "payments", 4, 3);

    /* Publish through the relay, binary mode. */
    kt_enqueue(db, "payments", "PaymentCaptured", "acct-", 0, TOTAL, NKEYS, 8);
    PQclear(tu_exec(db, "CREATE TABLE replay AS SELECT * FROM outbox WHERE seq % 8 = 0"));
    outbox_conf_t *conf = kt_relay_conf(ci, &cl);
    kt_conf_set(conf, "content_mode", "binary");
    kt_conf_set(conf, "workers", "2");
    outbox_relay_t *relay = kt_relay_start(conf);
    kt_wait_drained(db, 30000);
    outbox_relay_destroy(relay);

    char log[256];
    snprintf(log, sizeof(log), "/tmp/kt-consumer-%d.log", (int)getpid());
    unlink(log);
    long long t0 = tu_now_ms();
    pid_t a = spawn_helper(&cl, ci, "ledger-a", "7", log);
    int first = 0;
    /* Consumer a is killed once it has applied 300 effects: the bound is on
     * the state (300 in), as generous as a slow machine needs (usually
     * 5-10 s; several times that under the sanitizers or valgrind), not a
     * speed the test demands. */
    const long long phase1_ms = tu_ms(120000);
    for (long long e; (e = q(db, "SELECT count(*) FROM effects")) < 300;) {
        if (e > 0 && !first++)
            printf("[%5.1fs] consumer a joined the group and applies\n",
                   (tu_now_ms() - t0) / 1000.0);
        CHECK(tu_now_ms() - t0 < phase1_ms,
              "consumer a applied only %lld effects in %lld s (log %s)",
              q(db, "SELECT count(*) FROM effects"), phase1_ms / 1000, log);
        CHECK(tu_wait(a, 1) == -1, "consumer a exited early (log %s)", log);
        tu_sleep_ms(5);
    }
    kill(a, SIGKILL);
    tu_wait(a, 5000);
    printf("[%5.1fs] consumer a SIGKILLed after %lld effects, %lld deliveries\n",
           (tu_now_ms() - t0) / 1000.0, q(db, "SELECT count(*) FROM effects"),
           q(db, "SELECT count(*) FROM deliveries"));

    /* Two survivors split the group (a's partitions come back after its
     * session (3 s) times out); the relay meanwhile republishes some events, as
     * after a relay crash between publish and acknowledge. */
    pid_t b = spawn_helper(&cl, ci, "ledger-b", "0", log);
    pid_t c = spawn_helper(&cl, ci, "ledger-c", "11", log);
    PQclear(tu_exec(
        db, "INSERT INTO outbox (id, topic, type, key, payload, headers, traceparent, source) "
            "SELECT id, topic, type, key, payload, headers, traceparent, source FROM replay ORDER "
            "BY seq"));
    conf = kt_relay_conf(ci, &cl);
    kt_conf_set(conf, "content_mode", "binary");
    relay = kt_relay_start(conf);
    kt_wait_drained(db, 30000);
    outbox_relay_destroy(relay);
    printf("[%5.1fs] relay published %d events a second time\n", (tu_now_ms() - t0) / 1000.0,
           TOTAL / 8);
    long long last = -1, stable_since = tu_now_ms(), t1 = tu_now_ms();
    /* Up to 150 s (stretched by tu_ms): a slow machine (or the sanitizers)
     * needs far longer than the usual 20-40 s for the group to settle and
     * catch up; the loop ends as soon as every effect is in and the
     * consumers are quiet. */
    while (tu_now_ms() - t1 < tu_ms(150000)) {
        long long e = q(db, "SELECT count(*) FROM effects"),
                  d = q(db, "SELECT count(*) FROM deliveries");
        if (e + d != last) {
            last = e + d;
            stable_since = tu_now_ms();
        }
        if (e == TOTAL && tu_now_ms() - stable_since > 1500) {
            printf("[%5.1fs] all %d effects applied; quiet for 1.5 s\n",
                   (stable_since - t0) / 1000.0, TOTAL);
            break;
        }
        CHECK(tu_wait(b, 1) == -1 && tu_wait(c, 1) == -1, "a consumer exited early (log %s)", log);
        tu_sleep_ms(50);
    }
    kill(b, SIGTERM);
    kill(c, SIGTERM);
    CHECK(tu_wait(b, 15000) == 0, "consumer b did not exit cleanly (log %s)", log);
    CHECK(tu_wait(c, 15000) == 0, "consumer c did not exit cleanly (log %s)", log);

    long long effects = q(db, "SELECT count(*) FROM effects");
    long long distinct = q(db, "SELECT count(DISTINCT id) FROM effects");
    long long inbox = q(db, "SELECT count(*) FROM outbox_inbox WHERE consumer = 'ledger'");
    long long deliveries = q(db, "SELECT count(*) FROM deliveries");
    long long redelivered =
        q(db, "SELECT count(*) FROM (SELECT id FROM deliveries GROUP BY id HAVING count(*) > 1) x");
    printf("effects %lld (distinct ids %lld), inbox %lld, deliveries %lld, ids delivered more than "
           "once %lld, "
           "%lld ms\n",
           effects, distinct, inbox, deliveries, redelivered, tu_now_ms() - t0);
    if (effects != TOTAL) {
        /* Tell apart "not in Kafka" from "in Kafka, not consumed". */
        long nrec = 0;
        kt_rec_t *recs = kt_kcat_read(&cl, "payments", 0, &nrec);
        int per[4] = {0};
        for (long i = 0; i < nrec; i++)
            if (recs[i].partition >= 0 && recs[i].partition < 4)
                per[recs[i].partition]++;
        fprintf(stderr, "diagnosis: %ld records in topic payments (per partition %d %d %d %d)\n",
                nrec, per[0], per[1], per[2], per[3]);
        PQclear(tu_exec(db, "SELECT 1"));
        fprintf(stderr,
                "diagnosis: effects per key-partition unknown; distinct keys with effects %lld\n",
                q(db, "SELECT count(DISTINCT key) FROM effects"));
        kt_recs_free(recs, nrec);
    }
    CHECK(effects == TOTAL && distinct == TOTAL && inbox == TOTAL,
          "effects %lld distinct %lld inbox %lld, want %d", effects, distinct, inbox, TOTAL);
    CHECK(deliveries > TOTAL && redelivered > 0,
          "no redelivery happened (%lld deliveries): the test proves nothing", deliveries);
    /* Per key, effects were applied in commit order. */
    long long out_of_order =
        q(db, "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY key ORDER BY n) "
              "AS prev FROM effects) x WHERE prev IS NOT NULL AND seq <= prev");
    CHECK(out_of_order == 0, "%lld effects applied out of per-key order", out_of_order);
    unlink(log);
    PQfinish(db);
    kt_cluster_stop(&cl);
    printf("PASS kafka_consumer_inbox\n");
    return 0;
}

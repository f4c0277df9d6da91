/* The in-memory store. See mem.h. One mutex per table guards everything;
 * sessions are cheap and tests are small, so claims scan the table. */
#include "store/mem/mem.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/keyset.h"
#include "core/util.h"
#include "store/store.h"

typedef struct row_s {
    int64_t seq;
    char id[OUTBOX_UUID_STRLEN + 1];
    char *topic, *type, *key, *payload, *headers, *traceparent, *source;
    char time[40];
    int attempts, priority, lane;
    int processed;           /* ack_mode=mark */
    int64_t next_attempt_ms; /* due at (outbox__now_ms clock) */
    int64_t processed_ms;
    char last_error[256];
    void *locked_by; /* the session that claimed it, or NULL */
    /* dead letters */
    char reason[16];
    int64_t dead_ms;
} row_t;

typedef struct mem_db_s {
    char name[64];
    pthread_mutex_t lock;
    row_t *rows; /* pending and processed, by seq */
    size_t n, cap;
    row_t *dead;
    size_t ndead, capdead;
    int64_t next_seq;
    void *lane_owner[OUTBOX_LANES];
    int live;      /* registered sessions */
    unsigned wake; /* bumped by every enqueue and requeue */
    int faults[OUTBOX_MEM_FAULT__COUNT];
    struct mem_db_s *next;
} mem_db_t;

typedef enum { OP_ACK, OP_RETRY, OP_DEAD } op_kind_t;
typedef struct op_s {
    op_kind_t kind;
    int64_t seq, delay_ms;
    int park;
    char reason[16], error[256];
} op_t;

typedef struct mem_sess_s {
    mem_db_t *db;
    int registered, in_tx;
    op_t *ops;
    size_t nops, capops;
} mem_sess_t;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_db_t *registry;

static const char *db_name(const char *url)
{
    return !strncmp(url, "mem:", 4) ? url + 4 : url;
}

/* The table NAME, created on first use. */
static mem_db_t *db_get(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    mem_db_t *d;
    for (d = registry; d; d = d->next)
        if (!strcmp(d->name, name))
            break;
    if (!d && (d = calloc(1, sizeof(*d)))) {
        snprintf(d->name, sizeof(d->name), "%s", name);
        pthread_mutex_init(&d->lock, NULL);
        d->next_seq = 1;
        d->next = registry;
        registry = d;
    }
    pthread_mutex_unlock(&registry_lock);
    return d;
}

static void row_free(row_t *r)
{
    free(r->topic);
    free(r->type);
    free(r->key);
    free(r->payload);
    free(r->headers);
    free(r->traceparent);
    free(r->source);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int fault(mem_db_t *d, outbox_mem_fault_t f)
{
    if (d->faults[f] <= 0)
        return 0;
    d->faults[f]--;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Test interface                                                            */

outbox_err_t outbox__mem_enqueue(const char *name, const outbox_event_t *ev, char *id_out)
{
    mem_db_t *d = db_get(name);
    if (!d || !ev || !ev->topic || !ev->type || !ev->key || !ev->payload)
        return OUTBOX_ERR_INVALID_ARG;
    pthread_mutex_lock(&d->lock);
    outbox_err_t err = OUTBOX_ERR_NOMEM;
    if (!grow((void **)&d->rows, &d->cap, d->n + 1, sizeof(row_t))) {
        row_t *r = &d->rows[d->n];
        memset(r, 0, sizeof(*r));
        r->seq = d->next_seq++;
        if (ev->id)
            snprintf(r->id, sizeof(r->id), "%s", ev->id);
        else
            outbox_uuid_v7(r->id);
        r->topic = strdup(ev->topic);
        r->type = strdup(ev->type);
        r->key = strdup(ev->key);
        r->payload = strdup(ev->payload);
        r->headers = dup_or_null(ev->headers);
        r->traceparent = dup_or_null(ev->traceparent);
        r->source = strdup(ev->source ? ev->source : "/outbox");
        r->priority = ev->priority;
        r->lane = (int)(outbox__keyset_hash(ev->key) % OUTBOX_LANES);
        r->next_attempt_ms = outbox__now_ms();
        time_t t = time(NULL);
        strftime(r->time, sizeof(r->time), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        if (id_out)
            memcpy(id_out, r->id, sizeof(r->id));
        d->n++;
        d->wake++;
        err = OUTBOX_OK;
    }
    pthread_mutex_unlock(&d->lock);
    return err;
}

void outbox__mem_fault(const char *name, outbox_mem_fault_t f, int count)
{
    mem_db_t *d = db_get(name);
    pthread_mutex_lock(&d->lock);
    d->faults[f] = count;
    pthread_mutex_unlock(&d->lock);
}

void outbox__mem_counts(const char *name, outbox_mem_counts_t *out)
{
    mem_db_t *d = db_get(name);
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n; i++) {
        if (d->rows[i].processed) {
            out->processed++;
            continue;
        }
        out->pending++;
        out->claimed_now += d->rows[i].locked_by != NULL;
        if (d->rows[i].attempts > out->max_attempts_seen)
            out->max_attempts_seen = d->rows[i].attempts;
    }
    out->dead = (long long)d->ndead;
    for (size_t i = 0; i < d->ndead; i++)
        out->parked += !strcmp(d->dead[i].reason, "parked");
    pthread_mutex_unlock(&d->lock);
}

int outbox__mem_attempts(const char *name, const char *id)
{
    mem_db_t *d = db_get(name);
    int a = -1;
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n && a < 0; i++)
        if (!strcmp(d->rows[i].id, id) && !d->rows[i].processed)
            a = d->rows[i].attempts;
    for (size_t i = 0; i < d->ndead && a < 0; i++)
        if (!strcmp(d->dead[i].id, id))
            a = d->dead[i].attempts;
    pthread_mutex_unlock(&d->lock);
    return a;
}

void outbox__mem_drop(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    for (mem_db_t **p = &registry; *p; p = &(*p)->next) {
        if (strcmp((*p)->name, name))
            continue;
        mem_db_t *d = *p;
        *p = d->next;
        for (size_t i = 0; i < d->n; i++)
            row_free(&d->rows[i]);
        for (size_t i = 0; i < d->ndead; i++)
            row_free(&d->dead[i]);
        free(d->rows);
        free(d->dead);
        pthread_mutex_destroy(&d->lock);
        free(d);
        break;
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ------------------------------------------------------------------------ */
/* Session                                                                   */

#define SESS(s) ((mem_sess_t *)(s)->state)

static int mem_handles(const char *url)
{
    return !strncmp(url, "mem:", 4);
}

static void unlock_rows(mem_sess_t *m)
{
    for (size_t i = 0; i < m->db->n; i++)
        if (m->db->rows[i].locked_by == m)
            m->db->rows[i].locked_by = NULL;
    m->nops = 0;
    m->in_tx = 0;
}

static outbox_err_t mem_open(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = calloc(1, sizeof(*m));
    if (!m || !(m->db = db_get(db_name(s->cfg.url)))) {
        free(m);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    s->state = m;
    return OUTBOX_OK;
}

static void mem_close(outbox_store_t *s)
{
    mem_sess_t *m = SESS(s);
    if (!m)
        return;
    mem_db_t *d = m->db;
    pthread_mutex_lock(&d->lock);
    unlock_rows(m); /* an open batch rolls back */
    for (int l = 0; l < OUTBOX_LANES; l++)
        if (d->lane_owner[l] == m)
            d->lane_owner[l] = NULL;
    if (m->registered)
        d->live--;
    pthread_mutex_unlock(&d->lock);
    free(m->ops);
    free(m);
    s->state = NULL;
}

static outbox_err_t mem_migrate(outbox_store_t *s, int *applied, char *errstr, size_t errstr_size)
{
    if (applied)
        *applied = 0;
    return OUTBOX_OK;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */

static outbox_err_t mem_begin(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    SESS(s)->in_tx = 1;
    SESS(s)->nops = 0;
    return OUTBOX_OK;
}

static int dead_key(const mem_db_t *d, const char *key)
{
    for (size_t i = 0; i < d->ndead; i++)
        if (!strcmp(d->dead[i].key, key))
            return 1;
    return 0;
}

static int head_of_key(const mem_db_t *d, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (!d->rows[j].processed && !strcmp(d->rows[j].key, d->rows[i].key))
            return 0;
    return 1;
}

static int cmp_priority(const void *a, const void *b)
{
    const row_t *x = *(row_t *const *)a, *y = *(row_t *const *)b;
    if (x->priority != y->priority)
        return y->priority - x->priority;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static outbox_err_t mem_claim(outbox_store_t *s, const int *lanes, int nlanes, int limit,
                              outbox_batch_t *b, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    mem_db_t *d = m->db;
    memset(b, 0, sizeof(*b));
    int mine[OUTBOX_LANES] = {0};
    for (int i = 0; i < nlanes; i++)
        mine[lanes[i]] = 1;
    pthread_mutex_lock(&d->lock);
    if (fault(d, OUTBOX_MEM_FAIL_CLAIM)) {
        pthread_mutex_unlock(&d->lock);
        return outbox__err(OUTBOX_ERR_DB, errstr, errstr_size,
                           "claim failed: injected fault (mem store)");
    }
    int64_t now = outbox__now_ms();
    row_t **pick = calloc(d->n + 1, sizeof(*pick));
    outbox__keyset_t blocked = {0};
    size_t k = 0;
    if (!pick || outbox__keyset_init(&blocked, d->n + 1)) {
        pthread_mutex_unlock(&d->lock);
        free(pick);
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    /* Priority heads first, then the rest in seq order (store.h). */
    for (size_t i = 0; i < d->n; i++) {
        row_t *r = &d->rows[i];
        if (!r->processed && r->priority > 0 && mine[r->lane] && !r->locked_by &&
            r->next_attempt_ms <= now && head_of_key(d, i) && !dead_key(d, r->key))
            pick[k++] = r;
    }
    qsort(pick, k, sizeof(*pick), cmp_priority);
    if (k > (size_t)limit)
        k = (size_t)limit;
    size_t nhi = k;
    for (size_t i = 0; i < d->n && k < (size_t)limit; i++) {
        row_t *r = &d->rows[i];
        if (r->processed || !mine[r->lane] || outbox__keyset_has(&blocked, r->key))
            continue;
        int taken = 0;
        for (size_t j = 0; j < nhi && !taken; j++)
            taken = pick[j] == r;
        if (taken)
            continue;
        if (r->locked_by || r->next_attempt_ms > now || dead_key(d, r->key)) {
            outbox__keyset_add(&blocked, r->key); /* the key waits whole */
            continue;
        }
        pick[k++] = r;
    }
    outbox__keyset_term(&blocked);
    outbox_err_t err = OUTBOX_OK;
    if (k && !(b->msgs = calloc(k, sizeof(outbox_msg_t))))
        err = outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    for (size_t i = 0; i < k && !err; i++) {
        row_t *r = pick[i];
        outbox_msg_t *msg = &b->msgs[i];
        r->locked_by = m;
        msg->seq = r->seq;
        memcpy(msg->id, r->id, sizeof(msg->id));
        /* Copies: the rows may move (realloc) while the batch is out. */
        msg->topic = strdup(r->topic);
        msg->type = strdup(r->type);
        msg->key = strdup(r->key);
        msg->source = strdup(r->source);
        msg->payload = strdup(r->payload);
        msg->payload_len = strlen(r->payload);
        msg->headers = dup_or_null(r->headers);
        msg->traceparent = dup_or_null(r->traceparent);
        msg->time = strdup(r->time);
        msg->attempts = r->attempts;
        msg->priority = r->priority;
        b->n++;
    }
    pthread_mutex_unlock(&d->lock);
    free(pick);
    return err;
}

static void mem_batch_term(outbox_store_t *s, outbox_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        outbox_msg_t *m = &b->msgs[i];
        free((char *)m->topic);
        free((char *)m->type);
        free((char *)m->key);
        free((char *)m->source);
        free((char *)m->payload);
        free((char *)m->headers);
        free((char *)m->traceparent);
        free((char *)m->time);
    }
    free(b->msgs);
    memset(b, 0, sizeof(*b));
}

static outbox_err_t push_op(mem_sess_t *m, const op_t *op, char *errstr, size_t errstr_size)
{
    if (grow((void **)&m->ops, &m->capops, m->nops + 1, sizeof(op_t)))
        return outbox__err(OUTBOX_ERR_NOMEM, errstr, errstr_size, "out of memory");
    m->ops[m->nops++] = *op;
    return OUTBOX_OK;
}

static outbox_err_t mem_ack(outbox_store_t *s, const int64_t *seqs, size_t n, char *errstr,
                            size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    pthread_mutex_lock(&m->db->lock);
    int f = fault(m->db, OUTBOX_MEM_FAIL_ACK);
    pthread_mutex_unlock(&m->db->lock);
    if (f)
        return outbox__err(OUTBOX_ERR_DB, errstr, errstr_size,
                           "acknowledge failed: injected fault (mem store)");
    for (size_t i = 0; i < n; i++) {
        op_t op = {.kind = OP_ACK, .seq = seqs[i]};
        if (push_op(m, &op, errstr, errstr_size))
            return OUTBOX_ERR_NOMEM;
    }
    return OUTBOX_OK;
}

static outbox_err_t mem_retry_at(outbox_store_t *s, int64_t seq, int64_t delay_ms,
                                 const char *error, char *errstr, size_t errstr_size)
{
    op_t op = {.kind = OP_RETRY, .seq = seq, .delay_ms = delay_ms};
    snprintf(op.error, sizeof(op.error), "%s", error ? error : "");
    /* The delay counts from now, when the failure is known. */
    op.delay_ms += outbox__now_ms();
    return push_op(SESS(s), &op, errstr, errstr_size);
}

static outbox_err_t mem_dead_letter(outbox_store_t *s, int64_t seq, const char *reason,
                                    const char *error, int park, char *errstr, size_t errstr_size)
{
    op_t op = {.kind = OP_DEAD, .seq = seq, .park = park};
    snprintf(op.reason, sizeof(op.reason), "%s", reason);
    snprintf(op.error, sizeof(op.error), "%s", error ? error : "");
    return push_op(SESS(s), &op, errstr, errstr_size);
}

static row_t *find_row(mem_db_t *d, int64_t seq, size_t *idx)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->rows[i].seq == seq) {
            *idx = i;
            return &d->rows[i];
        }
    return NULL;
}

/* Moves rows[i] to the dead letters. */
static void to_dead(mem_db_t *d, size_t i, const char *reason)
{
    if (grow((void **)&d->dead, &d->capdead, d->ndead + 1, sizeof(row_t)))
        return; /* out of memory: the row stays pending */
    row_t *r = &d->dead[d->ndead++];
    *r = d->rows[i];
    r->locked_by = NULL;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
    r->dead_ms = outbox__now_ms();
    memmove(&d->rows[i], &d->rows[i + 1], (d->n - i - 1) * sizeof(row_t));
    d->n--;
}

static void apply(mem_sess_t *m, const op_t *op, int ack_mark)
{
    mem_db_t *d = m->db;
    size_t i;
    row_t *r = find_row(d, op->seq, &i);
    if (!r || r->locked_by != m)
        return;
    if (op->kind == OP_ACK) {
        if (ack_mark) {
            r->processed = 1;
            r->processed_ms = outbox__now_ms();
        } else {
            row_free(r);
            memmove(&d->rows[i], &d->rows[i + 1], (d->n - i - 1) * sizeof(row_t));
            d->n--;
        }
    } else if (op->kind == OP_RETRY) {
        r->attempts++;
        r->next_attempt_ms = op->delay_ms;
        snprintf(r->last_error, sizeof(r->last_error), "%s", op->error);
    } else {
        r->attempts++;
        snprintf(r->last_error, sizeof(r->last_error), "%s", op->error);
        char key[1100];
        snprintf(key, sizeof(key), "%s", r->key);
        int64_t seq = r->seq;
        to_dead(d, i, op->reason);
        for (size_t j = 0; op->park && j < d->n;) {
            if (!d->rows[j].processed && d->rows[j].seq > seq && !strcmp(d->rows[j].key, key))
                to_dead(d, j, "parked");
            else
                j++;
        }
    }
}

static outbox_err_t mem_commit(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    mem_db_t *d = m->db;
    pthread_mutex_lock(&d->lock);
    outbox_err_t err = OUTBOX_OK;
    if (fault(d, OUTBOX_MEM_FAIL_COMMIT)) {
        err = outbox__err(OUTBOX_ERR_DB, errstr, errstr_size,
                          "commit failed (rolled back): injected fault");
    } else {
        for (size_t i = 0; i < m->nops; i++)
            apply(m, &m->ops[i], s->cfg.ack_mode == OUTBOX_ACK_MARK);
        if (fault(d, OUTBOX_MEM_FAIL_COMMIT_APPLIED))
            err = outbox__err(OUTBOX_ERR_DB, errstr, errstr_size,
                              "connection lost during COMMIT (outcome unknown): injected fault");
    }
    unlock_rows(m);
    pthread_mutex_unlock(&d->lock);
    return err;
}

static void mem_rollback(outbox_store_t *s)
{
    mem_sess_t *m = SESS(s);
    pthread_mutex_lock(&m->db->lock);
    unlock_rows(m);
    pthread_mutex_unlock(&m->db->lock);
}

/* ------------------------------------------------------------------------ */
/* Lanes and waiting                                                         */

static outbox_err_t mem_register_worker(outbox_store_t *s, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    pthread_mutex_lock(&m->db->lock);
    if (!m->registered) {
        m->registered = 1;
        m->db->live++;
    }
    pthread_mutex_unlock(&m->db->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_live_workers(outbox_store_t *s, int *n, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    pthread_mutex_lock(&m->db->lock);
    *n = m->db->live;
    pthread_mutex_unlock(&m->db->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_take_lanes(outbox_store_t *s, int offset, int want, int *lanes, int *n,
                                   char *errstr, size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    mem_sess_t *m = SESS(s);
    *n = 0;
    pthread_mutex_lock(&m->db->lock);
    for (int i = 0; i < OUTBOX_LANES && *n < want; i++) {
        int l = (offset + i) % OUTBOX_LANES;
        if (!m->db->lane_owner[l]) {
            m->db->lane_owner[l] = m;
            lanes[(*n)++] = l;
        }
    }
    pthread_mutex_unlock(&m->db->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_release_lane(outbox_store_t *s, int lane, char *errstr, size_t errstr_size)
{
    mem_sess_t *m = SESS(s);
    pthread_mutex_lock(&m->db->lock);
    if (m->db->lane_owner[lane] == m)
        m->db->lane_owner[lane] = NULL;
    pthread_mutex_unlock(&m->db->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_newest_due(outbox_store_t *s, int64_t gate, uint64_t *lane_mask,
                                   int64_t *max_seq, int64_t *seq_now, char *errstr,
                                   size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    mem_db_t *d = SESS(s)->db;
    int64_t now = outbox__now_ms();
    int found = 0;
    *lane_mask = 0;
    *max_seq = 0;
    pthread_mutex_lock(&d->lock);
    *seq_now = d->next_seq - 1;
    for (size_t i = d->n; *seq_now > gate && i-- > 0 && found < 64;) {
        const row_t *r = &d->rows[i];
        if (r->processed || r->next_attempt_ms > now)
            continue;
        *lane_mask |= (uint64_t)1 << r->lane;
        if (r->seq > *max_seq)
            *max_seq = r->seq;
        found++;
    }
    pthread_mutex_unlock(&d->lock);
    return OUTBOX_OK;
}

/* Polls stop_fd in short slices, watching the table's wake counter. */
static void mem_wait_for_work(outbox_store_t *s, int stop_fd, int64_t timeout_ms)
{
    mem_db_t *d = SESS(s)->db;
    pthread_mutex_lock(&d->lock);
    unsigned seen = d->wake;
    pthread_mutex_unlock(&d->lock);
    int64_t end = outbox__now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - outbox__now_ms();
        if (left <= 0)
            return;
        struct pollfd fd = {.fd = stop_fd, .events = POLLIN};
        if (poll(&fd, 1, (int)(left < 5 ? left : 5)) > 0)
            return;
        pthread_mutex_lock(&d->lock);
        unsigned now = d->wake;
        pthread_mutex_unlock(&d->lock);
        if (now != seen && s->cfg.listen)
            return; /* the wake-up hint */
    }
}

/* ------------------------------------------------------------------------ */
/* Maintenance and status                                                    */

static outbox_err_t mem_maintain(outbox_store_t *s, const outbox_maint_t *in,
                                 outbox_maint_result_t *out, char *errstr, size_t errstr_size)
{
    mem_db_t *d = SESS(s)->db;
    memset(out, 0, sizeof(*out));
    int64_t now = outbox__now_ms();
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n;) {
        row_t *r = &d->rows[i];
        if (r->processed && in->processed_retention_ms > 0 &&
            r->processed_ms < now - in->processed_retention_ms) {
            row_free(r);
            memmove(&d->rows[i], &d->rows[i + 1], (d->n - i - 1) * sizeof(row_t));
            d->n--;
            out->processed_purged++;
        } else if (in->park && !r->processed && !r->locked_by && dead_key(d, r->key)) {
            to_dead(d, i, "parked");
            out->parked++;
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < d->ndead;) {
        if (in->dlq_retention_ms > 0 && d->dead[i].dead_ms < now - in->dlq_retention_ms) {
            row_free(&d->dead[i]);
            memmove(&d->dead[i], &d->dead[i + 1], (d->ndead - i - 1) * sizeof(row_t));
            d->ndead--;
            out->dead_purged++;
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_stats(outbox_store_t *s, outbox_store_stats_t *out, char *errstr,
                              size_t errstr_size)
{
    mem_db_t *d = SESS(s)->db;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->n; i++) {
        if (d->rows[i].processed) {
            out->processed++;
        } else {
            out->pending++;
            out->retrying += d->rows[i].attempts > 0;
        }
    }
    out->dead = (long long)d->ndead;
    pthread_mutex_unlock(&d->lock);
    return OUTBOX_OK;
}

static outbox_err_t mem_dlq_requeue(outbox_store_t *s, const char *id, long long *n, char *errstr,
                                    size_t errstr_size)
{
    mem_db_t *d = SESS(s)->db;
    *n = 0;
    pthread_mutex_lock(&d->lock);
    char key[1100] = "";
    for (size_t i = 0; id && i < d->ndead; i++)
        if (!strcmp(d->dead[i].id, id))
            snprintf(key, sizeof(key), "%s", d->dead[i].key);
    for (size_t i = 0; i < d->ndead;) {
        row_t *r = &d->dead[i];
        int match =
            !id || !strcmp(r->id, id) || (!strcmp(r->reason, "parked") && !strcmp(r->key, key));
        if (!match || grow((void **)&d->rows, &d->cap, d->n + 1, sizeof(row_t))) {
            i++;
            continue;
        }
        /* Back at its old seq: the head of its key again. */
        size_t at = 0;
        while (at < d->n && d->rows[at].seq < r->seq)
            at++;
        memmove(&d->rows[at + 1], &d->rows[at], (d->n - at) * sizeof(row_t));
        d->rows[at] = *r;
        d->rows[at].attempts = 0;
        d->rows[at].next_attempt_ms = outbox__now_ms();
        d->n++;
        memmove(&d->dead[i], &d->dead[i + 1], (d->ndead - i - 1) * sizeof(row_t));
        d->ndead--;
        (*n)++;
    }
    d->wake++;
    pthread_mutex_unlock(&d->lock);
    return OUTBOX_OK;
}

const outbox_store_ops_t outbox__store_mem_ops = {
    .name = "mem",
    .handles = mem_handles,
    .open = mem_open,
    .close = mem_close,
    .migrate = mem_migrate,
    .begin = mem_begin,
    .claim = mem_claim,
    .batch_term = mem_batch_term,
    .ack = mem_ack,
    .retry_at = mem_retry_at,
    .dead_letter = mem_dead_letter,
    .commit = mem_commit,
    .rollback = mem_rollback,
    .register_worker = mem_register_worker,
    .live_workers = mem_live_workers,
    .take_lanes = mem_take_lanes,
    .release_lane = mem_release_lane,
    .newest_due = mem_newest_due,
    .wait_for_work = mem_wait_for_work,
    .maintain = mem_maintain,
    .stats = mem_stats,
    .dlq_requeue = mem_dlq_requeue,
};

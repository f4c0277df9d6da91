/* outbox-load: sends POST /orders with C in flight (libcurl multi), N of them
 * or for a duration, as fast as C allows or at a fixed rate, optionally
 * re-sending some requests with an earlier request's Idempotency-Key and
 * body. Prints the seed's summary lines with latency percentiles, and can
 * write the summary as JSON and a per-second series as CSV (for plots). */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BODY_MAX 256
#define KEY_MAX 64
#define HISTORY 16384 /* earlier requests a --dup-keys request may repeat */

/* A request that was sent, kept so a later one can repeat its key and body. */
typedef struct sent_s {
    long idx;      /* request number, -1 when the slot is empty */
    long orig_idx; /* the request that first sent this key (idx itself if new) */
    int shared;    /* its key was sent again: a 409 on it is expected */
    char key[KEY_MAX];
    char body[BODY_MAX];
} sent_t;

/* A request in flight: one slot per concurrent connection. */
typedef struct req_s {
    long idx;
    int hist;   /* its slot in the history ring */
    int shared; /* it repeats an earlier key: 409 is expected */
    char key[KEY_MAX];
    char body[BODY_MAX];
    char *resp;
    size_t resp_len;
    int replayed; /* Idempotent-Replayed: true */
    double t0;
    struct curl_slist *hdrs;
    CURL *easy;
} req_t;

static struct {
    const char *url;
    long n, c;
    double duration; /* seconds; 0 = send n requests */
    double rate;     /* requests per second; 0 = as fast as C allows */
    double dup_ratio;
    int keys;
    int verbose;
    long timeout_s;
    const char *json_path, *csv_path, *label;
} opt = {"http://127.0.0.1:8080", 100, 50, 0, 0, 0, 1, 0, 10, NULL, NULL, ""};

static struct {
    long started, done, ok, failed, conflicts, replayed, transport;
    long status_counts[600];
    double max_behind; /* --rate: longest a start waited past its due time */
} st;

/* Every completed request: when (seconds since start) and how long it took. */
static struct {
    double *at, *lat;
    size_t n, cap;
} samples;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: outbox-load [--url URL] [-n N | -d SECONDS] [-c C] [--rate R]\n"
            "                   [--dup-keys RATIO] [--no-keys] [--json FILE] [--csv FILE]\n"
            "\n"
            "Sends order requests (POST URL/orders) to the orders service and prints a summary\n"
            "with latency percentiles. Every request has its own Idempotency-Key unless\n"
            "--dup-keys or --no-keys says otherwise.\n"
            "\n"
            "  --url URL          service base URL (default http://127.0.0.1:8080)\n"
            "  -n N               number of requests (default 100)\n"
            "  -d, --duration S   send for S seconds instead of N requests (then waits for the\n"
            "                     requests in flight)\n"
            "  -c C               requests in flight at once (default 50)\n"
            "  --rate R           start R requests per second instead of as fast as possible;\n"
            "                     with too few connections (C) starts fall behind schedule\n"
            "                     (reported as \"behind schedule\")\n"
            "  --dup-keys RATIO   fraction 0..1 of requests that repeat an earlier request's\n"
            "                     Idempotency-Key and body: expect the replayed response (or 409\n"
            "                     while the first is in flight), never a second order\n"
            "  --no-keys          send no Idempotency-Key header\n"
            "  --timeout S        per-request timeout in seconds (default 10)\n"
            "  --json FILE        also write the summary as one JSON object\n"
            "  --csv FILE         also write one line per second of the run: second,\n"
            "                     completed, p50_ms, p95_ms, p99_ms, max_ms (the requests that\n"
            "                     completed in that second)\n"
            "  --label TEXT       a name for this run, copied into the JSON\n"
            "  -v, --verbose      print every response: [i] status: body\n"
            "  -h, --help         this text\n"
            "\n"
            "Exit status: 0 when every request succeeded (409 on a repeated key counts as\n"
            "expected), 1 otherwise, 2 on bad usage.\n"
            "\n"
            "Examples:\n"
            "  outbox-load --url http://127.0.0.1:8080 -n 1000 -c 100 --dup-keys 0.1\n"
            "  outbox-load -c 32 -d 30 --json run.json --csv run.csv\n"
            "  outbox-load -c 32 -d 300 --rate 400\n");
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    req_t *r = ud;
    size_t n = size * nmemb;
    char *nb = realloc(r->resp, r->resp_len + n + 1);
    if (!nb)
        return 0;
    memcpy(nb + r->resp_len, p, n);
    r->resp = nb;
    r->resp_len += n;
    r->resp[r->resp_len] = '\0';
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    req_t *r = ud;
    size_t n = size * nmemb;
    if (n >= 20 && !strncasecmp(p, "Idempotent-Replayed:", 20))
        r->replayed = 1;
    return n;
}

static void make_body(req_t *r, unsigned *seed)
{
    static const char *skus[] = {"SKU-1", "SKU-2", "SKU-3", "SKU-4"};
    int nitems = 1 + (int)(rand_r(seed) % 2);
    int first = (int)(rand_r(seed) % 4);
    char items[160] = "";
    long amount = 0;
    size_t len = 0;
    for (int i = 0; i < nitems; i++) {
        int q = 1 + (int)(rand_r(seed) % 3);
        amount += q * 500L;
        len +=
            (size_t)snprintf(items + len, sizeof(items) - len, "%s{\"sku\":\"%s\",\"quantity\":%d}",
                             i ? "," : "", skus[(first + i) % 4], q);
    }
    snprintf(r->body, sizeof(r->body), "{\"user_id\":\"user-%ld\",\"items\":[%s],\"amount\":%ld}",
             r->idx % 1000, items, amount);
}

/* Fills r as request number idx: a new key and body, or (--dup-keys) those of
 * an earlier request still in the history ring. */
static void prepare(req_t *r, long idx, sent_t *hist, unsigned *seed, const char *run_id)
{
    r->idx = idx;
    r->shared = 0;
    r->replayed = 0;
    r->resp = NULL;
    r->resp_len = 0;
    r->hist = (int)(idx % HISTORY);
    long orig_idx = idx;
    if (idx > 0 && opt.dup_ratio > 0 && (double)rand_r(seed) / RAND_MAX < opt.dup_ratio) {
        long back = idx < HISTORY ? idx : HISTORY;
        sent_t *h = &hist[(idx - 1 - (long)(rand_r(seed) % (unsigned)back)) % HISTORY];
        sent_t *orig = &hist[h->orig_idx % HISTORY];
        h->shared = 1;
        if (orig->idx == h->orig_idx)
            orig->shared = 1;
        r->shared = 1;
        orig_idx = h->orig_idx;
        memcpy(r->key, h->key, sizeof(r->key));
        memcpy(r->body, h->body, sizeof(r->body));
    } else {
        snprintf(r->key, sizeof(r->key), "load-%s-%ld", run_id, idx);
        make_body(r, seed);
    }
    sent_t *mine = &hist[r->hist];
    mine->idx = idx;
    mine->orig_idx = orig_idx;
    mine->shared = r->shared;
    memcpy(mine->key, r->key, sizeof(mine->key));
    memcpy(mine->body, r->body, sizeof(mine->body));
}

static int start(CURLM *m, req_t *r, const char *endpoint)
{
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (opt.keys) {
        char h[96];
        snprintf(h, sizeof(h), "Idempotency-Key: %s", r->key);
        r->hdrs = curl_slist_append(r->hdrs, h);
    }
    curl_easy_setopt(e, CURLOPT_URL, endpoint);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, opt.timeout_s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    r->easy = e;
    r->t0 = now_s();
    curl_multi_add_handle(m, e);
    return 0;
}

static int sample_add(double at, double lat)
{
    if (samples.n == samples.cap) {
        size_t cap = samples.cap ? samples.cap * 2 : 65536;
        double *a = realloc(samples.at, cap * sizeof(double));
        if (!a)
            return -1;
        samples.at = a;
        double *l = realloc(samples.lat, cap * sizeof(double));
        if (!l)
            return -1;
        samples.lat = l;
        samples.cap = cap;
    }
    samples.at[samples.n] = at;
    samples.lat[samples.n++] = lat;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of sorted v[0..n), nearest rank; 0 when n is 0. */
static double quantile(const double *v, size_t n, double q)
{
    return n ? v[(size_t)((double)(n - 1) * q)] : 0.0;
}

static void progress(double t0, int final)
{
    double el = now_s() - t0;
    int tty = isatty(2);
    if (opt.duration > 0)
        fprintf(stderr, "%s[progress] %.0f/%.0fs, %ld done, %ld ok, %ld failed, %.1f req/s%s",
                tty ? "\r" : "", el, opt.duration, st.done, st.ok, st.failed,
                el > 0 ? (double)st.done / el : 0.0, tty && !final ? "   " : "\n");
    else
        fprintf(stderr, "%s[progress] %ld/%ld done, %ld ok, %ld failed, %.1f req/s%s",
                tty ? "\r" : "", st.done, opt.n, st.ok, st.failed,
                el > 0 ? (double)st.done / el : 0.0, tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* Records the outcome of a finished transfer and frees its slot's buffers. */
static void finish(CURLM *m, CURLMsg *msg, double t0, sent_t *hist)
{
    CURL *e = msg->easy_handle;
    req_t *r;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
    long code = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    double now = now_s();
    if (sample_add(now - t0, now - r->t0) != 0) {
        fprintf(stderr, "outbox-load: out of memory\n");
        exit(1);
    }
    st.done++;
    /* A later request may have repeated this one's key while it was in flight. */
    int shared = r->shared || (hist[r->hist].idx == r->idx && hist[r->hist].shared);
    if (msg->data.result != CURLE_OK) {
        st.failed++;
        st.transport++;
        if (opt.verbose || st.transport <= 3)
            fprintf(stderr, "[%ld] error: %s\n", r->idx, curl_easy_strerror(msg->data.result));
    } else {
        if (code >= 0 && code < 600)
            st.status_counts[code]++;
        if (code >= 200 && code < 300) {
            st.ok++;
            st.replayed += r->replayed;
        } else if (code == 409 && shared) {
            st.conflicts++;
        } else {
            st.failed++;
            if (!opt.verbose && st.failed - st.transport <= 3)
                fprintf(stderr, "[%ld] %ld: %s\n", r->idx, code, r->resp ? r->resp : "");
        }
        if (opt.verbose)
            printf("[%ld] %ld: %s\n", r->idx, code, r->resp ? r->resp : "");
    }
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    r->easy = NULL;
    free(r->resp);
    r->resp = NULL;
}

/* One CSV line per second of the run (by completion time). */
static int write_csv(const char *path, double dur)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    fprintf(f, "second,completed,p50_ms,p95_ms,p99_ms,max_ms\n");
    long secs = (long)dur + 1;
    double *buf = malloc((samples.n ? samples.n : 1) * sizeof(double));
    if (!buf) {
        fclose(f);
        return -1;
    }
    size_t i = 0;
    /* samples are in completion order, so each second is one run of them */
    for (long s = 0; s < secs; s++) {
        size_t k = 0;
        while (i < samples.n && samples.at[i] < (double)(s + 1))
            buf[k++] = samples.lat[i++] * 1000;
        qsort(buf, k, sizeof(double), cmp_double);
        fprintf(f, "%ld,%zu,%.2f,%.2f,%.2f,%.2f\n", s + 1, k, quantile(buf, k, 0.5),
                quantile(buf, k, 0.95), quantile(buf, k, 0.99), k ? buf[k - 1] : 0.0);
    }
    free(buf);
    return fclose(f);
}

static int write_json(const char *path, double dur, const double *lat, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return -1;
    }
    fprintf(f,
            "{\"label\":\"%s\",\"url\":\"%s\",\"connections\":%ld,\"rate_target\":%.3f,"
            "\"total\":%ld,\"ok\":%ld,\"failed\":%ld,\"replayed\":%ld,\"conflicts\":%ld,"
            "\"transport_errors\":%ld,\"duration_s\":%.3f,\"rate\":%.2f,"
            "\"latency_ms\":{\"p50\":%.2f,\"p95\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},"
            "\"behind_schedule_ms\":%.1f,\"status\":{",
            opt.label, opt.url, opt.c, opt.rate, st.done, st.ok, st.failed, st.replayed,
            st.conflicts, st.transport, dur, dur > 0 ? (double)st.done / dur : 0.0,
            quantile(lat, n, 0.5) * 1000, quantile(lat, n, 0.95) * 1000,
            quantile(lat, n, 0.99) * 1000, quantile(lat, n, 0.999) * 1000,
            n ? lat[n - 1] * 1000 : 0.0, st.max_behind * 1000);
    int first = 1;
    for (int s = 0; s < 600; s++)
        if (st.status_counts[s]) {
            fprintf(f, "%s\"%d\":%ld", first ? "" : ",", s, st.status_counts[s]);
            first = 0;
        }
    fprintf(f, "}}\n");
    return fclose(f);
}

static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},      {"rate", required_argument, NULL, 'r'},
        {"dup-keys", required_argument, NULL, 'D'}, {"no-keys", no_argument, NULL, 'K'},
        {"timeout", required_argument, NULL, 't'},  {"duration", required_argument, NULL, 'd'},
        {"json", required_argument, NULL, 'J'},     {"csv", required_argument, NULL, 'C'},
        {"label", required_argument, NULL, 'L'},    {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "n:c:d:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            opt.url = optarg;
            break;
        case 'n':
            opt.n = strtol(optarg, &end, 10);
            if (*end || opt.n <= 0)
                goto bad;
            break;
        case 'c':
            opt.c = strtol(optarg, &end, 10);
            if (*end || opt.c <= 0)
                goto bad;
            break;
        case 'd':
            opt.duration = strtod(optarg, &end);
            if (*end || opt.duration <= 0)
                goto bad;
            break;
        case 'r':
            opt.rate = strtod(optarg, &end);
            if (*end || opt.rate < 0)
                goto bad;
            break;
        case 'D':
            opt.dup_ratio = strtod(optarg, &end);
            if (*end || opt.dup_ratio < 0 || opt.dup_ratio > 1)
                goto bad;
            break;
        case 'K':
            opt.keys = 0;
            break;
        case 't':
            opt.timeout_s = strtol(optarg, &end, 10);
            if (*end || opt.timeout_s <= 0)
                goto bad;
            break;
        case 'J':
            opt.json_path = optarg;
            break;
        case 'C':
            opt.csv_path = optarg;
            break;
        case 'L':
            if (strlen(optarg) > 100 || strpbrk(optarg, "\"\\"))
                goto bad; /* copied into JSON as is */
            opt.label = optarg;
            break;
        case 'v':
            opt.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "outbox-load: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 2;
    }
    if (opt.dup_ratio > 0 && !opt.keys) {
        fprintf(stderr, "outbox-load: --dup-keys needs Idempotency-Keys (drop --no-keys)\n");
        return 2;
    }
    if (strpbrk(opt.url, "\"\\")) {
        fprintf(stderr, "outbox-load: --url must not contain quotes or backslashes\n");
        return 2;
    }
    return 0;
bad:
    fprintf(stderr, "outbox-load: bad value \"%s\" for an option (see --help)\n", optarg);
    return 2;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc)
        return rc;
    char endpoint[1024];
    size_t ul = strlen(opt.url);
    snprintf(endpoint, sizeof(endpoint), "%.*s/orders",
             (int)(ul && opt.url[ul - 1] == '/' ? ul - 1 : ul), opt.url);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    req_t *slots = calloc((size_t)opt.c, sizeof(req_t));
    req_t **free_slots = calloc((size_t)opt.c, sizeof(req_t *));
    sent_t *hist = calloc(HISTORY, sizeof(sent_t));
    CURLM *m = curl_multi_init();
    if (!slots || !free_slots || !hist || !m) {
        fprintf(stderr, "outbox-load: out of memory\n");
        return 1;
    }
    for (int i = 0; i < HISTORY; i++)
        hist[i].idx = -1;
    long nfree = 0;
    for (long i = opt.c - 1; i >= 0; i--)
        free_slots[nfree++] = &slots[i];
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, opt.c);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    char run_id[48];
    snprintf(run_id, sizeof(run_id), "%d-%ld", (int)getpid(), (long)time(NULL));

    double t0 = now_s(), last_progress = t0;
    int show_progress = 0;
    for (;;) {
        double now = now_s();
        int more = opt.duration > 0 ? now - t0 < opt.duration : st.started < opt.n;
        if (!more && nfree == opt.c)
            break;
        while (more && nfree > 0) {
            double due = opt.rate > 0 ? t0 + (double)st.started / opt.rate : now;
            if (now < due)
                break;
            if (now - due > st.max_behind)
                st.max_behind = now - due;
            req_t *r = free_slots[--nfree];
            prepare(r, st.started, hist, &seed, run_id);
            if (start(m, r, endpoint) != 0) {
                fprintf(stderr, "outbox-load: out of memory\n");
                return 1;
            }
            st.started++;
            now = now_s();
            more = opt.duration > 0 ? now - t0 < opt.duration : st.started < opt.n;
        }
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            req_t *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            finish(m, msg, t0, hist);
            free_slots[nfree++] = r;
        }
        now = now_s();
        if (now - last_progress >= 1.0) {
            show_progress = 1;
            last_progress = now;
            progress(t0, 0);
        }
        /* Behind schedule with every connection busy, only a response can
         * start the next request: wait for one. (A zero wait here spun a
         * core against the server under test: at 5,900 orders/s offered it
         * took 3,969, where a closed loop takes 5,870.) */
        int wait_ms = 100;
        if (opt.rate > 0 && more && nfree > 0) {
            double due = t0 + (double)st.started / opt.rate - now;
            wait_ms = due <= 0 ? 0 : due < 0.1 ? (int)(due * 1000) : 100;
        }
        if (nfree < opt.c || more)
            curl_multi_poll(m, NULL, 0, wait_ms, NULL);
    }
    double dur = now_s() - t0;
    if (show_progress)
        progress(t0, 1);
    size_t n = samples.n;
    double *lat = malloc((n ? n : 1) * sizeof(double));
    if (!lat) {
        fprintf(stderr, "outbox-load: out of memory\n");
        return 1;
    }
    memcpy(lat, samples.lat, n * sizeof(double));
    qsort(lat, n, sizeof(double), cmp_double);
    printf("\n--- Summary ---\n");
    printf("Total: %ld orders\n", st.done);
    printf("Success: %ld\n", st.ok);
    printf("Failed: %ld\n", st.failed);
    if (dur < 1.0)
        printf("Duration: %.0fms\n", dur * 1000);
    else
        printf("Duration: %.3fs\n", dur);
    printf("Rate: %.2f orders/sec\n", dur > 0 ? (double)st.done / dur : 0.0);
    if (opt.dup_ratio > 0)
        printf("Repeated keys: %ld replayed, %ld answered 409 (first still in flight)\n",
               st.replayed, st.conflicts);
    printf("Latency: p50 %.1fms, p95 %.1fms, p99 %.1fms, max %.1fms\n",
           quantile(lat, n, 0.5) * 1000, quantile(lat, n, 0.95) * 1000,
           quantile(lat, n, 0.99) * 1000, n ? lat[n - 1] * 1000 : 0.0);
    if (opt.rate > 0)
        printf("Behind schedule: at most %.1fms (target %.1f req/s with %ld connections)\n",
               st.max_behind * 1000, opt.rate, opt.c);
    printf("Status codes:");
    for (int s = 0; s < 600; s++)
        if (st.status_counts[s])
            printf(" %d=%ld", s, st.status_counts[s]);
    if (st.transport)
        printf(" transport-errors=%ld", st.transport);
    printf("\n");
    int out_err = 0;
    if (opt.json_path && write_json(opt.json_path, dur, lat, n) != 0)
        out_err = 1;
    if (opt.csv_path && write_csv(opt.csv_path, dur) != 0)
        out_err = 1;
    curl_multi_cleanup(m);
    curl_global_cleanup();
    free(slots);
    free(free_slots);
    free(hist);
    free(lat);
    free(samples.at);
    free(samples.lat);
    return st.failed || out_err ? 1 : 0;
}

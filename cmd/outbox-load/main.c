/* outbox-load: sends N POST /orders with C in flight (libcurl multi), or at a
 * fixed rate, optionally re-sending some requests with an earlier request's
 * Idempotency-Key and body, and prints the seed's summary lines. */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct req_s {
    int idx;
    int dup_of; /* -1, or the request whose key and body this repeats */
    int shared; /* its key is sent more than once: 409 is expected */
    char key[64];
    char body[512];
    char *resp;
    size_t resp_len;
    int replayed; /* Idempotent-Replayed: true */
    double t0;
    struct curl_slist *hdrs;
} req_t;

static struct {
    const char *url;
    long n, c;
    double rate; /* requests per second; 0 = as fast as C allows */
    double dup_ratio;
    int keys;
    int verbose;
    long timeout_s;
} opt = {"http://127.0.0.1:8080", 100, 50, 0, 0, 1, 0, 10};

static struct {
    long done, ok, failed, conflicts, replayed, transport;
    long status_counts[600];
} st;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: outbox-load [--url URL] [-n N] [-c C] [--rate R] [--dup-keys RATIO] [--no-keys]\n"
        "\n"
        "Sends N order requests (POST URL/orders) to the orders service and prints a summary.\n"
        "\n"
        "  --url URL          service base URL (default http://127.0.0.1:8080)\n"
        "  -n N               number of requests (default 100)\n"
        "  -c C               requests in flight at once (default 50)\n"
        "  --rate R           start R requests per second instead of as fast as possible\n"
        "  --dup-keys RATIO   fraction 0..1 of requests that repeat an earlier request's\n"
        "                     Idempotency-Key and body: expect the replayed response (or 409\n"
        "                     while the first is in flight), never a second order\n"
        "  --no-keys          send no Idempotency-Key header\n"
        "  --timeout S        per-request timeout in seconds (default 10)\n"
        "  -v, --verbose      print every response: [i] status: body\n"
        "  -h, --help         this text\n"
        "\n"
        "Exit status: 0 when every request succeeded (409 on a repeated key counts as\n"
        "expected), 1 otherwise, 2 on bad usage.\n"
        "\n"
        "Example:\n"
        "  outbox-load --url http://127.0.0.1:8080 -n 1000 -c 100 --dup-keys 0.1\n");
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
    char items[256] = "";
    long amount = 0;
    size_t len = 0;
    for (int i = 0; i < nitems; i++) {
        int q = 1 + (int)(rand_r(seed) % 3);
        amount += q * 500L;
        len +=
            (size_t)snprintf(items + len, sizeof(items) - len, "%s{\"sku\":\"%s\",\"quantity\":%d}",
                             i ? "," : "", skus[(first + i) % 4], q);
    }
    snprintf(r->body, sizeof(r->body), "{\"user_id\":\"user-%d\",\"items\":[%s],\"amount\":%ld}",
             r->idx % 1000, items, amount);
}

static CURL *start(CURLM *m, req_t *r, const char *endpoint)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
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
    r->t0 = now_s();
    curl_multi_add_handle(m, e);
    return e;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void progress(double t0, int final)
{
    double el = now_s() - t0;
    int tty = isatty(2);
    fprintf(stderr, "%s[progress] %ld/%ld done, %ld ok, %ld failed, %.1f req/s%s", tty ? "\r" : "",
            st.done, opt.n, st.ok, st.failed, el > 0 ? (double)st.done / el : 0.0,
            tty && !final ? "   " : "\n");
    fflush(stderr);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},      {"rate", required_argument, NULL, 'r'},
        {"dup-keys", required_argument, NULL, 'd'}, {"no-keys", no_argument, NULL, 'K'},
        {"timeout", required_argument, NULL, 't'},  {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "n:c:vh", longopts, NULL)) != -1) {
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
        case 'r':
            opt.rate = strtod(optarg, &end);
            if (*end || opt.rate < 0)
                goto bad;
            break;
        case 'd':
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
        case 'v':
            opt.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
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
    char endpoint[1024];
    size_t ul = strlen(opt.url);
    snprintf(endpoint, sizeof(endpoint), "%.*s/orders",
             (int)(ul && opt.url[ul - 1] == '/' ? ul - 1 : ul), opt.url);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    req_t *reqs = calloc((size_t)opt.n, sizeof(req_t));
    double *lat = calloc((size_t)opt.n, sizeof(double));
    CURLM *m = curl_multi_init();
    if (!reqs || !lat || !m) {
        fprintf(stderr, "outbox-load: out of memory\n");
        return 1;
    }
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, opt.c);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    for (long i = 0; i < opt.n; i++) {
        req_t *r = &reqs[i];
        r->idx = (int)i;
        r->dup_of = -1;
        if (i > 0 && opt.dup_ratio > 0 && (double)rand_r(&seed) / RAND_MAX < opt.dup_ratio) {
            r->dup_of = (int)(rand_r(&seed) % (unsigned)i);
            while (reqs[r->dup_of].dup_of >= 0)
                r->dup_of = reqs[r->dup_of].dup_of;
            r->shared = reqs[r->dup_of].shared = 1;
            memcpy(r->key, reqs[r->dup_of].key, sizeof(r->key));
            memcpy(r->body, reqs[r->dup_of].body, sizeof(r->body));
        } else {
            snprintf(r->key, sizeof(r->key), "load-%d-%ld-%ld", (int)getpid(), (long)time(NULL), i);
            make_body(r, &seed);
        }
    }

    double t0 = now_s(), last_progress = t0;
    long next = 0, active = 0;
    int show_progress = 0;
    while (st.done < opt.n) {
        while (next < opt.n && active < opt.c &&
               (opt.rate <= 0 || now_s() >= t0 + (double)next / opt.rate)) {
            if (!start(m, &reqs[next], endpoint)) {
                fprintf(stderr, "outbox-load: out of memory\n");
                return 1;
            }
            next++;
            active++;
        }
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            req_t *r;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            lat[st.done] = now_s() - r->t0;
            st.done++;
            active--;
            if (msg->data.result != CURLE_OK) {
                st.failed++;
                st.transport++;
                if (opt.verbose || st.transport <= 3)
                    fprintf(stderr, "[%d] error: %s\n", r->idx,
                            curl_easy_strerror(msg->data.result));
            } else {
                if (code >= 0 && code < 600)
                    st.status_counts[code]++;
                if (code >= 200 && code < 300) {
                    st.ok++;
                    st.replayed += r->replayed;
                } else if (code == 409 && r->shared) {
                    st.conflicts++;
                } else {
                    st.failed++;
                    if (!opt.verbose && st.failed - st.transport <= 3)
                        fprintf(stderr, "[%d] %ld: %s\n", r->idx, code, r->resp ? r->resp : "");
                }
                if (opt.verbose)
                    printf("[%d] %ld: %s\n", r->idx, code, r->resp ? r->resp : "");
            }
            curl_multi_remove_handle(m, e);
            curl_easy_cleanup(e);
            curl_slist_free_all(r->hdrs);
            free(r->resp);
            r->resp = NULL;
        }
        double now = now_s();
        if (now - last_progress >= 1.0) {
            show_progress = 1;
            last_progress = now;
            progress(t0, 0);
        }
        if (st.done < opt.n) {
            int wait_ms = 100;
            if (opt.rate > 0 && next < opt.n) {
                double due = t0 + (double)next / opt.rate - now_s();
                wait_ms = due <= 0 ? 0 : due < 0.1 ? (int)(due * 1000) : 100;
            }
            curl_multi_poll(m, NULL, 0, wait_ms, NULL);
        }
    }
    double dur = now_s() - t0;
    if (show_progress)
        progress(t0, 1);
    qsort(lat, (size_t)opt.n, sizeof(double), cmp_double);
    printf("\n--- Summary ---\n");
    printf("Total: %ld orders\n", opt.n);
    printf("Success: %ld\n", st.ok);
    printf("Failed: %ld\n", st.failed);
    if (dur < 1.0)
        printf("Duration: %.0fms\n", dur * 1000);
    else
        printf("Duration: %.3fs\n", dur);
    printf("Rate: %.2f orders/sec\n", dur > 0 ? (double)opt.n / dur : 0.0);
    if (opt.dup_ratio > 0)
        printf("Repeated keys: %ld replayed, %ld answered 409 (first still in flight)\n",
               st.replayed, st.conflicts);
    printf("Latency: p50 %.1fms, p95 %.1fms, p99 %.1fms, max %.1fms\n", lat[(opt.n - 1) / 2] * 1000,
           lat[(long)((double)(opt.n - 1) * 0.95)] * 1000,
           lat[(long)((double)(opt.n - 1) * 0.99)] * 1000, lat[opt.n - 1] * 1000);
    printf("Status codes:");
    for (int s = 0; s < 600; s++)
        if (st.status_counts[s])
            printf(" %d=%ld", s, st.status_counts[s]);
    if (st.transport)
        printf(" transport-errors=%ld", st.transport);
    printf("\n");
    curl_multi_cleanup(m);
    curl_global_cleanup();
    free(reqs);
    free(lat);
    return st.failed ? 1 : 0;
bad:
    fprintf(stderr, "outbox-load: bad value \"%s\" for an option (see --help)\n", optarg);
    return 2;
}

/* pizza-client: the pizza pipeline's client (seed 004, "Client Service"):
 * sends realistic random pizza orders (POST URL/pizza) at a rate or as
 * fast as C connections allow, N of them or for a duration, with a
 * progress line on stderr and the load tools' summary on stdout. */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BODY_MAX 512

static const char *const flavors[] = {"Margherita",  "Pepperoni", "Hawaiian",    "Quattro Formaggi",
                                      "Diavola",     "Veggie",    "BBQ Chicken", "Funghi",
                                      "Capricciosa", "Marinara"};
static const char *const sizes[] = {"Small", "Medium", "Large", "Extra Large"};
static const double base_price[] = {8.99, 11.99, 14.99, 18.99};
static const char *const names[] = {"Alice",  "Bob",   "Carol",  "Dave",  "Erin",    "Frank",
                                    "Grace",  "Heidi", "Ivan",   "Judy",  "Mallory", "Niaj",
                                    "Olivia", "Peggy", "Rupert", "Sybil", "Trent",   "Victor"};
static const char *const streets[] = {"Main St",  "Oak Ave",   "Pine Rd",   "Maple Dr",
                                      "Cedar Ln", "Elm St",    "Park Blvd", "Lake View",
                                      "Hill Rd",  "River Way", "Market St", "Church Ln"};

typedef struct req_s {
    long idx;
    char body[BODY_MAX];
    char resp[512];
    size_t resp_len;
    double t0;
    struct curl_slist *hdrs;
    CURL *easy;
} req_t;

static struct {
    const char *url;
    long n, c;
    double duration, rate;
    int verbose;
    unsigned seed;
} opt = {NULL, 20, 10, 0, 5, 0, 0};

static struct {
    long started, done, ok, failed, transport;
    long status_counts[600];
    double lat_sum, lat_max;
} st;

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    if (g_stop++)
        _exit(130);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: pizza-client [--url URL] [-n N | -d SECONDS] [-r RATE] [-c C] [-v]\n"
                "                    [--seed S]\n"
                "\n"
                "Sends realistic random pizza orders (POST URL/pizza: flavor, size, quantity,\n"
                "price, address, user_name) to pizza-api, prints a progress line every second on\n"
                "stderr and a summary on stdout. Exit status 0 when every order was accepted,\n"
                "1 when some failed, 2 for bad usage.\n"
                "\n"
                "  --url URL          pizza-api base URL (default $PIZZA_API_URL, else\n"
                "                     http://localhost:$PORT, else http://localhost:8080)\n"
                "  -n, --count N      orders to send (default 20; ignored with -d)\n"
                "  -d, --duration S   send for S seconds instead of a count\n"
                "  -r, --rate R       orders per second (default 5; 0 = as fast as -c allows)\n"
                "  -c, --concurrency C  requests in flight at most (default 10)\n"
                "  -v, --verbose      print every answer: [i] STATUS: BODY\n"
                "      --seed S       random seed (default: time), for a repeatable stream\n"
                "  -h, --help         this text\n"
                "\n"
                "Examples:\n"
                "  pizza-client -n 100 -r 20\n"
                "  pizza-client --url http://127.0.0.1:8080 -d 30 -r 50 -c 20\n");
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    req_t *r = ud;
    size_t n = size * nmemb, room = sizeof(r->resp) - 1 - r->resp_len;
    size_t k = n < room ? n : room;
    memcpy(r->resp + r->resp_len, p, k);
    r->resp_len += k;
    r->resp[r->resp_len] = '\0';
    return n;
}

static void random_order(char *out, size_t size)
{
    int s = rand() % 4;
    int q = 1 + (rand() % 10 < 7 ? 0 : rand() % 4);
    double price = (base_price[s] + (double)(rand() % 4)) * q;
    snprintf(out, size,
             "{\"flavor\":\"%s\",\"size\":\"%s\",\"quantity\":%d,\"price\":%.2f,"
             "\"address\":\"%d %s\",\"user_name\":\"%s\"}",
             flavors[rand() % (int)(sizeof(flavors) / sizeof(flavors[0]))], sizes[s], q, price,
             1 + rand() % 999, streets[rand() % (int)(sizeof(streets) / sizeof(streets[0]))],
             names[rand() % (int)(sizeof(names) / sizeof(names[0]))]);
}

static void start(CURLM *m, req_t *r, long idx, const char *endpoint)
{
    r->idx = idx;
    r->resp_len = 0;
    r->resp[0] = '\0';
    random_order(r->body, sizeof(r->body));
    if (!r->easy) {
        r->easy = curl_easy_init();
        r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        r->hdrs = curl_slist_append(r->hdrs, "Expect:");
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, endpoint);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    r->t0 = now_s();
    curl_multi_add_handle(m, r->easy);
    st.started++;
}

static void progress(double t0, int final)
{
    double el = now_s() - t0;
    int tty = isatty(2);
    if (opt.duration > 0)
        fprintf(stderr, "%s[progress] %.0f/%.0fs, %ld sent, %ld ok, %ld failed, %.1f orders/s%s",
                tty ? "\r" : "", el, opt.duration, st.done, st.ok, st.failed,
                el > 0 ? (double)st.done / el : 0.0, tty && !final ? "" : "\n");
    else
        fprintf(stderr, "%s[progress] %ld/%ld sent, %ld ok, %ld failed, %.1f orders/s%s",
                tty ? "\r" : "", st.done, opt.n, st.ok, st.failed,
                el > 0 ? (double)st.done / el : 0.0, tty && !final ? "" : "\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {{"url", required_argument, 0, 'u'},
                                          {"count", required_argument, 0, 'n'},
                                          {"duration", required_argument, 0, 'd'},
                                          {"rate", required_argument, 0, 'r'},
                                          {"concurrency", required_argument, 0, 'c'},
                                          {"verbose", no_argument, 0, 'v'},
                                          {"seed", required_argument, 0, 's'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};
    int ch;
    char *end;
    opt.seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    while ((ch = getopt_long(argc, argv, "u:n:d:r:c:vh", longs, NULL)) != -1) {
        switch (ch) {
        case 'u':
            opt.url = optarg;
            break;
        case 'n':
            opt.n = strtol(optarg, &end, 10);
            if (*end || opt.n < 1) {
                fprintf(stderr, "pizza-client: -n needs a positive count, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'd':
            opt.duration = strtod(optarg, &end);
            if (*end || !(opt.duration > 0)) {
                fprintf(stderr, "pizza-client: -d needs seconds > 0, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'r':
            opt.rate = strtod(optarg, &end);
            if (*end || !(opt.rate >= 0)) {
                fprintf(stderr, "pizza-client: -r needs orders per second >= 0, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'c':
            opt.c = strtol(optarg, &end, 10);
            if (*end || opt.c < 1 || opt.c > 1000) {
                fprintf(stderr, "pizza-client: -c needs 1..1000, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'v':
            opt.verbose = 1;
            break;
        case 's':
            opt.seed = (unsigned)strtoul(optarg, NULL, 10);
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
        fprintf(stderr, "pizza-client: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 2;
    }
    char urlbuf[256], endpoint[300];
    if (!opt.url) {
        const char *e = getenv("PIZZA_API_URL"), *port = getenv("PORT");
        if (e && *e)
            opt.url = e;
        else {
            snprintf(urlbuf, sizeof(urlbuf), "http://localhost:%s", port && *port ? port : "8080");
            opt.url = urlbuf;
        }
    }
    size_t ul = strlen(opt.url);
    snprintf(endpoint, sizeof(endpoint), "%.*s/pizza",
             (int)(ul && opt.url[ul - 1] == '/' ? ul - 1 : ul), opt.url);
    srand(opt.seed);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    req_t *slots = calloc((size_t)opt.c, sizeof(req_t));
    int *free_slots = calloc((size_t)opt.c, sizeof(int));
    if (!m || !slots || !free_slots) {
        fprintf(stderr, "pizza-client: out of memory\n");
        return 1;
    }
    int nfree = (int)opt.c;
    for (int i = 0; i < nfree; i++)
        free_slots[i] = nfree - 1 - i;
    char pace[64] = "full speed";
    if (opt.rate > 0)
        snprintf(pace, sizeof(pace), "%.1f orders/s", opt.rate);
    if (opt.duration > 0)
        fprintf(stderr,
                "pizza-client: sending orders for %.0f s to %s at %s, at most %ld in flight "
                "(seed %u)\n",
                opt.duration, endpoint, pace, opt.c, opt.seed);
    else
        fprintf(stderr,
                "pizza-client: sending %ld orders to %s at %s, at most %ld in flight (seed %u)\n",
                opt.n, endpoint, pace, opt.c, opt.seed);
    double t0 = now_s(), last = t0;
    int shown = 0;
    for (;;) {
        double now = now_s();
        int more = !g_stop && (opt.duration > 0 ? now - t0 < opt.duration : st.started < opt.n);
        while (more && nfree > 0) {
            if (opt.rate > 0 && (double)st.started > (now - t0) * opt.rate)
                break; /* not due yet */
            start(m, &slots[free_slots[--nfree]], st.started, endpoint);
            more = opt.duration > 0 ? now - t0 < opt.duration : st.started < opt.n;
        }
        if (!more && nfree == (int)opt.c)
            break;
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            req_t *r;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            long status = 0;
            if (msg->data.result == CURLE_OK)
                curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            double lat = now_s() - r->t0;
            st.lat_sum += lat;
            if (lat > st.lat_max)
                st.lat_max = lat;
            st.done++;
            if (status >= 200 && status < 300)
                st.ok++;
            else
                st.failed++;
            if (status == 0)
                st.transport++;
            else if (status < 600)
                st.status_counts[status]++;
            if (opt.verbose || (status != 201 && st.failed <= 5)) {
                if (status == 0)
                    printf("[%ld] error: %s\n", r->idx, curl_easy_strerror(msg->data.result));
                else
                    printf("[%ld] %ld: %s\n", r->idx, status, r->resp);
            }
            curl_multi_remove_handle(m, msg->easy_handle);
            free_slots[nfree++] = (int)(r - slots);
        }
        now = now_s();
        if (now - last >= 1.0) {
            progress(t0, 0);
            shown = 1;
            last = now;
        }
        curl_multi_poll(m, NULL, 0, opt.rate > 0 ? 5 : 50, NULL);
    }
    double dur = now_s() - t0;
    if (shown)
        progress(t0, 1);
    printf("\n--- Summary ---\n");
    printf("Total: %ld orders\n", st.done);
    printf("Success: %ld\n", st.ok);
    printf("Failed: %ld\n", st.failed);
    for (int s = 0; s < 600; s++)
        if (st.status_counts[s] && (s < 200 || s >= 300))
            printf("  HTTP %d: %ld\n", s, st.status_counts[s]);
    if (st.transport)
        printf("  no answer (transport error): %ld\n", st.transport);
    printf("Duration: %.0fms\n", dur * 1000);
    printf("Rate: %.2f orders/sec\n", dur > 0 ? (double)st.done / dur : 0.0);
    printf("Latency: avg %.1fms, max %.1fms\n", st.done ? st.lat_sum / st.done * 1000 : 0.0,
           st.lat_max * 1000);
    for (long i = 0; i < opt.c; i++) {
        if (slots[i].easy)
            curl_easy_cleanup(slots[i].easy);
        curl_slist_free_all(slots[i].hdrs);
    }
    curl_multi_cleanup(m);
    curl_global_cleanup();
    free(slots);
    free(free_slots);
    return st.failed ? 1 : 0;
}

/* Fault-injecting PostgreSQL proxy for tests. See pgproxy.h. */
#include "pgproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "testutil.h"

#define SSL_REQUEST_CODE 80877103
#define GSSENC_REQUEST_CODE 80877104

struct pgproxy_s {
    int lfd, port;
    struct sockaddr_storage up;
    socklen_t up_len;
    pthread_t acceptor;
    int stopping;    /* atomic */
    int mode;        /* atomic: pgproxy_mode_t armed for the next COMMIT */
    int cuts;        /* atomic */
    int last_answer; /* atomic */
    int links;       /* atomic: relay threads alive */
    int down;        /* atomic: outage: cut everything, refuse new connections */
    char only[64];   /* arm only for connections whose application_name starts so ("": any) */
};

typedef struct link_s {
    pgproxy_t *p;
    int cfd, sfd;
    char app[64]; /* the startup message's application_name */
} link_t;

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static int send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1 when the simple query text (len bytes, NUL-terminated) is COMMIT. */
static int is_commit(const char *q, size_t len)
{
    while (len &&
           (q[len - 1] == '\0' || q[len - 1] == ';' || q[len - 1] == ' ' || q[len - 1] == '\n'))
        len--;
    while (len && (*q == ' ' || *q == '\n')) {
        q++;
        len--;
    }
    return len == 6 && !strncasecmp(q, "COMMIT", 6);
}

/* 1 when a Parse message's body (len bytes: statement name, query text,
 * both NUL-terminated, then parameter types) parses the statement word
 * (BEGIN, COMMIT). */
static int parse_is(const char *b, size_t len, const char *word)
{
    size_t nl = strnlen(b, len);
    if (nl + 1 >= len)
        return 0;
    const char *q = b + nl + 1;
    size_t ql = strnlen(q, len - nl - 1), wl = strlen(word);
    return ql == wl && !strncasecmp(q, word, wl);
}

/* Copies the application_name of a startup message (len bytes from its
 * start: length, protocol, then NUL-terminated name/value pairs). */
static void startup_app(const unsigned char *m, size_t len, char *app, size_t app_size)
{
    size_t off = 8;
    while (off < len && m[off]) {
        const char *k = (const char *)m + off;
        size_t kl = strnlen(k, len - off);
        const char *v = k + kl + 1;
        if (off + kl + 1 >= len)
            return;
        size_t vl = strnlen(v, len - off - kl - 1);
        if (!strcmp(k, "application_name"))
            snprintf(app, app_size, "%.*s", (int)vl, v);
        off += kl + 1 + vl + 1;
    }
}

/* Claims the armed mode (once, for one connection) when it cuts at this
 * kind of message (begin: a pipelined BEGIN; else a COMMIT); PGPROXY_PASS if
 * none, if it cuts elsewhere, or if the proxy is armed only for other
 * applications. */
static int claim(pgproxy_t *p, const link_t *l, int begin)
{
    if (p->only[0] && strncmp(l->app, p->only, strlen(p->only)) != 0)
        return PGPROXY_PASS;
    int m = __atomic_load_n(&p->mode, __ATOMIC_SEQ_CST);
    int at_begin =
        m == PGPROXY_CUT_BEFORE_PIPELINED_BEGIN || m == PGPROXY_CUT_AFTER_PIPELINED_BEGIN;
    if (m != PGPROXY_PASS && at_begin == begin &&
        __atomic_compare_exchange_n(&p->mode, &m, PGPROXY_PASS, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
        return m;
    return PGPROXY_PASS;
}

/* Claims PGPROXY_RESET_MID_MESSAGE for this connection: 1 if it is armed
 * and the connection's application matches. */
static int claim_reset(pgproxy_t *p, const link_t *l)
{
    int m = PGPROXY_RESET_MID_MESSAGE;
    if (p->only[0] && strncmp(l->app, p->only, strlen(p->only)) != 0)
        return 0;
    return __atomic_compare_exchange_n(&p->mode, &m, PGPROXY_PASS, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

/* The server dying in the middle of a long message: the start of a
 * NoticeResponse announcing 1 MB, then a reset. The bytes are queued at
 * the client before the RST (one TCP stream, in order); close() with a
 * zero linger sends the RST instead of a FIN. */
static void reset_mid_message(link_t *l)
{
    unsigned char msg[5 + 100];
    uint32_t len = 1000000;
    msg[0] = 'N';
    msg[1] = (unsigned char)(len >> 24);
    msg[2] = (unsigned char)(len >> 16);
    msg[3] = (unsigned char)(len >> 8);
    msg[4] = (unsigned char)len;
    msg[5] = 'S';
    memset(msg + 6, 'x', sizeof(msg) - 6);
    (void)send_all(l->cfd, msg, sizeof(msg));
    struct linger lg = {1, 0};
    setsockopt(l->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(l->cfd);
    l->cfd = -1;
}

/* After forwarding COMMIT: reads the server's answer up to ReadyForQuery
 * (5 s at most) and drops it. 1: CommandComplete "COMMIT"; 0: another
 * answer; -1: none. */
static int swallow_answer(int sfd)
{
    unsigned char buf[8192];
    size_t have = 0;
    int answer = -1;
    for (;;) {
        struct pollfd pf = {sfd, POLLIN, 0};
        if (poll(&pf, 1, 5000) <= 0)
            return answer;
        ssize_t n = recv(sfd, buf + have, sizeof(buf) - have, 0);
        if (n <= 0)
            return answer;
        have += (size_t)n;
        size_t off = 0;
        while (have - off >= 5) {
            size_t total = 1 + be32(buf + off + 1);
            if (have - off < total)
                break;
            char type = (char)buf[off];
            if (type == 'C')
                answer = !strncmp((const char *)buf + off + 5, "COMMIT", 6);
            else if (type == 'E')
                answer = 0;
            else if (type == 'Z')
                return answer;
            off += total;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (have == sizeof(buf))
            return answer; /* not the short answer COMMIT gets */
    }
}

static void *relay(void *arg)
{
    link_t *l = arg;
    pgproxy_t *p = l->p;
    unsigned char *cbuf = NULL; /* client bytes not yet forwarded (whole messages only) */
    size_t have = 0, cap = 0;
    int startup = 1, done = 0, cut_at_sync = 0, commit_at_sync = 0;
    char tmp[16384];
    while (!done) {
        struct pollfd fds[2] = {{l->cfd, POLLIN, 0}, {l->sfd, POLLIN, 0}};
        int pr = poll(fds, 2, 100);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (__atomic_load_n(&p->down, __ATOMIC_SEQ_CST))
            break; /* outage: cut */
        if (!startup && have == 0 &&
            __atomic_load_n(&p->mode, __ATOMIC_SEQ_CST) == PGPROXY_RESET_MID_MESSAGE &&
            claim_reset(p, l)) {
            reset_mid_message(l);
            __atomic_add_fetch(&p->cuts, 1, __ATOMIC_SEQ_CST);
            break;
        }
        if (pr == 0)
            continue;
        if (fds[1].revents) {
            ssize_t n = recv(l->sfd, tmp, sizeof(tmp), 0);
            if (n <= 0 || send_all(l->cfd, tmp, (size_t)n) != 0)
                break;
        }
        if (!fds[0].revents)
            continue;
        ssize_t n = recv(l->cfd, tmp, sizeof(tmp), 0);
        if (n <= 0)
            break;
        if (have + (size_t)n > cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            while (ncap < have + (size_t)n)
                ncap *= 2;
            unsigned char *nb = realloc(cbuf, ncap);
            CHECK(nb, "out of memory");
            cbuf = nb;
            cap = ncap;
        }
        memcpy(cbuf + have, tmp, (size_t)n);
        have += (size_t)n;
        size_t off = 0;
        for (;;) {
            size_t left = have - off, total;
            if (startup) {
                /* Untyped: length (self included) + code. SSL/GSS requests
                 * come before the startup message; the server answers 'N'. */
                if (left < 8)
                    break;
                total = be32(cbuf + off);
                if (left < total)
                    break;
                uint32_t code = be32(cbuf + off + 4);
                if (code != SSL_REQUEST_CODE && code != GSSENC_REQUEST_CODE) {
                    startup_app(cbuf + off, total, l->app, sizeof(l->app));
                    startup = 0;
                }
            } else {
                if (left < 5)
                    break;
                total = 1 + (size_t)be32(cbuf + off + 1);
                if (left < total)
                    break;
                int begin = 0;
                if (cbuf[off] == 'P' &&
                    ((begin = parse_is((const char *)cbuf + off + 5, total - 5, "BEGIN")) ||
                     parse_is((const char *)cbuf + off + 5, total - 5, "COMMIT"))) {
                    /* A pipelined BEGIN or COMMIT: cut before it, or after
                     * forwarding the pipeline up to its Sync. */
                    int m = claim(p, l, begin);
                    if (m == PGPROXY_CUT_AFTER_PIPELINED_BEGIN)
                        cut_at_sync = 1;
                    else if (m == PGPROXY_CUT_AFTER_COMMIT)
                        commit_at_sync = 1;
                    else if (m != PGPROXY_PASS) {
                        __atomic_add_fetch(&p->cuts, 1, __ATOMIC_SEQ_CST);
                        done = 1;
                        break;
                    }
                } else if (cbuf[off] == 'S' && (cut_at_sync || commit_at_sync)) {
                    /* The pipeline is all sent: the server runs it (its
                     * answers, up to ReadyForQuery, are read and dropped). */
                    int answer =
                        send_all(l->sfd, cbuf + off, total) == 0 ? swallow_answer(l->sfd) : -1;
                    if (commit_at_sync)
                        __atomic_store_n(&p->last_answer, answer, __ATOMIC_SEQ_CST);
                    __atomic_add_fetch(&p->cuts, 1, __ATOMIC_SEQ_CST);
                    done = 1;
                    break;
                }
                if (cbuf[off] == 'Q' && is_commit((const char *)cbuf + off + 5, total - 5)) {
                    int m = claim(p, l, 0);
                    if (m == PGPROXY_CUT_AFTER_COMMIT) {
                        int ok = send_all(l->sfd, cbuf + off, total);
                        __atomic_store_n(&p->last_answer, ok == 0 ? swallow_answer(l->sfd) : -1,
                                         __ATOMIC_SEQ_CST);
                    }
                    if (m != PGPROXY_PASS) {
                        __atomic_add_fetch(&p->cuts, 1, __ATOMIC_SEQ_CST);
                        done = 1;
                        break;
                    }
                }
            }
            if (send_all(l->sfd, cbuf + off, total) != 0) {
                done = 1;
                break;
            }
            off += total;
        }
        memmove(cbuf, cbuf + off, have - off);
        have -= off;
    }
    if (l->cfd >= 0) {
        shutdown(l->cfd, SHUT_RDWR);
        close(l->cfd);
    }
    shutdown(l->sfd, SHUT_RDWR);
    close(l->sfd);
    free(cbuf);
    free(l);
    __atomic_sub_fetch(&p->links, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *acceptor(void *arg)
{
    pgproxy_t *p = arg;
    while (!__atomic_load_n(&p->stopping, __ATOMIC_SEQ_CST)) {
        struct pollfd pf = {p->lfd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int cfd = accept(p->lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        if (__atomic_load_n(&p->down, __ATOMIC_SEQ_CST)) {
            close(cfd); /* outage: the client sees the server go away at once */
            continue;
        }
        int sfd = socket(p->up.ss_family, SOCK_STREAM, 0);
        if (sfd < 0 || connect(sfd, (struct sockaddr *)&p->up, p->up_len) != 0) {
            fprintf(stderr, "pgproxy: cannot reach the server: %s\n", strerror(errno));
            if (sfd >= 0)
                close(sfd);
            close(cfd);
            continue;
        }
        int one = 1; /* forwarded one message at a time: no Nagle + delayed-ACK stalls */
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        link_t *l = calloc(1, sizeof(*l));
        CHECK(l, "out of memory");
        l->p = p;
        l->cfd = cfd;
        l->sfd = sfd;
        __atomic_add_fetch(&p->links, 1, __ATOMIC_SEQ_CST);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, relay, l) == 0, "pthread_create");
        pthread_detach(t);
    }
    return NULL;
}

pgproxy_t *pgproxy_start(const char *host, int port)
{
    pgproxy_t *p = calloc(1, sizeof(*p));
    CHECK(p, "out of memory");
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    CHECK(getaddrinfo(host, service, &hints, &ai) == 0 && ai, "pgproxy: cannot resolve %s", host);
    memcpy(&p->up, ai->ai_addr, ai->ai_addrlen);
    p->up_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(p->lfd >= 0, "socket");
    int one = 1;
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CHECK(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(p->lfd, 64) == 0,
          "pgproxy: listen");
    socklen_t len = sizeof(sa);
    getsockname(p->lfd, (struct sockaddr *)&sa, &len);
    p->port = ntohs(sa.sin_port);
    p->last_answer = -1;
    CHECK(pthread_create(&p->acceptor, NULL, acceptor, p) == 0, "pthread_create");
    return p;
}

int pgproxy_port(const pgproxy_t *p)
{
    return p->port;
}

void pgproxy_arm_for(pgproxy_t *p, pgproxy_mode_t mode, const char *app_prefix)
{
    pgproxy_arm(p, PGPROXY_PASS);
    snprintf(p->only, sizeof(p->only), "%s", app_prefix ? app_prefix : "");
    pgproxy_arm(p, mode);
}

void pgproxy_arm(pgproxy_t *p, pgproxy_mode_t mode)
{
    if (mode != PGPROXY_PASS)
        __atomic_store_n(&p->last_answer, -1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&p->mode, (int)mode, __ATOMIC_SEQ_CST);
}

void pgproxy_set_down(pgproxy_t *p, int down)
{
    __atomic_store_n(&p->down, down ? 1 : 0, __ATOMIC_SEQ_CST);
    /* Returns once every connection is cut: nothing gets through after. */
    for (int i = 0; down && i < 100 && __atomic_load_n(&p->links, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(20 * 1000);
}

int pgproxy_cuts(const pgproxy_t *p)
{
    return __atomic_load_n(&p->cuts, __ATOMIC_SEQ_CST);
}

int pgproxy_last_commit_answer(const pgproxy_t *p)
{
    return __atomic_load_n(&p->last_answer, __ATOMIC_SEQ_CST);
}

void pgproxy_stop(pgproxy_t *p)
{
    if (!p)
        return;
    __atomic_store_n(&p->stopping, 1, __ATOMIC_SEQ_CST);
    pthread_join(p->acceptor, NULL);
    close(p->lfd);
    /* Relay threads end when their connections close; p outlives them. */
    for (int i = 0; i < 100 && __atomic_load_n(&p->links, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(50 * 1000);
    if (__atomic_load_n(&p->links, __ATOMIC_SEQ_CST) == 0)
        free(p);
}

pgproxy_t *pgproxy_start_for(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    CHECK(opts, "cannot parse %s", conninfo);
    char host[256] = "127.0.0.1";
    int port = 5432;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!strcmp(o->keyword, "host") && o->val && *o->val)
            snprintf(host, sizeof(host), "%s", o->val);
        if (!strcmp(o->keyword, "port") && o->val && *o->val)
            port = atoi(o->val);
    }
    PQconninfoFree(opts);
    if (host[0] == '/')
        tu_skip("PostgreSQL is on a Unix socket: the proxy needs TCP");
    return pgproxy_start(host, port);
}

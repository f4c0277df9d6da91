/* Fault-injecting TCP proxy for the chaos tests. See tcpproxy.h. */
#include "tcpproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

struct tcpproxy_s {
    int lfd, port;
    struct sockaddr_storage up;
    socklen_t up_len;
    pthread_t acceptor;
    int stopping; /* atomic */
    int delay_ms; /* atomic */
    int stall;    /* atomic */
    int down;     /* atomic */
    int links;    /* atomic: connection threads alive */
    long accepted;
};

typedef struct link_s {
    tcpproxy_t *p;
    int cfd, sfd;
} link_t;

static int get(const int *v)
{
    return __atomic_load_n(v, __ATOMIC_SEQ_CST);
}

static int send_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *relay(void *arg)
{
    link_t *l = arg;
    tcpproxy_t *p = l->p;
    char buf[16384];
    for (;;) {
        if (get(&p->down) || get(&p->stopping))
            break;
        if (get(&p->stall)) { /* partition: read nothing, close nothing */
            usleep(20 * 1000);
            continue;
        }
        struct pollfd fds[2] = {{l->cfd, POLLIN, 0}, {l->sfd, POLLIN, 0}};
        int pr = poll(fds, 2, 100);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr <= 0)
            continue;
        int broken = 0;
        for (int i = 0; i < 2 && !broken; i++) {
            if (!fds[i].revents)
                continue;
            ssize_t n = recv(fds[i].fd, buf, sizeof(buf), 0);
            if (n <= 0) {
                broken = 1;
                break;
            }
            int d = get(&p->delay_ms);
            if (d > 0)
                usleep((useconds_t)d * 1000);
            if (send_all(i == 0 ? l->sfd : l->cfd, buf, (size_t)n) != 0)
                broken = 1;
        }
        if (broken)
            break;
    }
    shutdown(l->cfd, SHUT_RDWR);
    shutdown(l->sfd, SHUT_RDWR);
    close(l->cfd);
    close(l->sfd);
    free(l);
    __atomic_sub_fetch(&p->links, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *acceptor(void *arg)
{
    tcpproxy_t *p = arg;
    while (!get(&p->stopping)) {
        if (get(&p->stall)) { /* new connections wait in the backlog */
            usleep(20 * 1000);
            continue;
        }
        struct pollfd pf = {p->lfd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int cfd = accept(p->lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        __atomic_add_fetch(&p->accepted, 1, __ATOMIC_SEQ_CST);
        if (get(&p->down)) {
            close(cfd);
            continue;
        }
        int sfd = socket(p->up.ss_family, SOCK_STREAM, 0);
        if (sfd < 0 || connect(sfd, (struct sockaddr *)&p->up, p->up_len) != 0) {
            if (sfd >= 0) /* the server is down: so is the connection */
                close(sfd);
            close(cfd);
            continue;
        }
        int one = 1;
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

tcpproxy_t *tcpproxy_start(const char *host, int port)
{
    tcpproxy_t *p = calloc(1, sizeof(*p));
    CHECK(p, "out of memory");
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    CHECK(getaddrinfo(host, service, &hints, &ai) == 0 && ai, "tcpproxy: cannot resolve %s", host);
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
    CHECK(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(p->lfd, 256) == 0,
          "tcpproxy: listen");
    socklen_t len = sizeof(sa);
    getsockname(p->lfd, (struct sockaddr *)&sa, &len);
    p->port = ntohs(sa.sin_port);
    CHECK(pthread_create(&p->acceptor, NULL, acceptor, p) == 0, "pthread_create");
    return p;
}

int tcpproxy_port(const tcpproxy_t *p)
{
    return p->port;
}

void tcpproxy_set_delay(tcpproxy_t *p, int delay_ms)
{
    __atomic_store_n(&p->delay_ms, delay_ms > 0 ? delay_ms : 0, __ATOMIC_SEQ_CST);
}

void tcpproxy_set_stall(tcpproxy_t *p, int on)
{
    __atomic_store_n(&p->stall, on ? 1 : 0, __ATOMIC_SEQ_CST);
}

void tcpproxy_set_down(tcpproxy_t *p, int on)
{
    __atomic_store_n(&p->down, on ? 1 : 0, __ATOMIC_SEQ_CST);
    for (int i = 0; on && i < 250 && get(&p->links) > 0; i++)
        usleep(20 * 1000);
}

long tcpproxy_connections(const tcpproxy_t *p)
{
    return __atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST);
}

void tcpproxy_stop(tcpproxy_t *p)
{
    if (!p)
        return;
    __atomic_store_n(&p->stopping, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&p->stall, 0, __ATOMIC_SEQ_CST);
    pthread_join(p->acceptor, NULL);
    close(p->lfd);
    for (int i = 0; i < 250 && get(&p->links) > 0; i++)
        usleep(20 * 1000);
    if (get(&p->links) == 0)
        free(p);
}

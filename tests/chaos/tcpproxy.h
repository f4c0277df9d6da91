/* A generic fault-injecting TCP proxy for the chaos tests: it listens on a
 * free loopback port, forwards every connection to host:port (one thread per
 * connection), and on cue breaks the network between the two sides without
 * touching either process:
 *
 *   tcpproxy_set_delay  every chunk of bytes is held delay_ms before it is
 *                       forwarded, both ways: a slow network (latency).
 *   tcpproxy_set_stall  nothing moves any more: no byte is read or forwarded
 *                       and no new connection is accepted (they wait in the
 *                       listen backlog), but nothing is closed either: a
 *                       partition. Bytes in flight move on once it heals.
 *   tcpproxy_set_down   every open connection is cut (within 100 ms) and new
 *                       ones are accepted and closed at once: the other side
 *                       is gone.
 *
 * Unlike tests/orders/pgproxy.c it does not read the protocol, so it fits any
 * broker (Redis here). Thread-safe; the setters return at once except
 * tcpproxy_set_down(p, 1), which returns once every connection is cut. */
#ifndef CHAOS_TCPPROXY_H
#define CHAOS_TCPPROXY_H

typedef struct tcpproxy_s tcpproxy_t;

/** Listens on 127.0.0.1 (a free port) and forwards to host:port. Fails the
 *  test on error. */
tcpproxy_t *tcpproxy_start(const char *host, int port);
int tcpproxy_port(const tcpproxy_t *p);
/** Latency added to every forwarded chunk (0: none). */
void tcpproxy_set_delay(tcpproxy_t *p, int delay_ms);
/** 1: partition (nothing forwarded, nothing closed); 0: heal. */
void tcpproxy_set_stall(tcpproxy_t *p, int on);
/** 1: cut every connection and refuse new ones; 0: accept again. */
void tcpproxy_set_down(tcpproxy_t *p, int on);
/** Connections accepted so far. */
long tcpproxy_connections(const tcpproxy_t *p);
/** Stops listening and cuts every connection; frees p once they are gone. */
void tcpproxy_stop(tcpproxy_t *p);

#endif

/*
 * Lanes: per-key order with parallelism. Keys hash to OUTBOX_LANES lanes; a
 * worker publishes only events of lanes it holds, and a lane is held by one
 * store session at a time (PostgreSQL: session advisory locks). Each worker
 * periodically takes or gives back lanes towards a fair share
 * ceil(lanes / live workers) of every relay process on the table. A dead
 * process's sessions end, its lanes become free, and the survivors take them
 * at their next rebalance: no coordinator.
 */
#include <stdio.h>
#include <unistd.h>

#include "core/keyset.h"
#include "core/log.h"
#include "core/util.h"
#include "relay/relay_int.h"

int outbox__relay_rebalance(outbox_worker_t *w)
{
    outbox_store_t *s = w->store;
    char err[512];
    /* One count of live workers per rebalance interval for the whole
     * process, not one per worker: it reads the server's lock table
     * (pg_locks), the dearest statement of an idle relay. */
    outbox_relay_t *r = w->relay;
    int64_t now = outbox__now_ms(), at = atomic_load(&r->live_at_ms);
    int live = atomic_load(&r->live_count);
    if (!at || now - at >= r->o.rebalance_ms) {
        if (s->ops->live_workers(s, &live, err, sizeof(err)))
            goto fail;
        atomic_store(&r->live_count, live);
        atomic_store(&r->live_at_ms, now);
    }
    if (live < 1)
        live = 1;
    int fair = (OUTBOX_LANES + live - 1) / live, before = w->nlanes;

    while (w->nlanes > fair) /* give back the surplus */
        if (s->ops->release_lane(s, w->lanes[--w->nlanes], err, sizeof(err)))
            goto fail;
    if (w->nlanes < fair) {
        /* Free lanes, from a per-worker starting point so workers starting
         * together do not all race for the same ones; a lane taken meanwhile
         * by another worker is simply not taken. */
        int taken[OUTBOX_LANES], ntaken = 0;
        int offset = (int)((outbox__keyset_hash(w->name) + (uint64_t)getpid() * 7) % OUTBOX_LANES);
        if (s->ops->take_lanes(s, offset, fair - w->nlanes, taken, &ntaken, err, sizeof(err)))
            goto fail;
        for (int i = 0; i < ntaken && w->nlanes < OUTBOX_LANES; i++)
            w->lanes[w->nlanes++] = taken[i];
    }
    atomic_store(&w->lanes_held, w->nlanes);
    uint64_t mask = 0;
    for (int i = 0; i < w->nlanes; i++)
        mask |= (uint64_t)1 << w->lanes[i];
    atomic_store(&w->lane_mask, mask);
    if (w->nlanes != before) {
        char lanes[16], live_s[16];
        snprintf(lanes, sizeof(lanes), "%d", w->nlanes);
        snprintf(live_s, sizeof(live_s), "%d", live);
        outbox__log(OUTBOX_LOG_INFO, "relay", "lanes_changed", "lane ownership changed", "worker",
                    w->name, "lanes", lanes, "live_workers", live_s, NULL);
    }
    return 0;
fail:
    outbox__relay_drop_session(w, err);
    return -1;
}

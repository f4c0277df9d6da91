/* make tsan only: an LD_PRELOAD library (scripts/test-launch.sh) that runs
 * C11 threads, mutexes, condition variables and call_once on the pthread
 * functions ThreadSanitizer intercepts.
 *
 * librdkafka uses C11 <threads.h>. glibc implements it by calling its
 * internal pthread functions, not the pthread_* symbols, and
 * ThreadSanitizer (as shipped with GCC 12 and clang 14) intercepts only the
 * pthread_* symbols. So it sees none of librdkafka's synchronization: a
 * thread it did not see start has no sanitizer state and its first malloc
 * crashes ("SEGV on unknown address 0x000000000c38", e.g. in rdk:mock), a
 * join it did not see is a "thread leak", and every access librdkafka
 * guards with an mtx_t looks like a data race. These definitions come
 * before glibc's; the types are glibc's own pthread types under other names
 * (thrd_t is a pthread_t, mtx_t a pthread_mutex_t, cnd_t a pthread_cond_t,
 * once_flag a pthread_once_t), so objects made by either side stay valid.
 *
 * Built without sanitizer flags: it is preloaded into every process of a
 * test, uninstrumented ones (kcat, psql) included. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) == sizeof(pthread_mutex_t), "mtx_t is a pthread_mutex_t");
_Static_assert(sizeof(cnd_t) == sizeof(pthread_cond_t), "cnd_t is a pthread_cond_t");
_Static_assert(sizeof(once_flag) == sizeof(pthread_once_t), "once_flag is a pthread_once_t");

static int result(int rc)
{
    return rc == 0                        ? thrd_success
           : rc == ETIMEDOUT              ? thrd_timedout
           : rc == EBUSY                  ? thrd_busy
           : rc == ENOMEM || rc == EAGAIN ? thrd_nomem
                                          : thrd_error;
}

typedef struct start_s {
    thrd_start_t fn;
    void *arg;
} start_t;

static void *trampoline(void *p)
{
    start_t s = *(start_t *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    start_t *s = malloc(sizeof(*s));
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int rc = pthread_create(thr, NULL, trampoline, s);
    if (rc)
        free(s);
    return result(rc);
}

int thrd_join(thrd_t thr, int *res)
{
    void *r = NULL;
    int rc = pthread_join(thr, &r);
    if (!rc && res)
        *res = (int)(intptr_t)r;
    return result(rc);
}

int thrd_detach(thrd_t thr)
{
    return result(pthread_detach(thr));
}

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return result(rc);
}

int mtx_lock(mtx_t *m)
{
    return result(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
    return result(pthread_mutex_trylock((pthread_mutex_t *)m));
}

int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict until)
{
    return result(pthread_mutex_timedlock((pthread_mutex_t *)m, until));
}

int mtx_unlock(mtx_t *m)
{
    return result(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
    return result(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
    return result(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
    return result(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
    return result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict until)
{
    return result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, until));
}

void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

void call_once(once_flag *flag, void (*fn)(void))
{
    pthread_once((pthread_once_t *)flag, fn);
}

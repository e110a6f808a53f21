/* The store's connection pool: see pool.h. */
#include "store/pool.h"

#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct store__pool {
    store__pool_open_cb open_cb;
    store__pool_close_cb close_cb;
    void *ctx;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when a connection is returned or a slot frees up */
    /* The idle connections as a stack: the most recently used one, whose statements are
     * prepared and whose pages are warm, is lent first. Grown on demand, so that a large
     * cap costs nothing until that many connections are open. */
    void **idle;
    unsigned n_idle;
    unsigned idle_cap;
    unsigned n_open; /* idle + lent + being opened; never above cap */
    unsigned cap;
};

/* Pushes `conn` on the idle stack. The lock is held. */
static void idle_push(struct store__pool *p, void *conn)
{
    if (p->n_idle == p->idle_cap) {
        p->idle_cap = p->idle_cap != 0 ? p->idle_cap * 2 : 8;
        p->idle = xrealloc(p->idle, p->idle_cap * sizeof *p->idle);
    }
    p->idle[p->n_idle++] = conn;
}

struct store__pool *store__pool_new(unsigned cap, store__pool_open_cb open_cb,
                                    store__pool_close_cb close_cb, void *ctx, void *first)
{
    struct store__pool *p = xcalloc(1, sizeof *p);
    p->open_cb = open_cb;
    p->close_cb = close_cb;
    p->ctx = ctx;
    p->cap = cap > 0 ? cap : 1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (first != NULL) {
        idle_push(p, first);
        p->n_open = 1;
    }
    return p;
}

void store__pool_free(struct store__pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    while (p->n_idle > 0) {
        p->close_cb(p->idle[--p->n_idle]);
        p->n_open--;
    }
    unsigned leaked = p->n_open;
    pthread_mutex_unlock(&p->lock);
    if (leaked != 0)
        log_event(LOG_ERROR, "store.error", "op", "close", "error",
                  "store closed while calls were in flight", (const char *)NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->idle);
    free(p);
}

int store__pool_acquire(struct store__pool *p, void **conn, bool *reused, char **err)
{
    pthread_mutex_lock(&p->lock);
    while (p->n_idle == 0 && p->n_open >= p->cap)
        pthread_cond_wait(&p->cond, &p->lock);
    void *c = NULL;
    if (p->n_idle > 0)
        c = p->idle[--p->n_idle];
    else
        p->n_open++; /* reserve the slot; open outside the lock */
    pthread_mutex_unlock(&p->lock);

    if (reused != NULL)
        *reused = c != NULL;
    if (c == NULL)
        c = p->open_cb(p->ctx, err);
    if (c == NULL) {
        pthread_mutex_lock(&p->lock);
        p->n_open--;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        return -EIO;
    }
    *conn = c;
    return 0;
}

void store__pool_release(struct store__pool *p, void *conn, bool broken)
{
    if (broken)
        p->close_cb(conn);
    pthread_mutex_lock(&p->lock);
    if (broken)
        p->n_open--;
    else
        idle_push(p, conn);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

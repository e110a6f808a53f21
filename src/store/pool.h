/* Inside the store: the connection pool both backends use. Only src/store/ includes this.
 *
 * A database connection (a sqlite3 handle, a PGconn) may be used by one thread at a time,
 * and the store is called from many threads at once, so each call borrows a connection
 * for its whole duration. The pool keeps the idle ones, opens new ones on demand up to a
 * cap (outside its lock: opening touches the disk or the network), makes callers wait
 * while all are lent, and drops a connection its borrower found broken so that the slot
 * can be filled afresh. It knows nothing of the database: a backend supplies the
 * functions that open and close its connections, which the pool holds as `void *`. */
#ifndef CODEHUB_STORE_POOL_H
#define CODEHUB_STORE_POOL_H

#include <stdbool.h>

struct store__pool;

/* Opens one connection for the pool, without the pool's lock held. Returns it, or NULL
 * with *err set (caller frees). `ctx` is the one given to store__pool_new(). */
typedef void *(*store__pool_open_cb)(void *ctx, char **err);
/* Closes one connection of the pool (never NULL). */
typedef void (*store__pool_close_cb)(void *conn);

/* Returns a pool of at most `cap` connections (at least 1) opened with `open_cb(ctx, …)`
 * and closed with `close_cb`. `first` (may be NULL) is a connection the backend already
 * opened; the pool takes ownership and lends it first. Free with store__pool_free(). */
struct store__pool *store__pool_new(unsigned cap, store__pool_open_cb open_cb,
                                    store__pool_close_cb close_cb, void *ctx, void *first);

/* Closes the idle connections and frees the pool; `p` may be NULL. Connections still lent
 * out cannot be closed: that is logged as a store.error and they are leaked. */
void store__pool_free(struct store__pool *p);

/* Lends a connection for one call: the most recently returned idle one, else a new one
 * while fewer than the cap are open, else the first one returned after waiting. Returns 0
 * with the connection in *conn (borrowed until store__pool_release()) and, when `reused`
 * is not NULL, whether it had been lent before (the backend may want to check that it is
 * still alive). Returns -EIO with *err set (caller frees) when a new connection cannot be
 * opened; its slot is then free again. */
int store__pool_acquire(struct store__pool *p, void **conn, bool *reused, char **err);

/* Takes back a connection from store__pool_acquire(). A `broken` one is closed and its slot
 * freed, so that the next caller opens a fresh connection; any other waits idle. */
void store__pool_release(struct store__pool *p, void *conn, bool broken);

#endif

/* Inside the store: the PostgreSQL listener (pg_listen.c) with its connection parameters
 * given directly. store_listener_open() (store.h) takes them from the store and calls
 * store__listener_open_params(); the tests call it with the parameters of a server of their
 * own. Only src/store/ and its tests include this header. See docs/store.md, "Notifications and leadership (PostgreSQL)". */
#ifndef CODEHUB_STORE_PG_LISTEN_H
#define CODEHUB_STORE_PG_LISTEN_H

#include "store/store.h"

#include <stdint.h>
#include <uv.h>

/* The advisory-lock key every codehub process on a database contends for: the ASCII of
 * "codehubL". Any fixed number works as long as every replica uses the same one and nothing
 * else on the database takes it. */
#define STORE__LEADER_KEY INT64_C(0x636f64656875624c)

/* Opens a listener like store_listener_open(), connecting with the libpq keywords/values in
 * `keywords` and `values` (NULL-terminated arrays as for PQconnectdbParams with
 * expand_dbname = 1: the first "dbname" may be a URL or a key=value string; a NULL or empty
 * value is ignored), and contending for the advisory lock `leader_key`. The arrays are
 * copied, `ev` and `data` are borrowed and must outlive the listener.
 *
 * Returns 0 with *out set (closed with store_listener_close()); -EINVAL when an argument is
 * NULL, a keyword is unknown to libpq or the connection string does not parse; -EIO when
 * libsodium cannot start. No event is called from inside this call. */
int store__listener_open_params(uv_loop_t *loop, const char *const *keywords,
                                const char *const *values, const struct store_listener_events *ev,
                                void *data, int64_t leader_key, struct store_listener **out);

/* How many connection attempts `l` has started since it was opened (the tests check that
 * retries are paced). */
uint64_t store__listener_attempts(const struct store_listener *l);

#endif

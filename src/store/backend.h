/* Inside the store: how a backend plugs in. Only src/store/ includes this header.
 *
 * store.c owns everything that does not depend on the database: parsing the store URL,
 * checking arguments, reading the clock, zeroing result structs, and the _clear/_free
 * functions. A backend gets arguments that are already checked (no NULL where a string
 * is required, valid names, scopes and states, optional strings already replaced by
 * their defaults) and only has to run the queries. It returns the same codes as the
 * public functions: 0, -ENOENT, -EEXIST, -EIO (after logging why), -ESTALE and -EBUSY
 * where the replica functions say so and, for constraint failures the checks could not
 * foresee, -EINVAL.
 *
 * A backend is one constant table of these functions: SQLite in sqlite.c, PostgreSQL in
 * pg.c. store_open_password() picks one by the URL's scheme. */
#ifndef CODEHUB_STORE_BACKEND_H
#define CODEHUB_STORE_BACKEND_H

#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the SELECTs of every backend read from each table, in the order of the backends' row
 * readers: the same SQL in both dialects. */
#define STORE__USER_COLS "id, name, password_hash, admin, created_ms, last_activity_ms FROM users"
#define STORE__SESSION_COLS                                                                        \
    "s.id_hash, s.user_id, u.name, u.admin, s.created_ms, s.expires_ms, s.last_seen_ms, "          \
    "s.client_addr FROM sessions s JOIN users u ON u.id = s.user_id"
#define STORE__TOKEN_COLS                                                                          \
    "t.id, t.hash, t.prefix, t.user_id, u.name, u.admin, t.scope, t.note, t.created_ms, "          \
    "t.expires_ms, t.last_used_ms FROM tokens t JOIN users u ON u.id = t.user_id"
#define STORE__SERVER_COLS                                                                         \
    "v.user_id, u.name, v.state, v.url, v.spawner_state, v.message, v.started_ms, "                \
    "v.last_activity_ms, v.updated_ms, v.owner, v.stop_requested "                                 \
    "FROM servers v JOIN users u ON u.id = v.user_id"

struct store_backend {
    const char *name; /* "sqlite", "postgres": for log lines */

    /* `target` is what follows the scheme for SQLite (a file path) or the whole URL for
     * PostgreSQL. `password` (PostgreSQL only, may be NULL; always NULL for SQLite) is
     * borrowed for the call. Returns the backend's own state, or NULL with *err set
     * (caller frees); `err` is never NULL here. The state is freed by close().
     * `pool_size` (PostgreSQL only) caps the connections kept for callers; 0: 8. */
    void *(*open)(const char *target, const char *password, unsigned pool_size, char **err);
    void (*close)(void *impl);

    int (*schema_version)(void *impl, int *out);

    int (*meta_get)(void *impl, const char *key, char **value_out);
    int (*meta_get_or_set)(void *impl, const char *key, const char *value, char **value_out);

    /* `password_hash` may be NULL (no password yet). Sets *id_out to the new user's id;
     * store.c builds the struct store_user from it and the arguments. */
    int (*user_create)(void *impl, const char *name, const char *password_hash, bool admin,
                       int64_t now_ms, int64_t *id_out);
    int (*user_get)(void *impl, const char *name, struct store_user *out);
    int (*user_get_by_id)(void *impl, int64_t id, struct store_user *out);
    /* `limit` 0 means no limit; `total_out` may be NULL. */
    int (*user_list)(void *impl, size_t offset, size_t limit, struct store_user **out,
                     size_t *n_out, size_t *total_out);
    int (*user_count)(void *impl, size_t *out);
    int (*user_set_admin)(void *impl, const char *name, bool admin);
    /* `password_hash` may be NULL (clears the password). */
    int (*user_set_password)(void *impl, const char *name, const char *password_hash,
                             bool drop_sessions);
    int (*user_claim_password)(void *impl, const char *name, const char *password_hash);
    int (*user_touch)(void *impl, int64_t user_id, int64_t activity_ms);
    int (*user_delete)(void *impl, const char *name);

    /* `client_addr` is never NULL here ("" when unknown). */
    int (*session_create)(void *impl, const char *id_hash, int64_t user_id, int64_t now_ms,
                          int64_t expires_ms, const char *client_addr);
    int (*session_get)(void *impl, const char *id_hash, int64_t now_ms, struct store_session *out);
    int (*session_touch)(void *impl, const char *id_hash, int64_t now_ms);
    int (*session_delete)(void *impl, const char *id_hash);
    int (*session_delete_user)(void *impl, int64_t user_id);
    int (*session_count)(void *impl, int64_t now_ms, size_t *out);
    /* `removed_out` is never NULL here. */
    int (*expire)(void *impl, int64_t now_ms, size_t *removed_out);

    /* `note` is never NULL here; `out` may be NULL. */
    int (*token_create)(void *impl, const char *hash, const char *prefix, int64_t user_id,
                        enum store_token_scope scope, const char *note, int64_t now_ms,
                        int64_t expires_ms, struct store_token *out);
    int (*token_get)(void *impl, const char *hash, int64_t now_ms, struct store_token *out);
    int (*token_list)(void *impl, int64_t user_id, struct store_token **out, size_t *n_out);
    int (*token_delete)(void *impl, int64_t user_id, int64_t token_id);
    int (*token_touch)(void *impl, int64_t token_id, int64_t now_ms);

    int (*server_get)(void *impl, int64_t user_id, struct store_server *out);
    /* Every string of `s` except user_name is non-NULL and updated_ms is set. */
    int (*server_put)(void *impl, const struct store_server *s);
    int (*server_list_active)(void *impl, struct store_server **out, size_t *n_out);
    int (*server_delete)(void *impl, int64_t user_id);
    /* As server_put, with state "starting" and stop_requested false; -EBUSY when the row
     * exists in another state than "stopped"/"failed". `current_out` may be NULL. */
    int (*server_claim)(void *impl, const struct store_server *s, struct store_server *current_out);
    /* `out` may be NULL. */
    int (*server_adopt)(void *impl, int64_t user_id, const char *from_owner, const char *to_owner,
                        struct store_server *out);
    int (*server_request_stop)(void *impl, int64_t user_id);

    /* `address` is never NULL here ("" when unknown). */
    int (*replica_beat)(void *impl, const char *id, const char *address, int64_t started_ms,
                        int64_t now_ms);
    int (*replica_list)(void *impl, struct store_replica **out, size_t *n_out);
    int (*replica_delete)(void *impl, const char *id);

    /* Every string is non-NULL here. */
    int (*event_add)(void *impl, int64_t now_ms, const char *kind, const char *user,
                     const char *actor, const char *detail);
    /* `limit` 0 means no limit. */
    int (*event_list)(void *impl, size_t limit, struct store_event **out, size_t *n_out);
};

struct store {
    const struct store_backend *be; /* borrowed: a constant table */
    void *impl;                     /* owned: freed by be->close() */
};

extern const struct store_backend store__sqlite_backend;
extern const struct store_backend store__pg_backend;

/* PostgreSQL only, for the listener (pg_listen.c): how the store's pool connects, so that
 * the listener reaches the same database with the same password, TLS settings and
 * defaults. Sets *keywords and *values to NULL-terminated libpq keyword/value arrays for
 * PQconnectStartParams(keywords, values, 1) (expand_dbname must be 1: the URL is the
 * "dbname" value, and the password, when a password file gave one, follows it). Both are
 * borrowed from the store and valid until store_close(). Returns 0, or -ENOTSUP when `st`
 * is not a PostgreSQL store (or is NULL). */
int store__pg_conninfo(struct store *st, const char *const **keywords, const char *const **values);

#endif

/* The store: users, sessions, API tokens, servers and events.
 *
 * The interface is synchronous and thread-safe. It is never called on the event-loop
 * thread: the hub runs request handlers that need it on libuv's thread pool, and the
 * offline CLI commands call it directly. A backend is a table of functions
 * (struct store_backend); SQLite is the default, PostgreSQL is for clusters and several
 * replicas.
 *
 * Every function returns 0 or a negative errno-style code:
 *   -ENOENT   no such row;            -EEXIST  unique key taken;
 *   -EIO      the database failed or cannot be reached (the backend logs why; with
 *             PostgreSQL the next call reconnects);  -EINVAL bad argument;
 *   -ESTALE   a fenced write lost: another replica owns the row (store_server_put/adopt);
 *   -EBUSY    a claim lost: the row is held by another start or a live server.
 * Strings inside result structs are owned by the struct and freed with its _clear()
 * function; arrays returned through out-pointers are freed with the matching _free(). */
#ifndef CODEHUB_STORE_STORE_H
#define CODEHUB_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct store;

/* Times are Unix milliseconds. */

struct store_user {
    int64_t id;
    char *name;          /* lowercase, [a-z0-9][a-z0-9._-]{0,31} */
    char *password_hash; /* Argon2id string, or NULL while no password is set */
    bool admin;
    int64_t created_ms;
    int64_t last_activity_ms; /* 0 = never */
};

struct store_session {
    char *id_hash; /* hex BLAKE2b-256 of the cookie token; the token itself is never stored */
    int64_t user_id;
    char *user_name; /* joined from users */
    bool user_admin; /* joined from users */
    int64_t created_ms;
    int64_t expires_ms;
    int64_t last_seen_ms;
    char *client_addr; /* address that logged in, for the admin's eyes */
};

enum store_token_scope { STORE_SCOPE_USER = 0, STORE_SCOPE_ADMIN = 1 };

struct store_token {
    int64_t id;
    char *hash;   /* hex BLAKE2b-256 of the token */
    char *prefix; /* first characters of the token, shown in lists */
    int64_t user_id;
    char *user_name; /* joined from users */
    bool user_admin; /* joined from users */
    enum store_token_scope scope;
    char *note; /* may be "" */
    int64_t created_ms;
    int64_t expires_ms;   /* 0 = never */
    int64_t last_used_ms; /* 0 = never */
};

/* One row per user's (default, unnamed) server. */
struct store_server {
    int64_t user_id;
    char *user_name; /* joined from users */
    char *state;     /* "stopped", "starting", "running", "stopping", "failed" */
    char *url; /* where the proxy reaches it ("unix:/path" or "http://ip:port"), "" when none */
    char *spawner_state; /* JSON text the spawner persists (pid, start time, …), "{}" when none */
    char *message;       /* last failure reason or progress note, "" when none */
    int64_t started_ms;  /* 0 when not running */
    int64_t last_activity_ms;
    int64_t updated_ms;
    /* Several replicas on one store (see "Replicas" below). */
    char *owner;         /* id of the replica that supervises it; "" when none (one replica) */
    bool stop_requested; /* another replica asked the owner to stop it */
};

/* A codehub process sharing the store with others. */
struct store_replica {
    char *id;      /* unique per process run, e.g. "HOST-PID-RANDOM" */
    char *address; /* where it serves, for the operator's eyes; may be "" */
    int64_t started_ms;
    int64_t heartbeat_ms; /* the last store_replica_beat() */
};

struct store_event {
    int64_t id;
    int64_t ts_ms;
    char *kind;   /* "login.ok", "user.add", "server.start", … */
    char *user;   /* the user concerned, may be "" */
    char *actor;  /* who did it, may be "" */
    char *detail; /* free text, may be "" */
};

void store_user_clear(struct store_user *u);
void store_session_clear(struct store_session *s);
void store_token_clear(struct store_token *t);
void store_server_clear(struct store_server *s);
void store_event_clear(struct store_event *e);
void store_replica_clear(struct store_replica *r);
void store_users_free(struct store_user *users, size_t n);
void store_tokens_free(struct store_token *tokens, size_t n);
void store_servers_free(struct store_server *servers, size_t n);
void store_events_free(struct store_event *events, size_t n);
void store_replicas_free(struct store_replica *replicas, size_t n);

/* Opens the store named by `url`: "" or "sqlite:" means `<data_dir>/codehub.sqlite`,
 * "sqlite:PATH" a file of its own, "postgres://…" or "postgresql://…" a PostgreSQL
 * database (a libpq URL: its parameters such as sslmode, sslrootcert, connect_timeout or
 * application_name apply). Creates the SQLite file when missing and applies the numbered
 * migrations. `password_file` (may be NULL or "": then libpq's PGPASSWORD/PGPASSFILE
 * apply) names a file whose first line is the PostgreSQL password; it is an error with
 * SQLite. On failure returns NULL and, when `err` is not NULL, sets *err to a message the
 * caller frees (never holding a password). The caller closes the store with store_close(). */
struct store *store_open_password(const char *url, const char *data_dir, const char *password_file,
                                  char **err);
/* As store_open_password, with at most `pool_size` PostgreSQL connections for callers (0:
 * the default, 8; ignored for SQLite). */
struct store *store_open_pool(const char *url, const char *data_dir, const char *password_file,
                              unsigned pool_size, char **err);
/* store_open_password(url, data_dir, NULL, err). */
struct store *store_open(const char *url, const char *data_dir, char **err);
void store_close(struct store *st);
/* The schema version the store is at (the number of the last migration applied). */
int store_schema_version(struct store *st, int *out);

/* Key/value settings shared by every process on the store (e.g. the cookie secret). */
int store_meta_get(struct store *st, const char *key, char **value_out);
/* Sets key only if it is not set yet; returns 0 either way and *value_out holds the value
 * that is stored afterwards (caller frees). Lets two processes agree on one secret. */
int store_meta_get_or_set(struct store *st, const char *key, const char *value, char **value_out);

/* Users. */
int store_user_create(struct store *st, const char *name, const char *password_hash, bool admin,
                      struct store_user *out /* may be NULL */);
int store_user_get(struct store *st, const char *name, struct store_user *out);
int store_user_get_by_id(struct store *st, int64_t id, struct store_user *out);
/* Users ordered by name; *total is the count of all users. */
int store_user_list(struct store *st, size_t offset, size_t limit, struct store_user **out,
                    size_t *n_out, size_t *total_out);
int store_user_count(struct store *st, size_t *out);
int store_user_set_admin(struct store *st, const char *name, bool admin);
/* Sets the hash; when `drop_sessions` also deletes every session of the user. */
int store_user_set_password(struct store *st, const char *name, const char *password_hash,
                            bool drop_sessions);
/* Sets the password only while none is set (first-use sign-up races): -EEXIST when one
 * already is. */
int store_user_claim_password(struct store *st, const char *name, const char *password_hash);
int store_user_touch(struct store *st, int64_t user_id, int64_t activity_ms);
/* Deletes the user with their sessions, tokens and server row. */
int store_user_delete(struct store *st, const char *name);

/* Sessions. */
int store_session_create(struct store *st, const char *id_hash, int64_t user_id, int64_t expires_ms,
                         const char *client_addr);
/* Finds an unexpired session. -ENOENT when missing or expired. */
int store_session_get(struct store *st, const char *id_hash, int64_t now_ms,
                      struct store_session *out);
int store_session_touch(struct store *st, const char *id_hash, int64_t now_ms);
int store_session_delete(struct store *st, const char *id_hash);
int store_session_delete_user(struct store *st, int64_t user_id);
int store_session_count(struct store *st, int64_t now_ms, size_t *out);
/* Deletes expired sessions and tokens; *removed_out (may be NULL) counts both. */
int store_expire(struct store *st, int64_t now_ms, size_t *removed_out);

/* API tokens. */
int store_token_create(struct store *st, const char *hash, const char *prefix, int64_t user_id,
                       enum store_token_scope scope, const char *note, int64_t expires_ms,
                       struct store_token *out /* may be NULL */);
/* Finds an unexpired token by hash. */
int store_token_get(struct store *st, const char *hash, int64_t now_ms, struct store_token *out);
int store_token_list(struct store *st, int64_t user_id, struct store_token **out, size_t *n_out);
int store_token_delete(struct store *st, int64_t user_id, int64_t token_id);
int store_token_touch(struct store *st, int64_t token_id, int64_t now_ms);

/* Servers. */
int store_server_get(struct store *st, int64_t user_id, struct store_server *out);
/* Inserts or replaces the row for s->user_id (user_name and stop_requested are ignored:
 * stop_requested keeps its stored value). `s->owner` may be NULL (taken as ""). When
 * s->owner is not "" the write is fenced: it happens only while the row is missing or
 * owned by s->owner or by nobody, and returns -ESTALE when another replica owns it (it
 * was adopted from this one, which must then forget the server without touching it). */
int store_server_put(struct store *st, const struct store_server *s);
/* Rows whose state is not "stopped". */
int store_server_list_active(struct store *st, struct store_server **out, size_t *n_out);
int store_server_delete(struct store *st, int64_t user_id);

/* Replicas. Several codehub processes may share one store (PostgreSQL). Each active server
 * row names its owner, the replica that supervises it; a replica proves it is alive by
 * beating every few seconds, and the rows of a replica whose beat is older than the lease
 * are adopted by the leader, which re-attaches to them or cleans them up.
 *
 * Claims the start of s->user_id's server: writes `s` (state "starting", owner set,
 * stop_requested cleared) only when there is no row or its state is "stopped" or
 * "failed", atomically, so that of several replicas asking at once exactly one wins.
 * Returns 0 when claimed, -EBUSY when another start or a live server holds the row;
 * either way `current_out` (may be NULL) receives the row as stored afterwards (the
 * caller clears it). */
int store_server_claim(struct store *st, const struct store_server *s,
                       struct store_server *current_out);
/* Moves an active (not "stopped") row from replica `from_owner` to `to_owner`, only if
 * `from_owner` still owns it. Returns 0 and the row in `out` (may be NULL), -ESTALE when
 * the owner changed meanwhile (someone else adopted it), -ENOENT when no active row. */
int store_server_adopt(struct store *st, int64_t user_id, const char *from_owner,
                       const char *to_owner, struct store_server *out);
/* Asks the owner of an active server to stop it: sets stop_requested. Returns 0, or
 * -ENOENT when the server is not starting or running. */
int store_server_request_stop(struct store *st, int64_t user_id);
/* Records that replica `id` is alive now (inserts it on the first beat). `address` may be
 * NULL. */
int store_replica_beat(struct store *st, const char *id, const char *address, int64_t started_ms);
/* Every replica row, ordered by id. */
int store_replica_list(struct store *st, struct store_replica **out, size_t *n_out);
/* Forgets replica `id` (a clean shutdown): its servers are adopted at the next sweep
 * without waiting for the lease. Returns 0 or -ENOENT. */
int store_replica_delete(struct store *st, const char *id);

/* Notifications and leadership (PostgreSQL only). A listener is one extra connection,
 * driven asynchronously on the loop thread, that LISTENs for the changes other processes
 * make and contends for leadership with an advisory lock. */
struct store_listener;

struct store_listener_events {
    /* A row changed somewhere (any process, the CLI included). `payload` is one of
     *   "server USER_ID"  a servers row was written or deleted
     *   "user USER_ID"    a user's password, admin flag or existence changed
     *   "session HASH"    a session was deleted (logout, password change)
     *   "token HASH"      an API token was deleted
     * borrowed for the call. */
    void (*notify)(void *data, const char *payload);
    /* The connection is up (true) or was lost (false). Notifications sent while it was down
     * are lost: on every `true` after the first the caller must re-read what it caches. */
    void (*connection)(void *data, bool up);
    /* This process became the leader (true) or stopped being it (false: the connection was
     * lost, or close). At most one process on the store leads at any time. */
    void (*leader)(void *data, bool leading);
};

/* Opens a listener on `st` on `loop`; it connects at once and reconnects with backoff.
 * `events` and `data` are borrowed and must outlive it. Returns 0 with *out set, or
 * -ENOTSUP when the backend has no notifications (SQLite: one process, nothing to hear). */
int store_listener_open(struct store *st, uv_loop_t *loop, const struct store_listener_events *ev,
                        void *data, struct store_listener **out);
/* Gives up leadership, closes the connection and frees the listener; `done` (may be NULL)
 * is called on the loop thread afterwards, never from inside this call. */
void store_listener_close(struct store_listener *l, void (*done)(void *data), void *data);
/* True when the backend supports several replicas (PostgreSQL). */
bool store_is_shared(struct store *st);

/* Events (audit trail). */
int store_event_add(struct store *st, const char *kind, const char *user, const char *actor,
                    const char *detail);
/* Newest first. */
int store_event_list(struct store *st, size_t limit, struct store_event **out, size_t *n_out);

#endif

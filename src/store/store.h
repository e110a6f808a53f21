/* The store: users, sessions, API tokens, servers and events.
 *
 * The interface is synchronous and thread-safe. It is never called on the event-loop
 * thread: the hub runs request handlers that need it on libuv's thread pool, and the
 * offline CLI commands call it directly. A backend is a table of functions
 * (struct store_backend); SQLite is the default, PostgreSQL comes later.
 *
 * Every function returns 0 or a negative errno-style code:
 *   -ENOENT   no such row;            -EEXIST  unique key taken;
 *   -EIO      the database failed (the backend logs why);  -EINVAL bad argument.
 * Strings inside result structs are owned by the struct and freed with its _clear()
 * function; arrays returned through out-pointers are freed with the matching _free(). */
#ifndef CODEHUB_STORE_STORE_H
#define CODEHUB_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
void store_users_free(struct store_user *users, size_t n);
void store_tokens_free(struct store_token *tokens, size_t n);
void store_servers_free(struct store_server *servers, size_t n);
void store_events_free(struct store_event *events, size_t n);

/* Opens the store named by `url`: "" or "sqlite:" means `<data_dir>/codehub.sqlite`,
 * "sqlite:PATH" a file of its own. Creates the database when missing and applies the
 * numbered migrations. On failure returns NULL and, when `err` is not NULL, sets *err
 * to a message the caller frees. The caller closes the store with store_close(). */
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
/* Inserts or replaces the row for s->user_id (user_name is ignored). */
int store_server_put(struct store *st, const struct store_server *s);
/* Rows whose state is not "stopped". */
int store_server_list_active(struct store *st, struct store_server **out, size_t *n_out);
int store_server_delete(struct store *st, int64_t user_id);

/* Events (audit trail). */
int store_event_add(struct store *st, const char *kind, const char *user, const char *actor,
                    const char *detail);
/* Newest first. */
int store_event_list(struct store *st, size_t limit, struct store_event **out, size_t *n_out);

#endif

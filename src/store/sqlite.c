/* The SQLite backend of the store.
 *
 * Threading: the store is called from several threads at once (libuv's thread pool). A
 * sqlite3 connection opened with SQLITE_OPEN_NOMUTEX may be used by any thread but by
 * only one at a time, so each call borrows a connection from the store's pool (pool.c)
 * for its whole duration and gives it back at the end. The pool opens connections on
 * demand up to POOL_MAX; beyond that callers wait for one to come back. Writers
 * from different connections (and processes) are serialised by SQLite's own lock, with
 * busy_timeout waiting for it; WAL lets readers proceed meanwhile.
 *
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT) on first use
 * and kept until the connection closes: with at most POOL_MAX connections each statement
 * is compiled at most POOL_MAX times in the life of the process, and a call costs only
 * reset + bind + step. */
#include "core/alloc.h"
#include "core/log.h"
#include "store/backend.h"
#include "store/migrations.h"
#include "store/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX 8
#define BUSY_TIMEOUT_MS 5000

/* ---- statements -------------------------------------------------------------------- */

enum stmt_id {
    ST_BEGIN_IMMEDIATE,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_SCHEMA_VERSION,
    ST_META_GET,
    ST_META_INSERT_IGNORE,
    ST_USER_INSERT,
    ST_USER_GET,
    ST_USER_GET_BY_ID,
    ST_USER_LIST,
    ST_USER_COUNT,
    ST_USER_EXISTS,
    ST_USER_SET_ADMIN,
    ST_USER_SET_PASSWORD,
    ST_USER_CLAIM,
    ST_USER_TOUCH,
    ST_USER_DELETE,
    ST_SESSION_INSERT,
    ST_SESSION_GET,
    ST_SESSION_TOUCH,
    ST_SESSION_DELETE,
    ST_SESSION_DELETE_USER,
    ST_SESSION_DELETE_USER_NAME,
    ST_SESSION_COUNT,
    ST_SESSION_EXPIRE,
    ST_TOKEN_EXPIRE,
    ST_TOKEN_INSERT,
    ST_TOKEN_GET,
    ST_TOKEN_GET_BY_ID,
    ST_TOKEN_LIST,
    ST_TOKEN_DELETE,
    ST_TOKEN_TOUCH,
    ST_SERVER_GET,
    ST_SERVER_PUT,
    ST_SERVER_LIST_ACTIVE,
    ST_SERVER_DELETE,
    ST_SERVER_CLAIM,
    ST_SERVER_ADOPT,
    ST_SERVER_ACTIVE,
    ST_SERVER_REQUEST_STOP,
    ST_REPLICA_BEAT,
    ST_REPLICA_LIST,
    ST_REPLICA_DELETE,
    ST_EVENT_INSERT,
    ST_EVENT_LIST,
    ST__COUNT
};

_Static_assert(ST__COUNT <= 64, "the per-call bitmask of used statements holds 64");

/* A row is alive while expires_ms is 0 (never) or not yet in the past. */
#define ALIVE(t) "(" t ".expires_ms = 0 OR " t ".expires_ms >= ?2)"

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_SCHEMA_VERSION] = "SELECT COALESCE(MAX(version), 0) FROM schema_version",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_INSERT_IGNORE] =
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
    [ST_USER_INSERT] = "INSERT INTO users (name, password_hash, admin, created_ms, "
                       "last_activity_ms) VALUES (?1, ?2, ?3, ?4, 0)",
    [ST_USER_GET] = "SELECT " STORE__USER_COLS " WHERE name = ?1",
    [ST_USER_GET_BY_ID] = "SELECT " STORE__USER_COLS " WHERE id = ?1",
    [ST_USER_LIST] = "SELECT " STORE__USER_COLS " ORDER BY name LIMIT ?1 OFFSET ?2",
    [ST_USER_COUNT] = "SELECT COUNT(*) FROM users",
    [ST_USER_EXISTS] = "SELECT 1 FROM users WHERE name = ?1",
    [ST_USER_SET_ADMIN] = "UPDATE users SET admin = ?2 WHERE name = ?1",
    [ST_USER_SET_PASSWORD] = "UPDATE users SET password_hash = ?2 WHERE name = ?1",
    [ST_USER_CLAIM] =
        "UPDATE users SET password_hash = ?2 WHERE name = ?1 AND password_hash IS NULL",
    /* MAX(): touches come from many threads and may land out of order. */
    [ST_USER_TOUCH] = "UPDATE users SET last_activity_ms = MAX(last_activity_ms, ?2) WHERE id = ?1",
    [ST_USER_DELETE] = "DELETE FROM users WHERE name = ?1",
    [ST_SESSION_INSERT] = "INSERT INTO sessions (id_hash, user_id, created_ms, expires_ms, "
                          "last_seen_ms, client_addr) VALUES (?1, ?2, ?3, ?4, ?3, ?5)",
    [ST_SESSION_GET] = "SELECT " STORE__SESSION_COLS " WHERE s.id_hash = ?1 AND " ALIVE("s"),
    [ST_SESSION_TOUCH] =
        "UPDATE sessions SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id_hash = ?1",
    [ST_SESSION_DELETE] = "DELETE FROM sessions WHERE id_hash = ?1",
    [ST_SESSION_DELETE_USER] = "DELETE FROM sessions WHERE user_id = ?1",
    [ST_SESSION_DELETE_USER_NAME] =
        "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
    [ST_SESSION_COUNT] = "SELECT COUNT(*) FROM sessions WHERE expires_ms = 0 OR expires_ms >= ?1",
    /* "> 0" rather than "!= 0" lets the expiry index scan exactly the expired range;
     * store.c refuses negative expiry times, so the two are the same. */
    [ST_SESSION_EXPIRE] = "DELETE FROM sessions WHERE expires_ms > 0 AND expires_ms < ?1",
    [ST_TOKEN_EXPIRE] = "DELETE FROM tokens WHERE expires_ms > 0 AND expires_ms < ?1",
    [ST_TOKEN_INSERT] = "INSERT INTO tokens (hash, prefix, user_id, scope, note, created_ms, "
                        "expires_ms, last_used_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
    [ST_TOKEN_GET] = "SELECT " STORE__TOKEN_COLS " WHERE t.hash = ?1 AND " ALIVE("t"),
    [ST_TOKEN_GET_BY_ID] = "SELECT " STORE__TOKEN_COLS " WHERE t.id = ?1",
    [ST_TOKEN_LIST] = "SELECT " STORE__TOKEN_COLS " WHERE t.user_id = ?1 ORDER BY t.id",
    [ST_TOKEN_DELETE] = "DELETE FROM tokens WHERE user_id = ?1 AND id = ?2",
    [ST_TOKEN_TOUCH] = "UPDATE tokens SET last_used_ms = MAX(last_used_ms, ?2) WHERE id = ?1",
    [ST_SERVER_GET] = "SELECT " STORE__SERVER_COLS " WHERE v.user_id = ?1",
    /* The fence: with an owner, the update happens only while the row is ownerless or
     * already ours; the caller learns of a lost fence from changes() == 0. */
    [ST_SERVER_PUT] =
        "INSERT INTO servers (user_id, state, url, spawner_state, message, started_ms, "
        "last_activity_ms, updated_ms, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
        "ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, url = excluded.url, "
        "spawner_state = excluded.spawner_state, message = excluded.message, "
        "started_ms = excluded.started_ms, last_activity_ms = excluded.last_activity_ms, "
        "updated_ms = excluded.updated_ms, owner = excluded.owner "
        "WHERE excluded.owner = '' OR servers.owner IN (excluded.owner, '')",
    /* One statement decides a claim race: the upsert's WHERE sees the latest row under
     * the write lock. */
    [ST_SERVER_CLAIM] =
        "INSERT INTO servers (user_id, state, url, spawner_state, message, started_ms, "
        "last_activity_ms, updated_ms, owner, stop_requested) "
        "VALUES (?1, 'starting', ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0) "
        "ON CONFLICT (user_id) DO UPDATE SET state = 'starting', url = excluded.url, "
        "spawner_state = excluded.spawner_state, message = excluded.message, "
        "started_ms = excluded.started_ms, last_activity_ms = excluded.last_activity_ms, "
        "updated_ms = excluded.updated_ms, owner = excluded.owner, stop_requested = 0 "
        "WHERE servers.state IN ('stopped', 'failed')",
    [ST_SERVER_ADOPT] = "UPDATE servers SET owner = ?3 "
                        "WHERE user_id = ?1 AND state != 'stopped' AND owner = ?2",
    [ST_SERVER_ACTIVE] = "SELECT owner FROM servers WHERE user_id = ?1 AND state != 'stopped'",
    [ST_SERVER_REQUEST_STOP] = "UPDATE servers SET stop_requested = 1 "
                               "WHERE user_id = ?1 AND state IN ('starting', 'running')",
    [ST_REPLICA_BEAT] =
        "INSERT INTO replicas (id, address, started_ms, heartbeat_ms) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (id) DO UPDATE SET address = excluded.address, "
        "heartbeat_ms = MAX(replicas.heartbeat_ms, excluded.heartbeat_ms)",
    [ST_REPLICA_LIST] = "SELECT id, address, started_ms, heartbeat_ms FROM replicas ORDER BY id",
    [ST_REPLICA_DELETE] = "DELETE FROM replicas WHERE id = ?1",
    [ST_SERVER_LIST_ACTIVE] =
        "SELECT " STORE__SERVER_COLS " WHERE v.state != 'stopped' ORDER BY u.name",
    [ST_SERVER_DELETE] = "DELETE FROM servers WHERE user_id = ?1",
    [ST_EVENT_INSERT] = "INSERT INTO events (ts_ms, kind, \"user\", actor, detail) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_EVENT_LIST] = "SELECT id, ts_ms, kind, \"user\", actor, detail FROM events "
                      "ORDER BY id DESC LIMIT ?1",
};

/* ---- connections and the pool ------------------------------------------------------ */

struct conn {
    sqlite3 *db;
    sqlite3_stmt *stmts[ST__COUNT]; /* prepared on first use */
};

struct sq {
    char *path;
    struct store__pool *pool; /* of struct conn */
};

/* Closes a connection: the pool's close callback. */
static void conn_close(void *conn)
{
    struct conn *c = conn;
    if (c == NULL)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->stmts[i]);
    /* sqlite3_close (not _v2): every statement is finalized, so this cannot leave a
     * zombie; if it ever did, SQLite would say so with SQLITE_BUSY. */
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_event(LOG_ERROR, "store.error", "op", "close", "error", sqlite3_errmsg(c->db),
                  (const char *)NULL);
    free(c);
}

/* Runs one statement that returns at most one text value (a pragma). Returns the
 * sqlite3 result code; the value, when there is one, is copied into `value`. */
static int exec_text(sqlite3 *db, const char *sql, char *value, size_t size)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return rc;
    if (value != NULL && size > 0)
        value[0] = '\0';
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        if (value != NULL && size > 0 && t != NULL)
            snprintf(value, size, "%s", (const char *)t);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(s);
    return rc;
}

/* Opens one connection with the settings every connection needs. Returns it, or NULL
 * with *err set (caller frees). */
static struct conn *conn_open(const char *path, char **err)
{
    struct conn *c = xcalloc(1, sizeof *c);
    char value[32];
    const char *step = "open";
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK)
        goto fail;
    sqlite3_extended_result_codes(c->db, 1);
    step = "busy_timeout";
    rc = sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK)
        goto fail;
    /* NORMAL in WAL mode: a commit is in the WAL (in the OS's page cache) before it
     * returns, so a killed process loses nothing; only the fsync moves to checkpoints,
     * which is what a power loss could cost (see docs/store.md). */
    step = "synchronous";
    rc = exec_text(c->db, "PRAGMA synchronous = NORMAL", NULL, 0);
    if (rc != SQLITE_OK)
        goto fail;
    step = "foreign_keys";
    rc = exec_text(c->db, "PRAGMA foreign_keys = ON", NULL, 0);
    if (rc != SQLITE_OK)
        goto fail;
    /* A build without foreign keys accepts the pragma silently; cascading deletes are
     * how a deleted user's sessions go away, so check that it took. */
    rc = exec_text(c->db, "PRAGMA foreign_keys", value, sizeof value);
    if (rc != SQLITE_OK)
        goto fail;
    if (strcmp(value, "1") != 0) {
        *err = xasprintf("%s: this SQLite does not enforce foreign keys", path);
        sqlite3_close(c->db);
        free(c);
        return NULL;
    }
    return c;

fail:
    *err = xasprintf("%s: %s: %s", path, step,
                     c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
    sqlite3_close(c->db);
    free(c);
    return NULL;
}

/* Opens a connection for the pool: `ctx` is the struct sq. */
static void *pool_open(void *ctx, char **err)
{
    const struct sq *sq = ctx;
    return conn_open(sq->path, err);
}

/* ---- one call ---------------------------------------------------------------------- */

/* The state of one store call: its connection, the statements it used (to reset them
 * at the end, so that no read transaction outlives the call) and the first bind error. */
struct call {
    struct sq *sq;
    struct conn *c;
    const char *op;
    uint64_t used;
    int bind_rc;
};

/* Borrows a connection for the call. Returns 0 or -EIO (logged). */
static int call_begin(struct call *k, void *impl, const char *op)
{
    memset(k, 0, sizeof *k);
    k->sq = impl;
    k->op = op;
    void *c = NULL;
    char *err = NULL;
    if (store__pool_acquire(k->sq->pool, &c, NULL, &err) < 0) {
        log_event(LOG_ERROR, "store.error", "op", op, "error", err, (const char *)NULL);
        free(err);
        return -EIO;
    }
    k->c = c;
    return 0;
}

static void call_end(struct call *k)
{
    struct conn *c = k->c;
    for (int i = 0; i < ST__COUNT; i++)
        if (k->used & ((uint64_t)1 << i))
            sqlite3_reset(c->stmts[i]);
    bool broken = false;
    if (!sqlite3_get_autocommit(c->db)) {
        /* Only a failed path gets here: undo, and retire the connection if even that
         * fails rather than hand an open transaction to the next caller. */
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        broken = !sqlite3_get_autocommit(c->db);
    }
    store__pool_release(k->sq->pool, c, broken);
    k->c = NULL;
}

/* Logs a database failure of this call and returns -EIO. */
static int call_fail_io(struct call *k, const char *error)
{
    log_event(LOG_ERROR, "store.error", "op", k->op, "error", error, (const char *)NULL);
    return -EIO;
}

/* Maps a failed sqlite3 result code to the store's errno codes. */
static int call_error(struct call *k, int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return -EEXIST;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        /* The only foreign keys point at users: the user does not exist. */
        return -ENOENT;
    case SQLITE_CONSTRAINT_NOTNULL:
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_TOOBIG:
        log_event(LOG_WARN, "store.rejected", "op", k->op, "error", sqlite3_errmsg(k->c->db),
                  (const char *)NULL);
        return -EINVAL;
    default:
        return call_fail_io(k, sqlite3_errmsg(k->c->db));
    }
}

/* Returns the connection's prepared statement `id`, reset and unbound, or NULL when it
 * cannot be prepared (logged; step() then fails with -EIO). */
static sqlite3_stmt *call_stmt(struct call *k, enum stmt_id id)
{
    struct conn *c = k->c;
    if (c->stmts[id] == NULL) {
        int rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &c->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            call_fail_io(k, sqlite3_errmsg(c->db));
            c->stmts[id] = NULL;
            return NULL;
        }
    }
    k->used |= (uint64_t)1 << id;
    sqlite3_stmt *s = c->stmts[id];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

static void bind_rc(struct call *k, int rc)
{
    if (rc != SQLITE_OK && k->bind_rc == SQLITE_OK)
        k->bind_rc = rc;
}

/* Binds text, or SQL NULL when `v` is NULL. The text stays borrowed for the call. */
static void bind_text(struct call *k, sqlite3_stmt *s, int i, const char *v)
{
    if (s == NULL)
        return;
    if (v == NULL)
        bind_rc(k, sqlite3_bind_null(s, i));
    else
        bind_rc(k, sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC));
}

static void bind_i64(struct call *k, sqlite3_stmt *s, int i, int64_t v)
{
    if (s != NULL)
        bind_rc(k, sqlite3_bind_int64(s, i, v));
}

/* SQLite's LIMIT and OFFSET are signed; a LIMIT below zero means none. */
static int64_t size_arg(size_t v)
{
    return v > (size_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* Steps `s` once. Returns 1 with a row, 0 when done, or a negative errno (see
 * call_error). `s` NULL means preparing failed, already logged. */
static int step(struct call *k, sqlite3_stmt *s)
{
    if (s == NULL)
        return -EIO;
    if (k->bind_rc != SQLITE_OK) {
        int rc = k->bind_rc;
        k->bind_rc = SQLITE_OK;
        return call_error(k, rc);
    }
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    /* With extended result codes on, sqlite3_step returns e.g. SQLITE_CONSTRAINT_UNIQUE;
     * reset now so a failed statement does not keep its transaction state. */
    int ext = sqlite3_extended_errcode(k->c->db);
    int ret = call_error(k, ext != SQLITE_OK ? ext : rc);
    sqlite3_reset(s);
    return ret;
}

/* Runs a statement that returns no rows. Returns 0 or a negative errno. */
static int exec_stmt(struct call *k, sqlite3_stmt *s)
{
    int rc = step(k, s);
    return rc > 0 ? 0 : rc;
}

static int run(struct call *k, enum stmt_id id)
{
    return exec_stmt(k, call_stmt(k, id));
}

static int changes(struct call *k)
{
    return sqlite3_changes(k->c->db);
}

/* ---- reading rows ------------------------------------------------------------------ */

static char *col_str(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return xstrdup(t != NULL ? (const char *)t : "");
}

static char *col_str_or_null(sqlite3_stmt *s, int i)
{
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return NULL;
    return col_str(s, i);
}

static void read_user(sqlite3_stmt *s, struct store_user *u)
{
    u->id = sqlite3_column_int64(s, 0);
    u->name = col_str(s, 1);
    u->password_hash = col_str_or_null(s, 2);
    u->admin = sqlite3_column_int(s, 3) != 0;
    u->created_ms = sqlite3_column_int64(s, 4);
    u->last_activity_ms = sqlite3_column_int64(s, 5);
}

static void read_session(sqlite3_stmt *s, struct store_session *out)
{
    out->id_hash = col_str(s, 0);
    out->user_id = sqlite3_column_int64(s, 1);
    out->user_name = col_str(s, 2);
    out->user_admin = sqlite3_column_int(s, 3) != 0;
    out->created_ms = sqlite3_column_int64(s, 4);
    out->expires_ms = sqlite3_column_int64(s, 5);
    out->last_seen_ms = sqlite3_column_int64(s, 6);
    out->client_addr = col_str(s, 7);
}

static const char *scope_name(enum store_token_scope scope)
{
    return scope == STORE_SCOPE_ADMIN ? "admin" : "user";
}

static void read_token(sqlite3_stmt *s, struct store_token *t)
{
    t->id = sqlite3_column_int64(s, 0);
    t->hash = col_str(s, 1);
    t->prefix = col_str(s, 2);
    t->user_id = sqlite3_column_int64(s, 3);
    t->user_name = col_str(s, 4);
    t->user_admin = sqlite3_column_int(s, 5) != 0;
    const unsigned char *scope = sqlite3_column_text(s, 6);
    t->scope = scope != NULL && strcmp((const char *)scope, "admin") == 0 ? STORE_SCOPE_ADMIN
                                                                          : STORE_SCOPE_USER;
    t->note = col_str(s, 7);
    t->created_ms = sqlite3_column_int64(s, 8);
    t->expires_ms = sqlite3_column_int64(s, 9);
    t->last_used_ms = sqlite3_column_int64(s, 10);
}

static void read_server(sqlite3_stmt *s, struct store_server *v)
{
    v->user_id = sqlite3_column_int64(s, 0);
    v->user_name = col_str(s, 1);
    v->state = col_str(s, 2);
    v->url = col_str(s, 3);
    v->spawner_state = col_str(s, 4);
    v->message = col_str(s, 5);
    v->started_ms = sqlite3_column_int64(s, 6);
    v->last_activity_ms = sqlite3_column_int64(s, 7);
    v->updated_ms = sqlite3_column_int64(s, 8);
    v->owner = col_str(s, 9);
    v->stop_requested = sqlite3_column_int(s, 10) != 0;
}

static void read_replica(sqlite3_stmt *s, struct store_replica *r)
{
    r->id = col_str(s, 0);
    r->address = col_str(s, 1);
    r->started_ms = sqlite3_column_int64(s, 2);
    r->heartbeat_ms = sqlite3_column_int64(s, 3);
}

static void read_event(sqlite3_stmt *s, struct store_event *e)
{
    e->id = sqlite3_column_int64(s, 0);
    e->ts_ms = sqlite3_column_int64(s, 1);
    e->kind = col_str(s, 2);
    e->user = col_str(s, 3);
    e->actor = col_str(s, 4);
    e->detail = col_str(s, 5);
}

/* Returns `arr` (of `*cap` elements of `size` bytes), reallocated when needed so that it
 * holds at least n + 1 elements; new elements are zeroed. */
static void *grow(void *arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return arr;
    size_t cap2 = *cap ? *cap * 2 : 16;
    arr = xrealloc(arr, cap2 * size);
    memset((char *)arr + *cap * size, 0, (cap2 - *cap) * size);
    *cap = cap2;
    return arr;
}

/* Reads one COUNT(*) style integer. Returns 0 or a negative errno. */
static int read_count(struct call *k, sqlite3_stmt *s, size_t *out)
{
    int rc = step(k, s);
    if (rc == 1) {
        int64_t v = sqlite3_column_int64(s, 0);
        *out = v > 0 ? (size_t)v : 0;
        return 0;
    }
    return rc == 0 ? call_fail_io(k, "count returned no row") : rc;
}

/* ---- migrations -------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Brings the database to STORE__SCHEMA_VERSION, one migration per transaction. Each
 * round takes the write lock first (BEGIN IMMEDIATE) and only then reads the version, so
 * two processes opening a fresh database at once apply each migration exactly once.
 * Returns 0, or -1 with *err set (caller frees). */
static int migrate(sqlite3 *db, const char *path, char **err)
{
    char *msg = NULL;
    for (;;) {
        char value[32];
        int rc = sqlite3_exec(db,
                              "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_version ("
                              "version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
                              NULL, NULL, &msg);
        if (rc != SQLITE_OK)
            goto fail;
        rc = exec_text(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", value,
                       sizeof value);
        if (rc != SQLITE_OK)
            goto fail;
        long version = strtol(value, NULL, 10);
        if (version > STORE__SCHEMA_VERSION) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            *err = xasprintf("%s has schema version %ld, newer than this codehub knows (%d): "
                             "run a newer codehub, or restore a backup made before the "
                             "upgrade",
                             path, version, STORE__SCHEMA_VERSION);
            return -1;
        }
        if (version == STORE__SCHEMA_VERSION) {
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &msg);
            if (rc != SQLITE_OK)
                goto fail;
            return 0;
        }
        int next = (int)version + 1;
        rc = sqlite3_exec(db, store__migrations[next].sqlite, NULL, NULL, &msg);
        if (rc != SQLITE_OK)
            goto fail;
        char *record = xasprintf("INSERT INTO schema_version (version, applied_ms) "
                                 "VALUES (%d, %lld); COMMIT",
                                 next, (long long)wall_ms());
        rc = sqlite3_exec(db, record, NULL, NULL, &msg);
        free(record);
        if (rc != SQLITE_OK)
            goto fail;
        char num[16];
        snprintf(num, sizeof num, "%d", next);
        log_event(LOG_INFO, "store.migrated", "version", num, "summary",
                  store__migrations[next].summary, (const char *)NULL);
    }

fail:
    *err = xasprintf("%s: migrating the schema failed: %s", path,
                     msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ---- open / close ------------------------------------------------------------------ */

/* The database holds session and password hashes: create it owner-only, and tighten an
 * existing file (and its WAL companions) that is readable by others. The file is created
 * here with O_EXCL rather than left to SQLite so that the mode does not depend on the
 * umask; an existing file is never opened here, because closing any descriptor of a
 * database file drops every POSIX lock this process holds on it. SQLite gives the -wal
 * and -shm files the main file's mode. Returns 0 or -1 with *err set. */
static int prepare_file(const char *path, char **err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno != EEXIST) {
        *err = xasprintf("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char *name = xasprintf("%s%s", path, suffixes[i]);
        struct stat st;
        if (stat(name, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
            if (chmod(name, st.st_mode & 0700) == 0)
                log_event(LOG_WARN, "store.mode_fixed", "file", name, "mode", "0600",
                          (const char *)NULL);
            else
                log_event(LOG_WARN, "store.mode_open", "file", name, "error", strerror(errno),
                          (const char *)NULL);
        }
        free(name);
    }
    return 0;
}

static void sq_close(void *impl)
{
    struct sq *sq = impl;
    if (sq == NULL)
        return;
    store__pool_free(sq->pool);
    free(sq->path);
    free(sq);
}

static void *sq_open(const char *path, const char *password, unsigned pool_size, char **err)
{
    struct sq *sq = NULL;
    struct conn *c = NULL;
    char value[32];

    if (path[0] == '\0' || strcmp(path, ":memory:") == 0) {
        /* Every pooled connection would see its own empty in-memory database. */
        *err = xasprintf("the SQLite store needs a file path, not \"%s\"", path);
        return NULL;
    }
    if (!sqlite3_threadsafe()) {
        *err = xstrdup("this SQLite library was built without thread support");
        return NULL;
    }
    if (prepare_file(path, err) != 0)
        return NULL;
    c = conn_open(path, err);
    if (c == NULL)
        return NULL;
    /* WAL is a property of the file: set once here, every later connection inherits it.
     * It lets readers run while one connection writes. */
    int rc = exec_text(c->db, "PRAGMA journal_mode = WAL", value, sizeof value);
    if (rc != SQLITE_OK) {
        *err = xasprintf("%s: %s", path, sqlite3_errmsg(c->db));
        goto fail;
    }
    if (strcmp(value, "wal") != 0)
        log_event(LOG_WARN, "store.no_wal", "file", path, "journal_mode", value,
                  (const char *)NULL);
    if (migrate(c->db, path, err) != 0)
        goto fail;

    sq = xcalloc(1, sizeof *sq);
    sq->path = xstrdup(path);
    sq->pool = store__pool_new(POOL_MAX, pool_open, conn_close, sq, c);
    return sq;

fail:
    conn_close(c);
    return NULL;
}

static int sq_schema_version(void *impl, int *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "schema_version");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SCHEMA_VERSION);
    rc = step(&k, s);
    if (rc == 1) {
        *out = sqlite3_column_int(s, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = call_fail_io(&k, "schema_version is empty");
    }
    call_end(&k);
    return rc;
}

/* ---- meta -------------------------------------------------------------------------- */

static int sq_meta_get(void *impl, const char *key, char **value_out)
{
    struct call k;
    int rc = call_begin(&k, impl, "meta_get");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_META_GET);
    bind_text(&k, s, 1, key);
    rc = step(&k, s);
    if (rc == 1) {
        *value_out = col_str(s, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int sq_meta_get_or_set(void *impl, const char *key, const char *value, char **value_out)
{
    struct call k;
    int rc = call_begin(&k, impl, "meta_get_or_set");
    if (rc < 0)
        return rc;
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_META_INSERT_IGNORE);
    bind_text(&k, s, 1, key);
    bind_text(&k, s, 2, value);
    rc = exec_stmt(&k, s);
    if (rc < 0)
        goto done;
    s = call_stmt(&k, ST_META_GET);
    bind_text(&k, s, 1, key);
    rc = step(&k, s);
    if (rc == 0)
        rc = call_fail_io(&k, "meta row vanished inside its transaction");
    if (rc < 0)
        goto done;
    char *v = col_str(s, 0);
    rc = run(&k, ST_COMMIT);
    if (rc < 0) {
        free(v);
        goto done;
    }
    *value_out = v;
done:
    call_end(&k);
    return rc;
}

/* ---- users ------------------------------------------------------------------------- */

static int sq_user_create(void *impl, const char *name, const char *password_hash, bool admin,
                          int64_t now_ms, int64_t *id_out)
{
    struct call k;
    int rc = call_begin(&k, impl, "user_create");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_USER_INSERT);
    bind_text(&k, s, 1, name);
    bind_text(&k, s, 2, password_hash);
    bind_i64(&k, s, 3, admin ? 1 : 0);
    bind_i64(&k, s, 4, now_ms);
    rc = exec_stmt(&k, s);
    if (rc == 0)
        *id_out = sqlite3_last_insert_rowid(k.c->db);
    call_end(&k);
    return rc;
}

static int user_get_one(void *impl, const char *op, enum stmt_id id, const char *name,
                        int64_t user_id, struct store_user *out)
{
    struct call k;
    int rc = call_begin(&k, impl, op);
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, id);
    if (name != NULL)
        bind_text(&k, s, 1, name);
    else
        bind_i64(&k, s, 1, user_id);
    rc = step(&k, s);
    if (rc == 1) {
        read_user(s, out);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int sq_user_get(void *impl, const char *name, struct store_user *out)
{
    return user_get_one(impl, "user_get", ST_USER_GET, name, 0, out);
}

static int sq_user_get_by_id(void *impl, int64_t id, struct store_user *out)
{
    return user_get_one(impl, "user_get_by_id", ST_USER_GET_BY_ID, NULL, id, out);
}

static int sq_user_list(void *impl, size_t offset, size_t limit, struct store_user **out,
                        size_t *n_out, size_t *total_out)
{
    struct store_user *users = NULL;
    size_t n = 0, cap = 0, total = 0;
    struct call k;
    int rc = call_begin(&k, impl, "user_list");
    if (rc < 0)
        return rc;
    /* One read transaction, so the page and the total come from the same snapshot. */
    rc = run(&k, ST_BEGIN_READ);
    if (rc < 0)
        goto done;
    rc = read_count(&k, call_stmt(&k, ST_USER_COUNT), &total);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_USER_LIST);
    bind_i64(&k, s, 1, limit == 0 ? -1 : size_arg(limit));
    bind_i64(&k, s, 2, size_arg(offset));
    for (;;) {
        rc = step(&k, s);
        if (rc != 1)
            break;
        users = grow(users, &cap, n, sizeof *users);
        read_user(s, &users[n++]);
    }
    if (rc < 0)
        goto done;
    rc = run(&k, ST_COMMIT);
done:
    call_end(&k);
    if (rc < 0) {
        store_users_free(users, n);
        return rc;
    }
    *out = users;
    *n_out = n;
    if (total_out != NULL)
        *total_out = total;
    return 0;
}

static int sq_user_count(void *impl, size_t *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "user_count");
    if (rc < 0)
        return rc;
    rc = read_count(&k, call_stmt(&k, ST_USER_COUNT), out);
    call_end(&k);
    return rc;
}

/* Runs an UPDATE/DELETE keyed by (text, int64) and returns -ENOENT when no row matched. */
static int update_one(void *impl, const char *op, enum stmt_id id, const char *key_text,
                      int64_t key_int, int64_t arg, bool arg_is_second)
{
    struct call k;
    int rc = call_begin(&k, impl, op);
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, id);
    if (key_text != NULL)
        bind_text(&k, s, 1, key_text);
    else
        bind_i64(&k, s, 1, key_int);
    if (arg_is_second)
        bind_i64(&k, s, 2, arg);
    rc = exec_stmt(&k, s);
    if (rc == 0 && changes(&k) == 0)
        rc = -ENOENT;
    call_end(&k);
    return rc;
}

static int sq_user_set_admin(void *impl, const char *name, bool admin)
{
    return update_one(impl, "user_set_admin", ST_USER_SET_ADMIN, name, 0, admin ? 1 : 0, true);
}

static int sq_user_set_password(void *impl, const char *name, const char *password_hash,
                                bool drop_sessions)
{
    struct call k;
    int rc = call_begin(&k, impl, "user_set_password");
    if (rc < 0)
        return rc;
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_USER_SET_PASSWORD);
    bind_text(&k, s, 1, name);
    bind_text(&k, s, 2, password_hash);
    rc = exec_stmt(&k, s);
    if (rc < 0)
        goto done;
    if (changes(&k) == 0) {
        rc = -ENOENT;
        goto done;
    }
    if (drop_sessions) {
        s = call_stmt(&k, ST_SESSION_DELETE_USER_NAME);
        bind_text(&k, s, 1, name);
        rc = exec_stmt(&k, s);
        if (rc < 0)
            goto done;
    }
    rc = run(&k, ST_COMMIT);
done:
    call_end(&k); /* rolls back when the transaction is still open */
    return rc;
}

static int sq_user_claim_password(void *impl, const char *name, const char *password_hash)
{
    struct call k;
    int rc = call_begin(&k, impl, "user_claim_password");
    if (rc < 0)
        return rc;
    /* The UPDATE alone decides the race (its WHERE sees the latest committed row under
     * the write lock); the transaction only keeps the follow-up "why not" check
     * consistent with it. */
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_USER_CLAIM);
    bind_text(&k, s, 1, name);
    bind_text(&k, s, 2, password_hash);
    rc = exec_stmt(&k, s);
    if (rc < 0)
        goto done;
    if (changes(&k) == 0) {
        s = call_stmt(&k, ST_USER_EXISTS);
        bind_text(&k, s, 1, name);
        rc = step(&k, s);
        if (rc >= 0)
            rc = rc == 1 ? -EEXIST : -ENOENT;
        goto done;
    }
    rc = run(&k, ST_COMMIT);
done:
    call_end(&k);
    return rc;
}

static int sq_user_touch(void *impl, int64_t user_id, int64_t activity_ms)
{
    return update_one(impl, "user_touch", ST_USER_TOUCH, NULL, user_id, activity_ms, true);
}

static int sq_user_delete(void *impl, const char *name)
{
    /* Sessions, tokens and the server row go with it: ON DELETE CASCADE. */
    return update_one(impl, "user_delete", ST_USER_DELETE, name, 0, 0, false);
}

/* ---- sessions ---------------------------------------------------------------------- */

static int sq_session_create(void *impl, const char *id_hash, int64_t user_id, int64_t now_ms,
                             int64_t expires_ms, const char *client_addr)
{
    struct call k;
    int rc = call_begin(&k, impl, "session_create");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SESSION_INSERT);
    bind_text(&k, s, 1, id_hash);
    bind_i64(&k, s, 2, user_id);
    bind_i64(&k, s, 3, now_ms);
    bind_i64(&k, s, 4, expires_ms);
    bind_text(&k, s, 5, client_addr);
    rc = exec_stmt(&k, s);
    call_end(&k);
    return rc;
}

static int sq_session_get(void *impl, const char *id_hash, int64_t now_ms,
                          struct store_session *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "session_get");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SESSION_GET);
    bind_text(&k, s, 1, id_hash);
    bind_i64(&k, s, 2, now_ms);
    rc = step(&k, s);
    if (rc == 1) {
        read_session(s, out);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int sq_session_touch(void *impl, const char *id_hash, int64_t now_ms)
{
    return update_one(impl, "session_touch", ST_SESSION_TOUCH, id_hash, 0, now_ms, true);
}

static int sq_session_delete(void *impl, const char *id_hash)
{
    return update_one(impl, "session_delete", ST_SESSION_DELETE, id_hash, 0, 0, false);
}

static int sq_session_delete_user(void *impl, int64_t user_id)
{
    struct call k;
    int rc = call_begin(&k, impl, "session_delete_user");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SESSION_DELETE_USER);
    bind_i64(&k, s, 1, user_id);
    rc = exec_stmt(&k, s); /* none to delete is fine: "log out everywhere" is idempotent */
    call_end(&k);
    return rc;
}

static int sq_session_count(void *impl, int64_t now_ms, size_t *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "session_count");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SESSION_COUNT);
    bind_i64(&k, s, 1, now_ms);
    rc = read_count(&k, s, out);
    call_end(&k);
    return rc;
}

static int sq_expire(void *impl, int64_t now_ms, size_t *removed_out)
{
    size_t removed = 0;
    struct call k;
    int rc = call_begin(&k, impl, "expire");
    if (rc < 0)
        return rc;
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    static const enum stmt_id deletes[] = {ST_SESSION_EXPIRE, ST_TOKEN_EXPIRE};
    for (size_t i = 0; i < sizeof deletes / sizeof deletes[0]; i++) {
        sqlite3_stmt *s = call_stmt(&k, deletes[i]);
        bind_i64(&k, s, 1, now_ms);
        rc = exec_stmt(&k, s);
        if (rc < 0)
            goto done;
        removed += (size_t)changes(&k);
    }
    rc = run(&k, ST_COMMIT);
    if (rc == 0)
        *removed_out = removed;
done:
    call_end(&k);
    return rc;
}

/* ---- tokens ------------------------------------------------------------------------ */

static int sq_token_create(void *impl, const char *hash, const char *prefix, int64_t user_id,
                           enum store_token_scope scope, const char *note, int64_t now_ms,
                           int64_t expires_ms, struct store_token *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "token_create");
    if (rc < 0)
        return rc;
    /* With `out`, the joined row is read back in the same transaction. */
    if (out != NULL) {
        rc = run(&k, ST_BEGIN_IMMEDIATE);
        if (rc < 0)
            goto done;
    }
    sqlite3_stmt *s = call_stmt(&k, ST_TOKEN_INSERT);
    bind_text(&k, s, 1, hash);
    bind_text(&k, s, 2, prefix);
    bind_i64(&k, s, 3, user_id);
    bind_text(&k, s, 4, scope_name(scope));
    bind_text(&k, s, 5, note);
    bind_i64(&k, s, 6, now_ms);
    bind_i64(&k, s, 7, expires_ms);
    rc = exec_stmt(&k, s);
    if (rc < 0 || out == NULL)
        goto done;
    s = call_stmt(&k, ST_TOKEN_GET_BY_ID);
    bind_i64(&k, s, 1, sqlite3_last_insert_rowid(k.c->db));
    rc = step(&k, s);
    if (rc == 0)
        rc = call_fail_io(&k, "new token row not found");
    if (rc < 0)
        goto done;
    struct store_token t = {0};
    read_token(s, &t);
    rc = run(&k, ST_COMMIT);
    if (rc < 0) {
        store_token_clear(&t);
        goto done;
    }
    *out = t;
done:
    call_end(&k);
    return rc;
}

static int sq_token_get(void *impl, const char *hash, int64_t now_ms, struct store_token *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "token_get");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_TOKEN_GET);
    bind_text(&k, s, 1, hash);
    bind_i64(&k, s, 2, now_ms);
    rc = step(&k, s);
    if (rc == 1) {
        read_token(s, out);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int sq_token_list(void *impl, int64_t user_id, struct store_token **out, size_t *n_out)
{
    struct store_token *tokens = NULL;
    size_t n = 0, cap = 0;
    struct call k;
    int rc = call_begin(&k, impl, "token_list");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_TOKEN_LIST);
    bind_i64(&k, s, 1, user_id);
    for (;;) {
        rc = step(&k, s);
        if (rc != 1)
            break;
        tokens = grow(tokens, &cap, n, sizeof *tokens);
        read_token(s, &tokens[n++]);
    }
    call_end(&k);
    if (rc < 0) {
        store_tokens_free(tokens, n);
        return rc;
    }
    *out = tokens;
    *n_out = n;
    return 0;
}

static int sq_token_delete(void *impl, int64_t user_id, int64_t token_id)
{
    return update_one(impl, "token_delete", ST_TOKEN_DELETE, NULL, user_id, token_id, true);
}

static int sq_token_touch(void *impl, int64_t token_id, int64_t now_ms)
{
    return update_one(impl, "token_touch", ST_TOKEN_TOUCH, NULL, token_id, now_ms, true);
}

/* ---- servers ----------------------------------------------------------------------- */

static int sq_server_get(void *impl, int64_t user_id, struct store_server *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "server_get");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SERVER_GET);
    bind_i64(&k, s, 1, user_id);
    rc = step(&k, s);
    if (rc == 1) {
        read_server(s, out);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int sq_server_put(void *impl, const struct store_server *v)
{
    struct call k;
    int rc = call_begin(&k, impl, "server_put");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SERVER_PUT);
    bind_i64(&k, s, 1, v->user_id);
    bind_text(&k, s, 2, v->state);
    bind_text(&k, s, 3, v->url);
    bind_text(&k, s, 4, v->spawner_state);
    bind_text(&k, s, 5, v->message);
    bind_i64(&k, s, 6, v->started_ms);
    bind_i64(&k, s, 7, v->last_activity_ms);
    bind_i64(&k, s, 8, v->updated_ms);
    bind_text(&k, s, 9, v->owner);
    rc = exec_stmt(&k, s);
    if (rc == 0 && changes(&k) == 0)
        rc = -ESTALE; /* the fence held: another replica owns the row */
    call_end(&k);
    return rc;
}

static int sq_server_list_active(void *impl, struct store_server **out, size_t *n_out)
{
    struct store_server *servers = NULL;
    size_t n = 0, cap = 0;
    struct call k;
    int rc = call_begin(&k, impl, "server_list_active");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_SERVER_LIST_ACTIVE);
    for (;;) {
        rc = step(&k, s);
        if (rc != 1)
            break;
        servers = grow(servers, &cap, n, sizeof *servers);
        read_server(s, &servers[n++]);
    }
    call_end(&k);
    if (rc < 0) {
        store_servers_free(servers, n);
        return rc;
    }
    *out = servers;
    *n_out = n;
    return 0;
}

static int sq_server_delete(void *impl, int64_t user_id)
{
    return update_one(impl, "server_delete", ST_SERVER_DELETE, NULL, user_id, 0, false);
}

/* Reads the joined row of `user_id` into `out` inside call `k`. Returns 0 or a negative
 * errno; -ENOENT when the row is gone. */
static int read_server_row(struct call *k, int64_t user_id, struct store_server *out)
{
    sqlite3_stmt *s = call_stmt(k, ST_SERVER_GET);
    bind_i64(k, s, 1, user_id);
    int rc = step(k, s);
    if (rc == 1) {
        read_server(s, out);
        rc = 0;
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    return rc;
}

static int sq_server_claim(void *impl, const struct store_server *v,
                           struct store_server *current_out)
{
    struct call k;
    int rc = call_begin(&k, impl, "server_claim");
    if (rc < 0)
        return rc;
    /* The transaction only makes the row read back the one the claim decided on. */
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_SERVER_CLAIM);
    bind_i64(&k, s, 1, v->user_id);
    bind_text(&k, s, 2, v->url);
    bind_text(&k, s, 3, v->spawner_state);
    bind_text(&k, s, 4, v->message);
    bind_i64(&k, s, 5, v->started_ms);
    bind_i64(&k, s, 6, v->last_activity_ms);
    bind_i64(&k, s, 7, v->updated_ms);
    bind_text(&k, s, 8, v->owner);
    rc = exec_stmt(&k, s);
    if (rc < 0)
        goto done;
    bool claimed = changes(&k) > 0;
    if (current_out != NULL) {
        rc = read_server_row(&k, v->user_id, current_out);
        if (rc == -ENOENT)
            rc = call_fail_io(&k, "claimed server row not found");
        if (rc < 0)
            goto done;
    }
    rc = run(&k, ST_COMMIT);
    if (rc == 0 && !claimed)
        rc = -EBUSY;
done:
    call_end(&k);
    if (rc != 0 && rc != -EBUSY)
        store_server_clear(current_out); /* may be NULL */
    return rc;
}

static int sq_server_adopt(void *impl, int64_t user_id, const char *from_owner,
                           const char *to_owner, struct store_server *out)
{
    struct call k;
    int rc = call_begin(&k, impl, "server_adopt");
    if (rc < 0)
        return rc;
    rc = run(&k, ST_BEGIN_IMMEDIATE);
    if (rc < 0)
        goto done;
    sqlite3_stmt *s = call_stmt(&k, ST_SERVER_ADOPT);
    bind_i64(&k, s, 1, user_id);
    bind_text(&k, s, 2, from_owner);
    bind_text(&k, s, 3, to_owner);
    rc = exec_stmt(&k, s);
    if (rc < 0)
        goto done;
    if (changes(&k) == 0) {
        /* Why not: no active row at all, or one that somebody else owns by now. */
        s = call_stmt(&k, ST_SERVER_ACTIVE);
        bind_i64(&k, s, 1, user_id);
        rc = step(&k, s);
        if (rc >= 0)
            rc = rc == 1 ? -ESTALE : -ENOENT;
        goto done;
    }
    if (out != NULL) {
        rc = read_server_row(&k, user_id, out);
        if (rc < 0)
            goto done;
    }
    rc = run(&k, ST_COMMIT);
done:
    call_end(&k);
    if (rc != 0)
        store_server_clear(out); /* may be NULL */
    return rc;
}

static int sq_server_request_stop(void *impl, int64_t user_id)
{
    return update_one(impl, "server_request_stop", ST_SERVER_REQUEST_STOP, NULL, user_id, 0, false);
}

/* ---- replicas ---------------------------------------------------------------------- */

static int sq_replica_beat(void *impl, const char *id, const char *address, int64_t started_ms,
                           int64_t now_ms)
{
    struct call k;
    int rc = call_begin(&k, impl, "replica_beat");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_REPLICA_BEAT);
    bind_text(&k, s, 1, id);
    bind_text(&k, s, 2, address);
    bind_i64(&k, s, 3, started_ms);
    bind_i64(&k, s, 4, now_ms);
    rc = exec_stmt(&k, s);
    call_end(&k);
    return rc;
}

static int sq_replica_list(void *impl, struct store_replica **out, size_t *n_out)
{
    struct store_replica *replicas = NULL;
    size_t n = 0, cap = 0;
    struct call k;
    int rc = call_begin(&k, impl, "replica_list");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_REPLICA_LIST);
    for (;;) {
        rc = step(&k, s);
        if (rc != 1)
            break;
        replicas = grow(replicas, &cap, n, sizeof *replicas);
        read_replica(s, &replicas[n++]);
    }
    call_end(&k);
    if (rc < 0) {
        store_replicas_free(replicas, n);
        return rc;
    }
    *out = replicas;
    *n_out = n;
    return 0;
}

static int sq_replica_delete(void *impl, const char *id)
{
    return update_one(impl, "replica_delete", ST_REPLICA_DELETE, id, 0, 0, false);
}

/* ---- events ------------------------------------------------------------------------ */

static int sq_event_add(void *impl, int64_t now_ms, const char *kind, const char *user,
                        const char *actor, const char *detail)
{
    struct call k;
    int rc = call_begin(&k, impl, "event_add");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_EVENT_INSERT);
    bind_i64(&k, s, 1, now_ms);
    bind_text(&k, s, 2, kind);
    bind_text(&k, s, 3, user);
    bind_text(&k, s, 4, actor);
    bind_text(&k, s, 5, detail);
    rc = exec_stmt(&k, s);
    call_end(&k);
    return rc;
}

static int sq_event_list(void *impl, size_t limit, struct store_event **out, size_t *n_out)
{
    struct store_event *events = NULL;
    size_t n = 0, cap = 0;
    struct call k;
    int rc = call_begin(&k, impl, "event_list");
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = call_stmt(&k, ST_EVENT_LIST);
    bind_i64(&k, s, 1, limit == 0 ? -1 : size_arg(limit));
    for (;;) {
        rc = step(&k, s);
        if (rc != 1)
            break;
        events = grow(events, &cap, n, sizeof *events);
        read_event(s, &events[n++]);
    }
    call_end(&k);
    if (rc < 0) {
        store_events_free(events, n);
        return rc;
    }
    *out = events;
    *n_out = n;
    return 0;
}

const struct store_backend store__sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .meta_get = sq_meta_get,
    .meta_get_or_set = sq_meta_get_or_set,
    .user_create = sq_user_create,
    .user_get = sq_user_get,
    .user_get_by_id = sq_user_get_by_id,
    .user_list = sq_user_list,
    .user_count = sq_user_count,
    .user_set_admin = sq_user_set_admin,
    .user_set_password = sq_user_set_password,
    .user_claim_password = sq_user_claim_password,
    .user_touch = sq_user_touch,
    .user_delete = sq_user_delete,
    .session_create = sq_session_create,
    .session_get = sq_session_get,
    .session_touch = sq_session_touch,
    .session_delete = sq_session_delete,
    .session_delete_user = sq_session_delete_user,
    .session_count = sq_session_count,
    .expire = sq_expire,
    .token_create = sq_token_create,
    .token_get = sq_token_get,
    .token_list = sq_token_list,
    .token_delete = sq_token_delete,
    .token_touch = sq_token_touch,
    .server_get = sq_server_get,
    .server_put = sq_server_put,
    .server_list_active = sq_server_list_active,
    .server_delete = sq_server_delete,
    .server_claim = sq_server_claim,
    .server_adopt = sq_server_adopt,
    .server_request_stop = sq_server_request_stop,
    .replica_beat = sq_replica_beat,
    .replica_list = sq_replica_list,
    .replica_delete = sq_replica_delete,
    .event_add = sq_event_add,
    .event_list = sq_event_list,
};

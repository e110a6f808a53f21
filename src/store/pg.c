/* The PostgreSQL backend of the store.
 *
 * Threading: like the SQLite backend, the store is called synchronously from libuv's
 * thread pool and from the CLI. A PGconn may be used by one thread at a time, so each call
 * borrows a connection from the store's pool (pool.c) for its whole duration. Connections
 * are opened lazily up to store.pool_size (8 by default); beyond that callers wait for one to
 * come back.
 *
 * Statements are prepared once per connection (PQprepare) on first use and run with
 * PQexecPrepared: parameters always travel separately from the SQL text. Results come back
 * as text and are parsed with checks.
 *
 * The database may go away (a restart, a failover, a network cut) while the store is open.
 * A connection that died is dropped and the next call opens a fresh one, so an open store
 * survives a restart without being reopened. Before a pooled connection is reused it is
 * checked for the goodbye a server sends when it shuts down (the socket is readable or
 * hung up while the connection is idle), so the first call after a restart normally
 * succeeds. A call whose connection fails under it is retried once on a fresh connection
 * only when nothing it sent can have been committed: the failure came while preparing, on
 * BEGIN, or on a read outside a transaction. A write whose fate is unknown is never
 * retried; it fails with -EIO.
 *
 * No password reaches a log line or an error message: messages name the server as
 * HOST:PORT/DB, and every message built from a libpq error is scrubbed of the passwords
 * this store knows (the URL's own and the password file's). */
#include "core/alloc.h"
#include "core/log.h"
#include "store/backend.h"
#include "store/migrations.h"
#include "store/pool.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_DEFAULT 8
#define MAX_PARAMS 10
/* The session-level advisory lock that serialises migrations between processes: the
 * bytes of "codehub!" as a big-endian 64-bit integer. */
#define MIGRATION_LOCK_KEY "7165055918876746273"

/* ---- statements -------------------------------------------------------------------- */

enum pst {
    P_SCHEMA_VERSION,
    P_META_GET,
    P_META_INSERT_IGNORE,
    P_USER_INSERT,
    P_USER_GET,
    P_USER_GET_BY_ID,
    P_USER_LIST,
    P_USER_COUNT,
    P_USER_EXISTS,
    P_USER_SET_ADMIN,
    P_USER_SET_PASSWORD,
    P_USER_CLAIM,
    P_USER_TOUCH,
    P_USER_DELETE,
    P_SESSION_INSERT,
    P_SESSION_GET,
    P_SESSION_TOUCH,
    P_SESSION_DELETE,
    P_SESSION_DELETE_USER,
    P_SESSION_DELETE_USER_NAME,
    P_SESSION_COUNT,
    P_SESSION_EXPIRE,
    P_TOKEN_EXPIRE,
    P_TOKEN_INSERT,
    P_TOKEN_GET,
    P_TOKEN_GET_BY_ID,
    P_TOKEN_LIST,
    P_TOKEN_DELETE,
    P_TOKEN_TOUCH,
    P_SERVER_GET,
    P_SERVER_PUT,
    P_SERVER_LIST_ACTIVE,
    P_SERVER_DELETE,
    P_SERVER_CLAIM,
    P_SERVER_ADOPT,
    P_SERVER_ACTIVE,
    P_SERVER_REQUEST_STOP,
    P_REPLICA_BEAT,
    P_REPLICA_LIST,
    P_REPLICA_DELETE,
    P_EVENT_INSERT,
    P_EVENT_LIST,
    P__COUNT
};

_Static_assert(P__COUNT <= 64, "the per-connection bitmask of prepared statements holds 64");

struct pst_def {
    const char *sql;
    bool writes; /* may change a row: never re-sent after a connection died under it */
};

/* A row is alive while expires_ms is 0 (never) or not yet in the past. */
#define ALIVE(t) "(" t ".expires_ms = 0 OR " t ".expires_ms >= $2)"
/* Byte order, as SQLite sorts: the database's own collation may ignore punctuation. */
#define BYTE_ORDER_OF(col) col " COLLATE \"C\""

static const struct pst_def pst_defs[P__COUNT] = {
    [P_SCHEMA_VERSION] = {"SELECT COALESCE(MAX(version), 0) FROM schema_version", false},
    [P_META_GET] = {"SELECT value FROM meta WHERE key = $1", false},
    [P_META_INSERT_IGNORE] = {"INSERT INTO meta (key, value) VALUES ($1, $2) "
                              "ON CONFLICT (key) DO NOTHING",
                              true},
    [P_USER_INSERT] = {"INSERT INTO users (name, password_hash, admin, created_ms, "
                       "last_activity_ms) VALUES ($1, $2, $3, $4, 0) RETURNING id",
                       true},
    [P_USER_GET] = {"SELECT " STORE__USER_COLS " WHERE name = $1", false},
    [P_USER_GET_BY_ID] = {"SELECT " STORE__USER_COLS " WHERE id = $1", false},
    /* LIMIT NULL is no limit. */
    [P_USER_LIST] = {"SELECT " STORE__USER_COLS
                     " ORDER BY " BYTE_ORDER_OF("name") " LIMIT $1 OFFSET $2",
                     false},
    [P_USER_COUNT] = {"SELECT COUNT(*) FROM users", false},
    [P_USER_EXISTS] = {"SELECT 1 FROM users WHERE name = $1", false},
    [P_USER_SET_ADMIN] = {"UPDATE users SET admin = $2 WHERE name = $1", true},
    [P_USER_SET_PASSWORD] = {"UPDATE users SET password_hash = $2 WHERE name = $1", true},
    /* Under READ COMMITTED a second claimer waits for the first one's row lock, then
     * re-checks the WHERE against the committed row and finds the password set. */
    [P_USER_CLAIM] =
        {"UPDATE users SET password_hash = $2 WHERE name = $1 AND password_hash IS NULL", true},
    /* GREATEST(): touches come from many threads and may land out of order. */
    [P_USER_TOUCH] = {"UPDATE users SET last_activity_ms = GREATEST(last_activity_ms, $2) "
                      "WHERE id = $1",
                      true},
    [P_USER_DELETE] = {"DELETE FROM users WHERE name = $1", true},
    [P_SESSION_INSERT] = {"INSERT INTO sessions (id_hash, user_id, created_ms, expires_ms, "
                          "last_seen_ms, client_addr) VALUES ($1, $2, $3, $4, $3, $5)",
                          true},
    [P_SESSION_GET] = {"SELECT " STORE__SESSION_COLS " WHERE s.id_hash = $1 AND " ALIVE("s"),
                       false},
    [P_SESSION_TOUCH] = {"UPDATE sessions SET last_seen_ms = GREATEST(last_seen_ms, $2) "
                         "WHERE id_hash = $1",
                         true},
    [P_SESSION_DELETE] = {"DELETE FROM sessions WHERE id_hash = $1", true},
    [P_SESSION_DELETE_USER] = {"DELETE FROM sessions WHERE user_id = $1", true},
    [P_SESSION_DELETE_USER_NAME] = {"DELETE FROM sessions WHERE user_id = "
                                    "(SELECT id FROM users WHERE name = $1)",
                                    true},
    [P_SESSION_COUNT] = {"SELECT COUNT(*) FROM sessions WHERE expires_ms = 0 OR expires_ms >= $1",
                         false},
    [P_SESSION_EXPIRE] = {"DELETE FROM sessions WHERE expires_ms > 0 AND expires_ms < $1", true},
    [P_TOKEN_EXPIRE] = {"DELETE FROM tokens WHERE expires_ms > 0 AND expires_ms < $1", true},
    [P_TOKEN_INSERT] = {"INSERT INTO tokens (hash, prefix, user_id, scope, note, created_ms, "
                        "expires_ms, last_used_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 0) "
                        "RETURNING id",
                        true},
    [P_TOKEN_GET] = {"SELECT " STORE__TOKEN_COLS " WHERE t.hash = $1 AND " ALIVE("t"), false},
    [P_TOKEN_GET_BY_ID] = {"SELECT " STORE__TOKEN_COLS " WHERE t.id = $1", false},
    [P_TOKEN_LIST] = {"SELECT " STORE__TOKEN_COLS " WHERE t.user_id = $1 ORDER BY t.id", false},
    [P_TOKEN_DELETE] = {"DELETE FROM tokens WHERE user_id = $1 AND id = $2", true},
    [P_TOKEN_TOUCH] = {"UPDATE tokens SET last_used_ms = GREATEST(last_used_ms, $2) WHERE id = $1",
                       true},
    [P_SERVER_GET] = {"SELECT " STORE__SERVER_COLS " WHERE v.user_id = $1", false},
    /* The fence: with an owner, the update happens only while the row is ownerless or
     * already ours; a lost fence shows as no row changed. */
    [P_SERVER_PUT] = {"INSERT INTO servers (user_id, state, url, spawner_state, message, "
                      "started_ms, last_activity_ms, updated_ms, owner) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                      "ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, "
                      "url = excluded.url, spawner_state = excluded.spawner_state, "
                      "message = excluded.message, started_ms = excluded.started_ms, "
                      "last_activity_ms = excluded.last_activity_ms, "
                      "updated_ms = excluded.updated_ms, owner = excluded.owner "
                      "WHERE excluded.owner = '' OR servers.owner IN (excluded.owner, '')",
                      true},
    [P_SERVER_LIST_ACTIVE] = {"SELECT " STORE__SERVER_COLS
                              " WHERE v.state <> 'stopped' ORDER BY " //
                              BYTE_ORDER_OF("u.name"),
                              false},
    [P_SERVER_DELETE] = {"DELETE FROM servers WHERE user_id = $1", true},
    /* One statement decides a claim race: of concurrent upserts on one key, the later ones
     * wait for the first, then evaluate the WHERE against the row it committed. */
    [P_SERVER_CLAIM] = {"INSERT INTO servers (user_id, state, url, spawner_state, message, "
                        "started_ms, last_activity_ms, updated_ms, owner, stop_requested) "
                        "VALUES ($1, 'starting', $2, $3, $4, $5, $6, $7, $8, FALSE) "
                        "ON CONFLICT (user_id) DO UPDATE SET state = 'starting', "
                        "url = excluded.url, spawner_state = excluded.spawner_state, "
                        "message = excluded.message, started_ms = excluded.started_ms, "
                        "last_activity_ms = excluded.last_activity_ms, "
                        "updated_ms = excluded.updated_ms, owner = excluded.owner, "
                        "stop_requested = FALSE "
                        "WHERE servers.state IN ('stopped', 'failed')",
                        true},
    [P_SERVER_ADOPT] = {"UPDATE servers SET owner = $3 "
                        "WHERE user_id = $1 AND state <> 'stopped' AND owner = $2",
                        true},
    [P_SERVER_ACTIVE] = {"SELECT owner FROM servers WHERE user_id = $1 AND state <> 'stopped'",
                         false},
    [P_SERVER_REQUEST_STOP] = {"UPDATE servers SET stop_requested = TRUE "
                               "WHERE user_id = $1 AND state IN ('starting', 'running')",
                               true},
    [P_REPLICA_BEAT] = {"INSERT INTO replicas (id, address, started_ms, heartbeat_ms) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET "
                        "address = excluded.address, "
                        "heartbeat_ms = GREATEST(replicas.heartbeat_ms, excluded.heartbeat_ms)",
                        true},
    [P_REPLICA_LIST] = {"SELECT id, address, started_ms, heartbeat_ms FROM replicas ORDER BY " //
                        BYTE_ORDER_OF("id"),
                        false},
    [P_REPLICA_DELETE] = {"DELETE FROM replicas WHERE id = $1", true},
    [P_EVENT_INSERT] = {"INSERT INTO events (ts_ms, kind, \"user\", actor, detail) "
                        "VALUES ($1, $2, $3, $4, $5)",
                        true},
    [P_EVENT_LIST] = {"SELECT id, ts_ms, kind, \"user\", actor, detail FROM events "
                      "ORDER BY id DESC LIMIT $1",
                      false},
};

/* ---- parameters -------------------------------------------------------------------- */

/* The text-format parameters of one statement; numbers are formatted into `num`. */
struct params {
    int n;
    const char *v[MAX_PARAMS];
    char num[MAX_PARAMS][24];
};

static void p_text(struct params *p, const char *v)
{
    p->v[p->n++] = v; /* NULL is SQL NULL */
}

static void p_i64(struct params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%" PRId64, v);
    p->v[p->n] = p->num[p->n];
    p->n++;
}

static void p_bool(struct params *p, bool v)
{
    p->v[p->n++] = v ? "true" : "false";
}

/* LIMIT and OFFSET are BIGINT; a size beyond that is as good as no limit. */
static void p_size(struct params *p, size_t v)
{
    p_i64(p, v > (size_t)INT64_MAX ? INT64_MAX : (int64_t)v);
}

/* ---- the store's state ------------------------------------------------------------- */

/* A pooled connection. Its PGconn may be replaced by a fresh one in the same slot. */
struct pconn {
    PGconn *pg;        /* NULL after a failed reconnect: the slot is then given up */
    uint64_t prepared; /* bit i: statement i is prepared on this connection */
};

enum { N_KEYS = 12 };

struct pgs {
    /* What every connection is opened with (see conninfo_build). */
    const char *keys[N_KEYS];
    const char *values[N_KEYS];
    char *url;
    char *password; /* from the password file, or NULL */
    /* Passwords to scrub from every message: the file's, and the URL's as written and as
     * decoded by libpq (user info or ?password=). */
    char *secrets[3];
    char *display; /* HOST:PORT/DB */

    struct store__pool *pool; /* of struct pconn, at most store.pool_size */
};

static void free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Replaces every occurrence of `secret` in `msg` (owned) by "***"; returns the result. */
static char *scrub_one(char *msg, const char *secret)
{
    if (msg == NULL || secret == NULL || secret[0] == '\0')
        return msg;
    size_t slen = strlen(secret);
    for (;;) {
        char *at = strstr(msg, secret);
        if (at == NULL)
            return msg;
        char *next = xasprintf("%.*s***%s", (int)(at - msg), msg, at + slen);
        free(msg);
        msg = next;
    }
}

/* A libpq message as one line: trailing newlines dropped, inner ones turned into spaces. */
static char *one_line(const char *text)
{
    char *s = xstrdup(text != NULL && text[0] != '\0' ? text : "unknown error");
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
        s[--len] = '\0';
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    return s;
}

/* A message fit for a log line or an error: one line, with no password this store knows. */
static char *scrubbed(const struct pgs *ps, const char *text)
{
    char *msg = one_line(text);
    for (size_t i = 0; i < sizeof ps->secrets / sizeof ps->secrets[0]; i++)
        msg = scrub_one(msg, ps->secrets[i]);
    return msg;
}

static void log_store_error(const struct pgs *ps, const char *op, const char *text)
{
    char *msg = scrubbed(ps, text);
    log_event(LOG_ERROR, "store.error", "op", op, "db", ps->display, "error", msg,
              (const char *)NULL);
    free(msg);
}

/* The password as written in the URL's user info (postgres://user:PASSWORD@host/…), before
 * any percent-decoding, or NULL. Used only to scrub messages, including libpq's complaints
 * about a URL it could not parse, which may quote the raw text. */
static char *url_raw_password(const char *url)
{
    const char *p = strstr(url, "://");
    if (p == NULL)
        return NULL;
    p += 3;
    size_t auth_len = strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < p + auth_len; q++)
        if (*q == '@')
            at = q;
    if (at == NULL)
        return NULL;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL || colon + 1 == at)
        return NULL;
    return xstrndup(colon + 1, (size_t)(at - colon - 1));
}

/* libpq turns an idle connection's input into notices; none is expected on the pool's
 * connections but a migration's "already exists, skipping". Keep them off stderr. */
static void notice_cb(void *arg, const char *message)
{
    if (!log_enabled(LOG_DEBUG))
        return;
    char *msg = one_line(message);
    log_event(LOG_DEBUG, "store.notice", "message", msg, (const char *)NULL);
    free(msg);
}

/* Fills ps->keys/values. Defaults come before "dbname": libpq lets the expanded URL
 * override what precedes it, so the URL's own connect_timeout, keepalives, … win. The
 * password file comes after it and so wins over a password in the URL. Returns 0, or -1
 * with *err set when the URL cannot be parsed. */
static int conninfo_build(struct pgs *ps, char **err)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(ps->url, &perr);
    if (opts == NULL) {
        char *msg = scrubbed(ps, perr != NULL ? perr : "out of memory");
        *err = xasprintf("invalid PostgreSQL URL: %s", msg);
        free(msg);
        PQfreemem(perr);
        return -1;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "password") == 0)
            ps->secrets[2] = xstrdup(o->val);
    }
    if (host == NULL)
        host = hostaddr != NULL ? hostaddr : "(local socket)";
    ps->display = xasprintf("%s:%s/%s", host, port != NULL ? port : "5432",
                            dbname != NULL ? dbname : (user != NULL ? user : "(default)"));
    PQconninfoFree(opts);

    int n = 0;
    ps->keys[n] = "fallback_application_name";
    ps->values[n++] = "codehub";
    /* A database that is down fails fast instead of after the TCP timeout. */
    if (getenv("PGCONNECT_TIMEOUT") == NULL) {
        ps->keys[n] = "connect_timeout";
        ps->values[n++] = "5";
    }
    /* A server that vanished without a FIN (a dead node) is noticed within a minute. */
    ps->keys[n] = "keepalives";
    ps->values[n++] = "1";
    ps->keys[n] = "keepalives_idle";
    ps->values[n++] = "30";
    ps->keys[n] = "keepalives_interval";
    ps->values[n++] = "10";
    ps->keys[n] = "keepalives_count";
    ps->values[n++] = "3";
    ps->keys[n] = "dbname";
    ps->values[n++] = ps->url;
    if (ps->password != NULL) {
        ps->keys[n] = "password";
        ps->values[n++] = ps->password;
    }
    ps->keys[n] = NULL;
    ps->values[n] = NULL;
    return 0;
}

/* Opens one connection. Returns it, or NULL with *err set (caller frees). */
static PGconn *connect_one(const struct pgs *ps, char **err)
{
    PGconn *pg = PQconnectdbParams(ps->keys, ps->values, 1);
    if (pg == NULL) {
        *err = xasprintf("cannot connect to PostgreSQL at %s: out of memory", ps->display);
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char *msg = scrubbed(ps, PQerrorMessage(pg));
        *err = xasprintf("cannot connect to PostgreSQL at %s: %s", ps->display, msg);
        free(msg);
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, notice_cb, NULL);
    return pg;
}

/* Whether an idle pooled connection still looks usable. An idle connection has nothing to
 * read: input, a hang-up or an error on its socket is the server saying goodbye (a
 * shutdown sends "terminating connection due to administrator command" and closes). */
static bool conn_healthy(PGconn *pg)
{
    if (PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE)
        return false;
    struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN | POLLRDHUP};
    if (pfd.fd < 0)
        return false;
    int n = poll(&pfd, 1, 0);
    if (n == 0)
        return true;
    if (n < 0)
        return false;
    if (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
        return false;
    /* Something arrived but the peer is still there (a notice, a parameter change):
     * consume it; the connection is fine if libpq still says so. */
    return PQconsumeInput(pg) == 1 && PQstatus(pg) == CONNECTION_OK;
}

/* ---- the pool ---------------------------------------------------------------------- */

/* Closes a pooled connection: the pool's close callback. */
static void pconn_free(void *conn)
{
    struct pconn *c = conn;
    if (c == NULL)
        return;
    if (c->pg != NULL)
        PQfinish(c->pg);
    free(c);
}

/* Opens a connection for the pool: `ctx` is the struct pgs. */
static void *pool_open(void *ctx, char **err)
{
    PGconn *pg = connect_one(ctx, err);
    if (pg == NULL)
        return NULL;
    struct pconn *c = xcalloc(1, sizeof *c);
    c->pg = pg;
    return c;
}

/* Replaces the PGconn of `c` by a fresh one in the same slot, after logging why at
 * `level`. Returns 0, or -EIO (logged) when none can be opened: c->pg is then NULL and
 * the caller gives the slot up. */
static int pconn_reopen(const struct pgs *ps, struct pconn *c, const char *op, enum log_level level,
                        const char *reason)
{
    log_event(level, "store.reconnect", "op", op, "db", ps->display, "reason", reason,
              (const char *)NULL);
    PQfinish(c->pg);
    c->prepared = 0;
    char *err = NULL;
    c->pg = connect_one(ps, &err);
    if (c->pg != NULL)
        return 0;
    log_event(LOG_ERROR, "store.error", "op", op, "db", ps->display, "error", err,
              (const char *)NULL);
    free(err);
    return -EIO;
}

/* ---- one call ---------------------------------------------------------------------- */

struct call {
    struct pgs *ps;
    struct pconn *c;
    const char *op;
    PGresult *res;   /* of the last statement; cleared by the next one and by call_end */
    bool in_tx;      /* BEGIN succeeded and no COMMIT yet */
    bool sent_write; /* a write went out outside a transaction: it may have committed */
    bool retried;    /* the one reconnect-and-retry is used up */
};

/* Borrows a connection for the call, healthy as far as can be told. Returns 0 or -EIO
 * (logged). */
static int call_begin(struct call *k, void *impl, const char *op)
{
    memset(k, 0, sizeof *k);
    k->ps = impl;
    k->op = op;
    void *c = NULL;
    bool reused = false;
    char *err = NULL;
    if (store__pool_acquire(k->ps->pool, &c, &reused, &err) < 0) {
        log_event(LOG_ERROR, "store.error", "op", op, "db", k->ps->display, "error", err,
                  (const char *)NULL);
        free(err);
        return -EIO;
    }
    k->c = c;
    /* The server may have closed an idle connection meanwhile: replace it in its slot. */
    if (reused && !conn_healthy(k->c->pg) &&
        pconn_reopen(k->ps, k->c, op, LOG_INFO, "pooled connection was closed by the server") < 0) {
        store__pool_release(k->ps->pool, k->c, true);
        k->c = NULL;
        return -EIO;
    }
    return 0;
}

static void call_end(struct call *k)
{
    struct pconn *c = k->c;
    PQclear(k->res);
    k->res = NULL;
    bool broken = c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK;
    if (!broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        /* Only a failed path gets here: undo, and retire the connection if even that
         * fails rather than hand an open transaction to the next caller. */
        PQclear(PQexec(c->pg, "ROLLBACK"));
        broken = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    }
    store__pool_release(k->ps->pool, c, broken);
    k->c = NULL;
}

static int call_fail_io(struct call *k, const char *error)
{
    log_store_error(k->ps, k->op, error);
    return -EIO;
}

/* After a connection died under a statement that cannot have taken effect: replaces the
 * call's connection by a fresh one. Returns 0, or -EIO (logged) when none can be opened
 * (the slot is then given up at call_end). */
static int call_reconnect(struct call *k)
{
    k->retried = true;
    return pconn_reopen(k->ps, k->c, k->op, LOG_WARN,
                        "connection lost before the statement ran; retrying once");
}

/* Maps a failed result to the store's codes. Sets *lost when the connection is gone. */
static int result_error(struct call *k, const PGresult *r, bool *lost)
{
    *lost = false;
    if (k->c->pg == NULL || PQstatus(k->c->pg) != CONNECTION_OK) {
        *lost = true;
        return -EIO;
    }
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL)
        state = "";
    if (strcmp(state, "23505") == 0) /* unique_violation */
        return -EEXIST;
    if (strcmp(state, "23503") == 0) /* foreign_key_violation: every FK points at users */
        return -ENOENT;
    /* not_null, check, string too long, numeric out of range, invalid text, bad UTF-8. */
    static const char *const invalid[] = {"23502", "23514", "22001", "22003",
                                          "22P02", "22021", "22P05", "54000"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (strcmp(state, invalid[i]) == 0) {
            char *msg = scrubbed(k->ps, PQresultErrorMessage(r));
            log_event(LOG_WARN, "store.rejected", "op", k->op, "error", msg, (const char *)NULL);
            free(msg);
            return -EINVAL;
        }
    }
    return call_fail_io(k, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(k->c->pg));
}

/* Logs a lost connection (once per failure) and returns -EIO. */
static int call_lost(struct call *k, const PGresult *r)
{
    const char *msg = r != NULL ? PQresultErrorMessage(r) : "";
    if (msg[0] == '\0')
        msg = PQerrorMessage(k->c->pg);
    return call_fail_io(k, msg);
}

/* Handles the failed result `r` of a statement (cleared here). A statement that cannot
 * have taken effect (`retryable`) on a connection that was lost is sent again, once per
 * call, on a fresh one: returns 1 when the caller should do so. Otherwise returns the
 * negative errno the statement fails with. */
static int call_failed(struct call *k, PGresult *r, bool retryable)
{
    bool lost = false;
    int rc = result_error(k, r, &lost);
    if (lost && retryable && !k->retried) {
        PQclear(r);
        return call_reconnect(k) < 0 ? -EIO : 1;
    }
    if (lost)
        rc = call_lost(k, r);
    PQclear(r);
    return rc;
}

/* Runs statement `id` with `p` (may be NULL). Returns 0 with the result in k->res, or a
 * negative errno. */
static int call_exec(struct call *k, enum pst id, const struct params *p)
{
    char name[16];
    snprintf(name, sizeof name, "ch%d", (int)id);
    PQclear(k->res);
    k->res = NULL;
    for (;;) {
        int rc;
        if (k->c->pg == NULL)
            return -EIO;
        if (!(k->c->prepared & ((uint64_t)1 << id))) {
            PGresult *r = PQprepare(k->c->pg, name, pst_defs[id].sql, 0, NULL);
            if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
                /* Nothing ran yet: a fresh connection may simply try again, unless a
                 * transaction of this call died with the old one. */
                rc = call_failed(k, r, !k->in_tx);
                if (rc > 0)
                    continue;
                return rc;
            }
            k->c->prepared |= (uint64_t)1 << id;
            PQclear(r);
        }
        bool writes = pst_defs[id].writes;
        k->res = PQexecPrepared(k->c->pg, name, p != NULL ? p->n : 0, p != NULL ? p->v : NULL, NULL,
                                NULL, 0);
        ExecStatusType status = k->res != NULL ? PQresultStatus(k->res) : PGRES_FATAL_ERROR;
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
            if (writes && !k->in_tx)
                k->sent_write = true;
            return 0;
        }
        PGresult *r = k->res;
        k->res = NULL;
        rc = call_failed(k, r, !writes && !k->in_tx && !k->sent_write);
        if (rc > 0)
            continue;
        return rc;
    }
}

/* BEGIN (with `sql`'s options) or COMMIT. A BEGIN that finds the connection dead is
 * retried once on a fresh one: nothing of this call has reached the server. */
static int call_tx(struct call *k, const char *sql)
{
    bool begin = strncmp(sql, "BEGIN", 5) == 0;
    PQclear(k->res);
    k->res = NULL;
    for (;;) {
        if (k->c->pg == NULL)
            return -EIO;
        PGresult *r = PQexec(k->c->pg, sql);
        if (r != NULL && PQresultStatus(r) == PGRES_COMMAND_OK) {
            PQclear(r);
            k->in_tx = begin;
            return 0;
        }
        int rc = call_failed(k, r, begin && !k->sent_write);
        if (rc > 0)
            continue;
        return rc;
    }
}

/* Rows changed by the last statement. */
static int64_t call_changes(const struct call *k)
{
    const char *t = k->res != NULL ? PQcmdTuples(k->res) : "";
    char *end = NULL;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (t[0] == '\0' || errno != 0 || *end != '\0' || v < 0)
        return 0;
    return v;
}

static int call_rows(const struct call *k)
{
    return k->res != NULL ? PQntuples(k->res) : 0;
}

/* ---- reading rows ------------------------------------------------------------------ */

/* One row of k->res being read; `bad` records a value that does not parse. */
struct row {
    const PGresult *r;
    int i;
    bool bad;
};

static struct row row_at(const struct call *k, int i)
{
    return (struct row){k->res, i, false};
}

static char *col_str(struct row *w, int col)
{
    if (PQgetisnull(w->r, w->i, col))
        return xstrdup("");
    return xstrdup(PQgetvalue(w->r, w->i, col));
}

static char *col_str_or_null(struct row *w, int col)
{
    if (PQgetisnull(w->r, w->i, col))
        return NULL;
    return xstrdup(PQgetvalue(w->r, w->i, col));
}

static int64_t col_i64(struct row *w, int col)
{
    if (PQgetisnull(w->r, w->i, col))
        return 0;
    const char *t = PQgetvalue(w->r, w->i, col);
    char *end = NULL;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (t[0] == '\0' || errno != 0 || *end != '\0') {
        w->bad = true;
        return 0;
    }
    return (int64_t)v;
}

static bool col_bool(struct row *w, int col)
{
    const char *t = PQgetvalue(w->r, w->i, col);
    if (strcmp(t, "t") == 0)
        return true;
    if (strcmp(t, "f") != 0)
        w->bad = true;
    return false;
}

/* A row reader fills the struct `out` points to from row `i` of k->res. Returns 0, or -EIO
 * (logged) with `out` cleared when a value is malformed. */
typedef int (*read_row_cb)(struct call *k, int i, void *out);

static int read_user(struct call *k, int i, void *out)
{
    struct store_user *u = out;
    struct row w = row_at(k, i);
    u->id = col_i64(&w, 0);
    u->name = col_str(&w, 1);
    u->password_hash = col_str_or_null(&w, 2);
    u->admin = col_bool(&w, 3);
    u->created_ms = col_i64(&w, 4);
    u->last_activity_ms = col_i64(&w, 5);
    if (!w.bad)
        return 0;
    store_user_clear(u);
    return call_fail_io(k, "malformed value in a users row");
}

static int read_session(struct call *k, int i, void *out)
{
    struct store_session *s = out;
    struct row w = row_at(k, i);
    s->id_hash = col_str(&w, 0);
    s->user_id = col_i64(&w, 1);
    s->user_name = col_str(&w, 2);
    s->user_admin = col_bool(&w, 3);
    s->created_ms = col_i64(&w, 4);
    s->expires_ms = col_i64(&w, 5);
    s->last_seen_ms = col_i64(&w, 6);
    s->client_addr = col_str(&w, 7);
    if (!w.bad)
        return 0;
    store_session_clear(s);
    return call_fail_io(k, "malformed value in a sessions row");
}

static const char *scope_name(enum store_token_scope scope)
{
    return scope == STORE_SCOPE_ADMIN ? "admin" : "user";
}

static int read_token(struct call *k, int i, void *out)
{
    struct store_token *t = out;
    struct row w = row_at(k, i);
    t->id = col_i64(&w, 0);
    t->hash = col_str(&w, 1);
    t->prefix = col_str(&w, 2);
    t->user_id = col_i64(&w, 3);
    t->user_name = col_str(&w, 4);
    t->user_admin = col_bool(&w, 5);
    t->scope = strcmp(PQgetvalue(w.r, i, 6), "admin") == 0 ? STORE_SCOPE_ADMIN : STORE_SCOPE_USER;
    t->note = col_str(&w, 7);
    t->created_ms = col_i64(&w, 8);
    t->expires_ms = col_i64(&w, 9);
    t->last_used_ms = col_i64(&w, 10);
    if (!w.bad)
        return 0;
    store_token_clear(t);
    return call_fail_io(k, "malformed value in a tokens row");
}

static int read_server(struct call *k, int i, void *out)
{
    struct store_server *v = out;
    struct row w = row_at(k, i);
    v->user_id = col_i64(&w, 0);
    v->user_name = col_str(&w, 1);
    v->state = col_str(&w, 2);
    v->url = col_str(&w, 3);
    v->spawner_state = col_str(&w, 4);
    v->message = col_str(&w, 5);
    v->started_ms = col_i64(&w, 6);
    v->last_activity_ms = col_i64(&w, 7);
    v->updated_ms = col_i64(&w, 8);
    v->owner = col_str(&w, 9);
    v->stop_requested = col_bool(&w, 10);
    if (!w.bad)
        return 0;
    store_server_clear(v);
    return call_fail_io(k, "malformed value in a servers row");
}

static int read_replica(struct call *k, int i, void *out)
{
    struct store_replica *r = out;
    struct row w = row_at(k, i);
    r->id = col_str(&w, 0);
    r->address = col_str(&w, 1);
    r->started_ms = col_i64(&w, 2);
    r->heartbeat_ms = col_i64(&w, 3);
    if (!w.bad)
        return 0;
    store_replica_clear(r);
    return call_fail_io(k, "malformed value in a replicas row");
}

static int read_event(struct call *k, int i, void *out)
{
    struct store_event *e = out;
    struct row w = row_at(k, i);
    e->id = col_i64(&w, 0);
    e->ts_ms = col_i64(&w, 1);
    e->kind = col_str(&w, 2);
    e->user = col_str(&w, 3);
    e->actor = col_str(&w, 4);
    e->detail = col_str(&w, 5);
    if (!w.bad)
        return 0;
    store_event_clear(e);
    return call_fail_io(k, "malformed value in an events row");
}

/* The one text column of a meta row, into the char * `out` points to. */
static int read_text(struct call *k, int i, void *out)
{
    struct row w = row_at(k, i);
    *(char **)out = col_str(&w, 0);
    return 0;
}

/* What a list returns: an array of one of the result structs, and how to free it. */
struct row_kind {
    size_t size;
    read_row_cb read;
    void (*free)(void *rows, size_t n); /* store_*s_free() */
};

static void users_free(void *rows, size_t n)
{
    store_users_free(rows, n);
}

static void tokens_free(void *rows, size_t n)
{
    store_tokens_free(rows, n);
}

static void servers_free(void *rows, size_t n)
{
    store_servers_free(rows, n);
}

static void replicas_free(void *rows, size_t n)
{
    store_replicas_free(rows, n);
}

static void events_free(void *rows, size_t n)
{
    store_events_free(rows, n);
}

static const struct row_kind user_rows = {sizeof(struct store_user), read_user, users_free};
static const struct row_kind token_rows = {sizeof(struct store_token), read_token, tokens_free};
static const struct row_kind server_rows = {sizeof(struct store_server), read_server, servers_free};
static const struct row_kind replica_rows = {sizeof(struct store_replica), read_replica,
                                             replicas_free};
static const struct row_kind event_rows = {sizeof(struct store_event), read_event, events_free};

/* A result reader consumes all of k->res into `out`. Returns 0 or a negative errno. */
typedef int (*read_result_cb)(struct call *k, void *out);

/* Reads the single integer of a one-row result (COUNT(*), a RETURNING id). */
static int read_i64(struct call *k, int64_t *out)
{
    if (call_rows(k) != 1)
        return call_fail_io(k, "expected one row");
    struct row w = row_at(k, 0);
    int64_t v = col_i64(&w, 0);
    if (w.bad)
        return call_fail_io(k, "malformed integer in a result");
    *out = v;
    return 0;
}

/* A RETURNING id, into the int64_t `out` points to. */
static int read_id(struct call *k, void *out)
{
    return read_i64(k, out);
}

/* A count, into the size_t `out` points to. */
static int read_count(struct call *k, void *out)
{
    int64_t v = 0;
    int rc = read_i64(k, &v);
    if (rc == 0)
        *(size_t *)out = v > 0 ? (size_t)v : 0;
    return rc;
}

/* The schema version, into the int `out` points to. */
static int read_version(struct call *k, void *out)
{
    int64_t v = 0;
    int rc = read_i64(k, &v);
    if (rc == 0)
        *(int *)out = (int)v;
    return rc;
}

/* For read_first(): the row reader and its target. */
struct first_row {
    read_row_cb read;
    void *out;
};

/* The first row with `arg`'s reader; -ENOENT when there is none. */
static int read_first(struct call *k, void *arg)
{
    const struct first_row *f = arg;
    if (call_rows(k) == 0)
        return -ENOENT;
    return f->read(k, 0, f->out);
}

/* For read_all(): the kind of rows in, the array and its length out. */
struct all_rows {
    const struct row_kind *kind;
    void *rows; /* NULL when there are none */
    size_t n;
};

/* Every row, into a new array. On failure the rows read so far are freed (a reader that
 * fails clears its own row), so nothing stays allocated. */
static int read_all(struct call *k, void *arg)
{
    struct all_rows *a = arg;
    int n = call_rows(k);
    char *rows = n > 0 ? xcalloc((size_t)n, a->kind->size) : NULL;
    for (int i = 0; i < n; i++) {
        int rc = a->kind->read(k, i, rows + (size_t)i * a->kind->size);
        if (rc < 0) {
            a->kind->free(rows, (size_t)i);
            return rc;
        }
    }
    a->rows = rows;
    a->n = (size_t)n;
    return 0;
}

/* The none_rc `arg` points to when the last statement changed no row, else 0. */
static int read_changed(struct call *k, void *arg)
{
    return call_changes(k) > 0 ? 0 : *(const int *)arg;
}

/* ---- migrations -------------------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Checks the result `r` of a migration statement on `pg`. Returns 0, or -1 with `r`
 * cleared and *err set to "<display>: <what>: <libpq message>". */
static int mig_check(const struct pgs *ps, PGconn *pg, PGresult *r, const char *what, char **err)
{
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 0;
    char *msg = scrubbed(ps, r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    *err = xasprintf("%s: %s: %s", ps->display, what, msg);
    free(msg);
    PQclear(r);
    return -1;
}

/* Runs `sql` (no parameters, possibly several statements). Returns 0 or -1 with *err set
 * (see mig_check). */
static int mig_exec(const struct pgs *ps, PGconn *pg, const char *sql, const char *what, char **err)
{
    PGresult *r = PQexec(pg, sql);
    if (mig_check(ps, pg, r, what, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

/* Runs a statement with `n` text parameters, optionally returning the first column of its
 * one row as an integer. Returns 0 or -1 with *err set. */
static int mig_param(const struct pgs *ps, PGconn *pg, const char *sql, int n,
                     const char *const *params, int64_t *value, const char *what, char **err)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    if (mig_check(ps, pg, r, what, err) != 0)
        return -1;
    if (value != NULL) {
        const char *t = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
        char *end = NULL;
        errno = 0;
        long long v = strtoll(t, &end, 10);
        if (t[0] == '\0' || errno != 0 || *end != '\0') {
            *err = xasprintf("%s: %s: unexpected result", ps->display, what);
            PQclear(r);
            return -1;
        }
        *value = v;
    }
    PQclear(r);
    return 0;
}

/* One round: in a transaction, reads the version and applies the next migration. Sets
 * *done when the database is at STORE__SCHEMA_VERSION. Returns 0 or -1 with *err set. */
static int migrate_step(const struct pgs *ps, PGconn *pg, bool *done, char **err)
{
    int64_t version = 0;
    if (mig_exec(ps, pg, "BEGIN", "migrating the schema failed", err) != 0)
        return -1;
    if (mig_exec(ps, pg,
                 "CREATE TABLE IF NOT EXISTS schema_version ("
                 "version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
                 "migrating the schema failed", err) != 0)
        return -1;
    if (mig_param(ps, pg, "SELECT COALESCE(MAX(version), 0) FROM schema_version", 0, NULL, &version,
                  "migrating the schema failed", err) != 0)
        return -1;
    if (version > STORE__SCHEMA_VERSION) {
        *err = xasprintf("%s has schema version %lld, newer than this codehub knows (%d): "
                         "run a newer codehub, or restore a backup made before the upgrade",
                         ps->display, (long long)version, STORE__SCHEMA_VERSION);
        return -1;
    }
    if (version == STORE__SCHEMA_VERSION) {
        *done = true;
        return mig_exec(ps, pg, "COMMIT", "migrating the schema failed", err);
    }
    int next = (int)version + 1;
    char what[64];
    snprintf(what, sizeof what, "migration %d failed", next);
    if (mig_exec(ps, pg, store__migrations[next].postgres, what, err) != 0)
        return -1;
    struct params p = {0};
    p_i64(&p, next);
    p_i64(&p, wall_ms());
    if (mig_param(ps, pg, "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)", p.n,
                  p.v, NULL, what, err) != 0)
        return -1;
    if (mig_exec(ps, pg, "COMMIT", what, err) != 0)
        return -1;
    log_event(LOG_INFO, "store.migrated", "db", ps->display, "version", p.v[0], "summary",
              store__migrations[next].summary, (const char *)NULL);
    return 0;
}

/* Brings the database to STORE__SCHEMA_VERSION, one migration per transaction, under a
 * session-level advisory lock so that processes starting together migrate once: the
 * others wait, then find the version current. Returns 0 or -1 with *err set. */
static int migrate(const struct pgs *ps, PGconn *pg, char **err)
{
    const char *const key[1] = {MIGRATION_LOCK_KEY};
    if (mig_param(ps, pg, "SELECT pg_advisory_lock($1::bigint)", 1, key, NULL,
                  "taking the migration lock failed", err) != 0)
        return -1;
    int rc = 0;
    bool done = false;
    while (rc == 0 && !done)
        rc = migrate_step(ps, pg, &done, err);
    if (rc != 0 && PQtransactionStatus(pg) != PQTRANS_IDLE)
        PQclear(PQexec(pg, "ROLLBACK"));
    /* Unlocking can only fail with the connection, which releases the lock anyway. */
    PQclear(PQexecParams(pg, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, key, NULL, NULL, 0));
    return rc;
}

/* ---- open / close ------------------------------------------------------------------ */

static void pg_close(void *impl)
{
    struct pgs *ps = impl;
    if (ps == NULL)
        return;
    store__pool_free(ps->pool);
    free_secret(ps->url);
    free_secret(ps->password);
    for (size_t i = 1; i < sizeof ps->secrets / sizeof ps->secrets[0]; i++)
        free_secret(ps->secrets[i]);
    free(ps->display);
    free(ps);
}

static void *pg_open(const char *url, const char *password, unsigned pool_size, char **err)
{
    struct pgs *ps = xcalloc(1, sizeof *ps);
    ps->url = xstrdup(url);
    ps->password = password != NULL ? xstrdup(password) : NULL;
    ps->secrets[0] = ps->password; /* borrowed: freed as ps->password */
    ps->secrets[1] = url_raw_password(url);
    if (conninfo_build(ps, err) != 0)
        goto fail;
    /* Connect once now, so that a wrong URL, password or certificate fails the open with
     * a clear message rather than the first request. */
    PGconn *pg = connect_one(ps, err);
    if (pg == NULL)
        goto fail;
    if (migrate(ps, pg, err) != 0) {
        PQfinish(pg);
        goto fail;
    }
    struct pconn *c = xcalloc(1, sizeof *c);
    c->pg = pg;
    ps->pool =
        store__pool_new(pool_size > 0 ? pool_size : POOL_DEFAULT, pool_open, pconn_free, ps, c);
    return ps;

fail:
    pg_close(ps);
    return NULL;
}

int store__pg_conninfo(struct store *st, const char *const **keywords, const char *const **values)
{
    if (st == NULL || st->be != &store__pg_backend)
        return -ENOTSUP;
    struct pgs *ps = st->impl;
    *keywords = ps->keys;
    *values = ps->values;
    return 0;
}

/* ---- generic shapes ---------------------------------------------------------------- */

/* Runs statement `id` with `p` (may be NULL) in a call of its own and hands its result to
 * `read` (may be NULL) with `out`. Returns 0 or a negative errno. */
static int query(void *impl, const char *op, enum pst id, const struct params *p,
                 read_result_cb read, void *out)
{
    struct call k;
    int rc = call_begin(&k, impl, op);
    if (rc < 0)
        return rc;
    rc = call_exec(&k, id, p);
    if (rc == 0 && read != NULL)
        rc = read(&k, out);
    call_end(&k);
    return rc;
}

/* Reads the first row of query `id` with `read`; -ENOENT when there is none. */
static int get_row(void *impl, const char *op, enum pst id, const struct params *p,
                   read_row_cb read, void *out)
{
    struct first_row f = {read, out};
    return query(impl, op, id, p, read_first, &f);
}

/* The same inside call `k`, for a read that is one step of a larger call. */
static int call_get_row(struct call *k, enum pst id, const struct params *p, read_row_cb read,
                        void *out)
{
    struct first_row f = {read, out};
    int rc = call_exec(k, id, p);
    return rc == 0 ? read_first(k, &f) : rc;
}

/* Reads every row of query `id` as `kind`. Returns 0 with the array in *out (NULL when
 * empty; caller frees with the kind's store_*s_free) and its length in *n_out, or a
 * negative errno with neither touched. */
static int list_rows(void *impl, const char *op, enum pst id, const struct params *p,
                     const struct row_kind *kind, void **out, size_t *n_out)
{
    struct all_rows a = {kind, NULL, 0};
    int rc = query(impl, op, id, p, read_all, &a);
    if (rc == 0) {
        *out = a.rows;
        *n_out = a.n;
    }
    return rc;
}

/* Runs one write; returns `none_rc` when it changed no row (0: that is fine). */
static int write_stmt(void *impl, const char *op, enum pst id, const struct params *p, int none_rc)
{
    return query(impl, op, id, p, none_rc != 0 ? read_changed : NULL, &none_rc);
}

/* LIMIT NULL is no limit. */
static void p_limit(struct params *p, size_t limit)
{
    if (limit == 0)
        p_text(p, NULL);
    else
        p_size(p, limit);
}

static int pg_schema_version(void *impl, int *out)
{
    return query(impl, "schema_version", P_SCHEMA_VERSION, NULL, read_version, out);
}

/* ---- meta -------------------------------------------------------------------------- */

static int pg_meta_get(void *impl, const char *key, char **value_out)
{
    struct params p = {0};
    p_text(&p, key);
    return get_row(impl, "meta_get", P_META_GET, &p, read_text, value_out);
}

static int pg_meta_get_or_set(void *impl, const char *key, const char *value, char **value_out)
{
    struct params p = {0};
    p_text(&p, key);
    p_text(&p, value);
    struct call k;
    int rc = call_begin(&k, impl, "meta_get_or_set");
    if (rc < 0)
        return rc;
    /* Two statements, not one transaction: under READ COMMITTED the SELECT takes a new
     * snapshot, so it sees the row a concurrent winner committed (the INSERT waited for
     * it); a single statement would read the snapshot from before. */
    rc = call_exec(&k, P_META_INSERT_IGNORE, &p);
    if (rc == 0) {
        p.n = 1;
        rc = call_get_row(&k, P_META_GET, &p, read_text, value_out);
        if (rc == -ENOENT)
            rc = call_fail_io(&k, "meta row vanished after it was set");
    }
    call_end(&k);
    return rc;
}

/* ---- users ------------------------------------------------------------------------- */

static int pg_user_create(void *impl, const char *name, const char *password_hash, bool admin,
                          int64_t now_ms, int64_t *id_out)
{
    struct params p = {0};
    p_text(&p, name);
    p_text(&p, password_hash);
    p_bool(&p, admin);
    p_i64(&p, now_ms);
    return query(impl, "user_create", P_USER_INSERT, &p, read_id, id_out);
}

static int pg_user_get(void *impl, const char *name, struct store_user *out)
{
    struct params p = {0};
    p_text(&p, name);
    return get_row(impl, "user_get", P_USER_GET, &p, read_user, out);
}

static int pg_user_get_by_id(void *impl, int64_t id, struct store_user *out)
{
    struct params p = {0};
    p_i64(&p, id);
    return get_row(impl, "user_get_by_id", P_USER_GET_BY_ID, &p, read_user, out);
}

static int pg_user_list(void *impl, size_t offset, size_t limit, struct store_user **out,
                        size_t *n_out, size_t *total_out)
{
    struct all_rows a = {&user_rows, NULL, 0};
    size_t total = 0;
    struct params p = {0};
    p_limit(&p, limit);
    p_size(&p, offset);
    struct call k;
    int rc = call_begin(&k, impl, "user_list");
    if (rc < 0)
        return rc;
    /* One snapshot for the page and the total. */
    rc = call_tx(&k, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    if (rc == 0)
        rc = call_exec(&k, P_USER_COUNT, NULL);
    if (rc == 0)
        rc = read_count(&k, &total);
    if (rc == 0)
        rc = call_exec(&k, P_USER_LIST, &p);
    if (rc == 0)
        rc = read_all(&k, &a);
    if (rc == 0)
        rc = call_tx(&k, "COMMIT");
    call_end(&k);
    if (rc < 0) {
        store_users_free(a.rows, a.n);
        return rc;
    }
    *out = a.rows;
    *n_out = a.n;
    if (total_out != NULL)
        *total_out = total;
    return 0;
}

static int pg_user_count(void *impl, size_t *out)
{
    return query(impl, "user_count", P_USER_COUNT, NULL, read_count, out);
}

static int pg_user_set_admin(void *impl, const char *name, bool admin)
{
    struct params p = {0};
    p_text(&p, name);
    p_bool(&p, admin);
    return write_stmt(impl, "user_set_admin", P_USER_SET_ADMIN, &p, -ENOENT);
}

static int pg_user_set_password(void *impl, const char *name, const char *password_hash,
                                bool drop_sessions)
{
    struct params p = {0};
    p_text(&p, name);
    p_text(&p, password_hash);
    struct call k;
    int rc = call_begin(&k, impl, "user_set_password");
    if (rc < 0)
        return rc;
    rc = call_tx(&k, "BEGIN");
    if (rc == 0)
        rc = call_exec(&k, P_USER_SET_PASSWORD, &p);
    if (rc == 0 && call_changes(&k) == 0)
        rc = -ENOENT;
    if (rc == 0 && drop_sessions) {
        p.n = 1;
        rc = call_exec(&k, P_SESSION_DELETE_USER_NAME, &p);
    }
    if (rc == 0)
        rc = call_tx(&k, "COMMIT");
    call_end(&k); /* rolls back when the transaction is still open */
    return rc;
}

static int pg_user_claim_password(void *impl, const char *name, const char *password_hash)
{
    struct params p = {0};
    p_text(&p, name);
    p_text(&p, password_hash);
    struct call k;
    int rc = call_begin(&k, impl, "user_claim_password");
    if (rc < 0)
        return rc;
    /* The UPDATE alone decides the race; the follow-up only tells why it lost. */
    rc = call_exec(&k, P_USER_CLAIM, &p);
    if (rc == 0 && call_changes(&k) == 0) {
        p.n = 1;
        rc = call_exec(&k, P_USER_EXISTS, &p);
        if (rc == 0)
            rc = call_rows(&k) > 0 ? -EEXIST : -ENOENT;
    }
    call_end(&k);
    return rc;
}

static int pg_user_touch(void *impl, int64_t user_id, int64_t activity_ms)
{
    struct params p = {0};
    p_i64(&p, user_id);
    p_i64(&p, activity_ms);
    return write_stmt(impl, "user_touch", P_USER_TOUCH, &p, -ENOENT);
}

static int pg_user_delete(void *impl, const char *name)
{
    /* Sessions, tokens and the server row go with it: ON DELETE CASCADE. */
    struct params p = {0};
    p_text(&p, name);
    return write_stmt(impl, "user_delete", P_USER_DELETE, &p, -ENOENT);
}

/* ---- sessions ---------------------------------------------------------------------- */

static int pg_session_create(void *impl, const char *id_hash, int64_t user_id, int64_t now_ms,
                             int64_t expires_ms, const char *client_addr)
{
    struct params p = {0};
    p_text(&p, id_hash);
    p_i64(&p, user_id);
    p_i64(&p, now_ms);
    p_i64(&p, expires_ms);
    p_text(&p, client_addr);
    return write_stmt(impl, "session_create", P_SESSION_INSERT, &p, 0);
}

static int pg_session_get(void *impl, const char *id_hash, int64_t now_ms,
                          struct store_session *out)
{
    struct params p = {0};
    p_text(&p, id_hash);
    p_i64(&p, now_ms);
    return get_row(impl, "session_get", P_SESSION_GET, &p, read_session, out);
}

static int pg_session_touch(void *impl, const char *id_hash, int64_t now_ms)
{
    struct params p = {0};
    p_text(&p, id_hash);
    p_i64(&p, now_ms);
    return write_stmt(impl, "session_touch", P_SESSION_TOUCH, &p, -ENOENT);
}

static int pg_session_delete(void *impl, const char *id_hash)
{
    struct params p = {0};
    p_text(&p, id_hash);
    return write_stmt(impl, "session_delete", P_SESSION_DELETE, &p, -ENOENT);
}

static int pg_session_delete_user(void *impl, int64_t user_id)
{
    /* None to delete is fine: "log out everywhere" is idempotent. */
    struct params p = {0};
    p_i64(&p, user_id);
    return write_stmt(impl, "session_delete_user", P_SESSION_DELETE_USER, &p, 0);
}

static int pg_session_count(void *impl, int64_t now_ms, size_t *out)
{
    struct params p = {0};
    p_i64(&p, now_ms);
    return query(impl, "session_count", P_SESSION_COUNT, &p, read_count, out);
}

static int pg_expire(void *impl, int64_t now_ms, size_t *removed_out)
{
    size_t removed = 0;
    struct params p = {0};
    p_i64(&p, now_ms);
    struct call k;
    int rc = call_begin(&k, impl, "expire");
    if (rc < 0)
        return rc;
    rc = call_tx(&k, "BEGIN");
    if (rc == 0)
        rc = call_exec(&k, P_SESSION_EXPIRE, &p);
    if (rc == 0) {
        removed += (size_t)call_changes(&k);
        rc = call_exec(&k, P_TOKEN_EXPIRE, &p);
    }
    if (rc == 0) {
        removed += (size_t)call_changes(&k);
        rc = call_tx(&k, "COMMIT");
    }
    if (rc == 0)
        *removed_out = removed;
    call_end(&k);
    return rc;
}

/* ---- tokens ------------------------------------------------------------------------ */

static int pg_token_create(void *impl, const char *hash, const char *prefix, int64_t user_id,
                           enum store_token_scope scope, const char *note, int64_t now_ms,
                           int64_t expires_ms, struct store_token *out)
{
    struct params p = {0};
    p_text(&p, hash);
    p_text(&p, prefix);
    p_i64(&p, user_id);
    p_text(&p, scope_name(scope));
    p_text(&p, note);
    p_i64(&p, now_ms);
    p_i64(&p, expires_ms);
    struct call k;
    int rc = call_begin(&k, impl, "token_create");
    if (rc < 0)
        return rc;
    /* With `out`, the joined row is read back in the same transaction. */
    if (out != NULL)
        rc = call_tx(&k, "BEGIN");
    int64_t id = 0;
    if (rc == 0)
        rc = call_exec(&k, P_TOKEN_INSERT, &p);
    if (rc == 0)
        rc = read_i64(&k, &id);
    if (rc == 0 && out != NULL) {
        struct params q = {0};
        p_i64(&q, id);
        struct store_token t = {0};
        rc = call_get_row(&k, P_TOKEN_GET_BY_ID, &q, read_token, &t);
        if (rc == -ENOENT)
            rc = call_fail_io(&k, "new token row not found");
        if (rc == 0)
            rc = call_tx(&k, "COMMIT");
        if (rc == 0)
            *out = t;
        else
            store_token_clear(&t);
    }
    call_end(&k);
    return rc;
}

static int pg_token_get(void *impl, const char *hash, int64_t now_ms, struct store_token *out)
{
    struct params p = {0};
    p_text(&p, hash);
    p_i64(&p, now_ms);
    return get_row(impl, "token_get", P_TOKEN_GET, &p, read_token, out);
}

static int pg_token_list(void *impl, int64_t user_id, struct store_token **out, size_t *n_out)
{
    struct params p = {0};
    p_i64(&p, user_id);
    void *rows = NULL;
    int rc = list_rows(impl, "token_list", P_TOKEN_LIST, &p, &token_rows, &rows, n_out);
    *out = rows;
    return rc;
}

static int pg_token_delete(void *impl, int64_t user_id, int64_t token_id)
{
    struct params p = {0};
    p_i64(&p, user_id);
    p_i64(&p, token_id);
    return write_stmt(impl, "token_delete", P_TOKEN_DELETE, &p, -ENOENT);
}

static int pg_token_touch(void *impl, int64_t token_id, int64_t now_ms)
{
    struct params p = {0};
    p_i64(&p, token_id);
    p_i64(&p, now_ms);
    return write_stmt(impl, "token_touch", P_TOKEN_TOUCH, &p, -ENOENT);
}

/* ---- servers ----------------------------------------------------------------------- */

/* The parameters of a server row write: user_id, the state when `with_state` (a claim
 * always writes 'starting'), url, spawner_state, message, the three times and owner. */
static void p_server(struct params *p, const struct store_server *v, bool with_state)
{
    p_i64(p, v->user_id);
    if (with_state)
        p_text(p, v->state);
    p_text(p, v->url);
    p_text(p, v->spawner_state);
    p_text(p, v->message);
    p_i64(p, v->started_ms);
    p_i64(p, v->last_activity_ms);
    p_i64(p, v->updated_ms);
    p_text(p, v->owner);
}

/* Reads the joined row of `user_id` into `out` inside call `k`. Returns 0, -ENOENT or
 * another negative errno. */
static int read_server_row(struct call *k, int64_t user_id, struct store_server *out)
{
    struct params p = {0};
    p_i64(&p, user_id);
    return call_get_row(k, P_SERVER_GET, &p, read_server, out);
}

static int pg_server_get(void *impl, int64_t user_id, struct store_server *out)
{
    struct params p = {0};
    p_i64(&p, user_id);
    return get_row(impl, "server_get", P_SERVER_GET, &p, read_server, out);
}

static int pg_server_put(void *impl, const struct store_server *v)
{
    struct params p = {0};
    p_server(&p, v, true);
    /* No row changed: the fence held, another replica owns the row. */
    return write_stmt(impl, "server_put", P_SERVER_PUT, &p, -ESTALE);
}

static int pg_server_list_active(void *impl, struct store_server **out, size_t *n_out)
{
    void *rows = NULL;
    int rc = list_rows(impl, "server_list_active", P_SERVER_LIST_ACTIVE, NULL, &server_rows, &rows,
                       n_out);
    *out = rows;
    return rc;
}

static int pg_server_delete(void *impl, int64_t user_id)
{
    struct params p = {0};
    p_i64(&p, user_id);
    return write_stmt(impl, "server_delete", P_SERVER_DELETE, &p, -ENOENT);
}

static int pg_server_claim(void *impl, const struct store_server *v,
                           struct store_server *current_out)
{
    struct params p = {0};
    p_server(&p, v, false);
    struct call k;
    int rc = call_begin(&k, impl, "server_claim");
    if (rc < 0)
        return rc;
    /* The transaction only makes the row read back the one the claim decided on: the
     * SELECT runs after the upsert (and after the winner it may have waited for). */
    rc = call_tx(&k, "BEGIN");
    if (rc == 0)
        rc = call_exec(&k, P_SERVER_CLAIM, &p);
    bool claimed = rc == 0 && call_changes(&k) > 0;
    if (rc == 0 && current_out != NULL) {
        rc = read_server_row(&k, v->user_id, current_out);
        if (rc == -ENOENT)
            rc = call_fail_io(&k, "claimed server row not found");
    }
    if (rc == 0)
        rc = call_tx(&k, "COMMIT");
    if (rc == 0 && !claimed)
        rc = -EBUSY;
    call_end(&k);
    if (rc != 0 && rc != -EBUSY)
        store_server_clear(current_out); /* may be NULL */
    return rc;
}

static int pg_server_adopt(void *impl, int64_t user_id, const char *from_owner,
                           const char *to_owner, struct store_server *out)
{
    struct params p = {0};
    p_i64(&p, user_id);
    p_text(&p, from_owner);
    p_text(&p, to_owner);
    struct call k;
    int rc = call_begin(&k, impl, "server_adopt");
    if (rc < 0)
        return rc;
    rc = call_tx(&k, "BEGIN");
    if (rc == 0)
        rc = call_exec(&k, P_SERVER_ADOPT, &p);
    if (rc == 0 && call_changes(&k) == 0) {
        /* Why not: no active row at all, or one that somebody else owns by now. */
        p.n = 1;
        rc = call_exec(&k, P_SERVER_ACTIVE, &p);
        if (rc == 0)
            rc = call_rows(&k) > 0 ? -ESTALE : -ENOENT;
    }
    if (rc == 0 && out != NULL)
        rc = read_server_row(&k, user_id, out);
    if (rc == 0)
        rc = call_tx(&k, "COMMIT");
    call_end(&k);
    if (rc != 0)
        store_server_clear(out); /* may be NULL */
    return rc;
}

static int pg_server_request_stop(void *impl, int64_t user_id)
{
    struct params p = {0};
    p_i64(&p, user_id);
    return write_stmt(impl, "server_request_stop", P_SERVER_REQUEST_STOP, &p, -ENOENT);
}

/* ---- replicas ---------------------------------------------------------------------- */

static int pg_replica_beat(void *impl, const char *id, const char *address, int64_t started_ms,
                           int64_t now_ms)
{
    struct params p = {0};
    p_text(&p, id);
    p_text(&p, address);
    p_i64(&p, started_ms);
    p_i64(&p, now_ms);
    return write_stmt(impl, "replica_beat", P_REPLICA_BEAT, &p, 0);
}

static int pg_replica_list(void *impl, struct store_replica **out, size_t *n_out)
{
    void *rows = NULL;
    int rc = list_rows(impl, "replica_list", P_REPLICA_LIST, NULL, &replica_rows, &rows, n_out);
    *out = rows;
    return rc;
}

static int pg_replica_delete(void *impl, const char *id)
{
    struct params p = {0};
    p_text(&p, id);
    return write_stmt(impl, "replica_delete", P_REPLICA_DELETE, &p, -ENOENT);
}

/* ---- events ------------------------------------------------------------------------ */

static int pg_event_add(void *impl, int64_t now_ms, const char *kind, const char *user,
                        const char *actor, const char *detail)
{
    struct params p = {0};
    p_i64(&p, now_ms);
    p_text(&p, kind);
    p_text(&p, user);
    p_text(&p, actor);
    p_text(&p, detail);
    return write_stmt(impl, "event_add", P_EVENT_INSERT, &p, 0);
}

static int pg_event_list(void *impl, size_t limit, struct store_event **out, size_t *n_out)
{
    struct params p = {0};
    p_limit(&p, limit);
    void *rows = NULL;
    int rc = list_rows(impl, "event_list", P_EVENT_LIST, &p, &event_rows, &rows, n_out);
    *out = rows;
    return rc;
}

const struct store_backend store__pg_backend = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_schema_version,
    .meta_get = pg_meta_get,
    .meta_get_or_set = pg_meta_get_or_set,
    .user_create = pg_user_create,
    .user_get = pg_user_get,
    .user_get_by_id = pg_user_get_by_id,
    .user_list = pg_user_list,
    .user_count = pg_user_count,
    .user_set_admin = pg_user_set_admin,
    .user_set_password = pg_user_set_password,
    .user_claim_password = pg_user_claim_password,
    .user_touch = pg_user_touch,
    .user_delete = pg_user_delete,
    .session_create = pg_session_create,
    .session_get = pg_session_get,
    .session_touch = pg_session_touch,
    .session_delete = pg_session_delete,
    .session_delete_user = pg_session_delete_user,
    .session_count = pg_session_count,
    .expire = pg_expire,
    .token_create = pg_token_create,
    .token_get = pg_token_get,
    .token_list = pg_token_list,
    .token_delete = pg_token_delete,
    .token_touch = pg_token_touch,
    .server_get = pg_server_get,
    .server_put = pg_server_put,
    .server_list_active = pg_server_list_active,
    .server_delete = pg_server_delete,
    .server_claim = pg_server_claim,
    .server_adopt = pg_server_adopt,
    .server_request_stop = pg_server_request_stop,
    .replica_beat = pg_replica_beat,
    .replica_list = pg_replica_list,
    .replica_delete = pg_replica_delete,
    .event_add = pg_event_add,
    .event_list = pg_event_list,
};

/* The store's notification and leadership connection (store.h, "Notifications and
 * leadership"; design note: docs/store.md, "Notifications and leadership (PostgreSQL)").
 *
 * One libpq connection per listener, driven on the loop thread without ever blocking:
 * PQconnectStartParams + PQconnectPoll while connecting, then PQsendQuery, PQconsumeInput,
 * PQisBusy, PQgetResult, PQnotifies and PQflush in nonblocking mode. Host names are looked up
 * with uv_getaddrinfo (on libuv's thread pool) before each attempt and handed to libpq as
 * `hostaddr`, because libpq itself would call getaddrinfo() on the loop thread.
 *
 * States: WAITING (no connection; the retry timer is the backoff), RESOLVING (looking up
 * host names), CONNECTING (the libpq handshake), UP (connected; LISTEN, lock attempts and
 * pings run one query at a time). The deadline timer bounds the whole attempt while
 * RESOLVING or CONNECTING, and each query while UP: a server that stops answering (a
 * network partition, a stopped machine) is noticed within PING_MS + DEADLINE_MS.
 *
 * The socket and the poll handle. libpq closes its socket on its own: on EOF or a read error
 * inside PQconsumeInput, PQflush or PQsendQuery, and inside PQconnectPoll when it moves to
 * the next address or host, or starts over (target_session_attrs, an SSL retry), where the
 * new socket usually gets the old number. libuv must never watch a closed fd: a reused
 * number would stay out of epoll while libuv believes it registered, or an unrelated fd's
 * events would reach us. So the poll handle is stopped (EPOLL_CTL_DEL at once) before every
 * libpq call that may close the socket, and started again afterwards on whatever PQsocket()
 * is then (uv_poll_start registers the fd anew); a different number gets a fresh handle,
 * the old one closed first. A few epoll_ctl calls per wake-up cost nothing on a connection
 * this quiet.
 *
 * Callbacks and closing. A user callback may call store_listener_close(). Close drops the
 * connection and closes every handle at once, but the memory stays until the last close
 * callback, so code that called out checks `closing` (and the state) before touching
 * anything else, and no event follows a close. */
#include "store/pg_listen.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "store/backend.h" /* store__pg_conninfo(), in pg.c */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LISTENER_MAGIC 0x50474c4eu /* "PGLN" */
#define WATCH_MAGIC 0x50474c57u    /* "PGLW" */
#define LOOKUP_MAGIC 0x50474c48u   /* "PGLH" */

#define CHANNEL "codehub"
/* While not leading, the lock is tried again this often. */
#define RETRY_LOCK_MS 1000
/* A trivial query this often proves the server still answers ... */
#define PING_MS 2000
/* ... and any query unanswered after this long means the connection is lost. */
#define DEADLINE_MS 5000
/* Name lookup, TCP, TLS and SCRAM together. */
#define CONNECT_DEADLINE_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* PQconsumeInput rounds per wake-up; see service(). */
#define MAX_ROUNDS 64
/* Bounds on what a connection string may ask us to look up. */
#define MAX_TARGETS 32
#define MAX_ADDRS_PER_NAME 8

enum state { STATE_WAITING, STATE_RESOLVING, STATE_CONNECTING, STATE_UP };

enum query { QUERY_NONE, QUERY_LISTEN, QUERY_LOCK, QUERY_PING };

/* One entry of the host list, when some entry is a name we must look up ourselves. */
struct target {
    char *host;   /* a name, an address, a socket directory, or "" (libpq's default) */
    char *port;   /* "" for the default */
    bool lookup;  /* a name: resolved before every attempt */
    bool literal; /* an IP address: passed as its own hostaddr */
};

struct watch {
    uint32_t magic;
    struct store_listener *l;
    uv_poll_t poll;
    int fd;
};

struct lookup {
    uint32_t magic;
    struct store_listener *l;
    uv_getaddrinfo_t req;
    bool abandoned; /* the attempt gave up on it: just free it when it calls back */
};

struct store_listener {
    uint32_t magic;
    uv_loop_t *loop;
    const struct store_listener_events *ev;
    void *data;
    int64_t key;

    /* The caller's parameters with our defaults inserted (see store__listener_open_params);
     * NULL-terminated. Values may be NULL. */
    char **kw;
    char **val;
    size_t nparams;
    struct target *targets; /* none when libpq needs no name lookup */
    size_t ntargets;

    enum state state;
    PGconn *conn;
    struct watch *watch; /* the poll handle on PQsocket(conn), or NULL */
    uv_timer_t retry;    /* WAITING: the backoff; UP: the next lock attempt */
    uv_timer_t ping;
    uv_timer_t deadline;

    /* RESOLVING: the lists handed to libpq, built one target at a time. */
    struct lookup *lookup; /* in flight, or NULL */
    size_t next_target;
    struct buf hosts, addrs, ports;
    size_t nentries;
    char *lookup_error;

    enum query inflight;
    bool lock_granted; /* the in-flight lock attempt's answer */
    bool want_lock;
    bool want_ping;
    bool up;           /* connection(true) was reported */
    bool leading;      /* leader(true) was reported */
    unsigned failures; /* consecutive failed attempts, for the backoff */
    uint64_t attempts;

    int handles; /* libuv handles not yet closed */
    int lookups; /* getaddrinfo requests not yet called back */
    bool closing;
    void (*done)(void *data);
    void *done_data;
};

static void attempt_start(struct store_listener *l);
static void service(struct store_listener *l);
static void on_retry(uv_timer_t *t);

/* ---- helpers ---- */

/* libpq's messages end in a newline and may span lines (DETAIL, HINT): one log line. */
static char *one_line(const char *s)
{
    char *out = xstrdup(s != NULL && s[0] != '\0' ? s : "unknown error");
    for (char *p = out; *p; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    }
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = '\0';
    return out;
}

static bool still_up(const struct store_listener *l)
{
    return !l->closing && l->state == STATE_UP;
}

/* ---- freeing ---- */

static void listener_free(struct store_listener *l)
{
    for (size_t i = 0; i < l->nparams; i++) {
        free(l->kw[i]);
        if (l->val[i] != NULL) {
            /* One of them is the database password. */
            sodium_memzero(l->val[i], strlen(l->val[i]));
            free(l->val[i]);
        }
    }
    free(l->kw);
    free(l->val);
    for (size_t i = 0; i < l->ntargets; i++) {
        free(l->targets[i].host);
        free(l->targets[i].port);
    }
    free(l->targets);
    buf_free(&l->hosts);
    buf_free(&l->addrs);
    buf_free(&l->ports);
    free(l->lookup_error);
    l->magic = 0;
    free(l);
}

/* Frees a closing listener once nothing of libuv's refers to it any more. Only ever reached
 * from a close or getaddrinfo callback, so `done` never runs inside store_listener_close. */
static void maybe_finish(struct store_listener *l)
{
    if (!l->closing || l->handles > 0 || l->lookups > 0)
        return;
    void (*done)(void *) = l->done;
    void *done_data = l->done_data;
    listener_free(l);
    if (done != NULL)
        done(done_data);
}

static void handle_closed(uv_handle_t *h)
{
    struct store_listener *l = h->data;
    assert(l->magic == LISTENER_MAGIC);
    l->handles--;
    maybe_finish(l);
}

/* ---- the poll handle ---- */

static void watch_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    assert(w->magic == WATCH_MAGIC);
    struct store_listener *l = w->l;
    w->magic = 0;
    free(w);
    l->handles--;
    maybe_finish(l);
}

/* Closes the poll handle; uv_close stops watching the fd at once. Called before the fd is
 * closed, or after libpq closed it but before anything else could reuse the number. */
static void watch_retire(struct store_listener *l)
{
    if (l->watch == NULL)
        return;
    uv_close((uv_handle_t *)&l->watch->poll, watch_closed);
    l->watch = NULL;
}

/* Before any libpq call that may close or replace the socket (see the top of the file). */
static void watch_pause(struct store_listener *l)
{
    if (l->watch != NULL)
        uv_poll_stop(&l->watch->poll);
}

static void on_io(uv_poll_t *h, int status, int events);

/* Watches the connection's current socket for `events`, on a new handle when the socket
 * number changed. Returns 0 or a negative errno-style code. */
static int watch_resume(struct store_listener *l, int events)
{
    int fd = PQsocket(l->conn);
    if (fd < 0)
        return -EBADF;
    if (l->watch != NULL && l->watch->fd != fd)
        watch_retire(l);
    if (l->watch == NULL) {
        struct watch *w = xcalloc(1, sizeof(*w));
        w->magic = WATCH_MAGIC;
        w->l = l;
        w->fd = fd;
        int r = uv_poll_init_socket(l->loop, &w->poll, fd);
        if (r < 0) {
            /* uv_poll_init_socket initialises nothing when it fails. */
            free(w);
            return r;
        }
        w->poll.data = w;
        l->handles++;
        l->watch = w;
    }
    return uv_poll_start(&l->watch->poll, events, on_io);
}

/* ---- losing the connection ---- */

static void lookup_abandon(struct store_listener *l)
{
    if (l->lookup == NULL)
        return;
    l->lookup->abandoned = true;
    /* Fails when the lookup already runs; it then calls back when done, and is freed. */
    uv_cancel((uv_req_t *)&l->lookup->req);
    l->lookup = NULL;
}

/* Drops the connection and everything tied to it, silently. The PQfinish ends the session,
 * which releases the advisory lock on the server. */
static void conn_drop(struct store_listener *l)
{
    uv_timer_stop(&l->deadline);
    uv_timer_stop(&l->ping);
    uv_timer_stop(&l->retry);
    lookup_abandon(l);
    watch_retire(l); /* before PQfinish closes the fd */
    if (l->conn != NULL) {
        PQfinish(l->conn);
        l->conn = NULL;
    }
    l->state = STATE_WAITING;
    l->inflight = QUERY_NONE;
    l->want_lock = false;
    l->want_ping = false;
    l->up = false;
    l->leading = false;
}

static void backoff_arm(struct store_listener *l)
{
    /* 100 ms doubling to 5 s, each delay drawn from its upper half so that replicas that
     * lost the same server do not all come back in the same millisecond. */
    uint32_t delay = BACKOFF_MAX_MS;
    if (l->failures < 16) {
        delay = (uint32_t)BACKOFF_MIN_MS << l->failures;
        if (delay > BACKOFF_MAX_MS)
            delay = BACKOFF_MAX_MS;
    }
    if (l->failures < UINT32_MAX)
        l->failures++;
    delay = delay / 2 + randombytes_uniform(delay / 2 + 1);
    uv_timer_start(&l->retry, on_retry, delay, 0);
}

/* The attempt failed or the connection was lost: drop it, arm the backoff, and report.
 * `why` may point into the connection (PQerrorMessage): it is used before the drop. The
 * caller must not touch the connection afterwards. */
static void conn_lost(struct store_listener *l, const char *why)
{
    bool was_up = l->up;
    bool was_leading = l->leading;
    char *msg = one_line(why);
    if (was_up) {
        log_event(LOG_WARN, "store.listen.lost", "error", msg, NULL);
    } else {
        char attempt[24];
        snprintf(attempt, sizeof(attempt), "%" PRIu64, l->attempts);
        /* The first failure in a row is worth a warning, the retries that follow are not. */
        log_event(l->failures == 0 ? LOG_WARN : LOG_DEBUG, "store.listen.connect_failed", "error",
                  msg, "attempt", attempt, NULL);
    }
    free(msg);
    conn_drop(l);
    backoff_arm(l);
    if (was_leading) {
        log_event(LOG_WARN, "store.listen.leader", "leading", "false", "reason", "connection lost",
                  NULL);
        if (l->ev->leader != NULL)
            l->ev->leader(l->data, false);
        if (l->closing)
            return;
    }
    if (was_up && l->ev->connection != NULL)
        l->ev->connection(l->data, false);
}

static void on_retry(uv_timer_t *t)
{
    struct store_listener *l = t->data;
    assert(l->magic == LISTENER_MAGIC);
    if (l->state == STATE_WAITING) {
        attempt_start(l);
    } else if (l->state == STATE_UP && !l->leading) {
        l->want_lock = true;
        service(l);
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct store_listener *l = t->data;
    assert(l->magic == LISTENER_MAGIC);
    char why[96];
    if (l->state == STATE_UP)
        snprintf(why, sizeof(why), "the server did not answer within %d ms", DEADLINE_MS);
    else
        snprintf(why, sizeof(why), "no connection within %d ms", CONNECT_DEADLINE_MS);
    conn_lost(l, why);
}

/* ---- queries ---- */

/* Sends one query (never more than one is in flight). Returns false when the connection
 * was lost meanwhile. */
static bool query_send(struct store_listener *l, enum query q)
{
    char sql[96];
    switch (q) {
    case QUERY_LISTEN:
        snprintf(sql, sizeof(sql), "LISTEN " CHANNEL);
        break;
    case QUERY_LOCK:
        snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%" PRId64 ")", l->key);
        break;
    default:
        snprintf(sql, sizeof(sql), "SELECT 1");
        break;
    }
    if (PQsendQuery(l->conn, sql) == 0) {
        conn_lost(l, PQerrorMessage(l->conn));
        return false;
    }
    l->inflight = q;
    l->lock_granted = false;
    uv_timer_start(&l->deadline, on_deadline, DEADLINE_MS, 0);
    return true;
}

static bool send_next(struct store_listener *l)
{
    if (l->inflight != QUERY_NONE)
        return true;
    if (l->want_lock) {
        l->want_lock = false;
        return query_send(l, QUERY_LOCK);
    }
    if (l->want_ping) {
        l->want_ping = false;
        return query_send(l, QUERY_PING);
    }
    return true;
}

/* The query in flight has delivered all its results. */
static void query_done(struct store_listener *l)
{
    enum query q = l->inflight;
    l->inflight = QUERY_NONE;
    uv_timer_stop(&l->deadline);
    if (q == QUERY_LISTEN) {
        const char *host = PQhost(l->conn);
        const char *port = PQport(l->conn);
        char server[300];
        snprintf(server, sizeof(server), "%s:%s", host != NULL ? host : "",
                 port != NULL ? port : "");
        log_event(LOG_INFO, "store.listen.connected", "server", server, NULL);
        l->up = true;
        l->failures = 0;
        l->want_lock = true;
        if (l->ev->connection != NULL)
            l->ev->connection(l->data, true);
    } else if (q == QUERY_LOCK) {
        if (l->lock_granted) {
            l->leading = true;
            log_event(LOG_INFO, "store.listen.leader", "leading", "true", NULL);
            if (l->ev->leader != NULL)
                l->ev->leader(l->data, true);
        } else {
            uv_timer_start(&l->retry, on_retry, RETRY_LOCK_MS, 0);
        }
    }
}

/* Collects the results of the query in flight without blocking. Returns false when the
 * listener stopped being up (lost, or closed by a callback). */
static bool drain_results(struct store_listener *l, bool *progress)
{
    while (l->inflight != QUERY_NONE && !PQisBusy(l->conn)) {
        PGresult *res = PQgetResult(l->conn);
        *progress = true;
        if (res == NULL) {
            query_done(l);
            if (!still_up(l))
                return false;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        bool ok = st == (l->inflight == QUERY_LISTEN ? PGRES_COMMAND_OK : PGRES_TUPLES_OK);
        if (ok && l->inflight == QUERY_LOCK) {
            ok = PQntuples(res) == 1 && PQnfields(res) == 1;
            if (ok)
                l->lock_granted = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        }
        if (!ok) {
            char *msg = one_line(PQresultErrorMessage(res));
            PQclear(res);
            conn_lost(l, msg);
            free(msg);
            return false;
        }
        PQclear(res);
    }
    return true;
}

/* Hands out the notifications libpq has parsed. Returns false when a callback closed us. */
static bool deliver_notifies(struct store_listener *l, bool *progress)
{
    for (;;) {
        PGnotify *n = PQnotifies(l->conn);
        if (n == NULL)
            return true;
        *progress = true;
        bool ours = strcmp(n->relname, CHANNEL) == 0;
        if (ours && l->ev->notify != NULL)
            l->ev->notify(l->data, n->extra);
        PQfreemem(n);
        if (l->closing)
            return false;
    }
}

/* Everything that talks to libpq while UP: read, hand out notifications and results, send
 * the next query, flush, and watch the socket again.
 *
 * Reading goes round again while the last round produced something. Over TLS, a read can
 * leave the rest of a record decrypted inside OpenSSL, where epoll cannot see it: libpq
 * reads at least 8 kB at a time, which takes PostgreSQL's own records (8 kB at most) whole,
 * but a proxy in between (a pooler, a cloud endpoint) may send records of up to 16 kB. The
 * next PQconsumeInput takes the rest; a round that yields nothing ends it. Should a large
 * message still be cut at such a boundary, the next ping wakes the socket within PING_MS. */
static void service(struct store_listener *l)
{
    watch_pause(l);
    for (int round = 0; round < MAX_ROUNDS; round++) {
        bool progress = false;
        if (PQconsumeInput(l->conn) == 0) {
            /* What arrived before the failure still counts. */
            if (!deliver_notifies(l, &progress))
                return;
            conn_lost(l, PQerrorMessage(l->conn));
            return;
        }
        if (!deliver_notifies(l, &progress))
            return;
        if (!drain_results(l, &progress))
            return;
        if (!send_next(l))
            return;
        if (!progress)
            break;
    }
    int pending = PQflush(l->conn);
    if (pending < 0 || PQstatus(l->conn) == CONNECTION_BAD) {
        conn_lost(l, PQerrorMessage(l->conn));
        return;
    }
    int r = watch_resume(l, UV_READABLE | (pending == 1 ? UV_WRITABLE : 0));
    if (r < 0)
        conn_lost(l, uv_strerror(r));
}

static void on_ping(uv_timer_t *t)
{
    struct store_listener *l = t->data;
    assert(l->magic == LISTENER_MAGIC);
    /* A query already in flight has its own deadline: that proves liveness as well. */
    if (l->state != STATE_UP || l->inflight != QUERY_NONE)
        return;
    l->want_ping = true;
    service(l);
}

/* ---- connecting ---- */

static void on_notice(void *arg, const PGresult *res)
{
    assert(((struct store_listener *)arg)->magic == LISTENER_MAGIC);
    /* E.g. the "terminating connection due to administrator command" that precedes a
     * server shutdown: it arrives while idle, and libpq would print it to stderr. */
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char *msg = one_line(PQresultErrorMessage(res));
    log_event(LOG_INFO, "store.listen.notice", "severity", severity, "message", msg, NULL);
    free(msg);
}

static void connect_done(struct store_listener *l)
{
    if (PQsetnonblocking(l->conn, 1) != 0) {
        conn_lost(l, PQerrorMessage(l->conn));
        return;
    }
    l->state = STATE_UP;
    uv_timer_stop(&l->deadline);
    uv_timer_start(&l->ping, on_ping, PING_MS, PING_MS);
    if (!query_send(l, QUERY_LISTEN))
        return;
    service(l);
}

/* One step of the handshake; the socket may be a different one afterwards. */
static void connect_step(struct store_listener *l)
{
    watch_pause(l);
    PostgresPollingStatusType ps = PQconnectPoll(l->conn);
    int r = 0;
    switch (ps) {
    case PGRES_POLLING_READING:
        r = watch_resume(l, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        r = watch_resume(l, UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        connect_done(l);
        return;
    default:
        conn_lost(l, PQerrorMessage(l->conn));
        return;
    }
    if (r < 0)
        conn_lost(l, uv_strerror(r));
}

static void on_io(uv_poll_t *h, int status, int events)
{
    struct watch *w = h->data;
    assert(w->magic == WATCH_MAGIC);
    struct store_listener *l = w->l;
    assert(l->magic == LISTENER_MAGIC);
    /* A status < 0 (POLLERR) is libpq's to find out: both steps below read the socket's
     * error and fail or move on. */
    if (l->closing || w != l->watch)
        return;
    if (l->state == STATE_CONNECTING)
        connect_step(l);
    else if (l->state == STATE_UP)
        service(l);
}

/* Starts libpq on the parameters, plus the looked-up host lists when `with_entries`. */
static void connect_begin(struct store_listener *l, bool with_entries)
{
    const char **kw = xcalloc(l->nparams + 4, sizeof(*kw));
    const char **val = xcalloc(l->nparams + 4, sizeof(*val));
    size_t n = 0;
    for (; n < l->nparams; n++) {
        kw[n] = l->kw[n];
        val[n] = l->val[n];
    }
    if (with_entries) {
        /* Last, so that they override the URL and the caller's keywords. */
        kw[n] = "host";
        val[n++] = l->hosts.data;
        kw[n] = "hostaddr";
        val[n++] = l->addrs.data;
        kw[n] = "port";
        val[n++] = l->ports.data;
    }
    l->conn = PQconnectStartParams(kw, val, 1);
    free(kw);
    free(val);
    if (l->conn == NULL) {
        conn_lost(l, "out of memory");
        return;
    }
    PQsetNoticeReceiver(l->conn, on_notice, l);
    if (PQstatus(l->conn) == CONNECTION_BAD) {
        conn_lost(l, PQerrorMessage(l->conn));
        return;
    }
    l->state = STATE_CONNECTING;
    /* As libpq documents: after PQconnectStart, poll as if PQconnectPoll had returned
     * PGRES_POLLING_WRITING. */
    int r = watch_resume(l, UV_WRITABLE);
    if (r < 0)
        conn_lost(l, uv_strerror(r));
}

static void entry_add(struct store_listener *l, const char *host, const char *addr,
                      const char *port)
{
    if (l->nentries > 0) {
        buf_append_char(&l->hosts, ',');
        buf_append_char(&l->addrs, ',');
        buf_append_char(&l->ports, ',');
    }
    buf_append_str(&l->hosts, host);
    buf_append_str(&l->addrs, addr);
    buf_append_str(&l->ports, port);
    l->nentries++;
}

static void on_lookup(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

/* Adds the targets to the lists in order, starting a lookup for the next name and
 * returning until it calls back; then connects. */
static void lookup_continue(struct store_listener *l)
{
    while (l->next_target < l->ntargets) {
        struct target *t = &l->targets[l->next_target];
        if (!t->lookup) {
            entry_add(l, t->host, t->literal ? t->host : "", t->port);
            l->next_target++;
            continue;
        }
        struct lookup *q = xcalloc(1, sizeof(*q));
        q->magic = LOOKUP_MAGIC;
        q->l = l;
        q->req.data = q;
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int r = uv_getaddrinfo(l->loop, &q->req, on_lookup, t->host, NULL, &hints);
        if (r < 0) {
            free(q);
            free(l->lookup_error);
            l->lookup_error = xasprintf("could not look up %s: %s", t->host, uv_strerror(r));
            l->next_target++;
            continue;
        }
        l->lookup = q;
        l->lookups++;
        return;
    }
    if (l->nentries == 0) {
        conn_lost(l, l->lookup_error != NULL ? l->lookup_error : "no address to connect to");
        return;
    }
    connect_begin(l, true);
}

static void on_lookup(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct lookup *q = req->data;
    assert(q->magic == LOOKUP_MAGIC);
    struct store_listener *l = q->l;
    assert(l->magic == LISTENER_MAGIC);
    bool abandoned = q->abandoned;
    q->magic = 0;
    free(q);
    l->lookups--;
    if (abandoned) {
        uv_freeaddrinfo(res);
        maybe_finish(l);
        return;
    }
    l->lookup = NULL;
    struct target *t = &l->targets[l->next_target++];
    if (status < 0) {
        free(l->lookup_error);
        l->lookup_error = xasprintf("could not look up %s: %s", t->host, uv_strerror(status));
    }
    int added = 0;
    for (struct addrinfo *ai = res; ai != NULL && added < MAX_ADDRS_PER_NAME; ai = ai->ai_next) {
        char name[INET6_ADDRSTRLEN];
        int r = -EAFNOSUPPORT;
        if (ai->ai_family == AF_INET)
            r = uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, name, sizeof(name));
        else if (ai->ai_family == AF_INET6)
            r = uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, name, sizeof(name));
        if (r < 0)
            continue;
        entry_add(l, t->host, name, t->port);
        added++;
    }
    uv_freeaddrinfo(res);
    lookup_continue(l);
}

static void attempt_start(struct store_listener *l)
{
    l->attempts++;
    uv_timer_start(&l->deadline, on_deadline, CONNECT_DEADLINE_MS, 0);
    if (l->ntargets == 0) {
        connect_begin(l, false);
        return;
    }
    buf_reset(&l->hosts);
    buf_reset(&l->addrs);
    buf_reset(&l->ports);
    l->nentries = 0;
    l->next_target = 0;
    free(l->lookup_error);
    l->lookup_error = NULL;
    l->state = STATE_RESOLVING;
    lookup_continue(l);
}

/* ---- opening ---- */

/* What libpq takes for a connection string rather than a database name. */
static bool is_conninfo_string(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
           strchr(s, '=') != NULL;
}

static bool is_ip_literal(const char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

static void pick(const char *keyword, const char *value, const char **host, const char **hostaddr,
                 const char **port, const char **service)
{
    if (strcmp(keyword, "host") == 0)
        *host = value;
    else if (strcmp(keyword, "hostaddr") == 0)
        *hostaddr = value;
    else if (strcmp(keyword, "port") == 0)
        *port = value;
    else if (strcmp(keyword, "service") == 0)
        *service = value;
}

/* Splits a comma-separated list; returns the number of items (caller frees each and the
 * array). */
static size_t split_list(const char *s, char ***out)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    char **items = xcalloc(n, sizeof(*items));
    size_t i = 0;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == ',' || *p == '\0') {
            items[i++] = xstrndup(start, (size_t)(p - start));
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    *out = items;
    return n;
}

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

/* Works out, as libpq will, which hosts the parameters name (arrays in order; the first
 * "dbname" that is a connection string is expanded in its place; environment variables
 * fill what is still unset), and plans a lookup for the names among them. When nothing
 * needs one (a hostaddr is given, Unix sockets, IP addresses, a service file that libpq
 * reads itself), `targets` stays empty and libpq gets the parameters as they are.
 * Returns 0 or -EINVAL when the connection string does not parse. */
static int plan_targets(struct store_listener *l)
{
    PQconninfoOption *expanded = NULL;
    for (size_t i = 0; i < l->nparams; i++) {
        if (strcmp(l->kw[i], "dbname") == 0 && l->val[i] != NULL) {
            if (is_conninfo_string(l->val[i])) {
                char *err = NULL;
                expanded = PQconninfoParse(l->val[i], &err);
                /* The message may quote the string, password and all: not logged. */
                PQfreemem(err);
                if (expanded == NULL)
                    return -EINVAL;
            }
            break;
        }
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *service = NULL;
    bool expanded_used = false;
    for (size_t i = 0; i < l->nparams; i++) {
        const char *k = l->kw[i], *v = l->val[i];
        if (v == NULL || v[0] == '\0')
            continue;
        if (expanded != NULL && !expanded_used && strcmp(k, "dbname") == 0) {
            expanded_used = true;
            for (PQconninfoOption *o = expanded; o->keyword != NULL; o++) {
                if (o->val != NULL)
                    pick(o->keyword, o->val, &host, &hostaddr, &port, &service);
            }
        } else {
            pick(k, v, &host, &hostaddr, &port, &service);
        }
    }
    if (host == NULL)
        host = getenv("PGHOST");
    if (hostaddr == NULL)
        hostaddr = getenv("PGHOSTADDR");
    if (port == NULL)
        port = getenv("PGPORT");
    if (service == NULL)
        service = getenv("PGSERVICE");

    char **hosts = NULL, **ports = NULL;
    size_t nhosts = 0, nports = 0;
    bool any_lookup = false;
    if ((hostaddr == NULL || hostaddr[0] == '\0') && (service == NULL || service[0] == '\0') &&
        host != NULL && host[0] != '\0') {
        nhosts = split_list(host, &hosts);
        if (port != NULL && port[0] != '\0')
            nports = split_list(port, &ports);
        /* A port count libpq rejects is left for libpq to report. */
        bool ports_ok = nports <= 1 || nports == nhosts;
        for (size_t i = 0; ports_ok && nhosts <= MAX_TARGETS && i < nhosts; i++) {
            const char *h = hosts[i];
            if (h[0] != '\0' && h[0] != '/' && h[0] != '@' && !is_ip_literal(h))
                any_lookup = true;
        }
    }
    if (any_lookup) {
        l->targets = xcalloc(nhosts, sizeof(*l->targets));
        l->ntargets = nhosts;
        for (size_t i = 0; i < nhosts; i++) {
            struct target *t = &l->targets[i];
            t->host = xstrdup(hosts[i]);
            t->port = xstrdup(nports == 0 ? "" : ports[nports == 1 ? 0 : i]);
            t->literal = t->host[0] != '\0' && is_ip_literal(t->host);
            t->lookup = t->host[0] != '\0' && t->host[0] != '/' && t->host[0] != '@' && !t->literal;
        }
    }
    free_list(hosts, nhosts);
    free_list(ports, nports);
    PQconninfoFree(expanded);
    return 0;
}

/* Keywords libpq knows: an unknown one would fail every attempt, forever. */
static int check_keywords(const char *const *keywords)
{
    PQconninfoOption *known = PQconndefaults();
    if (known == NULL)
        return 0; /* out of memory: let the attempts tell */
    int rc = 0;
    for (size_t i = 0; keywords[i] != NULL && rc == 0; i++) {
        bool found = false;
        for (PQconninfoOption *o = known; o->keyword != NULL && !found; o++)
            found = strcmp(o->keyword, keywords[i]) == 0;
        if (!found) {
            log_event(LOG_ERROR, "store.listen.keyword", "keyword", keywords[i], NULL);
            rc = -EINVAL;
        }
    }
    PQconninfoFree(known);
    return rc;
}

int store__listener_open_params(uv_loop_t *loop, const char *const *keywords,
                                const char *const *values, const struct store_listener_events *ev,
                                void *data, int64_t leader_key, struct store_listener **out)
{
    /* The listener's own defaults. TCP keepalives let the kernel notice a dead peer even
     * while no query is in flight; the name tells an operator which session in
     * pg_stat_activity this is. They go just before the first "dbname" (at the start when
     * there is none): after the defaults the caller put first (the store's pool sets gentler
     * keepalives there), before the URL's fields and any keyword after it, which libpq lets
     * override them. */
    static const char *const defaults[][2] = {
        {"keepalives", "1"},
        {"keepalives_idle", "5"},
        {"keepalives_interval", "2"},
        {"keepalives_count", "3"},
        {"application_name", "codehub-listener"},
    };
    const size_t ndefaults = sizeof(defaults) / sizeof(defaults[0]);
    struct store_listener *l = NULL;
    int rc;

    if (loop == NULL || keywords == NULL || values == NULL || ev == NULL || out == NULL)
        return -EINVAL;
    rc = check_keywords(keywords);
    if (rc < 0)
        return rc;
    if (sodium_init() < 0)
        return -EIO;

    size_t ngiven = 0;
    while (keywords[ngiven] != NULL)
        ngiven++;
    l = xcalloc(1, sizeof(*l));
    l->magic = LISTENER_MAGIC;
    l->loop = loop;
    l->ev = ev;
    l->data = data;
    l->key = leader_key;
    l->nparams = ndefaults + ngiven;
    l->kw = xcalloc(l->nparams + 1, sizeof(*l->kw));
    l->val = xcalloc(l->nparams + 1, sizeof(*l->val));
    size_t at = 0; /* where ours go */
    while (at < ngiven && !(strcmp(keywords[at], "dbname") == 0 && values[at] != NULL))
        at++;
    if (at == ngiven)
        at = 0;
    size_t n = 0;
    for (size_t i = 0; i <= ngiven; i++) {
        if (i == at) {
            for (size_t j = 0; j < ndefaults; j++) {
                l->kw[n] = xstrdup(defaults[j][0]);
                l->val[n++] = xstrdup(defaults[j][1]);
            }
        }
        if (i < ngiven) {
            l->kw[n] = xstrdup(keywords[i]);
            l->val[n++] = values[i] != NULL ? xstrdup(values[i]) : NULL;
        }
    }
    rc = plan_targets(l);
    if (rc < 0)
        goto fail;

    uv_timer_init(loop, &l->retry);
    uv_timer_init(loop, &l->ping);
    uv_timer_init(loop, &l->deadline);
    l->retry.data = l;
    l->ping.data = l;
    l->deadline.data = l;
    l->handles = 3;
    l->state = STATE_WAITING;

    /* Connects at once. A failure here only arms the backoff: no event is called. */
    attempt_start(l);
    *out = l;
    return 0;

fail:
    listener_free(l);
    return rc;
}

int store_listener_open(struct store *st, uv_loop_t *loop, const struct store_listener_events *ev,
                        void *data, struct store_listener **out)
{
    const char *const *keywords = NULL;
    const char *const *values = NULL;
    if (st == NULL || loop == NULL || ev == NULL || out == NULL)
        return -EINVAL;
    int rc = store__pg_conninfo(st, &keywords, &values);
    if (rc < 0)
        return rc;
    return store__listener_open_params(loop, keywords, values, ev, data, STORE__LEADER_KEY, out);
}

void store_listener_close(struct store_listener *l, void (*done)(void *data), void *data)
{
    if (l == NULL)
        return;
    assert(l->magic == LISTENER_MAGIC);
    assert(!l->closing);
    l->closing = true;
    l->done = done;
    l->done_data = data;
    if (l->leading)
        log_event(LOG_INFO, "store.listen.leader", "leading", "false", "reason", "close", NULL);
    /* Ending the session releases the advisory lock: no unlock query is needed, and none
     * could be waited for here. */
    conn_drop(l);
    uv_close((uv_handle_t *)&l->retry, handle_closed);
    uv_close((uv_handle_t *)&l->ping, handle_closed);
    uv_close((uv_handle_t *)&l->deadline, handle_closed);
}

uint64_t store__listener_attempts(const struct store_listener *l)
{
    assert(l->magic == LISTENER_MAGIC);
    return l->attempts;
}

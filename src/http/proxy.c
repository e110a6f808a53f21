/* The reverse proxy (see proxy.h and docs/proxy.md).
 *
 * Objects:
 *  - struct pool: one per upstream address; its idle keep-alive connections (LIFO).
 *  - struct upconn: one upstream connection (uv_pipe_t or uv_tcp_t), its response parser
 *    and timer. Busy with one request, idle in its pool, or one side of a tunnel.
 *  - struct preq: one forwarded exchange. It lives until the exchange is released, it has
 *    let go of its upstream connection and every client write it issued has called back.
 *  - struct tunnel: a WebSocket after the 101: the client socket taken from the server
 *    and the upstream connection, bytes copied both ways.
 *
 * Buffers: upstream and tunnel reads go into 64 KiB buffers from a free list. A read's
 * bytes are written to the other side without copying. If the other side's kernel buffer
 * took them all (the libuv write queue is empty afterwards), the buffer goes back to the
 * free list at once; otherwise it stays with the reader, which stops reading until the
 * write completes. So per direction at most one buffer (64 KiB) is held, whatever the
 * speeds: this is the backpressure, and it is stricter than the 256 KiB the design allows.
 * Client request bodies come from the server as callbacks whose bytes live only during the
 * call: they are written with uv_try_write and only the rest is copied; past 256 KiB queued
 * towards the upstream the client body is paused. */
#include "http/proxy.h"

#include "core/alloc.h"
#include "core/log.h"
#include "http/cookie.h"
#include "http/websocket.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#define PROXY_MAGIC 0x50525859u
#define PREQ_MAGIC 0x50524551u
#define UPCONN_MAGIC 0x5550434eu
#define TUNNEL_MAGIC 0x54554e4eu

#define BUF_SIZE 65536
#define FREE_BUFS_MAX 64
#define FREE_REQS_MAX 256
#define FREE_WRITES_MAX 256
#define UPSTREAM_QUEUE_HIGH (256 * 1024)
/* An idle pooled connection is closed after this (code-server's own Node keep-alive
 * timeout is 5 s, so it usually closes first and we notice the EOF). */
#define POOL_IDLE_MS 60000
#define ACTIVITY_EVERY_MS 1000
/* How often requests waiting for an upstream connection are checked for their deadline. */
#define WAIT_SWEEP_MS 250

#define DEFAULT_CONNECT_MS 10000
#define DEFAULT_RESPONSE_MS 60000
#define DEFAULT_WEBSOCKET_MS 3600000
#define DEFAULT_BODY_MS 60000

struct preq;
struct tunnel;

struct pool {
    struct proxy *p;
    char *key; /* the upstream string */
    struct pool *hnext;
    bool is_unix;
    struct sockaddr_storage addr;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct upconn *idle; /* most recently used first */
    size_t nidle;
    size_t nhttp; /* connections for plain exchanges: connecting, busy or idle */
    /* Requests waiting for a connection while nhttp is at max_conns_per_upstream, oldest
     * first. Each holds a reference to the pool. */
    struct preq *wait_head, *wait_tail;
    struct pool *kick_next; /* p->kicks: has waiters and a connection came free */
    bool kick_queued;
    unsigned refs; /* connections and requests using it */
    uint64_t last_activity_ms;
};

enum up_state { UP_CONNECTING, UP_BUSY, UP_IDLE, UP_TUNNEL, UP_CLOSING };

struct upconn {
    uint32_t magic;
    struct proxy *p;
    struct pool *pool;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_connect_t connect_req;
    uv_timer_t timer;
    int open_handles;
    enum up_state state;
    struct http_parse *parser;
    struct preq *req;
    struct tunnel *tunnel;
    bool reading;
    bool reused;         /* it carried a request before the current one */
    bool broken;         /* must not go back to the pool */
    bool write_failed;   /* the upstream stopped taking the request; its answer may follow */
    bool connect_failed; /* uv_tcp_connect refused at once */
    bool counted;        /* in pool->nhttp */
    uint64_t deadline;   /* of the current phase, loop time; 0: none */
    unsigned writes_pending;
    struct upconn *prev, *next;           /* p->conns */
    struct upconn *idle_prev, *idle_next; /* pool->idle */
};

struct preq {
    uint32_t magic;
    struct proxy *p;
    struct http_exchange *ex; /* NULL once released */
    struct http_server *srv;
    struct upconn *up;
    struct pool *pool;
    struct buf head; /* the upstream request head, kept for a retry */
    int method;
    bool websocket;
    bool has_body;
    bool chunked_body;
    bool body_reading; /* read_body called */
    bool body_started; /* a body byte went upstream */
    bool body_done;    /* the whole body went upstream (or there is none) */
    bool body_paused;
    bool resp_bytes;    /* a byte of response arrived */
    bool resp_head;     /* a final response head arrived */
    bool resp_started;  /* the head went to the client */
    bool switching;     /* a 101 arrived for a WebSocket */
    bool resp_complete; /* the final response ended */
    bool client_failed; /* writing to the client failed: it is gone */
    bool retried;
    bool up_keepalive;
    bool waiting;           /* in pool's wait queue */
    uint64_t wait_deadline; /* loop time; answered 503 when still waiting then */
    struct preq *wait_next; /* pool->wait_head */
    unsigned client_writes; /* write_body calls waiting for `written` */
    char *held;             /* read buffer referenced by client writes */
    struct buf client_101;  /* the 101 head for the client */
    void (*on_activity)(void *);
    void *activity_data;
    void (*on_upstream_error)(void *, int);
    struct preq *prev, *next; /* p->reqs */
    struct preq *next_free;
};

struct tunnel_dir {
    struct tunnel *t;
    uv_stream_t *from, *to;
    bool c2s;
    bool reading;
    bool eof;
};

struct tunnel {
    uint32_t magic;
    struct proxy *p;
    struct http_tunnel entry; /* the server's books */
    uv_tcp_t *client;         /* owned; freed in its close callback */
    struct upconn *up;
    struct tunnel_dir c2s, s2c;
    struct websocket_activity activity;
    uint64_t last_io_ms;
    uint64_t last_activity_ms;
    void (*on_activity)(void *);
    void *activity_data;
    bool closing;
    bool client_closed;
    bool up_closed;
    unsigned writes_pending;
    struct tunnel *prev, *next;
};

/* One write towards an upstream or a tunnel side. */
struct pwrite {
    uv_write_t req;
    struct proxy *p;
    char *held;  /* a read buffer to return to the free list afterwards */
    char *owned; /* a copy to free afterwards */
    struct upconn *up;
    struct tunnel_dir *dir; /* a tunnel write: resume `dir` reading afterwards */
    struct pwrite *next_free;
};

struct proxy {
    uint32_t magic;
    uv_loop_t *loop;
    struct proxy_options opt;
    struct proxy_stats stats;
    struct pool **buckets;
    size_t nbuckets, npools;
    struct upconn *conns;
    struct preq *reqs;
    struct tunnel *tunnels;
    size_t nconns, ntunnels;
    char **free_bufs;
    size_t nfree_bufs;
    struct preq *free_reqs;
    size_t nfree_reqs;
    struct pwrite *free_writes;
    size_t nfree_writes;
    struct buf scratch; /* response headers being filtered */
    /* Runs pool kicks on the next loop turn and expires waiting requests; closed last. */
    uv_timer_t keeper;
    struct pool *kicks; /* pools to kick, through pool->kick_next */
    size_t nwaiting;    /* requests in all wait queues */
    bool closing;
    bool keeper_closed;
    void (*close_done)(void *);
    void *close_data;
};

static void up_close(struct upconn *up);
static void up_disarm(struct upconn *up);
static void up_read_start(struct upconn *up);
static void up_send(struct preq *r);
static void up_dispatch(struct preq *r);
static void preq_maybe_free(struct preq *r);
static void preq_fail(struct preq *r, int status, bool retryable);
static void preq_upstream_error(struct preq *r, int status);
static void tunnel_close(struct tunnel *t);
static void proxy_maybe_done(struct proxy *p);

/* --- buffers and write requests ---------------------------------------------------------- */

static char *buf_get(struct proxy *p)
{
    if (p->nfree_bufs > 0)
        return p->free_bufs[--p->nfree_bufs];
    return xmalloc(BUF_SIZE);
}

static void buf_put(struct proxy *p, char *b)
{
    if (b == NULL)
        return;
    if (p->nfree_bufs < FREE_BUFS_MAX) {
        p->free_bufs[p->nfree_bufs++] = b;
        return;
    }
    free(b);
}

static struct pwrite *pwrite_get(struct proxy *p)
{
    struct pwrite *w = p->free_writes;
    if (w != NULL) {
        p->free_writes = w->next_free;
        p->nfree_writes--;
    } else {
        w = xmalloc(sizeof *w);
    }
    memset(w, 0, sizeof *w);
    w->p = p;
    w->req.data = w;
    return w;
}

static void pwrite_put(struct pwrite *w)
{
    struct proxy *p = w->p;
    buf_put(p, w->held);
    free(w->owned);
    if (p->nfree_writes < FREE_WRITES_MAX) {
        w->next_free = p->free_writes;
        p->free_writes = w;
        p->nfree_writes++;
        return;
    }
    free(w);
}

/* --- small helpers ----------------------------------------------------------------------- */

static uint64_t now_ms(const struct proxy *p)
{
    return uv_now(p->loop);
}

static bool name_eq(const char *name, size_t len, const char *lower)
{
    size_t n = strlen(lower);
    return len == n && strncasecmp(name, lower, n) == 0;
}

/* True when some Connection header (of `headers`) lists `name` (case-insensitive). */
static bool connection_lists(const struct http_header *headers, size_t n, const char *name,
                             size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (!name_eq(headers[i].name, headers[i].name_len, "connection"))
            continue;
        const char *v = headers[i].value;
        while (*v != '\0') {
            while (*v == ' ' || *v == '\t' || *v == ',')
                v++;
            const char *start = v;
            while (*v != '\0' && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if ((size_t)(v - start) == len && strncasecmp(start, name, len) == 0)
                return true;
        }
    }
    return false;
}

/* Hop-by-hop headers (RFC 9110 7.6.1) and the old ones proxies still see. */
static bool is_hop_by_hop(const char *name, size_t len)
{
    switch (len) {
    case 2:
        return name_eq(name, len, "te");
    case 7:
        return name_eq(name, len, "trailer") || name_eq(name, len, "upgrade");
    case 10:
        return name_eq(name, len, "connection") || name_eq(name, len, "keep-alive");
    case 16:
        return name_eq(name, len, "proxy-connection");
    case 17:
        return name_eq(name, len, "transfer-encoding");
    case 18:
        return name_eq(name, len, "proxy-authenticate");
    case 19:
        return name_eq(name, len, "proxy-authorization");
    default:
        return false;
    }
}

static bool any_connection_header(const struct http_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (name_eq(h[i].name, h[i].name_len, "connection"))
            return true;
    return false;
}

static bool method_idempotent(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_PUT ||
           m == HTTP_DELETE || m == HTTP_TRACE;
}

static void note_activity_rate(uint64_t now, uint64_t *last, void (*cb)(void *), void *data)
{
    if (cb == NULL)
        return;
    if (*last != 0 && now - *last < ACTIVITY_EVERY_MS)
        return;
    *last = now;
    cb(data);
}

/* --- pools --------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Parses "unix:/path" or "http://HOST:PORT" into `pool`. Returns 0 or -EINVAL. */
static int pool_parse(struct pool *pool, const char *upstream)
{
    memset(&pool->addr, 0, sizeof pool->addr);
    if (strncmp(upstream, "unix:", 5) == 0) {
        const char *path = upstream + 5;
        size_t n = strlen(path);
        if (n == 0 || path[0] != '/' || n >= sizeof pool->path)
            return -EINVAL;
        memcpy(pool->path, path, n + 1);
        pool->is_unix = true;
        return 0;
    }
    if (strncmp(upstream, "http://", 7) != 0)
        return -EINVAL;
    const char *hp = upstream + 7;
    char host[64];
    const char *port_s;
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - hp - 1) >= sizeof host)
            return -EINVAL;
        memcpy(host, hp + 1, (size_t)(close - hp - 1));
        host[close - hp - 1] = '\0';
        port_s = close + 2;
    } else {
        const char *colon = strrchr(hp, ':');
        if (colon == NULL || (size_t)(colon - hp) >= sizeof host)
            return -EINVAL;
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
        port_s = colon + 1;
    }
    char *end = NULL;
    long port = strtol(port_s, &end, 10);
    if (end == port_s || (*end != '\0' && strcmp(end, "/") != 0) || port < 1 || port > 65535)
        return -EINVAL;
    if (strchr(host, ':') != NULL) {
        if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&pool->addr) != 0)
            return -EINVAL;
    } else if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&pool->addr) != 0) {
        return -EINVAL;
    }
    pool->is_unix = false;
    return 0;
}

static void pool_grow(struct proxy *p)
{
    size_t n = p->nbuckets ? p->nbuckets * 2 : 64;
    struct pool **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < p->nbuckets; i++) {
        struct pool *pl = p->buckets[i];
        while (pl != NULL) {
            struct pool *next = pl->hnext;
            size_t k = hash_str(pl->key) & (n - 1);
            pl->hnext = b[k];
            b[k] = pl;
            pl = next;
        }
    }
    free(p->buckets);
    p->buckets = b;
    p->nbuckets = n;
}

/* Returns the pool for `upstream` with a reference taken, or NULL when it is malformed. */
static struct pool *pool_get(struct proxy *p, const char *upstream)
{
    if (p->nbuckets == 0 || p->npools >= p->nbuckets)
        pool_grow(p);
    size_t k = hash_str(upstream) & (p->nbuckets - 1);
    for (struct pool *pl = p->buckets[k]; pl != NULL; pl = pl->hnext) {
        if (strcmp(pl->key, upstream) == 0) {
            pl->refs++;
            return pl;
        }
    }
    struct pool *pl = xcalloc(1, sizeof *pl);
    pl->p = p;
    if (pool_parse(pl, upstream) != 0) {
        free(pl);
        return NULL;
    }
    pl->key = xstrdup(upstream);
    pl->hnext = p->buckets[k];
    p->buckets[k] = pl;
    p->npools++;
    pl->refs = 1;
    return pl;
}

static void pool_unref(struct proxy *p, struct pool *pl)
{
    if (pl == NULL || --pl->refs > 0)
        return;
    size_t k = hash_str(pl->key) & (p->nbuckets - 1);
    struct pool **pp = &p->buckets[k];
    while (*pp != pl)
        pp = &(*pp)->hnext;
    *pp = pl->hnext;
    p->npools--;
    free(pl->key);
    free(pl);
}

static void pool_idle_remove(struct upconn *up)
{
    struct pool *pl = up->pool;
    if (up->idle_prev != NULL)
        up->idle_prev->idle_next = up->idle_next;
    else
        pl->idle = up->idle_next;
    if (up->idle_next != NULL)
        up->idle_next->idle_prev = up->idle_prev;
    up->idle_prev = up->idle_next = NULL;
    pl->nidle--;
}

/* --- upstream connections ------------------------------------------------------------------ */

static void up_handle_closed(uv_handle_t *handle)
{
    struct upconn *up = handle->data;
    if (--up->open_handles > 0)
        return;
    struct proxy *p = up->p;
    if (up->prev != NULL)
        up->prev->next = up->next;
    else
        p->conns = up->next;
    if (up->next != NULL)
        up->next->prev = up->prev;
    p->nconns--;
    http_parse_free(up->parser);
    pool_unref(p, up->pool);
    up->magic = 0;
    free(up);
    proxy_maybe_done(p);
}

static void pool_kick_later(struct pool *pl);

/* A connection leaves the plain-exchange count (closing or becoming a tunnel): a waiting
 * request may now open one. */
static void up_uncount(struct upconn *up)
{
    if (!up->counted)
        return;
    up->counted = false;
    up->pool->nhttp--;
    pool_kick_later(up->pool);
}

/* Closes the connection; whoever used it has already let go (up->req, up->tunnel NULL). */
static void up_close(struct upconn *up)
{
    if (up->state == UP_CLOSING)
        return;
    if (up->state == UP_IDLE)
        pool_idle_remove(up);
    up->state = UP_CLOSING;
    up->req = NULL;
    up->tunnel = NULL;
    up_uncount(up);
    up_disarm(up);
    uv_timer_stop(&up->timer);
    /* Pending writes are cancelled; their callbacks run before the close callback. */
    uv_close(&up->io.handle, up_handle_closed);
    uv_close((uv_handle_t *)&up->timer, up_handle_closed);
}

static void up_timer_cb(uv_timer_t *timer);
static void up_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void up_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void up_read_start(struct upconn *up)
{
    if (!up->reading && uv_read_start(&up->io.stream, up_alloc_cb, up_read_cb) == 0)
        up->reading = true;
}

static void up_read_stop(struct upconn *up)
{
    if (up->reading) {
        uv_read_stop(&up->io.stream);
        up->reading = false;
    }
}

/* Phase deadlines are kept in up->deadline; the libuv timer is only restarted when it would
 * fire too late, and never stopped for a deadline that goes away (up_disarm): when it fires
 * it checks, and re-arms or does nothing. A pooled connection serving request after request
 * then touches the timer heap rarely instead of four times per request. */
static void up_arm(struct upconn *up, uint64_t ms)
{
    uint64_t now = uv_now(up->p->loop);
    up->deadline = now + ms;
    if (ms == 0) {
        uv_timer_start(&up->timer, up_timer_cb, 0, 0);
        return;
    }
    if (!uv_is_active((uv_handle_t *)&up->timer) || uv_timer_get_due_in(&up->timer) > ms)
        uv_timer_start(&up->timer, up_timer_cb, ms, 0);
}

static void up_disarm(struct upconn *up)
{
    up->deadline = 0;
}

static int up_on_head(void *data, struct http_head *head);
static int up_on_body(void *data, const char *chunk, size_t len);
static int up_on_complete(void *data);
static const struct http_parse_callbacks up_callbacks = {up_on_head, up_on_body, up_on_complete};

static struct upconn *up_new(struct proxy *p, struct pool *pool)
{
    struct upconn *up = xcalloc(1, sizeof *up);
    up->magic = UPCONN_MAGIC;
    up->p = p;
    up->pool = pool;
    pool->refs++;
    if (pool->is_unix)
        uv_pipe_init(p->loop, &up->io.pipe, 0);
    else
        uv_tcp_init(p->loop, &up->io.tcp);
    uv_timer_init(p->loop, &up->timer);
    up->io.handle.data = up;
    up->timer.data = up;
    up->open_handles = 2;
    up->parser = http_parse_new(HTTP_PARSE_RESPONSE, NULL, &up_callbacks, up);
    up->next = p->conns;
    if (p->conns != NULL)
        p->conns->prev = up;
    p->conns = up;
    p->nconns++;
    p->stats.connections++;
    return up;
}

/* Puts a connection whose exchange completed cleanly back into its pool, or closes it. */
static void up_release(struct upconn *up)
{
    struct proxy *p = up->p;
    struct pool *pl = up->pool;
    up->req = NULL;
    if (up->broken || p->closing ||
        (pl->nidle >= p->opt.keepalive_per_upstream && pl->wait_head == NULL) ||
        up->writes_pending > 0) {
        up_close(up);
        return;
    }
    up->state = UP_IDLE;
    up->reused = true;
    up->idle_prev = NULL;
    up->idle_next = pl->idle;
    if (pl->idle != NULL)
        pl->idle->idle_prev = up;
    pl->idle = up;
    pl->nidle++;
    /* Reading while idle notices the upstream closing (or misbehaving). */
    up_read_start(up);
    up_arm(up, POOL_IDLE_MS);
    pool_kick_later(pl);
}

/* --- client-facing answers ------------------------------------------------------------------ */

static void respond_page(struct http_exchange *ex, int status, const char *title, const char *text)
{
    struct http_response *res = &ex->res;
    struct buf body = BUF_INIT;
    buf_append_str(&body, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>");
    buf_append_html(&body, title);
    buf_append_str(&body, "</title></head>\n<body><h1>");
    buf_append_html(&body, title);
    buf_append_str(&body, "</h1>\n<p>");
    buf_append_html(&body, text);
    buf_append_str(&body, "</p>\n<p><a href=\"/hub/home\">Back to the hub</a></p></body></html>\n");
    buf_reset(&res->headers);
    http_response_set(res, status, "text/html; charset=utf-8", body.data, body.len);
    http_response_header(res, "Cache-Control", "no-store");
    http_response_header(res, "X-Content-Type-Options", "nosniff");
    if (status == 503)
        http_response_header(res, "Retry-After", "5");
    buf_free(&body);
    http_exchange_finish(ex);
}

static void respond_error(struct http_exchange *ex, int status)
{
    switch (status) {
    case 400:
        respond_page(ex, 400, "Bad request", "The request cannot be forwarded.");
        break;
    case 408:
        respond_page(ex, 408, "Request timeout", "The request body stopped arriving.");
        break;
    case 503:
        respond_page(ex, 503, "Service unavailable", "The hub is shutting down.");
        break;
    case 504:
        respond_page(ex, 504, "Your server is not responding",
                     "Your server did not answer in time. Try again in a moment.");
        break;
    default:
        respond_page(ex, status >= 400 && status <= 599 ? status : 502,
                     "Your server is not reachable",
                     "Your server could not be reached. It may be starting or stopping; "
                     "try again in a moment.");
        break;
    }
}

/* --- requests ------------------------------------------------------------------------------- */

static struct preq *preq_new(struct proxy *p)
{
    struct preq *r = p->free_reqs;
    struct buf head = BUF_INIT;
    if (r != NULL) {
        p->free_reqs = r->next_free;
        p->nfree_reqs--;
        head = r->head;
        buf_reset(&head);
    } else {
        r = xmalloc(sizeof *r);
    }
    memset(r, 0, sizeof *r);
    r->magic = PREQ_MAGIC;
    r->p = p;
    r->head = head;
    r->next = p->reqs;
    if (p->reqs != NULL)
        p->reqs->prev = r;
    p->reqs = r;
    return r;
}

/* --- waiting for a connection --------------------------------------------------------------- */

static void keeper_cb(uv_timer_t *timer);

/* Queues `r` until its pool has a connection to spare (see up_send). */
static void wait_push(struct preq *r)
{
    struct proxy *p = r->p;
    struct pool *pl = r->pool;
    r->waiting = true;
    r->wait_next = NULL;
    p->stats.waited++;
    r->wait_deadline = uv_now(p->loop) + p->opt.connect_timeout_ms;
    if (pl->wait_tail != NULL)
        pl->wait_tail->wait_next = r;
    else
        pl->wait_head = r;
    pl->wait_tail = r;
    if (p->nwaiting++ == 0)
        uv_timer_start(&p->keeper, keeper_cb, WAIT_SWEEP_MS, WAIT_SWEEP_MS);
}

/* Takes `r` out of its pool's queue (anywhere in it). */
static void wait_remove(struct preq *r)
{
    struct pool *pl = r->pool;
    struct preq *prev = NULL;
    for (struct preq *w = pl->wait_head; w != NULL; prev = w, w = w->wait_next) {
        if (w != r)
            continue;
        if (prev != NULL)
            prev->wait_next = r->wait_next;
        else
            pl->wait_head = r->wait_next;
        if (pl->wait_tail == r)
            pl->wait_tail = prev;
        break;
    }
    r->waiting = false;
    r->wait_next = NULL;
    if (--r->p->nwaiting == 0 && !r->p->closing && r->p->kicks == NULL)
        uv_timer_stop(&r->p->keeper);
}

/* A connection of `pl` came free (idle or closed): serve its waiters on the next loop
 * turn, never from inside the callback that freed it. */
static void pool_kick_later(struct pool *pl)
{
    struct proxy *p = pl->p;
    if (pl->wait_head == NULL || pl->kick_queued || p->closing)
        return;
    pl->kick_queued = true;
    pl->refs++;
    pl->kick_next = p->kicks;
    p->kicks = pl;
    uv_timer_start(&p->keeper, keeper_cb, 0, WAIT_SWEEP_MS);
}

/* Hands free connections of `pl` to its waiters, oldest first. */
static void pool_kick(struct pool *pl)
{
    struct proxy *p = pl->p;
    size_t max = p->opt.max_conns_per_upstream;
    while (pl->wait_head != NULL && (pl->idle != NULL || max == 0 || pl->nhttp < max)) {
        struct preq *r = pl->wait_head;
        wait_remove(r);
        up_dispatch(r);
    }
}

/* Answers 503 to every waiter whose time is up. */
static void wait_expire(struct proxy *p, uint64_t now)
{
    for (size_t i = 0; i < p->nbuckets; i++) {
        for (struct pool *pl = p->buckets[i]; pl != NULL; pl = pl->hnext) {
            while (pl->wait_head != NULL && pl->wait_head->wait_deadline <= now) {
                struct preq *r = pl->wait_head;
                wait_remove(r);
                p->stats.wait_timeouts++;
                log_event(LOG_WARN, "proxy.upstream_busy", "upstream", pl->key, (const char *)NULL);
                struct http_exchange *ex = r->ex;
                r->ex = NULL;
                preq_upstream_error(r, 503);
                respond_page(ex, 503, "Your server is busy",
                             "Your server has too many requests in progress. Try again in a "
                             "moment.");
                preq_maybe_free(r);
            }
        }
    }
}

static void keeper_cb(uv_timer_t *timer)
{
    struct proxy *p = timer->data;
    struct pool *kicks = p->kicks;
    p->kicks = NULL;
    while (kicks != NULL) {
        struct pool *pl = kicks;
        kicks = pl->kick_next;
        pl->kick_next = NULL;
        pl->kick_queued = false;
        pool_kick(pl);
        pool_unref(p, pl);
    }
    if (p->nwaiting > 0)
        wait_expire(p, uv_now(p->loop));
    if (p->nwaiting == 0 && p->kicks == NULL)
        uv_timer_stop(&p->keeper);
}

/* Frees the request when nothing refers to it any more. */
static void preq_maybe_free(struct preq *r)
{
    if (r->ex != NULL || r->up != NULL || r->client_writes > 0)
        return;
    struct proxy *p = r->p;
    if (r->waiting)
        wait_remove(r);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        p->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    buf_put(p, r->held);
    r->held = NULL;
    buf_free(&r->client_101);
    pool_unref(p, r->pool);
    r->magic = 0;
    if (p->nfree_reqs < FREE_REQS_MAX && r->head.cap <= 16384) {
        r->next_free = p->free_reqs;
        p->free_reqs = r;
        p->nfree_reqs++;
        proxy_maybe_done(p);
        return;
    }
    buf_free(&r->head);
    free(r);
    proxy_maybe_done(p);
}

/* Lets go of the upstream connection: back to the pool when `clean`, else closed. */
static void preq_detach(struct preq *r, bool clean)
{
    struct upconn *up = r->up;
    if (up == NULL)
        return;
    r->up = NULL;
    up->req = NULL;
    if (clean)
        up_release(up);
    else
        up_close(up);
}

static void preq_upstream_error(struct preq *r, int status)
{
    r->p->stats.upstream_errors++;
    if (r->on_upstream_error != NULL)
        r->on_upstream_error(r->activity_data, status);
}

/* The client went away while we held its exchange. */
static void preq_client_abort(void *data)
{
    struct preq *r = data;
    assert(r->magic == PREQ_MAGIC);
    struct http_exchange *ex = r->ex;
    r->ex = NULL;
    preq_detach(r, false);
    if (ex != NULL)
        http_exchange_end(ex, false);
    preq_maybe_free(r);
}

/* The upstream failed. Retries, answers with an error page, or cuts the response. */
static void preq_fail(struct preq *r, int status, bool retryable)
{
    struct upconn *up = r->up;
    bool was_reused = up != NULL && up->reused;
    preq_detach(r, false);
    if (r->ex == NULL) {
        preq_maybe_free(r);
        return;
    }
    if (retryable && was_reused && !r->retried && !r->resp_bytes && !r->has_body &&
        !r->body_started && method_idempotent(r->method) && !r->p->closing) {
        /* The pooled connection was closed by the upstream just as we used it. */
        r->retried = true;
        r->p->stats.retries++;
        up_send(r);
        return;
    }
    struct http_exchange *ex = r->ex;
    r->ex = NULL;
    preq_upstream_error(r, status);
    if (!r->resp_started) {
        log_event(LOG_INFO, "proxy.upstream_failed", "upstream", r->pool ? r->pool->key : NULL,
                  "status",
                  status == 504   ? "504"
                  : status == 503 ? "503"
                                  : "502",
                  (const char *)NULL);
        respond_error(ex, status);
    } else {
        http_exchange_abort(ex);
    }
    preq_maybe_free(r);
}

/* Starts the response timer once the whole request went upstream. */
static void preq_request_sent(struct preq *r)
{
    if (r->up != NULL && !r->resp_head)
        up_arm(r->up, r->p->opt.response_timeout_ms);
}

/* --- upstream writes ------------------------------------------------------------------------ */

/* The upstream stopped taking the request (it closed or reset its side). It may well have
 * answered first, typically an early 413 or 401 to a body it did not want, so keep
 * reading: a response that arrives is forwarded, an end without one is a 502. The rest of
 * the client's body is not read (the server closes that connection after the response). */
static void preq_write_failed(struct preq *r)
{
    struct upconn *up = r->up;
    if (up == NULL || up->write_failed)
        return;
    up->write_failed = true;
    up->broken = true;
    if (r->ex != NULL && !r->body_done && !r->body_paused) {
        r->body_paused = true;
        http_exchange_pause_body(r->ex);
    }
    if (!r->resp_head)
        up_arm(up, r->p->opt.response_timeout_ms);
}

static void up_write_cb(uv_write_t *req, int status)
{
    struct pwrite *w = req->data;
    struct upconn *up = w->up;
    pwrite_put(w);
    up->writes_pending--;
    if (up->state == UP_CLOSING)
        return;
    struct preq *r = up->req;
    if (status < 0) {
        if (r != NULL)
            preq_write_failed(r);
        else if (up->state == UP_TUNNEL && up->tunnel != NULL)
            tunnel_close(up->tunnel);
        else
            up_close(up);
        return;
    }
    if (r == NULL)
        return;
    if (!r->body_done && r->ex != NULL) {
        /* Time only the upstream's reading of the body; a slow client is the server's
         * body timeout's business. */
        if (uv_stream_get_write_queue_size(&up->io.stream) > 0)
            up_arm(up, r->p->opt.body_timeout_ms);
        else
            up_disarm(up);
        if (r->body_paused && !up->write_failed &&
            uv_stream_get_write_queue_size(&up->io.stream) < UPSTREAM_QUEUE_HIGH) {
            r->body_paused = false;
            http_exchange_resume_body(r->ex);
        }
    }
}

/* Writes bufs to the upstream: what the kernel takes now, and a copy of the rest. Returns
 * 0 or a negative libuv error. */
static int up_write(struct upconn *up, uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    size_t done = 0;
    if (uv_stream_get_write_queue_size(&up->io.stream) == 0 && up->writes_pending == 0) {
        int k = uv_try_write(&up->io.stream, bufs, n);
        if (k >= 0)
            done = (size_t)k;
        else if (k != UV_EAGAIN)
            return k;
    }
    if (done == total)
        return 0;
    struct pwrite *w = pwrite_get(up->p);
    w->up = up;
    w->owned = xmalloc(total - done);
    size_t off = 0, skip = done;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        const char *base = bufs[i].base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(w->owned + off, base + skip, len - skip);
        off += len - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(w->owned, (unsigned)off);
    int rc = uv_write(&w->req, &up->io.stream, &b, 1, up_write_cb);
    if (rc != 0) {
        pwrite_put(w);
        return rc;
    }
    up->writes_pending++;
    return 0;
}

/* --- client body --------------------------------------------------------------------------- */

static void client_body_data(void *data, const char *bytes, size_t len)
{
    struct preq *r = data;
    struct upconn *up = r->up;
    if (up == NULL || len == 0 || up->write_failed)
        return;
    uv_buf_t bufs[3];
    unsigned n = 0;
    char chunk[24];
    if (r->chunked_body) {
        int k = snprintf(chunk, sizeof chunk, "%zx\r\n", len);
        bufs[n++] = uv_buf_init(chunk, (unsigned)k);
        bufs[n++] = uv_buf_init((char *)bytes, (unsigned)len);
        bufs[n++] = uv_buf_init((char *)"\r\n", 2);
    } else {
        bufs[n++] = uv_buf_init((char *)bytes, (unsigned)len);
    }
    r->body_started = true;
    r->p->stats.bytes_up += len;
    if (up_write(up, bufs, n) != 0) {
        preq_write_failed(r);
        return;
    }
    if (uv_stream_get_write_queue_size(&up->io.stream) > 0)
        up_arm(up, r->p->opt.body_timeout_ms);
    if (!r->body_paused && uv_stream_get_write_queue_size(&up->io.stream) >= UPSTREAM_QUEUE_HIGH) {
        r->body_paused = true;
        http_exchange_pause_body(r->ex);
    }
}

static void client_body_end(void *data, int status)
{
    struct preq *r = data;
    if (status != 0) {
        /* The client's body broke off: the upstream request cannot be completed. */
        preq_detach(r, false);
        struct http_exchange *ex = r->ex;
        if (ex != NULL) {
            r->ex = NULL;
            if (!r->resp_started)
                respond_error(ex, status);
            else
                http_exchange_abort(ex);
        }
        preq_maybe_free(r);
        return;
    }
    r->body_done = true;
    if (r->up != NULL && r->chunked_body && !r->up->write_failed) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        if (up_write(r->up, &b, 1) != 0) {
            preq_write_failed(r);
            return;
        }
    }
    preq_request_sent(r);
}

/* --- sending --------------------------------------------------------------------------------- */

/* The connection is ready: send the head, then the body as it comes. */
static void preq_start_on(struct preq *r, struct upconn *up)
{
    r->up = up;
    up->req = r;
    up->state = UP_BUSY;
    up->broken = false;
    http_parse_set_request_method(up->parser, r->method);
    uv_buf_t b = uv_buf_init(r->head.data, (unsigned)r->head.len);
    r->p->stats.bytes_up += r->head.len;
    up->write_failed = false;
    up_read_start(up);
    if (up_write(up, &b, 1) != 0) {
        /* A pooled connection the upstream has just closed: retried if it may be. */
        preq_fail(r, 502, true);
        return;
    }
    if (!r->has_body) {
        r->body_done = true;
        if (!r->body_reading) {
            r->body_reading = true;
            /* No body: this only completes the server's view of the request (on_end at
             * once), so that the connection can go on after the response. */
            http_exchange_read_body(r->ex, client_body_data, client_body_end, r);
        }
        preq_request_sent(r);
        return;
    }
    up_disarm(up);
    if (!r->body_reading) {
        r->body_reading = true;
        http_exchange_read_body(r->ex, client_body_data, client_body_end, r);
    }
}

static void up_connect_cb(uv_connect_t *req, int status)
{
    struct upconn *up = req->data;
    if (up->state == UP_CLOSING)
        return;
    struct preq *r = up->req;
    up_disarm(up);
    if (status < 0) {
        if (r != NULL) {
            log_event(LOG_INFO, "proxy.connect_failed", "upstream", up->pool->key, "error",
                      uv_strerror(status), (const char *)NULL);
            preq_fail(r, 502, false);
        } else {
            up_close(up);
        }
        return;
    }
    if (r == NULL) {
        up_close(up);
        return;
    }
    if (!up->pool->is_unix)
        uv_tcp_nodelay(&up->io.tcp, 1);
    preq_start_on(r, up);
}

/* Gets a connection for `r`: a pooled one unless this is a retry, else a new one, else
 * (at the cap) a place in the queue. */
static void up_dispatch(struct preq *r)
{
    struct proxy *p = r->p;
    struct pool *pl = r->pool;
    if (!r->retried && pl->idle != NULL) {
        struct upconn *up = pl->idle;
        pool_idle_remove(up);
        up_disarm(up);
        p->stats.reused++;
        preq_start_on(r, up);
        return;
    }
    /* At the cap, wait for a connection to come free rather than overflow the upstream's
     * listen backlog (a Unix socket refuses with EAGAIN then). A retry replaces the
     * connection it lost, so it does not wait. */
    size_t max = p->opt.max_conns_per_upstream;
    if (!r->retried && max > 0 && pl->nhttp >= max) {
        wait_push(r);
        return;
    }
    struct upconn *up = up_new(p, pl);
    up->counted = true;
    pl->nhttp++;
    up->state = UP_CONNECTING;
    up->req = r;
    r->up = up;
    up->connect_req.data = up;
    up_arm(up, p->opt.connect_timeout_ms);
    if (pl->is_unix) {
        uv_pipe_connect(&up->connect_req, &up->io.pipe, pl->path, up_connect_cb);
        return;
    }
    int rc =
        uv_tcp_connect(&up->connect_req, &up->io.tcp, (struct sockaddr *)&pl->addr, up_connect_cb);
    if (rc != 0) {
        /* The connect callback will not run: fail once we are out of this call chain. */
        up->connect_failed = true;
        up_arm(up, 0);
    }
}

/* Sends `r` upstream, behind any requests already waiting for this upstream: a newcomer
 * never takes a connection that came free from under the oldest waiter. */
static void up_send(struct preq *r)
{
    if (!r->retried && r->pool->wait_head != NULL) {
        wait_push(r);
        return;
    }
    up_dispatch(r);
}

/* --- upstream responses --------------------------------------------------------------------- */

static void client_written(void *data)
{
    struct preq *r = data;
    assert(r->magic == PREQ_MAGIC);
    r->client_writes--;
    if (r->client_writes > 0)
        return;
    if (r->held != NULL) {
        buf_put(r->p, r->held);
        r->held = NULL;
        struct upconn *up = r->up;
        if (up != NULL && up->state == UP_BUSY) {
            up_read_start(up);
            up_arm(up, r->p->opt.body_timeout_ms);
        }
    }
    preq_maybe_free(r);
}

/* Appends the upstream's response headers that may pass to `out`. */
static void filter_response_headers(const struct http_head *head, struct buf *out)
{
    bool has_conn = any_connection_header(head->headers, head->nheaders);
    for (size_t i = 0; i < head->nheaders; i++) {
        const struct http_header *h = &head->headers[i];
        if (is_hop_by_hop(h->name, h->name_len) ||
            name_eq(h->name, h->name_len, "content-length") ||
            name_eq(h->name, h->name_len, "date"))
            continue;
        if (has_conn && connection_lists(head->headers, head->nheaders, h->name, h->name_len))
            continue;
        buf_append(out, h->name, h->name_len);
        buf_append(out, ": ", 2);
        buf_append(out, h->value, h->value_len);
        buf_append(out, "\r\n", 2);
    }
}

static int up_on_head(void *data, struct http_head *head)
{
    struct upconn *up = data;
    struct preq *r = up->req;
    if (r == NULL || r->ex == NULL)
        return 2;
    if (head->status == 101) {
        if (!r->websocket)
            return 2; /* a 101 nobody asked for */
        r->switching = true;
        r->resp_head = true;
        struct buf *b = &r->client_101;
        buf_reset(b);
        buf_append_str(b, "HTTP/1.1 101 Switching Protocols\r\n");
        filter_response_headers(head, b);
        buf_append_str(b, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        return 0;
    }
    if (head->status < 200)
        return 0; /* 100 Continue and other interim answers: the server spoke for itself */
    r->resp_head = true;
    r->up_keepalive = head->keep_alive;
    struct proxy *p = r->p;
    buf_reset(&p->scratch);
    filter_response_headers(head, &p->scratch);
    int64_t length = head->chunked || head->body_until_close ? -1 : head->content_length;
    if (http_exchange_write_head(r->ex, head->status, &p->scratch, length) != 0) {
        r->client_failed = true;
        return 2;
    }
    r->resp_started = true;
    up_arm(up, p->opt.body_timeout_ms);
    return 0;
}

static int up_on_body(void *data, const char *chunk, size_t len)
{
    struct upconn *up = data;
    struct preq *r = up->req;
    if (r == NULL || r->ex == NULL)
        return 2;
    if (http_exchange_write_body(r->ex, chunk, len, client_written, r) != 0) {
        r->client_failed = true;
        return 2;
    }
    r->client_writes++;
    return 0;
}

static int up_on_complete(void *data)
{
    struct upconn *up = data;
    struct preq *r = up->req;
    if (r == NULL)
        return 2;
    /* After an interim response (no resp_head yet) the final one follows. */
    if (r->resp_head)
        r->resp_complete = true;
    return 0;
}

static void tunnel_start(struct preq *r, const char *extra, size_t extra_len);

/* The response ended cleanly (parser complete). */
static void preq_response_done(struct preq *r, bool leftover)
{
    struct upconn *up = r->up;
    struct http_exchange *ex = r->ex;
    r->ex = NULL;
    if (up != NULL) {
        up->broken = up->broken || leftover || !r->up_keepalive || !r->body_done;
        up_disarm(up);
        preq_detach(r, true);
    }
    if (ex != NULL)
        http_exchange_end(ex, true);
    preq_maybe_free(r);
}

static void up_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct upconn *up = handle->data;
    *buf = uv_buf_init(buf_get(up->p), BUF_SIZE);
}

/* Upstream bytes while a request is in flight. */
static void up_read_busy(struct upconn *up, char *base, size_t n)
{
    struct preq *r = up->req;
    struct proxy *p = up->p;
    r->resp_bytes = true;
    p->stats.bytes_down += n;
    size_t off = 0;
    bool done = false;
    unsigned writes_before = r->client_writes;
    while (off < n) {
        bool had_head = r->resp_head;
        ssize_t k = http_parse_feed(up->parser, base + off, n - off);
        if (k < 0) {
            buf_put(p, base);
            if (r->client_failed) {
                /* The client is gone: cut what is left. */
                struct http_exchange *ex = r->ex;
                r->ex = NULL;
                preq_detach(r, false);
                if (ex != NULL)
                    http_exchange_abort(ex);
                preq_maybe_free(r);
                return;
            }
            log_event(LOG_INFO, "proxy.bad_response", "upstream", up->pool->key, "reason",
                      http_parse_error_reason(up->parser), (const char *)NULL);
            preq_fail(r, 502, false);
            return;
        }
        off += (size_t)k;
        if (r->switching) {
            /* What follows the 101 belongs to the tunnel. */
            tunnel_start(r, base + off, n - off);
            buf_put(p, base);
            return;
        }
        if (r->resp_complete) {
            done = true;
            break;
        }
        if (k == 0 && had_head == r->resp_head)
            break;
    }
    /* Were this read's bytes all taken by the kernel? Then the buffer is free again. */
    bool referenced = r->client_writes > writes_before && r->ex != NULL &&
                      http_exchange_write_queue_size(r->ex) > 0;
    if (referenced) {
        r->held = base;
        if (!done) {
            /* The client's write timeout covers the wait; the upstream is not late. */
            up_read_stop(up);
            up_disarm(up);
            return;
        }
    } else {
        buf_put(p, base);
    }
    if (done) {
        preq_response_done(r, off < n);
        return;
    }
    if (r->resp_started)
        up_arm(up, p->opt.body_timeout_ms);
}

static void up_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct upconn *up = stream->data;
    assert(up->magic == UPCONN_MAGIC);
    struct proxy *p = up->p;
    if (nread == 0) {
        buf_put(p, buf->base);
        return;
    }
    if (up->state == UP_IDLE || up->state == UP_CLOSING || up->req == NULL) {
        /* An idle connection that closes or talks out of turn is done. */
        buf_put(p, buf->base);
        if (up->state != UP_CLOSING)
            up_close(up);
        return;
    }
    struct preq *r = up->req;
    if (nread < 0) {
        buf_put(p, buf->base);
        /* Only a body framed by the connection closing may end here. */
        if (r->resp_head && !r->switching && http_parse_finish(up->parser) == 0 &&
            r->resp_complete) {
            up->broken = true;
            preq_response_done(r, false);
            return;
        }
        preq_fail(r, 502, !r->resp_bytes);
        return;
    }
    up_read_busy(up, buf->base, (size_t)nread);
}

static void up_timer_cb(uv_timer_t *timer)
{
    struct upconn *up = timer->data;
    if (up->deadline == 0)
        return;
    uint64_t now = uv_now(up->p->loop);
    if (now < up->deadline) {
        uv_timer_start(timer, up_timer_cb, up->deadline - now, 0);
        return;
    }
    up->deadline = 0;
    switch (up->state) {
    case UP_IDLE:
        up_close(up);
        break;
    case UP_CONNECTING:
        if (up->req != NULL) {
            log_event(LOG_INFO, "proxy.connect_timeout", "upstream", up->pool->key,
                      (const char *)NULL);
            /* A connect that failed synchronously lands here with no time elapsed. */
            preq_fail(up->req, up->connect_failed ? 502 : 504, false);
        } else {
            up_close(up);
        }
        break;
    case UP_BUSY: {
        struct preq *r = up->req;
        if (r == NULL) {
            up_close(up);
            break;
        }
        log_event(LOG_INFO, "proxy.upstream_timeout", "upstream", up->pool->key, "phase",
                  !r->body_done   ? "request"
                  : !r->resp_head ? "response"
                                  : "body",
                  (const char *)NULL);
        preq_fail(r, 504, false);
        break;
    }
    case UP_TUNNEL:
    case UP_CLOSING:
        break;
    }
}

/* --- the request head --------------------------------------------------------------------- */

/* Writes the path to forward into `out`: the raw path with strip_prefix removed, the
 * query kept. Returns 0 or -EINVAL when the raw path does not start with the prefix. */
static int forward_target(const char *target, const char *prefix, struct buf *out)
{
    const char *q = strchr(target, '?');
    size_t path_len = q ? (size_t)(q - target) : strlen(target);
    const char *path = target;
    if (prefix != NULL && prefix[0] != '\0') {
        size_t plen = strlen(prefix);
        if (path_len < plen || strncmp(path, prefix, plen) != 0)
            return -EINVAL;
        path += plen;
        path_len -= plen;
        if (path_len > 0 && path[0] != '/')
            return -EINVAL; /* "/user/annx" is not under "/user/ann" */
    }
    if (path_len == 0 || path[0] != '/') {
        buf_append_char(out, '/');
    } else {
        /* "//evil.example/x" would read as an authority to some URL parsers. */
        while (path_len > 1 && path[1] == '/') {
            path++;
            path_len--;
        }
    }
    buf_append(out, path, path_len);
    if (q != NULL)
        buf_append_str(out, q);
    return 0;
}

static bool is_forwarded_header(const char *name, size_t len)
{
    return (len > 12 && strncasecmp(name, "x-forwarded-", 12) == 0) ||
           name_eq(name, len, "forwarded") || name_eq(name, len, "x-real-ip");
}

/* Builds the upstream request head. Returns 0 or -EINVAL (bad path). */
static int build_head(struct preq *r, const struct http_request *req, const struct proxy_target *t)
{
    struct buf *h = &r->head;
    buf_reset(h);
    buf_append_str(h, req->method_name);
    buf_append_char(h, ' ');
    if (forward_target(req->target, t->strip_prefix, h) != 0)
        return -EINVAL;
    buf_append_str(h, " HTTP/1.1\r\n");
    if (http_request_header(req, "Host") == NULL) {
        /* Only HTTP/1.0 may come without one; HTTP/1.1 upstream requires it. */
        buf_append_str(h, "Host: ");
        buf_append_str(h, t->forwarded_host != NULL ? t->forwarded_host : "localhost");
        buf_append(h, "\r\n", 2);
    }
    bool has_conn = any_connection_header(req->headers, req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *f = &req->headers[i];
        const char *name = f->name;
        size_t len = f->name_len;
        if (is_hop_by_hop(name, len) || name_eq(name, len, "authorization") ||
            is_forwarded_header(name, len) || name_eq(name, len, "expect"))
            continue;
        if (r->websocket && name_eq(name, len, "sec-websocket-extensions"))
            continue; /* no compression: the activity scanner must read the frames */
        if (has_conn && connection_lists(req->headers, req->nheaders, name, len))
            continue;
        if (name_eq(name, len, "cookie") && t->drop_cookie != NULL) {
            char *kept = http_cookie_strip(f->value, f->value_len, t->drop_cookie, t->cookie_data);
            if (kept != NULL) {
                buf_append_str(h, "Cookie: ");
                buf_append_str(h, kept);
                buf_append(h, "\r\n", 2);
                free(kept);
            }
            continue;
        }
        buf_append(h, name, len);
        buf_append(h, ": ", 2);
        buf_append(h, f->value, f->value_len);
        buf_append(h, "\r\n", 2);
    }
    if (t->forwarded_for != NULL) {
        buf_append_str(h, "X-Forwarded-For: ");
        buf_append_str(h, t->forwarded_for);
        buf_append(h, "\r\n", 2);
    }
    if (t->forwarded_proto != NULL) {
        buf_append_str(h, "X-Forwarded-Proto: ");
        buf_append_str(h, t->forwarded_proto);
        buf_append(h, "\r\n", 2);
    }
    if (t->forwarded_host != NULL) {
        buf_append_str(h, "X-Forwarded-Host: ");
        buf_append_str(h, t->forwarded_host);
        buf_append(h, "\r\n", 2);
    }
    if (r->websocket)
        buf_append_str(h, "Connection: Upgrade\r\nUpgrade: websocket\r\n");
    if (r->chunked_body)
        buf_append_str(h, "Transfer-Encoding: chunked\r\n");
    buf_append(h, "\r\n", 2);
    return 0;
}

/* The values come from the hub, but a CR or LF in them would split the head. */
static bool target_text_ok(const char *s)
{
    return s == NULL || strpbrk(s, "\r\n") == NULL;
}

/* Requests that a browser makes by itself, with nobody at the keyboard. */
static bool request_is_background(const struct http_request *req)
{
    const char *q = strchr(req->target, '?');
    size_t n = q ? (size_t)(q - req->target) : strlen(req->target);
    static const char *const tails[] = {"/healthz", "/serviceWorker.js"};
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        size_t k = strlen(tails[i]);
        if (n >= k && memcmp(req->target + n - k, tails[i], k) == 0)
            return true;
    }
    return false;
}

void proxy_forward(struct proxy *p, struct http_exchange *ex, const struct proxy_target *t)
{
    assert(p->magic == PROXY_MAGIC);
    const struct http_request *req = &ex->req;
    p->stats.requests++;
    if (p->closing) {
        respond_error(ex, 503);
        return;
    }
    struct preq *r = preq_new(p);
    r->ex = ex;
    r->srv = ex->server;
    r->method = req->method;
    r->on_activity = t->on_activity;
    r->activity_data = t->activity_data;
    r->on_upstream_error = t->on_upstream_error;
    r->chunked_body = req->chunked;
    r->has_body = req->chunked || req->content_length > 0;

    int status = 0;
    if (req->upgrade && http_request_header(req, "Upgrade") != NULL) {
        const char *why = NULL;
        const char *up = http_request_header(req, "Upgrade");
        if (strcasestr(up, "websocket") != NULL) {
            status = websocket_handshake_check(req, &why);
            r->websocket = status == 0;
            if (status != 0)
                log_event(LOG_INFO, "proxy.bad_websocket", "reason", why, (const char *)NULL);
        }
    }
    if (status == 0 && (!target_text_ok(t->forwarded_for) || !target_text_ok(t->forwarded_proto) ||
                        !target_text_ok(t->forwarded_host)))
        status = 502;
    if (status == 0 && build_head(r, req, t) != 0)
        status = 400;
    if (status == 0) {
        r->pool = t->upstream != NULL ? pool_get(p, t->upstream) : NULL;
        if (r->pool == NULL) {
            log_event(LOG_ERROR, "proxy.bad_upstream", "upstream", t->upstream, (const char *)NULL);
            status = 502;
        }
    }
    if (status != 0) {
        r->ex = NULL;
        if (status == 502)
            preq_upstream_error(r, 502);
        respond_error(ex, status);
        preq_maybe_free(r);
        return;
    }
    if (!r->websocket && !request_is_background(req))
        note_activity_rate(now_ms(p), &r->pool->last_activity_ms, r->on_activity, r->activity_data);
    http_exchange_on_abort(ex, preq_client_abort, r);
    up_send(r);
}

/* --- tunnels ---------------------------------------------------------------------------- */

static void tunnel_maybe_free(struct tunnel *t)
{
    if (!t->client_closed || !t->up_closed || t->writes_pending > 0)
        return;
    struct proxy *p = t->p;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        p->tunnels = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    p->ntunnels--;
    p->stats.websockets_open--;
    http_server_tunnel_remove(&t->entry);
    t->magic = 0;
    free(t);
    proxy_maybe_done(p);
}

static void tunnel_client_closed(uv_handle_t *handle)
{
    struct tunnel *t = handle->data;
    free(handle);
    t->client = NULL;
    t->client_closed = true;
    tunnel_maybe_free(t);
}

static void tunnel_close(struct tunnel *t)
{
    if (t->closing)
        return;
    t->closing = true;
    if (t->client != NULL)
        uv_close((uv_handle_t *)t->client, tunnel_client_closed);
    struct upconn *up = t->up;
    if (up != NULL) {
        t->up = NULL;
        up->tunnel = NULL;
        up_close(up);
    }
    t->up_closed = true;
    tunnel_maybe_free(t);
}

static void tunnel_server_close(struct http_tunnel *entry)
{
    struct tunnel *t = (struct tunnel *)((char *)entry - offsetof(struct tunnel, entry));
    assert(t->magic == TUNNEL_MAGIC);
    tunnel_close(t);
}

static void tunnel_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* The client handle's data is the tunnel, the upstream's the upconn; both structs start
 * with their magic number. */
static struct proxy *handle_proxy(const uv_handle_t *handle)
{
    const uint32_t *magic = handle->data;
    if (*magic == UPCONN_MAGIC)
        return ((const struct upconn *)handle->data)->p;
    assert(*magic == TUNNEL_MAGIC);
    return ((const struct tunnel *)handle->data)->p;
}

static void tunnel_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(buf_get(handle_proxy(handle)), BUF_SIZE);
}

static void tunnel_dir_start(struct tunnel_dir *d)
{
    if (!d->reading && !d->t->closing &&
        uv_read_start(d->from, tunnel_alloc_cb, tunnel_read_cb) == 0)
        d->reading = true;
}

static void tunnel_dir_stop(struct tunnel_dir *d)
{
    if (d->reading) {
        uv_read_stop(d->from);
        d->reading = false;
    }
}

static void tunnel_write_cb(uv_write_t *req, int status)
{
    struct pwrite *w = req->data;
    struct tunnel_dir *d = w->dir;
    struct tunnel *t = d->t;
    bool was_holding = w->held != NULL;
    pwrite_put(w);
    t->writes_pending--;
    if (t->closing) {
        tunnel_maybe_free(t);
        return;
    }
    if (status < 0) {
        tunnel_close(t);
        return;
    }
    if (was_holding)
        tunnel_dir_start(d);
}

/* Writes bytes of `d`'s direction to its destination. `held` is a read buffer to keep
 * until written (or NULL), `owned` a copy to free afterwards (or NULL). */
static int tunnel_write(struct tunnel_dir *d, char *base, size_t len, char *held, char *owned)
{
    struct tunnel *t = d->t;
    struct pwrite *w = pwrite_get(t->p);
    w->dir = d;
    w->owned = owned;
    uv_buf_t b = uv_buf_init(base, (unsigned)len);
    int rc = uv_write(&w->req, d->to, &b, 1, tunnel_write_cb);
    if (rc != 0) {
        w->owned = NULL;
        pwrite_put(w);
        free(owned);
        buf_put(t->p, held);
        return rc;
    }
    t->writes_pending++;
    if (held != NULL) {
        /* Bytes still queued point into the read buffer: keep it, and read no more from
         * this side until they are out. */
        if (uv_stream_get_write_queue_size(d->to) > 0) {
            w->held = held;
            tunnel_dir_stop(d);
        } else {
            buf_put(t->p, held);
        }
    }
    return 0;
}

static void tunnel_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    const uint32_t *magic = stream->data;
    struct tunnel *t = *magic == UPCONN_MAGIC ? ((struct upconn *)stream->data)->tunnel
                                              : (struct tunnel *)stream->data;
    if (t == NULL || t->closing) {
        buf_put(handle_proxy((uv_handle_t *)stream), buf->base);
        return;
    }
    struct proxy *p = t->p;
    if (nread == 0) {
        buf_put(p, buf->base);
        return;
    }
    if (nread < 0) {
        buf_put(p, buf->base);
        tunnel_close(t);
        return;
    }
    struct tunnel_dir *d = stream == (uv_stream_t *)t->client ? &t->c2s : &t->s2c;
    t->last_io_ms = now_ms(p);
    if (d->c2s) {
        p->stats.bytes_up += (uint64_t)nread;
        if (websocket_activity_feed(&t->activity, buf->base, (size_t)nread) > 0)
            note_activity_rate(t->last_io_ms, &t->last_activity_ms, t->on_activity,
                               t->activity_data);
    } else {
        p->stats.bytes_down += (uint64_t)nread;
    }
    if (tunnel_write(d, buf->base, (size_t)nread, buf->base, NULL) != 0)
        tunnel_close(t);
}

static void tunnel_timer_cb(uv_timer_t *timer)
{
    struct upconn *up = timer->data;
    struct tunnel *t = up->tunnel;
    if (t == NULL || t->closing)
        return;
    uint64_t now = now_ms(t->p);
    uint64_t due = t->last_io_ms + t->p->opt.websocket_timeout_ms;
    if (now >= due) {
        log_event(LOG_INFO, "proxy.websocket_timeout", "upstream", up->pool->key,
                  (const char *)NULL);
        tunnel_close(t);
        return;
    }
    uv_timer_start(timer, tunnel_timer_cb, due - now, 0);
}

/* The upstream said 101: hand the client socket and the upstream connection to a tunnel.
 * extra[0..extra_len) are upstream bytes that came after the 101 head. */
static void tunnel_start(struct preq *r, const char *extra, size_t extra_len)
{
    struct proxy *p = r->p;
    struct upconn *up = r->up;
    struct http_exchange *ex = r->ex;
    struct http_server *srv = r->srv;
    uv_stream_t *client = NULL;
    struct buf leftover = BUF_INIT;
    up_disarm(up);
    uv_timer_stop(&up->timer);
    up_read_stop(up);
    int rc = http_exchange_upgrade(ex, &client, &leftover);
    if (rc != 0) {
        buf_free(&leftover);
        /* The client is gone (its abort callback will come) or cannot be upgraded. */
        if (rc == -ECONNRESET) {
            preq_detach(r, false);
            return;
        }
        preq_fail(r, 502, false);
        return;
    }
    r->ex = NULL;
    r->up = NULL;

    struct tunnel *t = xcalloc(1, sizeof *t);
    t->magic = TUNNEL_MAGIC;
    t->p = p;
    t->client = (uv_tcp_t *)client;
    client->data = t;
    t->up = up;
    up->req = NULL;
    up->tunnel = t;
    up->state = UP_TUNNEL;
    up_uncount(up);
    up->broken = true;
    /* A tunnel only moves bytes: the response parser (with the 101's head in its buffer)
     * is dead weight for the rest of a long-lived WebSocket. Not inside the parser here. */
    http_parse_free(up->parser);
    up->parser = NULL;
    t->on_activity = r->on_activity;
    t->activity_data = r->activity_data;
    t->c2s = (struct tunnel_dir){t, client, &up->io.stream, true, false, false};
    t->s2c = (struct tunnel_dir){t, &up->io.stream, client, false, false, false};
    websocket_activity_init(&t->activity);
    t->last_io_ms = now_ms(p);
    t->next = p->tunnels;
    if (p->tunnels != NULL)
        p->tunnels->prev = t;
    p->tunnels = t;
    p->ntunnels++;
    p->stats.websockets_open++;
    t->entry.close_cb = tunnel_server_close;

    /* The 101 first, then what the upstream already sent after it. */
    struct buf first = r->client_101;
    r->client_101 = (struct buf)BUF_INIT;
    buf_append(&first, extra, extra_len);
    p->stats.bytes_down += extra_len;
    rc = tunnel_write(&t->s2c, first.data, first.len, NULL, first.data);
    if (rc == 0 && leftover.len > 0) {
        p->stats.bytes_up += leftover.len;
        if (websocket_activity_feed(&t->activity, leftover.data, leftover.len) > 0)
            note_activity_rate(t->last_io_ms, &t->last_activity_ms, t->on_activity,
                               t->activity_data);
        rc = tunnel_write(&t->c2s, leftover.data, leftover.len, NULL, leftover.data);
    } else {
        buf_free(&leftover);
    }
    preq_maybe_free(r);
    http_server_tunnel_add(srv, &t->entry);
    if (rc != 0) {
        tunnel_close(t);
        return;
    }
    if (t->closing)
        return;
    tunnel_dir_start(&t->c2s);
    tunnel_dir_start(&t->s2c);
    uv_timer_start(&up->timer, tunnel_timer_cb, p->opt.websocket_timeout_ms, 0);
}

/* --- the proxy ---------------------------------------------------------------------------- */

struct proxy *proxy_new(uv_loop_t *loop, const struct proxy_options *opt)
{
    struct proxy *p = xcalloc(1, sizeof *p);
    p->magic = PROXY_MAGIC;
    p->loop = loop;
    p->opt = *opt;
    if (p->opt.connect_timeout_ms == 0)
        p->opt.connect_timeout_ms = DEFAULT_CONNECT_MS;
    if (p->opt.response_timeout_ms == 0)
        p->opt.response_timeout_ms = DEFAULT_RESPONSE_MS;
    if (p->opt.websocket_timeout_ms == 0)
        p->opt.websocket_timeout_ms = DEFAULT_WEBSOCKET_MS;
    if (p->opt.body_timeout_ms == 0)
        p->opt.body_timeout_ms = DEFAULT_BODY_MS;
    p->free_bufs = xcalloc(FREE_BUFS_MAX, sizeof *p->free_bufs);
    uv_timer_init(loop, &p->keeper);
    p->keeper.data = p;
    return p;
}

const struct proxy_stats *proxy_stats(const struct proxy *p)
{
    return &p->stats;
}

static void proxy_maybe_done(struct proxy *p)
{
    if (!p->closing || !p->keeper_closed || p->nconns > 0 || p->ntunnels > 0 || p->reqs != NULL)
        return;
    if (p->magic != PROXY_MAGIC)
        return; /* already done: a callback below re-entered */
    p->magic = 0;
    if (p->close_done != NULL)
        p->close_done(p->close_data);
    while (p->nfree_bufs > 0)
        free(p->free_bufs[--p->nfree_bufs]);
    free(p->free_bufs);
    while (p->free_reqs != NULL) {
        struct preq *r = p->free_reqs;
        p->free_reqs = r->next_free;
        buf_free(&r->head);
        free(r);
    }
    while (p->free_writes != NULL) {
        struct pwrite *w = p->free_writes;
        p->free_writes = w->next_free;
        free(w);
    }
    buf_free(&p->scratch);
    free(p->buckets);
    free(p);
}

static void keeper_closed(uv_handle_t *handle)
{
    struct proxy *p = handle->data;
    p->keeper_closed = true;
    proxy_maybe_done(p);
}

void proxy_close(struct proxy *p, void (*done)(void *), void *data)
{
    assert(p->magic == PROXY_MAGIC);
    if (p->closing)
        return;
    p->closing = true;
    p->close_done = done;
    p->close_data = data;
    /* Requests first: their connections close with them. */
    struct preq *r = p->reqs;
    while (r != NULL) {
        struct preq *next = r->next;
        if (r->ex != NULL) {
            struct http_exchange *ex = r->ex;
            r->ex = NULL;
            preq_detach(r, false);
            if (!r->resp_started)
                respond_error(ex, 503);
            else
                http_exchange_abort(ex);
        } else {
            preq_detach(r, false);
        }
        preq_maybe_free(r);
        r = next;
    }
    struct tunnel *t = p->tunnels;
    while (t != NULL) {
        struct tunnel *next = t->next;
        tunnel_close(t);
        t = next;
    }
    struct upconn *up = p->conns;
    while (up != NULL) {
        struct upconn *next = up->next;
        up_close(up);
        up = next;
    }
    while (p->kicks != NULL) {
        struct pool *pl = p->kicks;
        p->kicks = pl->kick_next;
        pl->kick_next = NULL;
        pl->kick_queued = false;
        pool_unref(p, pl);
    }
    uv_close((uv_handle_t *)&p->keeper, keeper_closed);
}

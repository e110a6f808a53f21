/* Tests for src/http/proxy.c through its public header, with the real server in front
 * of it: the rebuilt request head, body streaming both ways (re-chunking, several MiB with a
 * slow reader, bounded buffering), keep-alive reuse of upstream connections and the retry
 * on a pooled connection the upstream closed, pipelining, errors (502, 504), HEAD, 204/304,
 * close-delimited upstream bodies, WebSocket tunnels (101, leftovers both ways, frames,
 * activity) and client aborts.
 *
 * The server and proxy run on the test's loop in the main thread. A helper thread plays
 * the browser (blocking client sockets) and the workspace (a blocking upstream on a Unix
 * socket in a temporary directory, or on 127.0.0.1), recording the raw bytes the upstream
 * receives. Every receive has a timeout, so a bug fails instead of hanging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/parse.h"
#include "http/proxy.h"
#include "http/server.h"
#include "http/websocket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "blocking_client.h"

/* --- a blocking test upstream -------------------------------------------------------------- */

struct up {
    int fd;
    struct buf in;
    struct http_parse *p;
    /* The request read last. */
    struct buf raw;  /* head and body exactly as received */
    struct buf head; /* the head, up to and including the blank line */
    struct buf body; /* decoded */
    char target[256];
    bool complete;
    bool chunked;
    bool upgrade;
    bool verify; /* check the body against gen() instead of keeping it */
    bool bad;
    size_t verified;
};

static int up_head_cb(void *data, struct http_head *h)
{
    struct up *u = data;
    snprintf(u->target, sizeof u->target, "%s", h->target);
    u->chunked = h->chunked;
    u->upgrade = h->upgrade;
    return 0;
}

static int up_body_cb(void *data, const char *chunk, size_t len)
{
    struct up *u = data;
    if (u->verify) {
        u->bad = u->bad || !gen_check(chunk, u->verified, len);
        u->verified += len;
        return 0;
    }
    buf_append(&u->body, chunk, len);
    return 0;
}

static int up_complete_cb(void *data)
{
    struct up *u = data;
    u->complete = true;
    return 0;
}

static const struct http_parse_callbacks up_callbacks = {up_head_cb, up_body_cb, up_complete_cb};

static void set_timeouts(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Accepts the next upstream connection (or fails after `ms`). */
static bool up_accept(int lfd, struct up *u, int ms)
{
    memset(u, 0, sizeof *u);
    u->fd = -1;
    struct pollfd pfd = {lfd, POLLIN, 0};
    if (poll(&pfd, 1, ms) != 1)
        return false;
    u->fd = accept(lfd, NULL, NULL);
    if (u->fd < 0)
        return false;
    set_timeouts(u->fd, 10);
    u->p = http_parse_new(HTTP_PARSE_REQUEST, NULL, &up_callbacks, u);
    return true;
}

static void up_close(struct up *u)
{
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    http_parse_free(u->p);
    u->p = NULL;
    buf_free(&u->in);
    buf_free(&u->raw);
    buf_free(&u->head);
    buf_free(&u->body);
}

/* Reads one request. Returns false on EOF, timeout or a parse error. */
static bool up_read(struct up *u)
{
    u->complete = false;
    buf_reset(&u->raw);
    buf_reset(&u->head);
    buf_reset(&u->body);
    for (;;) {
        if (u->in.len > 0) {
            ssize_t n = http_parse_feed(u->p, u->in.data, u->in.len);
            if (n < 0)
                return false;
            buf_append(&u->raw, u->in.data, (size_t)n);
            buf_consume(&u->in, (size_t)n);
            if (u->complete ||
                (u->upgrade && u->raw.data != NULL && strstr(u->raw.data, "\r\n\r\n") != NULL &&
                 u->body.len == 0 && !u->chunked)) {
                const char *end = strstr(u->raw.data, "\r\n\r\n");
                buf_append(&u->head, u->raw.data, (size_t)(end - u->raw.data) + 4);
                if (u->complete)
                    return true;
            }
        }
        char tmp[65536];
        ssize_t k = recv(u->fd, tmp, sizeof tmp, 0);
        if (k <= 0)
            return false;
        buf_append(&u->in, tmp, (size_t)k);
    }
}

static bool up_send(struct up *u, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t k = send(u->fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

static bool up_send_n(struct up *u, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(u->fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

/* True when the peer closed within the receive timeout. */
static bool up_wait_eof(struct up *u)
{
    char tmp[4096];
    for (int i = 0; i < 1000; i++) {
        ssize_t k = recv(u->fd, tmp, sizeof tmp, 0);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
        if (k < 0)
            return false;
    }
    return false;
}

/* --- the fixture ---------------------------------------------------------------------------- */

struct fx;
typedef void (*script_fn)(struct fx *f);

struct fx {
    uv_loop_t loop;
    struct http_server *srv;
    struct proxy *proxy;
    int port;
    uv_async_t wake;
    pthread_t thread;
    script_fn script;
    atomic_bool script_done;
    bool shut, proxy_closed;
    char dir[64];
    char upstream[160];
    int lfd; /* the upstream's listening socket */
    const char *strip;
    atomic_int activity;
    atomic_int upstream_errors;
    atomic_int last_error;
    atomic_int handled;
    atomic_int done_calls;
    atomic_size_t conns;
    atomic_size_t tunnels;
    atomic_size_t max_queue;
    struct http_exchange *ex; /* the proxied exchange, while it lives */
    uv_timer_t sampler;
    size_t heap_base;
    atomic_size_t heap_max;
    int kept_client, kept_upstream; /* sockets a script leaves to the main thread */
};

static void wake_cb(uv_async_t *a)
{
    struct fx *f = a->data;
    if (atomic_load(&f->script_done))
        uv_stop(&f->loop);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void sample_cb(uv_timer_t *t)
{
    struct fx *f = t->data;
    atomic_store(&f->conns, http_server_connection_count(f->srv));
    atomic_store(&f->tunnels, http_server_tunnel_count(f->srv));
    if (f->ex != NULL) {
        size_t q = http_exchange_write_queue_size(f->ex);
        if (q > atomic_load(&f->max_queue))
            atomic_store(&f->max_queue, q);
    }
    size_t h = heap_in_use();
    if (h > atomic_load(&f->heap_max))
        atomic_store(&f->heap_max, h);
}

static void *script_thread(void *arg)
{
    struct fx *f = arg;
    f->script(f);
    atomic_store(&f->script_done, true);
    uv_async_send(&f->wake);
    return NULL;
}

static void handler(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    atomic_fetch_add(&f->handled, 1);
    http_response_set(&ex->res, 200, "text/plain", "hub\n", 4);
    http_exchange_finish(ex);
}

static void done_cb(struct http_exchange *ex, uint64_t ns, void *data)
{
    struct fx *f = data;
    if (f->ex == ex)
        f->ex = NULL;
    atomic_fetch_add(&f->done_calls, 1);
}

static bool drop_cookie(const char *name, size_t len, void *data)
{
    return len >= 8 && strncmp(name, "codehub-", 8) == 0;
}

static void on_activity(void *data)
{
    struct fx *f = data;
    atomic_fetch_add(&f->activity, 1);
}

static void on_upstream_error(void *data, int status)
{
    struct fx *f = data;
    atomic_fetch_add(&f->upstream_errors, 1);
    atomic_store(&f->last_error, status);
}

static int hook(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    if (strncmp(ex->req.target, "/hub", 4) == 0)
        return HTTP_HEAD_BUFFER;
    struct proxy_target t = {
        .upstream = f->upstream,
        .strip_prefix = f->strip,
        .forwarded_for = "203.0.113.7, 127.0.0.1",
        .forwarded_proto = "https",
        .forwarded_host = "hub.example:8443",
        .drop_cookie = drop_cookie,
        .on_activity = on_activity,
        .activity_data = f,
        .on_upstream_error = on_upstream_error,
    };
    f->ex = ex;
    proxy_forward(f->proxy, ex, &t);
    return HTTP_HEAD_DEFER;
}

static const struct proxy_options default_popt = {
    .connect_timeout_ms = 2000,
    .response_timeout_ms = 2000,
    .websocket_timeout_ms = 2000,
    .body_timeout_ms = 2000,
    .keepalive_per_upstream = 4,
};

/* Starts the server with the proxy behind it; the upstream listens on a Unix socket
 * (tcp false) or on 127.0.0.1. */
static void fx_start(struct fx *f, const struct proxy_options *popt, bool tcp)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->strip = "/user/ann";
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-proxy-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (tcp) {
        f->lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
        socklen_t len = sizeof sa;
        getsockname(f->lfd, (struct sockaddr *)&sa, &len);
        snprintf(f->upstream, sizeof f->upstream, "http://127.0.0.1:%d", ntohs(sa.sin_port));
    } else {
        f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {0};
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/cs.sock", f->dir);
        assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
        snprintf(f->upstream, sizeof f->upstream, "unix:%s", sa.sun_path);
    }
    assert_int_equal(listen(f->lfd, 64), 0);
    struct http_server_options o = {
        .max_body = 1 << 20,
        .head_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_connections = 100,
    };
    f->srv = http_server_new(&f->loop, &o, handler, done_cb, f);
    http_server_set_head_handler(f->srv, hook);
    assert_int_equal(http_server_listen(f->srv, "127.0.0.1", 0), 0);
    f->port = http_server_port(f->srv);
    f->proxy = proxy_new(&f->loop, popt ? popt : &default_popt);
    uv_async_init(&f->loop, &f->wake, wake_cb);
    f->wake.data = f;
    uv_timer_init(&f->loop, &f->sampler);
    f->sampler.data = f;
    uv_timer_start(&f->sampler, sample_cb, 2, 2);
}

static void fx_run(struct fx *f, script_fn fn)
{
    thread_error[0] = '\0';
    atomic_store(&f->script_done, false);
    f->script = fn;
    assert_int_equal(pthread_create(&f->thread, NULL, script_thread, f), 0);
    while (!atomic_load(&f->script_done))
        uv_run(&f->loop, UV_RUN_ONCE);
    pthread_join(f->thread, NULL);
    if (thread_error[0] != '\0')
        fail_msg("helper thread: %s", thread_error);
}

static void server_down(void *data)
{
    struct fx *f = data;
    f->shut = true;
}

static void proxy_down(void *data)
{
    struct fx *f = data;
    f->proxy_closed = true;
}

/* Shuts the server down (unless a test did) and closes the proxy (unless a test did), then
 * checks that the loop closes cleanly. */
static void fx_stop(struct fx *f)
{
    if (!f->shut) {
        http_server_shutdown(f->srv, 500, server_down, f);
        while (!f->shut)
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    if (!f->proxy_closed) {
        proxy_close(f->proxy, proxy_down, f);
        while (!f->proxy_closed)
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    http_server_free(f->srv);
    uv_close((uv_handle_t *)&f->wake, NULL);
    uv_close((uv_handle_t *)&f->sampler, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    close(f->lfd);
    char path[128];
    snprintf(path, sizeof path, "%s/cs.sock", f->dir);
    unlink(path);
    rmdir(f->dir);
}

static bool wait_int(atomic_int *v, int want)
{
    for (int i = 0; i < 500; i++) {
        if (atomic_load(v) >= want)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* The proxy's counters, read on the helper thread: only between requests, when the loop
 * does not touch them (good enough for these tests, which check them at quiet points). */
static const struct proxy_stats *stats(struct fx *f)
{
    return proxy_stats(f->proxy);
}

/* --- the request head ---------------------------------------------------------------------- */

static void script_head(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/x/y?q=1&r=%20 HTTP/1.1\r\n"
                         "Host: hub.example:8443\r\n"
                         "Connection: keep-alive, X-Hop\r\n"
                         "X-Hop: secret\r\n"
                         "Keep-Alive: timeout=5\r\n"
                         "TE: trailers\r\n"
                         "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
                         "Authorization: Bearer hub-token\r\n"
                         "Cookie: a=1; codehub-session=s3cret; b=2\r\n"
                         "Cookie: codehub-xsrf=x\r\n"
                         "X-Forwarded-For: 6.6.6.6\r\n"
                         "X-Forwarded-Host: evil.example\r\n"
                         "X-Forwarded-Proto: http\r\n"
                         "Forwarded: for=6.6.6.6\r\n"
                         "Accept: text/html\r\n"
                         "Origin: https://hub.example:8443\r\n"
                         "\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    const char *want = "GET /x/y?q=1&r=%20 HTTP/1.1\r\n"
                       "Host: hub.example:8443\r\n"
                       "Cookie: a=1; b=2\r\n"
                       "Accept: text/html\r\n"
                       "Origin: https://hub.example:8443\r\n"
                       "X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"
                       "X-Forwarded-Proto: https\r\n"
                       "X-Forwarded-Host: hub.example:8443\r\n"
                       "\r\n";
    if (strcmp(u.head.data, want) != 0)
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", u.head.data, want);
    T_CHECK(strcmp(u.head.data, want) == 0);
    T_CHECK(up_send(&u,
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Up\r\n"
                    "X-Up: gone\r\nKeep-Alive: timeout=5\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                    "Set-Cookie: app=1\r\nX-App: kept\r\n\r\nok"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 200 && strcmp(c.body.data, "ok") == 0);
    T_CHECK(has_header(&c, "x-app: kept"));
    T_CHECK(has_header(&c, "set-cookie: app=1"));
    T_CHECK(!has_header(&c, "x-up"));
    T_CHECK(!has_header(&c, "keep-alive"));
    T_CHECK(!has_header(&c, "1970"));
    T_CHECK(!has_header(&c, "content-security-policy")); /* the hub's headers are not added */

    /* The prefix alone becomes "/", the query stays; a cookie header with only hub
     * cookies goes; an empty query stays. */
    T_CHECK(cl_sends(&c,
                     "GET /user/ann?x=1 HTTP/1.1\r\nHost: h\r\nCookie: codehub-session=1\r\n\r\n"
                     "HEAD /user/ann/ HTTP/1.1\r\nHost: h\r\n\r\n"
                     "GET /user/ann//evil.example/x? HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_read(&u));
    T_CHECK(strcmp(u.head.data, "GET /?x=1 HTTP/1.1\r\nHost: h\r\n"
                                "X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"
                                "X-Forwarded-Proto: https\r\nX-Forwarded-Host: hub.example:8443\r\n"
                                "\r\n") == 0);
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(up_read(&u));
    T_CHECK(strncmp(u.head.data, "HEAD / HTTP/1.1\r\n", 17) == 0);
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_HEAD));
    T_CHECK(has_header(&c, "content-length: 1234") && c.body.len == 0);
    T_CHECK(up_read(&u));
    T_CHECK(strncmp(u.head.data, "GET /evil.example/x? HTTP/1.1\r\n", 31) == 0);
    T_CHECK(up_send(&u, "HTTP/1.1 204 No Content\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 204);

    /* A path outside the prefix is refused, and the upstream never sees it. */
    T_CHECK(cl_sends(&c, "GET /user/annx/y HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 400);
    T_CHECK(has_header(&c, "content-type: text/html"));
    /* All of it on one upstream connection. */
    T_CHECK(stats(f)->connections == 1);
    T_CHECK(stats(f)->reused == 3);
    T_CHECK(stats(f)->requests == 5);
    up_close(&u);
    cl_close(&c);
}

static void test_head_rebuilt(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    fx_run(&f, script_head);
    /* Page views counted as activity, once a second at most. */
    assert_int_equal(atomic_load(&f.activity), 1);
    fx_stop(&f);
}

/* --- bodies --------------------------------------------------------------------------------- */

static void script_chunked_request(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST /user/ann/upload HTTP/1.1\r\nHost: h\r\n"
                         "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 100);
    T_CHECK(cl_sends(&c, "4;name=\"v\"\r\nWiki\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    sleep_ms(30);
    T_CHECK(cl_sends(&c, "5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"));
    T_CHECK(up_read(&u));
    T_CHECK(u.chunked);
    T_CHECK(strcmp(u.body.data, "Wikipedia in\r\n\r\nchunks.") == 0);
    T_CHECK(strstr(u.head.data, "Transfer-Encoding: chunked\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Expect") == NULL);
    T_CHECK(strstr(u.head.data, "Content-Length") == NULL);
    /* Re-chunked from decoded data: no extension, no trailer passes. */
    T_CHECK(strstr(u.raw.data, "name=") == NULL);
    T_CHECK(strstr(u.raw.data, "X-Trailer") == NULL);
    T_CHECK(strstr(u.raw.data, "\r\n0\r\n\r\n") != NULL);
    T_CHECK(up_send(&u, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 201);

    /* A Content-Length body passes with its length. */
    T_CHECK(cl_sends(&c, "PUT /user/ann/f HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"));
    T_CHECK(up_read(&u));
    T_CHECK(strstr(u.head.data, "Content-Length: 5\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Transfer-Encoding") == NULL);
    T_CHECK(strcmp(u.body.data, "hello") == 0);
    /* The upstream answers chunked with an extension and a trailer: the client gets a
     * fresh chunking. */
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                        "3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_PUT));
    T_CHECK(strcmp(c.body.data, "abcde") == 0);
    T_CHECK(!has_header(&c, "trailer"));
    T_CHECK(has_header(&c, "transfer-encoding: chunked"));
    up_close(&u);
    cl_close(&c);
}

static void test_chunked_request(void **state)
{
    struct fx f;
    fx_start(&f, NULL, true);
    fx_run(&f, script_chunked_request);
    fx_stop(&f);
}

#define BIG (6u << 20)

struct big_up {
    struct fx *f;
    bool chunked;
};

/* The upstream: reads an upload slowly, then sends a big download fast. Nothing here keeps
 * a whole body, so the heap growth measured during the test is the server's and proxy's. */
static void *big_upstream(void *arg)
{
    struct big_up *b = arg;
    struct fx *f = b->f;
    struct up u;
    if (!up_accept(f->lfd, &u, 5000)) {
        thread_fail(__LINE__, "upstream accept");
        return NULL;
    }
    int small = 65536;
    setsockopt(u.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    u.verify = true;
    char tmp[65536];
    while (!u.complete) {
        ssize_t k = recv(u.fd, tmp, sizeof tmp, 0);
        if (k <= 0)
            break;
        ssize_t n = http_parse_feed(u.p, tmp, (size_t)k);
        if (n != k && !u.complete)
            break;
        if (u.verified % (1 << 20) < 65536)
            sleep_ms(5); /* a slow reader now and then */
    }
    if (!u.complete || u.bad || u.verified != BIG)
        thread_fail(__LINE__, "upload corrupted");
    char head[128];
    if (b->chunked) {
        up_send(&u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (size_t off = 0; off < BIG; off += 50000) {
            size_t n = BIG - off < 50000 ? BIG - off : 50000;
            snprintf(head, sizeof head, "%zx\r\n", n);
            gen_fill(tmp, off, n);
            if (!up_send(&u, head) || !up_send_n(&u, tmp, n) || !up_send(&u, "\r\n"))
                break;
        }
        up_send(&u, "0\r\n\r\n");
    } else {
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", BIG);
        up_send(&u, head);
        for (size_t off = 0; off < BIG; off += sizeof tmp) {
            size_t n = BIG - off < sizeof tmp ? BIG - off : sizeof tmp;
            gen_fill(tmp, off, n);
            if (!up_send_n(&u, tmp, n))
                break;
        }
    }
    sleep_ms(50);
    up_close(&u);
    return NULL;
}

static struct big_up big_arg;

static void script_big(struct fx *f)
{
    for (int round = 0; round < 2; round++) {
        big_arg.f = f;
        big_arg.chunked = round == 1;
        pthread_t th;
        pthread_create(&th, NULL, big_upstream, &big_arg);
        struct cl c;
        cl_open(&c, f->port);
        c.verify = true;
        /* Small kernel buffers, so that the proxy meets backpressure quickly (much smaller
         * ones make loopback TCP crawl on delayed acknowledgements). */
        int small = 65536;
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        char head[128];
        snprintf(head, sizeof head,
                 "POST /user/ann/big HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n", BIG);
        bool ok = cl_sends(&c, head);
        char tmp[65536];
        for (size_t off = 0; ok && off < BIG; off += sizeof tmp) {
            size_t n = BIG - off < sizeof tmp ? BIG - off : sizeof tmp;
            gen_fill(tmp, off, n);
            ok = cl_send(&c, tmp, n);
        }
        /* A slow reader for the download. */
        size_t got = 0;
        while (ok && !c.complete) {
            ssize_t k = recv(c.fd, tmp, 16384, 0);
            if (k <= 0)
                break;
            got += (size_t)k;
            if (got % (64 * 1024) < 16384)
                sleep_ms(2);
            if (http_parse_feed(c.p, tmp, (size_t)k) < 0)
                break;
        }
        pthread_join(th, NULL);
        bool same = c.complete && !c.bad && c.verified == BIG;
        cl_close(&c);
        T_CHECK(ok);
        T_CHECK(same);
    }
}

static void test_big_bodies(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    f.heap_base = heap_in_use();
    atomic_store(&f.heap_max, f.heap_base);
    fx_run(&f, script_big);
    /* Never more than one 64 KiB read (plus chunk framing) queued towards the client. */
    size_t max_queue = atomic_load(&f.max_queue);
    assert_true(max_queue > 0);
    assert_true(max_queue <= 70 * 1024);
#ifndef __SANITIZE_ADDRESS__
    /* 12 MiB went each way; the heap grew by a few buffers at most. */
    size_t growth = atomic_load(&f.heap_max) - f.heap_base;
    if (growth >= 2u << 20)
        fail_msg("heap grew by %zu bytes", growth);
#endif
    fx_stop(&f);
}

/* --- keep-alive, pipelining, retry ---------------------------------------------------------- */

static void script_keepalive(struct fx *f)
{
    struct cl a, b;
    struct up u;
    cl_open(&a, f->port);
    /* Three pipelined requests; answered in order. */
    T_CHECK(cl_sends(&a, "GET /user/ann/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                         "GET /user/ann/2 HTTP/1.1\r\nHost: h\r\n\r\n"
                         "GET /user/ann/3 HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    for (int i = 1; i <= 3; i++) {
        T_CHECK(up_read(&u));
        char want[32], resp[128];
        snprintf(want, sizeof want, "/%d", i);
        T_CHECK(strcmp(u.target, want) == 0);
        snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", i);
        T_CHECK(up_send(&u, resp));
    }
    for (int i = 1; i <= 3; i++) {
        T_CHECK(cl_response(&a, HTTP_GET));
        T_CHECK(a.body.data[0] == '0' + i);
    }
    /* Another client connection reuses the pooled upstream connection. */
    cl_open(&b, f->port);
    T_CHECK(cl_sends(&b, "GET /user/ann/4 HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n4"));
    T_CHECK(cl_response(&b, HTTP_GET));
    T_CHECK(stats(f)->connections == 1);

    /* The upstream drops the pooled connection as the next request arrives: an idempotent
     * request without a body is retried once on a fresh connection. */
    T_CHECK(cl_sends(&b, "GET /user/ann/5 HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_read(&u));
    up_close(&u);
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(strcmp(u.target, "/5") == 0);
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n5"));
    T_CHECK(cl_response(&b, HTTP_GET));
    T_CHECK(b.status == 200 && b.body.data[0] == '5');
    T_CHECK(stats(f)->retries == 1);
    /* A POST is not retried: 502. */
    T_CHECK(cl_sends(&b, "POST /user/ann/6 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"));
    T_CHECK(up_read(&u));
    up_close(&u);
    T_CHECK(cl_response(&b, HTTP_POST));
    T_CHECK(b.status == 502);
    T_CHECK(stats(f)->retries == 1);
    /* The upstream closing an idle pooled connection is noticed: the next request opens
     * a new one without failing. */
    T_CHECK(cl_sends(&b, "GET /user/ann/7 HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n7"));
    T_CHECK(cl_response(&b, HTTP_GET));
    up_close(&u);
    sleep_ms(50);
    T_CHECK(cl_sends(&b, "GET /user/ann/8 HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n8"));
    T_CHECK(cl_response(&b, HTTP_GET));
    T_CHECK(b.status == 200);
    T_CHECK(stats(f)->retries == 1);
    up_close(&u);
    cl_close(&a);
    cl_close(&b);
}

static void test_keepalive_pipelining_retry(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    fx_run(&f, script_keepalive);
    assert_int_equal(atomic_load(&f.upstream_errors), 1);
    assert_int_equal(atomic_load(&f.last_error), 502);
    fx_stop(&f);
}

/* --- errors ----------------------------------------------------------------------------------- */

static void script_errors(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    /* Silent upstream: 504 after the response timeout. */
    T_CHECK(cl_sends(&c, "GET /user/ann/slow HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 504);
    T_CHECK(strstr(c.body.data, "not responding") != NULL);
    T_CHECK(up_wait_eof(&u)); /* the proxy gave up on that connection */
    up_close(&u);
    T_CHECK(atomic_load(&f->last_error) == 504);
    /* The upstream closes before a complete head: 502. */
    T_CHECK(cl_sends(&c, "GET /user/ann/half HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-"));
    up_close(&u);
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 502);
    /* A garbled response: 502. */
    T_CHECK(cl_sends(&c, "GET /user/ann/bad HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 502);
    up_close(&u);
    /* After the head: the client connection is cut, the body stays short. */
    T_CHECK(cl_sends(&c, "GET /user/ann/cut HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"));
    sleep_ms(50);
    up_close(&u);
    T_CHECK(!cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 200 && c.body.len == 5);
    cl_close(&c);
    /* Close-delimited upstream body: chunked to HTTP/1.1, close-delimited to HTTP/1.0. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/old HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close"));
    up_close(&u);
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "until close") == 0);
    T_CHECK(has_header(&c, "transfer-encoding: chunked"));
    T_CHECK(cl_sends(&c, "GET /user/ann/old HTTP/1.0\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    /* HTTP/1.1 upstream needs a Host: the public one stands in. */
    T_CHECK(strstr(u.head.data, "\r\nHost: hub.example:8443\r\n") != NULL);
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\n\r\nten bytes!"));
    up_close(&u);
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "ten bytes!") == 0);
    T_CHECK(!has_header(&c, "transfer-encoding"));
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
    /* 304 keeps the connection; the upstream's early answer to an unread body closes it. */
    cl_open(&c, f->port);
    T_CHECK(
        cl_sends(&c, "GET /user/ann/cached HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 304 && c.body.len == 0);
    T_CHECK(cl_sends(&c, "POST /user/ann/up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n"
                         "partial"));
    for (int i = 0; i < 100 && u.raw.data != NULL && strstr(u.raw.data, "/up") == NULL; i++) {
        char tmp[4096];
        ssize_t k = recv(u.fd, tmp, sizeof tmp, 0);
        if (k <= 0)
            break;
        buf_append(&u.raw, tmp, (size_t)k);
    }
    T_CHECK(strstr(u.raw.data, "POST /up ") != NULL);
    T_CHECK(up_send(
        &u, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig"));
    up_close(&u);
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 413 && strcmp(c.body.data, "big") == 0);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
}

static void test_errors(void **state)
{
    struct proxy_options o = default_popt;
    o.response_timeout_ms = 200;
    struct fx f;
    fx_start(&f, &o, false);
    fx_run(&f, script_errors);
    assert_true(atomic_load(&f.upstream_errors) >= 4);
    fx_stop(&f);
}

static void script_down(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/ HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 502);
    T_CHECK(strstr(c.body.data, "not reachable") != NULL);
    T_CHECK(has_header(&c, "cache-control: no-store"));
    /* The connection stays usable. */
    T_CHECK(cl_sends(&c, "GET /hub/x HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 200);
    cl_close(&c);
}

static void test_upstream_down(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    close(f.lfd);
    f.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    char path[128];
    snprintf(path, sizeof path, "%s/cs.sock", f.dir);
    unlink(path); /* nothing listens: ENOENT */
    fx_run(&f, script_down);
    assert_int_equal(atomic_load(&f.last_error), 502);
    fx_stop(&f);
    /* TCP: refused. */
    fx_start(&f, NULL, true);
    close(f.lfd);
    f.lfd = socket(AF_INET, SOCK_STREAM, 0);
    fx_run(&f, script_down);
    assert_int_equal(atomic_load(&f.last_error), 502);
    fx_stop(&f);
}

/* --- streaming and aborts -------------------------------------------------------------------- */

static void script_stream_abort(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/events HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(up_send(&u, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"));
    T_CHECK(up_send(&u, "8\r\ndata: 1\n\r\n"));
    while (c.in.data == NULL || strstr(c.in.data, "data: 1") == NULL)
        T_CHECK(cl_recv(&c));
    T_CHECK(strstr(c.in.data, "Transfer-Encoding: chunked") != NULL);
    T_CHECK(up_send(&u, "8\r\ndata: 2\n\r\n"));
    while (strstr(c.in.data, "data: 2") == NULL)
        T_CHECK(cl_recv(&c));
    /* The browser goes away: the proxy drops the upstream connection. */
    cl_close(&c);
    T_CHECK(up_wait_eof(&u));
    up_close(&u);
    for (int i = 0; i < 200 && atomic_load(&f->conns) != 0; i++)
        sleep_ms(10);
    T_CHECK(atomic_load(&f->conns) == 0);
}

static void test_stream_abort(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    fx_run(&f, script_stream_abort);
    fx_stop(&f);
}

/* --- WebSockets ---------------------------------------------------------------------------------
 */

static void ws_frame(struct buf *out, unsigned opcode, bool masked, const void *p, size_t n)
{
    static const uint8_t key[4] = {1, 2, 3, 4};
    uint8_t h[8];
    size_t k = 0;
    h[k++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[k++] = (uint8_t)((masked ? 0x80 : 0) | n);
    } else {
        h[k++] = (uint8_t)((masked ? 0x80 : 0) | 126);
        h[k++] = (uint8_t)(n >> 8);
        h[k++] = (uint8_t)n;
    }
    buf_append(out, h, k);
    if (masked)
        buf_append(out, key, 4);
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        uint8_t x = b[i] ^ (masked ? key[i & 3] : 0);
        buf_append(out, &x, 1);
    }
}

static void vs_message(struct buf *out, unsigned type, const void *body, size_t len)
{
    uint8_t h[13] = {(uint8_t)type,       0,           0, 0, 1, 0, 0, 0, 0, 0, 0,
                     (uint8_t)(len >> 8), (uint8_t)len};
    buf_append(out, h, 13);
    buf_append(out, body, len);
}

static void vs_typing(struct buf *out)
{
    struct buf b = BUF_INIT;
    const char *m = "$acceptModelChanged";
    uint8_t head[7] = {1, 0, 0, 0, 9, 'Q', (uint8_t)strlen(m)};
    buf_append(&b, head, 7);
    buf_append_str(&b, m);
    buf_append(&b, "\0\0\0\x02[]", 6);
    vs_message(out, WEBSOCKET_VSCODE_REGULAR, b.data, b.len);
    buf_free(&b);
}

static bool recv_until(int fd, struct buf *in, const void *needle, size_t n)
{
    for (int i = 0; i < 100; i++) {
        if (in->len >= n && memmem(in->data, in->len, needle, n) != NULL)
            return true;
        char tmp[65536];
        ssize_t k = recv(fd, tmp, sizeof tmp, 0);
        if (k <= 0)
            return false;
        buf_append(in, tmp, (size_t)k);
    }
    return false;
}

static const char ws_head[] =
    "GET /user/ann/stable-1?reconnectionToken=x HTTP/1.1\r\n"
    "Host: hub.example:8443\r\n"
    "Connection: Upgrade\r\nUpgrade: websocket\r\n"
    "Origin: https://hub.example:8443\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Cookie: codehub-session=s; vscode-tkn=t\r\n\r\n";

static void script_websocket(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    /* The handshake and the first frame in one write: the frame is a leftover. */
    struct buf out = BUF_INIT, first = BUF_INIT;
    buf_append_str(&out, ws_head);
    const char *auth = "{\"type\":\"auth\",\"auth\":\"00000000000000000000\"}";
    vs_message(&first, WEBSOCKET_VSCODE_CONTROL, auth, strlen(auth));
    ws_frame(&out, WEBSOCKET_BINARY, true, first.data, first.len);
    T_CHECK(cl_send(&c, out.data, out.len));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(recv_until(u.fd, &u.in, "\r\n\r\n", 4));
    const char *end = memmem(u.in.data, u.in.len, "\r\n\r\n", 4);
    size_t head_len = (size_t)(end - u.in.data) + 4;
    buf_append(&u.head, u.in.data, head_len);
    buf_consume(&u.in, head_len);
    T_CHECK(strncmp(u.head.data, "GET /stable-1?reconnectionToken=x HTTP/1.1\r\n", 44) == 0);
    T_CHECK(strstr(u.head.data, "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Sec-WebSocket-Version: 13\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Extensions") == NULL);
    T_CHECK(strstr(u.head.data, "Cookie: vscode-tkn=t\r\n") != NULL);
    T_CHECK(strstr(u.head.data, "Host: hub.example:8443\r\n") != NULL);
    /* 101 with a frame right behind it in the same write. */
    struct buf resp = BUF_INIT;
    buf_append_str(&resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    ws_frame(&resp, WEBSOCKET_BINARY, false, "welcome", 7);
    T_CHECK(up_send_n(&u, resp.data, resp.len));
    /* The client's early frame follows the 101, unchanged. */
    buf_reset(&out);
    ws_frame(&out, WEBSOCKET_BINARY, true, first.data, first.len);
    T_CHECK(recv_until(u.fd, &u.in, out.data, out.len));
    T_CHECK(u.in.len == out.len);
    buf_reset(&u.in);
    T_CHECK(recv_until(c.fd, &c.in, "welcome", 7));
    T_CHECK(strncmp(c.in.data, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    T_CHECK(strstr(c.in.data, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    T_CHECK(strstr(c.in.data, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n") != NULL);
    buf_reset(&c.in);
    T_CHECK(stats(f)->websockets_open == 1);
    int before = atomic_load(&f->activity);
    /* Keep-alives both ways count for nothing. */
    buf_reset(&out);
    buf_reset(&first);
    vs_message(&first, WEBSOCKET_VSCODE_KEEPALIVE, "", 0);
    ws_frame(&out, WEBSOCKET_BINARY, true, first.data, first.len);
    T_CHECK(cl_send(&c, out.data, out.len));
    T_CHECK(recv_until(u.fd, &u.in, out.data, out.len));
    T_CHECK(atomic_load(&f->activity) == before);
    /* Typing counts. */
    buf_reset(&out);
    buf_reset(&first);
    vs_typing(&first);
    ws_frame(&out, WEBSOCKET_BINARY, true, first.data, first.len);
    T_CHECK(cl_send(&c, out.data, out.len));
    T_CHECK(recv_until(u.fd, &u.in, out.data, out.len));
    T_CHECK(wait_int(&f->activity, before + 1));
    /* A big frame down and up. */
    char *big = xmalloc(60000);
    memset(big, 'z', 60000);
    buf_reset(&resp);
    ws_frame(&resp, WEBSOCKET_BINARY, false, big, 60000);
    T_CHECK(up_send_n(&u, resp.data, resp.len));
    T_CHECK(recv_until(c.fd, &c.in, resp.data + resp.len - 100, 100));
    T_CHECK(c.in.len == resp.len);
    free(big);
    /* The upstream closes: the client is closed too. */
    up_close(&u);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
    buf_free(&out);
    buf_free(&first);
    buf_free(&resp);
    for (int i = 0; i < 200 && stats(f)->websockets_open != 0; i++)
        sleep_ms(10);
    T_CHECK(stats(f)->websockets_open == 0);
}

static void test_websocket(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    fx_run(&f, script_websocket);
    fx_stop(&f);
}

static void script_websocket_refused(struct fx *f)
{
    struct cl c;
    struct up u;
    /* A bad handshake never reaches the upstream. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                         "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 400);
    cl_close(&c);
    struct pollfd pfd = {f->lfd, POLLIN, 0};
    T_CHECK(poll(&pfd, 1, 50) == 0);
    /* The upstream refuses the upgrade: its answer passes, then the connection closes. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, ws_head));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(recv_until(u.fd, &u.in, "\r\n\r\n", 4));
    T_CHECK(up_send(&u, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 403 && strcmp(c.body.data, "no") == 0);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
    up_close(&u);
    /* A silent tunnel closes after the websocket timeout. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, ws_head));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(recv_until(u.fd, &u.in, "\r\n\r\n", 4));
    T_CHECK(up_send(&u, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n\r\n"));
    T_CHECK(recv_until(c.fd, &c.in, "\r\n\r\n", 4));
    T_CHECK(cl_wait_eof(&c));
    T_CHECK(up_wait_eof(&u));
    cl_close(&c);
    up_close(&u);
}

static void test_websocket_refused_and_timeout(void **state)
{
    struct proxy_options o = default_popt;
    o.websocket_timeout_ms = 200;
    struct fx f;
    fx_start(&f, &o, false);
    fx_run(&f, script_websocket_refused);
    fx_stop(&f);
}

/* Shutdown with an open tunnel: it stays until the grace period ends, then closes. */
static void script_tunnel_only(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, ws_head));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(recv_until(u.fd, &u.in, "\r\n\r\n", 4));
    T_CHECK(up_send(&u, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n\r\n"));
    T_CHECK(recv_until(c.fd, &c.in, "\r\n\r\n", 4));
    for (int i = 0; i < 400 && (atomic_load(&f->tunnels) != 1 || atomic_load(&f->conns) != 1); i++)
        sleep_ms(5);
    T_CHECK(atomic_load(&f->tunnels) == 1);
    T_CHECK(atomic_load(&f->conns) == 1); /* the tunnel is all that is left, and it counts */
    /* Keep both sockets for the main thread. */
    f->kept_client = c.fd;
    f->kept_upstream = u.fd;
    c.fd = -1;
    u.fd = -1;
    cl_close(&c);
    up_close(&u);
}

static void test_tunnel_shutdown(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    fx_run(&f, script_tunnel_only);
    int cfd = f.kept_client, ufd = f.kept_upstream;
    uint64_t t0 = uv_now(&f.loop);
    http_server_shutdown(f.srv, 200, server_down, &f);
    while (!f.shut)
        uv_run(&f.loop, UV_RUN_ONCE);
    assert_true(uv_now(&f.loop) - t0 >= 190);
    assert_int_equal(proxy_stats(f.proxy)->websockets_open, 0);
    char b[8];
    assert_int_equal(recv(cfd, b, sizeof b, 0), 0);
    assert_int_equal(recv(ufd, b, sizeof b, 0), 0);
    close(cfd);
    close(ufd);
    fx_stop(&f);
}

/* proxy_close while a request waits for its answer: 503. */
static void start_close(uv_timer_t *t)
{
    struct fx *f = t->data;
    proxy_close(f->proxy, proxy_down, f);
}

static void script_proxy_close(struct fx *f)
{
    struct cl c;
    struct up u;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /user/ann/wait HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_accept(f->lfd, &u, 2000));
    T_CHECK(up_read(&u));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 503);
    T_CHECK(up_wait_eof(&u));
    up_close(&u);
    cl_close(&c);
}

static void test_proxy_close(void **state)
{
    struct fx f;
    fx_start(&f, NULL, false);
    uv_timer_t t;
    uv_timer_init(&f.loop, &t);
    t.data = &f;
    uv_timer_start(&t, start_close, 150, 0);
    fx_run(&f, script_proxy_close);
    /* Closing completes once the last upstream handle is closed. */
    while (!f.proxy_closed)
        uv_run(&f.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    fx_stop(&f);
}

/* --- the connection cap ---------------------------------------------------------------------- */

static void script_conn_cap(struct fx *f)
{
    struct cl c[5];
    struct up u[2];
    /* Four requests, a little apart so that they queue in order; the cap is 2. */
    for (int i = 0; i < 4; i++) {
        char req[64];
        cl_open(&c[i], f->port);
        snprintf(req, sizeof req, "GET /user/ann/%d HTTP/1.1\r\nHost: h\r\n\r\n", i);
        T_CHECK(cl_sends(&c[i], req));
        sleep_ms(30);
    }
    T_CHECK(up_accept(f->lfd, &u[0], 2000));
    T_CHECK(up_accept(f->lfd, &u[1], 2000));
    /* Not a third connection: the other two requests wait. */
    struct up extra;
    T_CHECK(!up_accept(f->lfd, &extra, 300));
    T_CHECK(up_read(&u[0]) && up_read(&u[1]));
    T_CHECK((strcmp(u[0].target, "/0") == 0 && strcmp(u[1].target, "/1") == 0) ||
            (strcmp(u[0].target, "/1") == 0 && strcmp(u[1].target, "/0") == 0));
    T_CHECK(stats(f)->waited == 2);
    /* Answering on one connection hands it to the oldest waiter, /2, then /3. */
    for (int want = 2; want <= 3; want++) {
        T_CHECK(up_send(&u[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        T_CHECK(up_read(&u[0]));
        char t[8];
        snprintf(t, sizeof t, "/%d", want);
        T_CHECK(strcmp(u[0].target, t) == 0);
    }
    T_CHECK(up_send(&u[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(up_send(&u[1], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    for (int i = 0; i < 4; i++) {
        T_CHECK(cl_response(&c[i], HTTP_GET));
        T_CHECK(c[i].status == 200);
    }
    T_CHECK(stats(f)->connections == 2);

    /* Both connections busy and a waiter that no connection comes to within the connect
     * timeout: 503, and the upstream never saw it. */
    T_CHECK(cl_sends(&c[0], "GET /user/ann/a HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_sends(&c[1], "GET /user/ann/b HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_read(&u[0]) && up_read(&u[1]));
    cl_open(&c[4], f->port);
    T_CHECK(cl_sends(&c[4], "GET /user/ann/c HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_response(&c[4], HTTP_GET));
    T_CHECK(c[4].status == 503);
    T_CHECK(c[4].body.data != NULL && strstr(c[4].body.data, "busy") != NULL);
    T_CHECK(stats(f)->wait_timeouts == 1);
    T_CHECK(up_send(&u[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(up_send(&u[1], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(cl_response(&c[0], HTTP_GET) && cl_response(&c[1], HTTP_GET));

    /* A waiter whose client leaves is dropped from the queue; the next one is served. */
    T_CHECK(cl_sends(&c[0], "GET /user/ann/d HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(cl_sends(&c[1], "GET /user/ann/e HTTP/1.1\r\nHost: h\r\n\r\n"));
    T_CHECK(up_read(&u[0]) && up_read(&u[1]));
    T_CHECK(cl_sends(&c[2], "GET /user/ann/gone HTTP/1.1\r\nHost: h\r\n\r\n"));
    sleep_ms(30);
    T_CHECK(cl_sends(&c[3], "GET /user/ann/f HTTP/1.1\r\nHost: h\r\n\r\n"));
    sleep_ms(30);
    cl_close(&c[2]);
    sleep_ms(50);
    T_CHECK(up_send(&u[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(up_read(&u[0]));
    T_CHECK(strcmp(u[0].target, "/f") == 0);
    T_CHECK(up_send(&u[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(up_send(&u[1], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    T_CHECK(cl_response(&c[0], HTTP_GET) && cl_response(&c[1], HTTP_GET));
    T_CHECK(cl_response(&c[3], HTTP_GET) && c[3].status == 200);
    T_CHECK(stats(f)->connections == 2);
    up_close(&u[0]);
    up_close(&u[1]);
    cl_close(&c[0]);
    cl_close(&c[1]);
    cl_close(&c[3]);
    cl_close(&c[4]);
}

static void test_connection_cap(void **state)
{
    struct fx f;
    struct proxy_options o = default_popt;
    o.max_conns_per_upstream = 2;
    o.connect_timeout_ms = 400;
    fx_start(&f, &o, false);
    fx_run(&f, script_conn_cap);
    assert_int_equal(atomic_load(&f.last_error), 503);
    fx_stop(&f);
}

static int setup(void **state)
{
    /* A peer that closes makes writes fail with EPIPE instead of killing the process (the
     * hub does the same). */
    signal(SIGPIPE, SIG_IGN);
    log_configure(getenv("TEST_LOG") ? LOG_DEBUG : LOG_ERROR, LOG_FORMAT_TEXT);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_rebuilt),
        cmocka_unit_test(test_chunked_request),
        cmocka_unit_test(test_big_bodies),
        cmocka_unit_test(test_keepalive_pipelining_retry),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_upstream_down),
        cmocka_unit_test(test_stream_abort),
        cmocka_unit_test(test_websocket),
        cmocka_unit_test(test_websocket_refused_and_timeout),
        cmocka_unit_test(test_tunnel_shutdown),
        cmocka_unit_test(test_proxy_close),
        cmocka_unit_test(test_connection_cap),
    };
    const char *only = getenv("TEST_ONLY");
    if (only != NULL)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, NULL);
}

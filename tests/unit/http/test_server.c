/* Tests for src/http/server.c through its public header: the buffered path, the head
 * hook, streamed request bodies (pause/resume, errors, timeouts), streamed responses
 * (lengths, chunking, HTTP/1.0, HEAD, truncation), client aborts, upgrades and tunnels at
 * shutdown, the write timeout.
 *
 * The server runs on the test's loop in the main thread; a helper thread plays the client
 * with blocking sockets (every receive has a timeout, so a bug fails instead of hanging).
 * Failures on the helper thread are recorded and asserted on the main thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/parse.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "blocking_client.h"

/* --- the fixture ---------------------------------------------------------------------------- */

struct fx;
typedef void (*script_fn)(struct fx *f);

struct fx {
    uv_loop_t loop;
    struct http_server *srv;
    int port;
    uv_async_t wake;
    pthread_t thread;
    script_fn script;
    atomic_bool script_done;
    bool shut;
    /* What the loop-side handlers saw. */
    atomic_int handled;
    atomic_int aborts;
    atomic_int body_end_status; /* -1 until on_end */
    atomic_int done_status;     /* status seen by the done callback, last */
    atomic_int done_calls;
    atomic_int writes_issued;
    atomic_int writes_done;
    atomic_int pauses;
    atomic_size_t conns;      /* http_server_connection_count, published by a timer */
    atomic_int tunnel_closes; /* close_cb calls */
    struct buf body;          /* streamed body collected */
    struct http_exchange *ex; /* the streaming exchange */
    uv_timer_t timer;
    bool timer_open;
    int events_sent;
    /* tunnel */
    uv_stream_t *tunnel_stream;
    struct http_tunnel tunnel;
    struct buf tunnel_in;
    uint64_t shutdown_started_ms;
    uint64_t tunnel_closed_ms;
    uv_timer_t publisher;
};

static struct fx *current;

static void wake_cb(uv_async_t *a)
{
    struct fx *f = a->data;
    if (atomic_load(&f->script_done))
        uv_stop(&f->loop);
}

static void publish_cb(uv_timer_t *t)
{
    struct fx *f = t->data;
    atomic_store(&f->conns, http_server_connection_count(f->srv));
}

static void *script_thread(void *arg)
{
    struct fx *f = arg;
    f->script(f);
    atomic_store(&f->script_done, true);
    uv_async_send(&f->wake);
    return NULL;
}

static void handler(struct http_exchange *ex, void *data);
static void done_cb(struct http_exchange *ex, uint64_t ns, void *data)
{
    struct fx *f = data;
    atomic_store(&f->done_status, ex->res.status);
    atomic_fetch_add(&f->done_calls, 1);
}

static void fx_start(struct fx *f, const struct http_server_options *o, http_head_cb hook)
{
    memset(f, 0, sizeof *f);
    current = f;
    atomic_store(&f->body_end_status, -1);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct http_server_options def = {
        .max_body = 1 << 20,
        .head_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_connections = 100,
    };
    f->srv = http_server_new(&f->loop, o ? o : &def, handler, done_cb, f);
    if (hook != NULL)
        http_server_set_head_handler(f->srv, hook);
    assert_int_equal(http_server_listen(f->srv, "127.0.0.1", 0), 0);
    f->port = http_server_port(f->srv);
    uv_async_init(&f->loop, &f->wake, wake_cb);
    f->wake.data = f;
    uv_timer_init(&f->loop, &f->publisher);
    f->publisher.data = f;
    uv_timer_start(&f->publisher, publish_cb, 5, 5);
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
        fail_msg("client thread: %s", thread_error);
}

static void shutdown_done(void *data)
{
    struct fx *f = data;
    f->shut = true;
}

static void fx_stop(struct fx *f, uint64_t grace_ms)
{
    f->shutdown_started_ms = uv_now(&f->loop);
    http_server_shutdown(f->srv, grace_ms, shutdown_done, f);
    while (!f->shut)
        uv_run(&f->loop, UV_RUN_ONCE);
    http_server_free(f->srv);
    uv_close((uv_handle_t *)&f->wake, NULL);
    uv_close((uv_handle_t *)&f->publisher, NULL);
    if (f->timer_open)
        uv_close((uv_handle_t *)&f->timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    buf_free(&f->body);
    buf_free(&f->tunnel_in);
}

/* Waits (on the helper thread) until *v reaches `want`. */
static bool wait_int(atomic_int *v, int want)
{
    for (int i = 0; i < 500; i++) {
        if (atomic_load(v) >= want)
            return true;
        sleep_ms(10);
    }
    return false;
}

static bool wait_conns(struct fx *f, size_t want)
{
    for (int i = 0; i < 500; i++) {
        if (atomic_load(&f->conns) == want)
            return true;
        sleep_ms(10);
    }
    return false;
}

/* --- loop-side handlers ----------------------------------------------------------------------- */

/* The buffered handler echoes method, path and body. */
static void handler(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    atomic_fetch_add(&f->handled, 1);
    struct buf b = BUF_INIT;
    buf_appendf(&b, "%s %s [%.*s]", ex->req.method_name, ex->req.path, (int)ex->req.body.len,
                ex->req.body.data ? ex->req.body.data : "");
    http_response_set(&ex->res, 200, "text/plain", b.data, b.len);
    buf_free(&b);
    http_exchange_finish(ex);
}

static bool path_is(const struct http_exchange *ex, const char *p)
{
    return strcmp(ex->req.path, p) == 0;
}

static void timer_start(struct fx *f, uv_timer_cb cb, uint64_t ms, uint64_t repeat)
{
    if (!f->timer_open) {
        uv_timer_init(&f->loop, &f->timer);
        f->timer.data = f;
        f->timer_open = true;
    }
    uv_timer_start(&f->timer, cb, ms, repeat);
}

/* --- buffered path ---------------------------------------------------------------------------- */

static void script_pipelined(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                         "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                         "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nabc\r\n0\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 200);
    T_CHECK(strcmp(c.body.data, "GET /a []") == 0);
    T_CHECK(has_header(&c, "date: "));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(strcmp(c.body.data, "POST /b [hello]") == 0);
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(strcmp(c.body.data, "POST /c [abc]") == 0);
    /* A request in pieces. */
    T_CHECK(cl_sends(&c, "GET /d?x=1 HT"));
    sleep_ms(30);
    T_CHECK(cl_sends(&c, "TP/1.1\r\nHost: x\r\n"));
    sleep_ms(30);
    T_CHECK(cl_sends(&c, "\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "GET /d []") == 0);
    cl_close(&c);
}

static void test_buffered_pipelined(void **state)
{
    struct fx f;
    fx_start(&f, NULL, NULL);
    fx_run(&f, script_pipelined);
    assert_int_equal(atomic_load(&f.handled), 4);
    fx_stop(&f, 1000);
}

static void script_rejects(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 413);
    T_CHECK(has_header(&c, "connection: close"));
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);

    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         "Transfer-Encoding: chunked\r\n\r\nabc"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 400);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);

    /* A head that never ends. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET / HTTP/1.1\r\nHost: x\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 408);
    cl_close(&c);
}

static void test_buffered_rejects(void **state)
{
    struct http_server_options o = {
        .max_body = 1000,
        .head_timeout_ms = 200,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_connections = 10,
    };
    struct fx f;
    fx_start(&f, &o, NULL);
    fx_run(&f, script_rejects);
    assert_int_equal(atomic_load(&f.handled), 0);
    fx_stop(&f, 1000);
}

/* A client that shuts its sending side after the request still gets the answer; an idle
 * keep-alive connection is closed after the idle timeout. */
static void script_half_close_idle(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /half HTTP/1.1\r\nHost: x\r\n\r\n"));
    shutdown(c.fd, SHUT_WR);
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "GET /half []") == 0);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);

    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    T_CHECK(cl_wait_eof(&c));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    T_CHECK(ms >= 150 && ms < 2000);
    cl_close(&c);
}

static void test_half_close_and_idle(void **state)
{
    struct http_server_options o = {
        .max_body = 1000,
        .head_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 200,
        .max_connections = 10,
    };
    struct fx f;
    fx_start(&f, &o, NULL);
    fx_run(&f, script_half_close_idle);
    fx_stop(&f, 1000);
}

/* --- the head hook ---------------------------------------------------------------------------- */

static void later_buffer(uv_timer_t *t)
{
    struct fx *f = t->data;
    http_exchange_buffer(f->ex);
    f->ex = NULL;
}

static int hook_basic(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    if (path_is(ex, "/deny")) {
        http_response_set(&ex->res, 403, "text/plain", "no\n", 3);
        http_exchange_finish(ex);
        return HTTP_HEAD_DEFER;
    }
    if (path_is(ex, "/later")) {
        f->ex = ex;
        timer_start(f, later_buffer, 50, 0);
        return HTTP_HEAD_DEFER;
    }
    return HTTP_HEAD_BUFFER;
}

static void script_hook(struct fx *f)
{
    struct cl c;
    /* Refused without reading the body: the connection must close after the answer. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 403);
    T_CHECK(has_header(&c, "connection: close"));
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);

    /* Refused with nothing unread: keep-alive goes on. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /deny HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 403);
    T_CHECK(!has_header(&c, "connection: close"));
    T_CHECK(cl_sends(&c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "GET /ok []") == 0);

    /* Deferred, then put on the buffered path; the body comes in two pieces. */
    T_CHECK(cl_sends(&c, "POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc"));
    sleep_ms(100);
    T_CHECK(cl_sends(&c, "def"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(strcmp(c.body.data, "POST /later [abcdef]") == 0);
    cl_close(&c);
}

static void test_hook_defer(void **state)
{
    struct fx f;
    fx_start(&f, NULL, hook_basic);
    fx_run(&f, script_hook);
    assert_int_equal(atomic_load(&f.handled), 2);
    fx_stop(&f, 1000);
}

/* --- streamed request bodies -------------------------------------------------------------------
 */

static void body_resume(uv_timer_t *t)
{
    struct fx *f = t->data;
    http_exchange_resume_body(f->ex);
}

static void stream_data(void *data, const char *bytes, size_t len)
{
    struct fx *f = data;
    buf_append(&f->body, bytes, len);
    if (f->ex != NULL && path_is(f->ex, "/pause") && atomic_load(&f->pauses) < 3) {
        atomic_fetch_add(&f->pauses, 1);
        http_exchange_pause_body(f->ex);
        timer_start(f, body_resume, 50, 0);
    }
}

static void written_cb(void *data)
{
    struct fx *f = data;
    atomic_fetch_add(&f->writes_done, 1);
}

static void stream_end(void *data, int status)
{
    struct fx *f = data;
    struct http_exchange *ex = f->ex;
    atomic_store(&f->body_end_status, status);
    if (status != 0) {
        http_response_set(&ex->res, status, "text/plain", "body failed\n", 12);
        http_exchange_finish(ex);
        f->ex = NULL;
        return;
    }
    struct buf h = BUF_INIT;
    buf_append_str(&h, "Content-Type: text/plain\r\n");
    if (path_is(ex, "/pause")) {
        /* Answer with a checksum, length-framed. */
        uint64_t sum = 0;
        for (size_t i = 0; i < f->body.len; i++)
            sum = sum * 31 + (unsigned char)f->body.data[i];
        char text[64];
        int n = snprintf(text, sizeof text, "%zu %llu", f->body.len, (unsigned long long)sum);
        assert_int_equal(http_exchange_write_head(ex, 200, &h, n), 0);
        assert_int_equal(http_exchange_write_body(ex, text, (size_t)n, NULL, NULL), 0);
    } else {
        assert_int_equal(http_exchange_write_head(ex, 200, &h, -1), 0);
        assert_int_equal(http_exchange_write_head(ex, 200, &h, -1), -EINVAL);
        assert_int_equal(
            http_exchange_write_body(ex, f->body.data ? f->body.data : "", f->body.len, NULL, NULL),
            0);
        atomic_fetch_add(&f->writes_issued, 1);
        assert_int_equal(http_exchange_write_body(ex, "!", 1, written_cb, f), 0);
    }
    buf_free(&h);
    buf_reset(&f->body);
    f->ex = NULL;
    http_exchange_end(ex, true);
}

static int hook_stream(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    if (path_is(ex, "/stream") || path_is(ex, "/pause") || path_is(ex, "/slow") ||
        path_is(ex, "/bad")) {
        f->ex = ex;
        buf_reset(&f->body);
        http_exchange_read_body(ex, stream_data, stream_end, f);
        return HTTP_HEAD_DEFER;
    }
    return HTTP_HEAD_BUFFER;
}

static void script_stream(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    /* Chunked, with an extension, in pieces, after 100-continue. */
    T_CHECK(cl_sends(&c, "POST /stream HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 100);
    T_CHECK(cl_sends(&c, "5;ext=1\r\nhello\r\n"));
    sleep_ms(30);
    T_CHECK(cl_sends(&c, "6\r\n world\r\n0\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 200);
    T_CHECK(has_header(&c, "transfer-encoding: chunked"));
    T_CHECK(strcmp(c.body.data, "hello world!") == 0);
    /* No body at all: on_end at once; keep-alive continues. */
    T_CHECK(cl_sends(&c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 200);
    T_CHECK(strcmp(c.body.data, "!") == 0);
    T_CHECK(cl_sends(&c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "GET /ok []") == 0);

    /* Paused three times while 1 MiB arrives; every byte in order. */
    size_t n = 1 << 20;
    char *big = xmalloc(n);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        big[i] = (char)('a' + (i * 7) % 26);
        sum = sum * 31 + (unsigned char)big[i];
    }
    char head[128];
    snprintf(head, sizeof head, "POST /pause HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             n);
    T_CHECK(cl_sends(&c, head));
    bool sent = cl_send(&c, big, n);
    free(big);
    T_CHECK(sent);
    T_CHECK(cl_response(&c, HTTP_POST));
    char want[64];
    snprintf(want, sizeof want, "%zu %llu", n, (unsigned long long)sum);
    T_CHECK(strcmp(c.body.data, want) == 0);
    T_CHECK(has_header(&c, "content-length: "));
    cl_close(&c);
}

static void test_read_body(void **state)
{
    struct fx f;
    fx_start(&f, NULL, hook_stream);
    fx_run(&f, script_stream);
    assert_int_equal(atomic_load(&f.pauses), 3);
    assert_int_equal(atomic_load(&f.body_end_status), 0);
    assert_int_equal(atomic_load(&f.writes_issued), atomic_load(&f.writes_done));
    fx_stop(&f, 1000);
}

static void script_body_failures(struct fx *f)
{
    struct cl c;
    /* The body stops coming: 408 from the owner, then close. */
    cl_open(&c, f->port);
    T_CHECK(
        cl_sends(&c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 408);
    T_CHECK(atomic_load(&f->body_end_status) == 408);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
    /* A malformed chunk: 400. */
    atomic_store(&f->body_end_status, -1);
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    sleep_ms(30);
    T_CHECK(cl_sends(&c, "3\r\nabc\r\nzz\r\n"));
    T_CHECK(cl_response(&c, HTTP_POST));
    T_CHECK(c.status == 400);
    T_CHECK(atomic_load(&f->body_end_status) == 400);
    T_CHECK(cl_wait_eof(&c));
    cl_close(&c);
    /* The client leaves mid-body (no abort callback registered): on_end(400). */
    atomic_store(&f->body_end_status, -1);
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n01234"));
    sleep_ms(30);
    cl_close(&c);
    T_CHECK(wait_int(&f->body_end_status, 400));
    T_CHECK(wait_conns(f, 0));
}

static void test_read_body_failures(void **state)
{
    struct http_server_options o = {
        .max_body = 1000,
        .head_timeout_ms = 5000,
        .body_timeout_ms = 200,
        .idle_timeout_ms = 5000,
        .max_connections = 10,
    };
    struct fx f;
    fx_start(&f, &o, hook_stream);
    fx_run(&f, script_body_failures);
    fx_stop(&f, 1000);
}

/* --- streamed responses ---------------------------------------------------------------------- */

static int hook_respond(struct http_exchange *ex, void *data)
{
    struct http_exchange *e = ex;
    if (path_is(e, "/cl")) {
        assert_int_equal(http_exchange_write_body(e, "x", 1, NULL, NULL), -EINVAL);
        assert_int_equal(http_exchange_write_head(e, 200, NULL, 10), 0);
        assert_int_equal(http_exchange_write_body(e, "01234", 5, NULL, NULL), 0);
        assert_int_equal(http_exchange_write_body(e, "56789", 5, NULL, NULL), 0);
        /* Past the announced length; a HEAD response drops whatever it is given. */
        assert_int_equal(http_exchange_write_body(e, "!", 1, NULL, NULL),
                         e->req.method == HTTP_HEAD ? 0 : -EINVAL);
        http_exchange_end(e, true);
        return HTTP_HEAD_DEFER;
    }
    if (path_is(e, "/trunc")) {
        assert_int_equal(http_exchange_write_head(e, 200, NULL, 10), 0);
        assert_int_equal(http_exchange_write_body(e, "01234", 5, NULL, NULL), 0);
        http_exchange_end(e, true);
        return HTTP_HEAD_DEFER;
    }
    if (path_is(e, "/chunk")) {
        struct buf h = BUF_INIT;
        buf_append_str(&h, "X-Test: yes\r\n");
        assert_int_equal(http_exchange_write_head(e, 200, &h, -1), 0);
        buf_free(&h);
        assert_int_equal(http_exchange_write_body(e, "ab", 2, NULL, NULL), 0);
        assert_int_equal(http_exchange_write_body(e, "", 0, NULL, NULL), 0);
        assert_int_equal(http_exchange_write_body(e, "c", 1, NULL, NULL), 0);
        http_exchange_end(e, true);
        return HTTP_HEAD_DEFER;
    }
    if (path_is(e, "/empty")) {
        assert_int_equal(http_exchange_write_head(e, 204, NULL, -1), 0);
        assert_int_equal(http_exchange_write_body(e, "x", 1, NULL, NULL), -EINVAL);
        http_exchange_end(e, true);
        return HTTP_HEAD_DEFER;
    }
    if (path_is(e, "/nohead")) {
        http_exchange_end(e, true); /* no head: the connection closes unanswered */
        return HTTP_HEAD_DEFER;
    }
    return HTTP_HEAD_BUFFER;
}

static void script_respond(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /cl HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "0123456789") == 0);
    T_CHECK(has_header(&c, "content-length: 10"));
    T_CHECK(cl_sends(&c, "HEAD /cl HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_HEAD));
    T_CHECK(c.status == 200 && c.body.len == 0);
    T_CHECK(has_header(&c, "content-length: 10"));
    T_CHECK(cl_sends(&c, "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(c.status == 204 && c.body.len == 0);
    T_CHECK(!has_header(&c, "content-length"));
    T_CHECK(cl_sends(&c, "GET /chunk HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "abc") == 0);
    T_CHECK(has_header(&c, "transfer-encoding: chunked"));
    T_CHECK(has_header(&c, "x-test: yes"));
    /* Fewer bytes than announced: the connection closes. */
    T_CHECK(cl_sends(&c, "GET /trunc HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(!cl_response(&c, HTTP_GET));
    T_CHECK(c.body.len == 5);
    cl_close(&c);

    /* HTTP/1.0 and no length: close-delimited. */
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /chunk HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    T_CHECK(cl_response(&c, HTTP_GET));
    T_CHECK(strcmp(c.body.data, "abc") == 0);
    T_CHECK(!has_header(&c, "transfer-encoding"));
    T_CHECK(has_header(&c, "connection: close"));
    cl_close(&c);

    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /nohead HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(cl_wait_eof(&c));
    T_CHECK(c.in.len == 0);
    cl_close(&c);
}

static void test_write_response(void **state)
{
    struct fx f;
    fx_start(&f, NULL, hook_respond);
    fx_run(&f, script_respond);
    fx_stop(&f, 1000);
}

/* --- server-sent events and aborts
 * ---------------------------------------------------------------- */

static void sse_tick(uv_timer_t *t)
{
    struct fx *f = t->data;
    char line[64];
    int n = snprintf(line, sizeof line, "data: %d\n\n", f->events_sent++);
    /* Every other write without a callback (copied) and with one (not copied). */
    if (f->events_sent % 2 == 0) {
        assert_int_equal(http_exchange_write_body(f->ex, line, (size_t)n, NULL, NULL), 0);
    } else {
        static const char fixed[] = "data: fixed\n\n";
        if (http_exchange_write_body(f->ex, fixed, sizeof fixed - 1, written_cb, f) == 0)
            atomic_fetch_add(&f->writes_issued, 1);
    }
}

static void sse_abort(void *data)
{
    struct fx *f = data;
    atomic_fetch_add(&f->aborts, 1);
    uv_timer_stop(&f->timer);
    /* Every write has called back by now. */
    assert_int_equal(atomic_load(&f->writes_issued), atomic_load(&f->writes_done));
    assert_int_equal(http_exchange_write_body(f->ex, "x", 1, NULL, NULL), -ECONNRESET);
    http_exchange_end(f->ex, true);
    f->ex = NULL;
}

static int hook_sse(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    struct buf h = BUF_INIT;
    buf_append_str(&h, "Content-Type: text/event-stream\r\n");
    assert_int_equal(http_exchange_write_head(ex, 200, &h, -1), 0);
    buf_free(&h);
    http_exchange_on_abort(ex, sse_abort, f);
    f->ex = ex;
    timer_start(f, sse_tick, 10, 10);
    return HTTP_HEAD_DEFER;
}

static void script_sse(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
    /* The head arrives on its own, before any event. */
    while (c.in.data == NULL || strstr(c.in.data, "\r\n\r\n") == NULL)
        T_CHECK(cl_recv(&c));
    T_CHECK(strncmp(c.in.data, "HTTP/1.1 200 OK\r\n", 17) == 0);
    T_CHECK(strstr(c.in.data, "Transfer-Encoding: chunked\r\n") != NULL);
    while (strstr(c.in.data, "data: 3") == NULL)
        T_CHECK(cl_recv(&c));
    cl_close(&c);
    T_CHECK(wait_int(&f->aborts, 1));
    T_CHECK(wait_conns(f, 0));
}

static void test_sse_abort(void **state)
{
    struct fx f;
    fx_start(&f, NULL, hook_sse);
    fx_run(&f, script_sse);
    assert_int_equal(atomic_load(&f.aborts), 1);
    assert_true(atomic_load(&f.writes_issued) > 0);
    assert_int_equal(atomic_load(&f.done_calls), 1);
    fx_stop(&f, 1000);
}

/* A client that does not read: the write timeout closes the connection. */
static char big_block[1 << 20];

static int hook_big(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    assert_int_equal(http_exchange_write_head(ex, 200, NULL, 64 << 20), 0);
    http_exchange_on_abort(ex, sse_abort, f);
    f->ex = ex;
    for (int i = 0; i < 64; i++) {
        assert_int_equal(http_exchange_write_body(ex, big_block, sizeof big_block, written_cb, f),
                         0);
        atomic_fetch_add(&f->writes_issued, 1);
    }
    assert_true(http_exchange_write_queue_size(ex) > 0);
    return HTTP_HEAD_DEFER;
}

static void script_no_reader(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    int small = 4096;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    T_CHECK(cl_sends(&c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
    T_CHECK(wait_int(&f->aborts, 1));
    cl_close(&c);
    T_CHECK(wait_conns(f, 0));
}

static void test_write_timeout(void **state)
{
    struct http_server_options o = {
        .max_body = 1000,
        .head_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_connections = 10,
        .write_timeout_ms = 200,
    };
    struct fx f;
    fx_start(&f, &o, hook_big);
    fx_run(&f, script_no_reader);
    assert_int_equal(atomic_load(&f.writes_issued), 64);
    assert_int_equal(atomic_load(&f.writes_done), 64);
    fx_stop(&f, 1000);
}

/* --- upgrades ------------------------------------------------------------------------------------
 */

static void tunnel_handle_closed(uv_handle_t *h)
{
    struct fx *f = current;
    free(h);
    f->tunnel_closed_ms = uv_now(&f->loop);
    http_server_tunnel_remove(&f->tunnel);
}

static void tunnel_close_cb(struct http_tunnel *t)
{
    struct fx *f = current;
    atomic_fetch_add(&f->tunnel_closes, 1);
    uv_close((uv_handle_t *)f->tunnel_stream, tunnel_handle_closed);
}

static void tunnel_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    *b = uv_buf_init(xmalloc(4096), 4096);
}

struct echo_write {
    uv_write_t req;
    char *data;
};

static void echo_written(uv_write_t *req, int status)
{
    struct echo_write *w = (struct echo_write *)req;
    free(w->data);
    free(w);
}

static void tunnel_echo(uv_stream_t *s, const char *data, size_t n)
{
    struct echo_write *w = xmalloc(sizeof *w);
    w->data = xmalloc(n);
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    assert_int_equal(uv_write(&w->req, s, &b, 1, echo_written), 0);
}

static void tunnel_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n > 0)
        tunnel_echo(s, b->base, (size_t)n);
    free(b->base);
}

static int hook_upgrade(struct http_exchange *ex, void *data)
{
    struct fx *f = data;
    if (!ex->req.upgrade)
        return HTTP_HEAD_BUFFER;
    struct http_server *srv = ex->server;
    uv_stream_t *s = NULL;
    struct buf left = BUF_INIT;
    assert_int_equal(http_exchange_upgrade(ex, &s, &left), 0);
    assert_non_null(s);
    f->tunnel_stream = s;
    f->tunnel.close_cb = tunnel_close_cb;
    http_server_tunnel_add(srv, &f->tunnel);
    static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                             "Connection: Upgrade\r\n\r\n";
    tunnel_echo(s, ok, sizeof ok - 1);
    if (left.len > 0)
        tunnel_echo(s, left.data, left.len);
    buf_free(&left);
    uv_read_start(s, tunnel_alloc, tunnel_read);
    return HTTP_HEAD_DEFER;
}

static void script_upgrade(struct fx *f)
{
    struct cl c;
    cl_open(&c, f->port);
    T_CHECK(cl_sends(&c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
                         "PING1"));
    while (c.in.data == NULL || strstr(c.in.data, "PING1") == NULL)
        T_CHECK(cl_recv(&c));
    T_CHECK(strncmp(c.in.data, "HTTP/1.1 101 ", 13) == 0);
    T_CHECK(cl_sends(&c, "PING2"));
    while (strstr(c.in.data, "PING2") == NULL)
        T_CHECK(cl_recv(&c));
    T_CHECK(wait_conns(f, 1)); /* the tunnel still counts */
    /* Keep the socket: the main thread checks that shutdown closes it. */
    f->body.len = 0;
    buf_appendf(&f->body, "%d", c.fd);
    c.fd = -1;
    cl_close(&c);
}

static void test_upgrade_tunnel_shutdown(void **state)
{
    struct fx f;
    fx_start(&f, NULL, hook_upgrade);
    fx_run(&f, script_upgrade);
    int fd = (int)strtol(f.body.data, NULL, 10);
    assert_int_equal(http_server_tunnel_count(f.srv), 1);
    assert_int_equal(http_server_connection_count(f.srv), 1);
    assert_int_equal(atomic_load(&f.done_status), 101);
    fx_stop(&f, 150);
    /* Closed only when the grace period ended, then shutdown completed. */
    assert_int_equal(atomic_load(&f.tunnel_closes), 1);
    assert_true(f.tunnel_closed_ms - f.shutdown_started_ms >= 140);
    char b[16];
    assert_int_equal(recv(fd, b, sizeof b, 0), 0);
    close(fd);
}

static int setup(void **state)
{
    /* A peer that closes makes writes fail with EPIPE instead of killing the process (the
     * hub does the same). */
    signal(SIGPIPE, SIG_IGN);
    log_configure(LOG_ERROR, LOG_FORMAT_TEXT);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffered_pipelined),  cmocka_unit_test(test_buffered_rejects),
        cmocka_unit_test(test_half_close_and_idle), cmocka_unit_test(test_hook_defer),
        cmocka_unit_test(test_read_body),           cmocka_unit_test(test_read_body_failures),
        cmocka_unit_test(test_write_response),      cmocka_unit_test(test_sse_abort),
        cmocka_unit_test(test_write_timeout),       cmocka_unit_test(test_upgrade_tunnel_shutdown),
    };
    const char *only = getenv("TEST_ONLY");
    if (only != NULL)
        cmocka_set_test_filter(only);
    return cmocka_run_group_tests(tests, setup, NULL);
}

/* The HTTP/1.1 server (see server.h for the model).
 *
 * A connection is in one of five states. READING: the server reads a request head, or
 * the body of a buffered request. HANDLING: someone else (the head hook's caller, the
 * handler, a streaming owner) holds the exchange; the server reads only a streamed body,
 * or watches for the client going away. WRITING: the last bytes of a response are being
 * written; when they are out, the next pipelined request is read or the connection
 * lingers and closes. LINGERING: the write side is shut, input is drained for a while so
 * that unread bytes do not make the kernel reset the response away. CLOSED: uv_close was
 * called; the connection is freed when its handles are closed and no one holds its
 * exchange.
 *
 * Callbacks into owners never run inside the parser, and the things that would otherwise
 * re-enter an owner from inside its own call (a response head waiting for body bytes, a
 * response completing with nothing left to write, a body failure noticed during a write)
 * are deferred to an idle handle that runs before the loop next waits for I/O. */
#include "http/server.h"

#include "core/alloc.h"
#include "core/log.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HTTP_SERVER_MAGIC 0x48535256u
#define HTTP_CONN_MAGIC 0x48434f4eu
#define HTTP_EXCHANGE_MAGIC 0x48455843u

/* A closed connection keeps reading (and discarding) for this long after its last
 * response, so that the kernel does not answer unread pipelined bytes with a RST that
 * would destroy the response still in flight (nginx's "lingering close"). */
#define LINGER_MS 2000
#define READ_BUFFER_SIZE 65536
/* While an owner holds an exchange whose request is complete, bytes of a next pipelined
 * request are kept up to this much; beyond it the server stops reading until the
 * exchange ends. */
#define WATCH_INPUT_CAP (64 * 1024)
/* Write requests kept for reuse, so that a streamed response does not allocate per
 * write. */
#define WRITE_POOL_MAX 1024

enum conn_state {
    CONN_READING,   /* reading a request head, or a buffered body */
    CONN_HANDLING,  /* an owner holds the exchange */
    CONN_WRITING,   /* the end of a response is being written */
    CONN_LINGERING, /* write side shut, draining input before close */
    CONN_CLOSED,    /* uv_close called */
};

enum body_mode { BODY_UNDECIDED, BODY_BUFFER, BODY_STREAM };
enum res_mode { RES_NONE, RES_HEAD_QUEUED, RES_STREAMING, RES_FINISHED };
/* FRAME_DISCARD: a response to HEAD; body bytes written to it are dropped. */
enum framing { FRAME_NONE, FRAME_DISCARD, FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE };

/* Work deferred to the server's idle handle. */
#define DEFER_FLUSH 1u    /* write a queued response head */
#define DEFER_DONE 2u     /* a response completed with nothing left to write */
#define DEFER_BODY_END 4u /* tell the owner its body failed */
#define DEFER_WRITTEN 8u  /* run the callbacks of writes that completed at once */
/* A write of at most this many buffers is first tried at once (see conn_write). */
#define TRY_WRITE_BUFS 8

/* Everything about the request/response in flight; reset for every request. */
struct conn_exchange_state {
    enum body_mode body_mode;
    bool head_ready;       /* on_head ran; the head is not handled yet */
    bool complete_pending; /* on_complete ran; not handled yet */
    bool req_complete;     /* the whole request (body included) has been parsed */
    bool body_paused;
    bool body_failed;
    bool body_end_called;
    int body_fail_status;
    http_body_cb on_data;
    http_body_end_cb on_end;
    void *body_data;
    enum res_mode res_mode;
    enum framing framing;
    uint64_t res_remaining; /* FRAME_LENGTH: bytes still to come */
    void (*on_abort)(void *);
    void *abort_data;
    bool abort_called;
    bool owned; /* an owner (hook caller, handler, streamer) holds the exchange */
    bool continue_sent;
    uint64_t body_progress_ms;
    uint64_t write_progress_ms;
};

struct http_write {
    uv_write_t req;
    struct http_conn *c;
    void (*written)(void *);
    void *data;
    char *copy; /* owned copy of the body bytes, when the caller gave no callback */
    char chunk[24];
    struct http_write *next_free;
};

struct http_conn {
    uint32_t magic;
    struct http_server *srv;
    struct http_conn *prev, *next;
    uv_tcp_t *tcp; /* separate allocation: an upgrade hands it over */
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    int open_handles;
    enum conn_state state;
    struct http_parse *parser;
    struct buf in;   /* bytes read but not yet consumed by the parser */
    struct buf head; /* the serialized response head (referenced by a write until done) */
    struct http_exchange *ex;
    struct conn_exchange_state x;
    unsigned writes_pending;
    bool reading;
    bool head_started;  /* bytes of a request head have arrived */
    bool close_after;   /* close once the current response is written */
    bool close_pending; /* closed while an owner without abort callback held the exchange */
    bool parsing;       /* inside conn_parse: owners' calls must not feed again */
    bool in_abort_cb;   /* inside on_abort: the owner's release must not free `c` */
    /* The input being parsed, so that an upgrade inside a callback can take the rest. */
    const char *feed;
    size_t feed_len, feed_off;
    bool feed_is_in;
    int error_status; /* set by callbacks to turn a parse abort into this status */
    bool peer_eof;    /* the client shut its sending side; answer, then close */
    uint64_t idle_since_ms, head_since_ms, linger_since_ms; /* timeout stamps */
    unsigned deferred;
    /* Writes that went out whole at once, whose callbacks are due (DEFER_WRITTEN). */
    struct http_write *written_head, *written_tail;
    struct http_conn *defer_prev, *defer_next;
    bool in_defer_list;
    char remote_addr[64];
    int remote_port;
};

struct http_server {
    uint32_t magic;
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listener_open;
    bool shutting_down;
    bool shutdown_reported;
    bool grace_over;
    struct http_server_options opt;
    http_handler_cb handler;
    http_head_cb head_hook;
    http_done_cb done;
    void *data;
    struct http_conn *conns;
    size_t nconns;
    struct http_tunnel *tunnels;
    size_t ntunnels;
    uv_timer_t grace_timer;
    bool grace_timer_open;
    uv_idle_t idle;
    bool idle_open;
    struct http_conn *defer_head;
    void (*shutdown_cb)(void *);
    void *shutdown_data;
    int port;
    uint64_t last_accept_error_log;
    uint64_t date_second;
    char date[64];
    struct http_write *free_writes;
    size_t nfree_writes;
    char read_buffer[READ_BUFFER_SIZE];
    bool read_buffer_busy;
};

static void conn_close(struct http_conn *c);
static bool conn_gone(const struct http_conn *c);
static void conn_release_dead(struct http_conn *c);
static void conn_release_exchange(struct http_conn *c, bool report);
static void conn_parse_in(struct http_conn *c);
static void conn_send_error(struct http_conn *c, int status, const char *reason);
static void conn_sync_reading(struct http_conn *c);
static void conn_timer_update(struct http_conn *c);
static void conn_response_done(struct http_conn *c);
static void conn_defer(struct http_conn *c, unsigned what);
static void server_maybe_report_shutdown(struct http_server *srv);

static uint64_t now_ms(const struct http_server *srv)
{
    return uv_now(srv->loop);
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

static bool header_text_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

void http_response_header(struct http_response *res, const char *name, const char *value)
{
    if (!header_text_ok(name) || !header_text_ok(value)) {
        log_event(LOG_ERROR, "http.bad_response_header", "name", name, (const char *)NULL);
        return;
    }
    buf_append_str(&res->headers, name);
    buf_append(&res->headers, ": ", 2);
    buf_append_str(&res->headers, value);
    buf_append(&res->headers, "\r\n", 2);
}

void http_response_headerf(struct http_response *res, const char *name, const char *fmt, ...)
{
    struct buf value = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&value, fmt, ap);
    va_end(ap);
    http_response_header(res, name, value.data ? value.data : "");
    buf_free(&value);
}

void http_response_set(struct http_response *res, int status, const char *content_type,
                       const void *body, size_t len)
{
    res->status = status;
    if (content_type != NULL)
        http_response_header(res, "Content-Type", content_type);
    buf_reset(&res->body);
    buf_append(&res->body, body, len);
}

/* Appends the decimal digits of v (no printf on the per-request path). */
static void append_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    buf_append(b, tmp + i, sizeof tmp - i);
}

static const char *server_date(struct http_server *srv)
{
    time_t now = time(NULL);
    if ((uint64_t)now != srv->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof srv->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_second = (uint64_t)now;
    }
    return srv->date;
}

/* --- exchanges ------------------------------------------------------------------------ */

static struct http_exchange *exchange_new(struct http_conn *c)
{
    struct http_exchange *ex = xcalloc(1, sizeof *ex);
    ex->magic = HTTP_EXCHANGE_MAGIC;
    ex->conn = c;
    ex->server = c->srv;
    arena_init(&ex->arena, 2048);
    ex->res.status = 200;
    ex->req.method = -1;
    ex->req.method_name = "-";
    ex->req.target = "-";
    ex->req.path = "-";
    ex->req.content_length = -1;
    memcpy(ex->req.remote_addr, c->remote_addr, sizeof ex->req.remote_addr);
    ex->req.remote_port = c->remote_port;
    ex->req.start_ns = uv_hrtime();
    return ex;
}

static void exchange_free(struct http_exchange *ex)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    buf_free(&ex->req.body);
    buf_free(&ex->res.headers);
    buf_free(&ex->res.body);
    arena_free(&ex->arena);
    ex->magic = 0;
    free(ex);
}

static void conn_free(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->in_defer_list) {
        if (c->defer_prev != NULL)
            c->defer_prev->defer_next = c->defer_next;
        else
            srv->defer_head = c->defer_next;
        if (c->defer_next != NULL)
            c->defer_next->defer_prev = c->defer_prev;
    }
    srv->nconns--;
    /* An exchange the server still held (a response whose write failed) goes too. */
    conn_release_exchange(c, true);
    http_parse_free(c->parser);
    buf_free(&c->in);
    buf_free(&c->head);
    c->magic = 0;
    free(c);
    server_maybe_report_shutdown(srv);
}

/* A connection can go once its handles are closed and nobody holds its exchange. */
static void conn_maybe_free(struct http_conn *c)
{
    if (c->state == CONN_CLOSED && c->open_handles == 0 && c->writes_pending == 0 &&
        !c->in_abort_cb && !(c->ex != NULL && c->x.owned))
        conn_free(c);
}

/* Calls the done callback and frees the exchange the connection holds. */
static void conn_release_exchange(struct http_conn *c, bool report)
{
    struct http_exchange *ex = c->ex;
    if (ex == NULL)
        return;
    struct http_server *srv = c->srv;
    if (report && srv->done != NULL)
        srv->done(ex, uv_hrtime() - ex->req.start_ns, srv->data);
    exchange_free(ex);
    c->ex = NULL;
    c->x.owned = false;
}

/* --- writes ------------------------------------------------------------------------------- */

static struct http_write *write_get(struct http_server *srv)
{
    struct http_write *w = srv->free_writes;
    if (w != NULL) {
        srv->free_writes = w->next_free;
        srv->nfree_writes--;
    } else {
        w = xmalloc(sizeof *w);
    }
    w->written = NULL;
    w->data = NULL;
    w->copy = NULL;
    w->next_free = NULL;
    return w;
}

static void write_put(struct http_server *srv, struct http_write *w)
{
    free(w->copy);
    w->copy = NULL;
    if (srv->nfree_writes >= WRITE_POOL_MAX) {
        free(w);
        return;
    }
    w->next_free = srv->free_writes;
    srv->free_writes = w;
    srv->nfree_writes++;
}

static void conn_write_cb(uv_write_t *req, int status)
{
    struct http_write *w = req->data;
    struct http_conn *c = w->c;
    assert(c->magic == HTTP_CONN_MAGIC);
    struct http_server *srv = c->srv;
    void (*written)(void *) = w->written;
    void *wdata = w->data;
    write_put(srv, w);
    c->writes_pending--;
    if (status == 0)
        c->x.write_progress_ms = now_ms(srv);
    /* Exactly once per accepted write, success or not (the owner frees its bytes). */
    if (written != NULL)
        written(wdata);
    if (c->state == CONN_CLOSED) {
        conn_maybe_free(c);
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes_pending == 0 && c->state == CONN_WRITING)
        conn_response_done(c);
    else
        conn_timer_update(c);
}

static void conn_defer(struct http_conn *c, unsigned what);

/* Writes bufs[0..n) with write `w` (its callback fields set). Returns 0 or -ECONNRESET
 * (then `w` is released without calling back and the connection is closing).
 *
 * With nothing queued, the bytes are first written at once (uv_try_write); when they all
 * go, the callback is deferred to the idle handle, as it must never run inside this call.
 * Besides saving libuv a queued write, this spares the epoll_ctl that libuv issues after
 * every completed uv_write (it drops POLLOUT even when it was never set): one syscall per
 * proxied response. */
static int conn_write(struct http_conn *c, struct http_write *w, uv_buf_t *bufs, unsigned n)
{
    w->c = c;
    w->req.data = w;
    if (c->writes_pending == 0)
        c->x.write_progress_ms = now_ms(c->srv);
    uv_buf_t rest[TRY_WRITE_BUFS];
    if (c->writes_pending == 0 && n <= TRY_WRITE_BUFS) {
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += bufs[i].len;
        int k = uv_try_write((uv_stream_t *)c->tcp, bufs, n);
        if (k >= 0 && (size_t)k == total) {
            w->next_free = NULL;
            if (c->written_tail != NULL)
                c->written_tail->next_free = w;
            else
                c->written_head = w;
            c->written_tail = w;
            c->writes_pending++;
            conn_defer(c, DEFER_WRITTEN);
            conn_timer_update(c);
            return 0;
        }
        if (k > 0) {
            /* Queue what is left. */
            size_t skip = (size_t)k;
            unsigned m = 0;
            for (unsigned i = 0; i < n; i++) {
                if (skip >= bufs[i].len) {
                    skip -= bufs[i].len;
                    continue;
                }
                rest[m] = uv_buf_init(bufs[i].base + skip, (unsigned)(bufs[i].len - skip));
                skip = 0;
                m++;
            }
            bufs = rest;
            n = m;
        }
        /* An error (other than EAGAIN) shows again in uv_write or its callback. */
    }
    int rc = uv_write(&w->req, (uv_stream_t *)c->tcp, bufs, n, conn_write_cb);
    if (rc != 0) {
        write_put(c->srv, w);
        conn_close(c);
        return -ECONNRESET;
    }
    c->writes_pending++;
    conn_timer_update(c);
    return 0;
}

/* --- timers ------------------------------------------------------------------------ */

static uint64_t write_timeout(const struct http_server *srv)
{
    return srv->opt.write_timeout_ms ? srv->opt.write_timeout_ms : srv->opt.body_timeout_ms;
}

static bool conn_streaming_body(const struct http_conn *c)
{
    return c->x.body_mode == BODY_STREAM && !c->x.req_complete && !c->x.body_paused &&
           !c->x.body_failed;
}

static void conn_body_failed(struct http_conn *c, int status);

enum conn_timeout { TMO_NONE, TMO_IDLE, TMO_HEAD, TMO_BODY, TMO_WRITE, TMO_LINGER };

static void earliest(uint64_t *d, enum conn_timeout *what, uint64_t since, uint64_t ms,
                     enum conn_timeout kind)
{
    if (ms == 0)
        return; /* no limit configured */
    uint64_t cand = since + ms;
    if (*d == 0 || cand < *d) {
        *d = cand;
        *what = kind;
    }
}

/* The connection's next deadline (loop time, ms) and what it is for; 0 when none. Every
 * limit is measured from a progress stamp, so progress only moves deadlines later. */
static uint64_t conn_deadline(const struct http_conn *c, enum conn_timeout *what)
{
    const struct http_server *srv = c->srv;
    uint64_t d = 0;
    *what = TMO_NONE;
    switch (c->state) {
    case CONN_READING:
        if (c->ex != NULL && c->x.body_mode == BODY_BUFFER)
            earliest(&d, what, c->x.body_progress_ms, srv->opt.body_timeout_ms, TMO_BODY);
        else if (c->ex != NULL || c->head_started)
            earliest(&d, what, c->head_since_ms, srv->opt.head_timeout_ms, TMO_HEAD);
        else
            earliest(&d, what, c->idle_since_ms, srv->opt.idle_timeout_ms, TMO_IDLE);
        break;
    case CONN_HANDLING:
        if (conn_streaming_body(c))
            earliest(&d, what, c->x.body_progress_ms, srv->opt.body_timeout_ms, TMO_BODY);
        /* fall through */
    case CONN_WRITING:
        if (c->writes_pending > 0)
            earliest(&d, what, c->x.write_progress_ms, write_timeout(srv), TMO_WRITE);
        break;
    case CONN_LINGERING:
        earliest(&d, what, c->linger_since_ms, LINGER_MS, TMO_LINGER);
        break;
    default:
        break;
    }
    return d;
}

static void conn_timer_cb(uv_timer_t *timer);

/* Call when a deadline may have moved earlier. The timer is restarted only when it would
 * fire too late; it is never stopped for a deadline that went away or moved later: when
 * it fires it looks again, and re-arms or does nothing. So a busy keep-alive connection
 * touches the timer heap about once per timeout period, not several times per request. */
static void conn_timer_update(struct http_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    enum conn_timeout what;
    uint64_t d = conn_deadline(c, &what);
    if (d == 0)
        return;
    uint64_t now = now_ms(c->srv);
    uint64_t in = d > now ? d - now : 0;
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > in)
        uv_timer_start(&c->timer, conn_timer_cb, in, 0);
}

static void conn_timer_cb(uv_timer_t *timer)
{
    struct http_conn *c = timer->data;
    assert(c->magic == HTTP_CONN_MAGIC);
    enum conn_timeout what;
    uint64_t d = conn_deadline(c, &what);
    if (d == 0)
        return;
    uint64_t now = now_ms(c->srv);
    if (now < d) {
        uv_timer_start(timer, conn_timer_cb, d - now, 0);
        return;
    }
    switch (what) {
    case TMO_IDLE:
    case TMO_LINGER:
        conn_close(c);
        break;
    case TMO_HEAD:
        /* A slow or stalled client: answer 408 so a real client learns why. */
        conn_send_error(c, 408, "request head timed out");
        break;
    case TMO_BODY:
        if (c->state == CONN_READING) {
            conn_send_error(c, 408, "request body timed out");
        } else {
            log_event(LOG_INFO, "http.body_timeout", "addr", c->remote_addr, (const char *)NULL);
            conn_body_failed(c, 408);
        }
        break;
    case TMO_WRITE:
        log_event(LOG_INFO, "http.write_timeout", "addr", c->remote_addr, (const char *)NULL);
        conn_close(c);
        break;
    case TMO_NONE:
        break;
    }
}

/* --- deferred work -------------------------------------------------------------------- */

static void server_idle_cb(uv_idle_t *idle);

static void conn_defer(struct http_conn *c, unsigned what)
{
    struct http_server *srv = c->srv;
    c->deferred |= what;
    if (c->in_defer_list)
        return;
    c->in_defer_list = true;
    c->defer_prev = NULL;
    c->defer_next = srv->defer_head;
    if (srv->defer_head != NULL)
        srv->defer_head->defer_prev = c;
    srv->defer_head = c;
    if (!srv->idle_open) {
        uv_idle_init(srv->loop, &srv->idle);
        srv->idle.data = srv;
        srv->idle_open = true;
    }
    if (!uv_is_active((uv_handle_t *)&srv->idle))
        uv_idle_start(&srv->idle, server_idle_cb);
}

static void conn_flush_head(struct http_conn *c)
{
    if (c->x.res_mode != RES_HEAD_QUEUED || c->state == CONN_CLOSED || c->close_pending)
        return;
    c->x.res_mode = RES_STREAMING;
    uv_buf_t b = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (conn_write(c, write_get(c->srv), &b, 1) == 0)
        conn_timer_update(c);
}

static void server_idle_cb(uv_idle_t *idle)
{
    struct http_server *srv = idle->data;
    /* Take one connection at a time off the list: work done here may defer more (it
     * goes on the list and is picked up by this loop or the next run). */
    while (srv->defer_head != NULL) {
        struct http_conn *c = srv->defer_head;
        srv->defer_head = c->defer_next;
        if (srv->defer_head != NULL)
            srv->defer_head->defer_prev = NULL;
        c->in_defer_list = false;
        unsigned what = c->deferred;
        c->deferred = 0;
        if ((what & DEFER_FLUSH) != 0)
            conn_flush_head(c);
        if ((what & DEFER_BODY_END) != 0 && c->ex != NULL && c->x.owned && c->x.on_end != NULL &&
            !c->x.body_end_called) {
            c->x.body_end_called = true;
            c->x.on_end(c->x.body_data, c->x.body_fail_status ? c->x.body_fail_status : 400);
        }
        if ((what & DEFER_DONE) != 0 && c->state == CONN_WRITING && c->writes_pending == 0)
            conn_response_done(c);
        if ((what & DEFER_WRITTEN) != 0) {
            /* Last: each callback holds a pending write, so `c` stays until the last one,
             * which may free it. */
            struct http_write *w = c->written_head;
            c->written_head = c->written_tail = NULL;
            while (w != NULL) {
                struct http_write *next = w->next_free;
                conn_write_cb(&w->req, 0);
                w = next;
            }
        }
    }
    uv_idle_stop(idle);
}

/* --- parser callbacks ---------------------------------------------------------------- */

static int on_head(void *data, struct http_head *head)
{
    struct http_conn *c = data;
    struct http_exchange *ex = exchange_new(c);
    struct http_request *req = &ex->req;

    /* The head stays valid in the parser until the next message begins, which is after
     * this exchange is released: point into it instead of copying. */
    req->method = head->method;
    req->method_name = head->method_name;
    req->target = head->target;
    const char *q = memchr(head->target, '?', head->target_len);
    if (q != NULL) {
        req->path = arena_strndup(&ex->arena, head->target, (size_t)(q - head->target));
        req->query = q + 1;
    } else {
        req->path = head->target;
    }
    req->headers = head->headers;
    req->nheaders = head->nheaders;
    req->version_minor = head->version_minor;
    req->keep_alive = head->keep_alive;
    req->upgrade = head->upgrade;
    req->content_length = head->content_length;
    req->chunked = head->chunked;
    c->ex = ex;
    memset(&c->x, 0, sizeof c->x);
    c->x.head_ready = true;
    if (req->upgrade)
        c->close_after = true; /* the parser reads nothing after an upgrade request */
    return 0;
}

static int on_body(void *data, const char *chunk, size_t len)
{
    struct http_conn *c = data;
    struct http_exchange *ex = c->ex;
    struct http_server *srv = c->srv;
    switch (c->x.body_mode) {
    case BODY_UNDECIDED:
        /* Bytes that came with the head while nobody has decided yet: keep them (at most
         * one read's worth) and pause. */
        buf_append(&ex->req.body, chunk, len);
        return 1;
    case BODY_BUFFER:
        if (ex->req.body.len + len > srv->opt.max_body) {
            c->error_status = 413;
            return 2;
        }
        buf_append(&ex->req.body, chunk, len);
        c->x.body_progress_ms = now_ms(srv);
        return 0;
    case BODY_STREAM:
    default:
        c->x.body_progress_ms = now_ms(srv);
        c->x.on_data(c->x.body_data, chunk, len);
        /* The owner may have paused, ended or abandoned the exchange meanwhile. */
        if (c->ex != ex || c->state != CONN_HANDLING || c->x.body_paused || c->x.body_failed)
            return 1;
        return 0;
    }
}

static int on_complete(void *data)
{
    struct http_conn *c = data;
    c->x.req_complete = true;
    c->x.complete_pending = true;
    return 0;
}

static const struct http_parse_callbacks parse_callbacks = {on_head, on_body, on_complete};

/* --- reading ------------------------------------------------------------------------ */

static void conn_read_stop(struct http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)c->tcp);
        c->reading = false;
    }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = handle->data;
    struct http_server *srv = c->srv;
    /* One read buffer serves every connection: the loop reads one socket at a time and
     * the parser takes the bytes straight from it; only what it leaves is copied. */
    if (!srv->read_buffer_busy) {
        srv->read_buffer_busy = true;
        *buf = uv_buf_init(srv->read_buffer, sizeof srv->read_buffer);
    } else {
        *buf = uv_buf_init(xmalloc(READ_BUFFER_SIZE), READ_BUFFER_SIZE);
    }
}

static void release_read_buffer(struct http_server *srv, const uv_buf_t *buf)
{
    if (buf->base == srv->read_buffer)
        srv->read_buffer_busy = false;
    else
        free(buf->base);
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct http_conn *c)
{
    if (!c->reading && c->tcp != NULL &&
        uv_read_start((uv_stream_t *)c->tcp, alloc_cb, conn_read_cb) == 0)
        c->reading = true;
}

/* Whether the parser should be fed now. */
static bool conn_wants_parse(const struct http_conn *c)
{
    if (c->state == CONN_READING)
        return !c->x.head_ready;
    return c->state == CONN_HANDLING && c->x.body_mode == BODY_STREAM && !c->x.req_complete &&
           !c->x.body_paused && !c->x.body_failed && c->ex != NULL;
}

/* Whether the request whose head is in hand has no body at all (so nothing the parser
 * would be fed for it is left to read). */
static bool request_has_no_body(const struct http_conn *c)
{
    return c->ex != NULL && !c->ex->req.chunked && c->ex->req.content_length <= 0;
}

/* Whether the socket should be read now. */
static void conn_sync_reading(struct http_conn *c)
{
    bool want = false;
    switch (c->state) {
    case CONN_READING:
    case CONN_LINGERING:
        want = true;
        break;
    case CONN_HANDLING:
        if (c->close_pending || c->peer_eof)
            break;
        if (conn_wants_parse(c))
            want = true;
        else if ((c->x.req_complete || request_has_no_body(c)) && c->in.len < WATCH_INPUT_CAP)
            want = true; /* watch for the client going away; keep a next request. A
                          * deferred head with no body counts as complete: what follows
                          * is the next request, so reading on costs no stop and restart
                          * (an epoll_ctl each) per proxied request. */
        break;
    case CONN_WRITING:
        /* Keep reading if we were (no stop/start per request), within the same bound. */
        want = c->reading && !c->close_after && !c->peer_eof && c->in.len < WATCH_INPUT_CAP;
        break;
    default:
        break;
    }
    if (want)
        conn_read_start(c);
    else
        conn_read_stop(c);
}

static void dispatch(struct http_conn *c)
{
    struct http_exchange *ex = c->ex;
    c->state = CONN_HANDLING;
    c->x.owned = true;
    c->head_started = false;
    conn_sync_reading(c);
    if (c->srv->shutting_down)
        c->close_after = true;
    c->srv->handler(ex, c->srv->data);
}

static void send_continue(struct http_conn *c)
{
    /* Only when the body is really wanted and has not all come (RFC 9110 10.1.1). */
    struct http_request *req = &c->ex->req;
    if (c->x.continue_sent || c->x.req_complete || req->version_minor < 1)
        return;
    const char *expect = http_request_header(req, "Expect");
    if (expect == NULL || strcasecmp(expect, "100-continue") != 0)
        return;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
    /* Nothing else is queued on the socket before the response, so this normally goes
     * out at once; if the kernel cannot take 25 bytes the client times out its wait. */
    uv_try_write((uv_stream_t *)c->tcp, &b, 1);
    c->x.continue_sent = true;
}

/* Puts an exchange on the buffered path. */
static void conn_begin_buffer(struct http_conn *c)
{
    struct http_exchange *ex = c->ex;
    struct http_server *srv = c->srv;
    c->x.body_mode = BODY_BUFFER;
    c->x.owned = false;
    if ((ex->req.content_length > 0 && (uint64_t)ex->req.content_length > srv->opt.max_body) ||
        ex->req.body.len > srv->opt.max_body) {
        c->state = CONN_READING;
        conn_send_error(c, 413, "request body too large");
        return;
    }
    if (c->x.req_complete) {
        c->x.complete_pending = false;
        dispatch(c);
        return;
    }
    c->state = CONN_READING;
    send_continue(c);
    c->x.body_progress_ms = now_ms(srv);
    conn_timer_update(c);
    conn_sync_reading(c);
    if (!c->parsing)
        conn_parse_in(c);
}

static void conn_head_ready(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    struct http_exchange *ex = c->ex;
    c->x.head_ready = false;
    c->head_started = false;
    if (srv->head_hook == NULL) {
        conn_begin_buffer(c);
        return;
    }
    c->state = CONN_HANDLING;
    c->x.owned = true;
    int r = srv->head_hook(ex, srv->data);
    if (r == HTTP_HEAD_BUFFER) {
        /* The hook must not have touched the exchange then. */
        assert(c->ex == ex && c->x.body_mode == BODY_UNDECIDED && c->state == CONN_HANDLING);
        conn_begin_buffer(c);
        return;
    }
    if (c->ex == ex && c->state == CONN_HANDLING) {
        conn_sync_reading(c);
        conn_timer_update(c);
    }
}

static void conn_complete(struct http_conn *c)
{
    c->x.complete_pending = false;
    switch (c->x.body_mode) {
    case BODY_BUFFER:
        if (c->state == CONN_READING)
            dispatch(c);
        break;
    case BODY_STREAM:
        if (!c->x.body_end_called && !c->x.body_failed && c->ex != NULL) {
            c->x.body_end_called = true;
            c->x.on_end(c->x.body_data, 0);
        }
        break;
    default:
        break;
    }
    if (c->state == CONN_HANDLING)
        conn_sync_reading(c);
}

/* A body error while an owner streams the body (or the client left without an abort
 * callback to tell). */
static void conn_body_failed(struct http_conn *c, int status)
{
    c->x.body_failed = true;
    c->x.body_fail_status = status;
    c->close_after = true;
    conn_sync_reading(c);
    conn_timer_update(c);
    if (c->x.on_end != NULL && !c->x.body_end_called) {
        c->x.body_end_called = true;
        c->x.on_end(c->x.body_data, status);
    }
}

static void conn_parse_failed(struct http_conn *c)
{
    int status = c->error_status ? c->error_status : http_parse_error_status(c->parser);
    const char *reason =
        c->error_status == 413 ? "request body too large" : http_parse_error_reason(c->parser);
    if (c->state == CONN_HANDLING && c->x.body_mode == BODY_STREAM) {
        log_event(LOG_INFO, "http.reject", "addr", c->remote_addr, "reason", reason,
                  (const char *)NULL);
        conn_body_failed(c, status);
        return;
    }
    if (c->state == CONN_READING)
        conn_send_error(c, status, reason);
}

/* Feeds data[0..len) to the parser while the connection wants it. Returns the bytes
 * consumed; the caller keeps the rest. */
static size_t conn_parse(struct http_conn *c, const char *data, size_t len, bool is_in)
{
    c->parsing = true;
    c->feed = data;
    c->feed_len = len;
    c->feed_off = 0;
    c->feed_is_in = is_in;
    while (conn_wants_parse(c)) {
        bool was_idle = http_parse_idle(c->parser);
        bool had_ex = c->ex != NULL;
        size_t off = c->feed_off;
        ssize_t n = http_parse_feed(c->parser, data + off, len - off);
        if (n < 0) {
            c->feed_off = len;
            conn_parse_failed(c);
            break;
        }
        c->feed_off += (size_t)n;
        bool event = c->x.head_ready || c->x.complete_pending;
        /* Owners called from here may buffer, stream or resume: those calls see
         * `parsing` and leave the feeding to this loop, which re-checks what is wanted. */
        if (c->x.head_ready)
            conn_head_ready(c);
        if (c->x.complete_pending && c->ex != NULL)
            conn_complete(c);
        if (c->state == CONN_READING && !had_ex && c->ex == NULL && was_idle &&
            !http_parse_idle(c->parser) && !c->head_started) {
            c->head_started = true;
            c->head_since_ms = now_ms(c->srv);
            conn_timer_update(c);
        }
        if (!event && n == 0)
            break;
    }
    c->parsing = false;
    size_t used = c->feed_off;
    c->feed = NULL;
    return used;
}

static void conn_parse_in(struct http_conn *c)
{
    if (c->parsing)
        return;
    size_t used = conn_parse(c, c->in.data ? c->in.data : "", c->in.len, true);
    buf_consume(&c->in, used > c->in.len ? c->in.len : used);
}

static void conn_input(struct http_conn *c, const char *data, size_t len)
{
    if ((c->state == CONN_HANDLING || c->state == CONN_WRITING) && !conn_wants_parse(c)) {
        /* Watching: keep the bytes of a next request for later. */
        buf_append(&c->in, data, len);
        conn_sync_reading(c);
        return;
    }
    if (c->in.len > 0) {
        buf_append(&c->in, data, len);
        conn_parse_in(c);
        return;
    }
    size_t used = conn_parse(c, data, len, false);
    if (used < len && c->state != CONN_CLOSED)
        buf_append(&c->in, data + used, len - used);
}

static void conn_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = stream->data;
    assert(c->magic == HTTP_CONN_MAGIC);
    struct http_server *srv = c->srv;

    if (nread < 0) {
        release_read_buffer(srv, buf);
        bool waiting =
            c->state == CONN_WRITING || (c->state == CONN_HANDLING && !conn_wants_parse(c) &&
                                         c->x.on_abort == NULL && c->x.req_complete);
        if (nread == UV_EOF && waiting) {
            /* The client is done sending but may still be reading (a half-close): let the
             * response go out, then close. An owner with an abort callback (a proxied or
             * streamed response) is told instead, below, as nginx does. */
            c->peer_eof = true;
            c->close_after = true;
            conn_read_stop(c);
            return;
        }
        if (c->state == CONN_HANDLING && conn_wants_parse(c) && c->x.on_abort == NULL) {
            /* The client left mid-body and no one listens for aborts: fail the body. */
            conn_body_failed(c, 400);
        }
        conn_close(c);
        return;
    }
    if (nread == 0 || c->state == CONN_LINGERING || c->state == CONN_CLOSED) {
        release_read_buffer(srv, buf);
        return;
    }
    conn_input(c, buf->base, (size_t)nread);
    release_read_buffer(srv, buf);
    if (c->state != CONN_CLOSED)
        conn_sync_reading(c);
}

/* --- responses ---------------------------------------------------------------------- */

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0)
        conn_close(c);
}

static void conn_linger(struct http_conn *c)
{
    c->state = CONN_LINGERING;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)c->tcp, shutdown_cb) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
    c->linger_since_ms = now_ms(c->srv);
    conn_timer_update(c);
}

/* The response is out: report it, then read the next request or close. */
static void conn_response_done(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    buf_reset(&c->head);
    conn_release_exchange(c, true);
    memset(&c->x, 0, sizeof c->x);
    if (c->close_after || srv->shutting_down) {
        conn_linger(c);
        server_maybe_report_shutdown(srv);
        return;
    }
    c->state = CONN_READING;
    c->head_started = false;
    c->idle_since_ms = now_ms(srv);
    conn_timer_update(c);
    conn_read_start(c);
    conn_parse_in(c);
}

/* Writes "HTTP/1.1 NNN Reason\r\nDate: ...\r\n" into c->head. */
static void head_begin(struct http_conn *c, int status)
{
    struct buf *h = &c->head;
    buf_reset(h);
    buf_append(h, "HTTP/1.1 ", 9);
    char code[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), ' '};
    buf_append(h, code, 4);
    buf_append_str(h, http_status_reason(status));
    buf_append(h, "\r\nDate: ", 8);
    buf_append_str(h, server_date(c->srv));
    buf_append(h, "\r\n", 2);
}

static void head_connection(struct http_conn *c, const struct http_request *req)
{
    if (c->close_after)
        buf_append_str(&c->head, "Connection: close\r\n");
    else if (req->version_minor == 0)
        buf_append_str(&c->head, "Connection: keep-alive\r\n");
}

void http_exchange_finish(struct http_exchange *ex)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    struct http_server *srv = c->srv;
    struct http_response *res = &ex->res;

    assert(c->x.res_mode == RES_NONE);
    if (conn_gone(c)) {
        /* The connection died while the owner worked. */
        conn_release_dead(c);
        return;
    }
    if (res->close || !ex->req.keep_alive || srv->shutting_down || !c->x.req_complete ||
        c->x.body_failed)
        c->close_after = true;

    int status = res->status;
    if (status < 100 || status > 999)
        status = res->status = 500;
    bool bodyless = (status >= 100 && status < 200) || status == 204 || status == 304;
    head_begin(c, status);
    if (!bodyless) {
        buf_append_str(&c->head, "Content-Length: ");
        append_u64(&c->head, res->body.len);
        buf_append(&c->head, "\r\n", 2);
    }
    head_connection(c, &ex->req);
    buf_append(&c->head, res->headers.data, res->headers.len);
    buf_append(&c->head, "\r\n", 2);

    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    bufs[0] = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (!bodyless && ex->req.method != HTTP_HEAD && res->body.len > 0)
        bufs[nbufs++] = uv_buf_init(res->body.data, (unsigned)res->body.len);

    c->x.res_mode = RES_FINISHED;
    c->x.owned = false;
    c->state = CONN_WRITING;
    conn_sync_reading(c);
    conn_write(c, write_get(srv), bufs, nbufs); /* on failure the exchange goes with `c` */
}

static void conn_send_error(struct http_conn *c, int status, const char *reason)
{
    if (c->ex == NULL)
        c->ex = exchange_new(c);
    struct http_exchange *ex = c->ex;
    conn_read_stop(c);
    c->close_after = true;
    c->x.head_ready = false;
    c->x.complete_pending = false;
    log_event(LOG_INFO, "http.reject", "addr", c->remote_addr, "reason", reason,
              (const char *)NULL);
    buf_reset(&ex->res.headers);
    struct buf body = BUF_INIT;
    buf_appendf(&body, "%d %s: %s\n", status, http_status_reason(status), reason);
    http_response_set(&ex->res, status, "text/plain; charset=utf-8", body.data, body.len);
    buf_free(&body);
    ex->res.close = true;
    http_exchange_finish(ex);
}

void http_exchange_buffer(struct http_exchange *ex)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    assert(c->x.body_mode == BODY_UNDECIDED && c->x.res_mode == RES_NONE);
    if (c->close_pending || c->state == CONN_CLOSED) {
        http_exchange_finish(ex);
        return;
    }
    conn_begin_buffer(c);
}

/* --- streaming bodies ------------------------------------------------------------------- */

void http_exchange_read_body(struct http_exchange *ex, http_body_cb on_data,
                             http_body_end_cb on_end, void *data)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    assert(c->x.body_mode == BODY_UNDECIDED);
    c->x.body_mode = BODY_STREAM;
    c->x.on_data = on_data;
    c->x.on_end = on_end;
    c->x.body_data = data;
    c->x.body_progress_ms = now_ms(c->srv);
    if (c->close_pending || c->state == CONN_CLOSED) {
        /* Already gone: an abort callback (if any) tells; otherwise the body fails. */
        if (c->x.on_abort == NULL)
            conn_defer(c, DEFER_BODY_END);
        return;
    }
    send_continue(c);
    if (ex->req.body.len > 0) {
        /* Bytes that came with the head. */
        struct buf early = ex->req.body;
        ex->req.body = (struct buf)BUF_INIT;
        on_data(data, early.data, early.len);
        buf_free(&early);
        if (c->ex != ex || c->state != CONN_HANDLING)
            return;
    }
    if (c->x.req_complete) {
        c->x.complete_pending = false;
        if (!c->x.body_end_called) {
            c->x.body_end_called = true;
            on_end(data, 0);
        }
        if (c->ex == ex && c->state == CONN_HANDLING)
            conn_sync_reading(c);
        return;
    }
    conn_sync_reading(c);
    conn_timer_update(c);
    /* Bytes already read beyond the head, and a completion the stash pause held back. */
    if (!c->parsing)
        conn_parse_in(c);
}

void http_exchange_pause_body(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    if (c->x.body_paused)
        return;
    c->x.body_paused = true;
    if (c->state == CONN_HANDLING) {
        conn_sync_reading(c);
        conn_timer_update(c);
    }
}

void http_exchange_resume_body(struct http_exchange *ex)
{
    struct http_conn *c = ex->conn;
    if (!c->x.body_paused)
        return;
    c->x.body_paused = false;
    if (c->state != CONN_HANDLING)
        return;
    c->x.body_progress_ms = now_ms(c->srv);
    conn_timer_update(c);
    if (!c->parsing)
        conn_parse_in(c);
    if (c->ex == ex && c->state == CONN_HANDLING)
        conn_sync_reading(c);
}

/* --- streaming responses ----------------------------------------------------------------- */

static bool conn_gone(const struct http_conn *c)
{
    return c->state == CONN_CLOSED || c->close_pending || c->tcp == NULL;
}

int http_exchange_write_head(struct http_exchange *ex, int status, const struct buf *headers,
                             int64_t content_length)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    struct http_server *srv = c->srv;
    if (c->x.res_mode != RES_NONE || status < 100 || status > 999 || status == 101)
        return -EINVAL;
    if (conn_gone(c))
        return -ECONNRESET;
    ex->res.status = status;
    bool informational = status < 200;
    bool bodyless = informational || status == 204 || status == 304 || ex->req.method == HTTP_HEAD;
    if (srv->shutting_down || !ex->req.keep_alive)
        c->close_after = true;
    head_begin(c, status);
    if (bodyless) {
        c->x.framing = informational || status == 204 || status == 304 ? FRAME_NONE : FRAME_DISCARD;
        if (content_length >= 0 && !informational && status != 204) {
            buf_append_str(&c->head, "Content-Length: ");
            append_u64(&c->head, (uint64_t)content_length);
            buf_append(&c->head, "\r\n", 2);
        }
    } else if (content_length >= 0) {
        c->x.framing = FRAME_LENGTH;
        c->x.res_remaining = (uint64_t)content_length;
        buf_append_str(&c->head, "Content-Length: ");
        append_u64(&c->head, (uint64_t)content_length);
        buf_append(&c->head, "\r\n", 2);
    } else if (ex->req.version_minor >= 1) {
        c->x.framing = FRAME_CHUNKED;
        buf_append_str(&c->head, "Transfer-Encoding: chunked\r\n");
    } else {
        c->x.framing = FRAME_CLOSE;
        c->close_after = true;
    }
    head_connection(c, &ex->req);
    if (headers != NULL && headers->len > 0)
        buf_append(&c->head, headers->data, headers->len);
    buf_append(&c->head, "\r\n", 2);
    c->x.res_mode = RES_HEAD_QUEUED;
    conn_defer(c, DEFER_FLUSH);
    return 0;
}

int http_exchange_write_body(struct http_exchange *ex, const char *data, size_t len,
                             void (*written)(void *data), void *data_arg)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    if (c->x.res_mode != RES_HEAD_QUEUED && c->x.res_mode != RES_STREAMING)
        return -EINVAL;
    if (conn_gone(c))
        return -ECONNRESET;
    if (len > 0 &&
        (c->x.framing == FRAME_NONE || (c->x.framing == FRAME_LENGTH && len > c->x.res_remaining)))
        return -EINVAL;
    if (c->x.framing == FRAME_DISCARD)
        len = 0; /* HEAD: the same code may write a GET's body; nothing goes out */

    uv_buf_t bufs[4];
    unsigned n = 0;
    if (c->x.res_mode == RES_HEAD_QUEUED) {
        bufs[n++] = uv_buf_init(c->head.data, (unsigned)c->head.len);
        c->x.res_mode = RES_STREAMING;
    }
    struct http_write *w = write_get(c->srv);
    w->written = written;
    w->data = data_arg;
    if (len > 0) {
        const char *bytes = data;
        if (written == NULL) {
            w->copy = xmalloc(len);
            memcpy(w->copy, data, len);
            bytes = w->copy;
        }
        if (c->x.framing == FRAME_CHUNKED) {
            int k = snprintf(w->chunk, sizeof w->chunk, "%zx\r\n", len);
            bufs[n++] = uv_buf_init(w->chunk, (unsigned)k);
            bufs[n++] = uv_buf_init((char *)bytes, (unsigned)len);
            bufs[n++] = uv_buf_init((char *)"\r\n", 2);
        } else {
            bufs[n++] = uv_buf_init((char *)bytes, (unsigned)len);
        }
        if (c->x.framing == FRAME_LENGTH)
            c->x.res_remaining -= len;
    }
    if (n == 0)
        bufs[n++] = uv_buf_init((char *)"", 0); /* still calls `written` back in order */
    int rc = conn_write(c, w, bufs, n);
    if (rc == 0)
        conn_timer_update(c);
    return rc;
}

size_t http_exchange_write_queue_size(const struct http_exchange *ex)
{
    const struct http_conn *c = ex->conn;
    if (c->tcp == NULL || c->state == CONN_CLOSED)
        return 0;
    return uv_stream_get_write_queue_size((const uv_stream_t *)c->tcp);
}

/* The owner lets go of an exchange whose connection is gone or going. */
static void conn_release_dead(struct http_conn *c)
{
    conn_release_exchange(c, true);
    if (c->state == CONN_CLOSED) {
        conn_maybe_free(c);
        return;
    }
    c->close_pending = false;
    conn_close(c);
}

void http_exchange_end(struct http_exchange *ex, bool keep_alive)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    struct http_server *srv = c->srv;
    if (conn_gone(c)) {
        conn_release_dead(c);
        return;
    }
    if (c->x.res_mode == RES_NONE) {
        conn_release_exchange(c, false);
        conn_close(c);
        return;
    }
    bool truncated = c->x.framing == FRAME_LENGTH && c->x.res_remaining > 0;
    if (!keep_alive || !ex->req.keep_alive || !c->x.req_complete || c->x.body_failed || truncated ||
        c->x.framing == FRAME_CLOSE || srv->shutting_down)
        c->close_after = true;

    uv_buf_t bufs[2];
    unsigned n = 0;
    if (c->x.res_mode == RES_HEAD_QUEUED)
        bufs[n++] = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (c->x.framing == FRAME_CHUNKED)
        bufs[n++] = uv_buf_init((char *)"0\r\n\r\n", 5);
    c->x.res_mode = RES_FINISHED;
    c->state = CONN_WRITING;
    c->x.owned = false;
    conn_sync_reading(c);
    if (n > 0 && conn_write(c, write_get(srv), bufs, n) != 0)
        return;
    if (c->writes_pending == 0)
        conn_defer(c, DEFER_DONE); /* never complete inside the owner's own call */
}

void http_exchange_abort(struct http_exchange *ex)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    if (conn_gone(c)) {
        conn_release_dead(c);
        return;
    }
    c->close_after = true;
    conn_release_exchange(c, true);
    conn_close(c);
}

void http_exchange_on_abort(struct http_exchange *ex, void (*cb)(void *data), void *data)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    c->x.on_abort = cb;
    c->x.abort_data = data;
    if (c->close_pending || (c->peer_eof && c->state == CONN_HANDLING)) {
        /* It died (or shut its side) before anyone was listening: close now, the abort
         * comes from there. */
        c->close_pending = false;
        conn_close(c);
        return;
    }
    if (c->state == CONN_HANDLING)
        conn_sync_reading(c);
}

/* --- upgrades and tunnels ---------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *handle);

int http_exchange_upgrade(struct http_exchange *ex, uv_stream_t **client_out, struct buf *leftover)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    *client_out = NULL;
    if (!ex->req.upgrade || c->x.res_mode != RES_NONE || !c->x.req_complete ||
        c->writes_pending > 0)
        return -EINVAL;
    if (conn_gone(c))
        return -ECONNRESET;
    conn_read_stop(c);
    buf_append(leftover, c->in.data, c->in.len);
    buf_reset(&c->in);
    if (c->parsing && c->feed != NULL && !c->feed_is_in) {
        buf_append(leftover, c->feed + c->feed_off, c->feed_len - c->feed_off);
        c->feed_off = c->feed_len;
    } else if (c->parsing && c->feed_is_in) {
        c->feed_off = c->feed_len;
    }
    uv_tcp_t *tcp = c->tcp;
    tcp->data = NULL;
    c->tcp = NULL;
    *client_out = (uv_stream_t *)tcp;
    ex->res.status = 101;
    conn_release_exchange(c, true);
    /* The connection leaves the server's books; its timer is the last handle. */
    c->state = CONN_CLOSED;
    uv_timer_stop(&c->timer);
    c->open_handles = 1;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    return 0;
}

void http_server_tunnel_add(struct http_server *srv, struct http_tunnel *t)
{
    t->srv = srv;
    t->prev = NULL;
    t->next = srv->tunnels;
    if (srv->tunnels != NULL)
        srv->tunnels->prev = t;
    srv->tunnels = t;
    srv->ntunnels++;
    if (srv->grace_over && t->close_cb != NULL)
        t->close_cb(t);
}

void http_server_tunnel_remove(struct http_tunnel *t)
{
    struct http_server *srv = t->srv;
    if (srv == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        srv->tunnels = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->srv = NULL;
    t->prev = t->next = NULL;
    srv->ntunnels--;
    server_maybe_report_shutdown(srv);
}

size_t http_server_tunnel_count(const struct http_server *srv)
{
    return srv->ntunnels;
}

/* --- connection lifetime ---------------------------------------------------------------- */

/* Both handles are closed. Every write callback has run by now (libuv cancels them
 * before the close callbacks), so the owner hears of the abort last. */
static void conn_handles_closed(struct http_conn *c)
{
    if (c->ex != NULL && c->x.owned && c->x.on_abort != NULL && !c->x.abort_called) {
        c->x.abort_called = true;
        c->in_abort_cb = true;
        c->x.on_abort(c->x.abort_data);
        c->in_abort_cb = false;
    }
    conn_maybe_free(c);
}

static void tcp_closed(uv_handle_t *handle)
{
    struct http_conn *c = handle->data;
    free(handle);
    if (--c->open_handles == 0)
        conn_handles_closed(c);
}

static void conn_handle_closed(uv_handle_t *handle)
{
    struct http_conn *c = handle->data;
    if (--c->open_handles == 0)
        conn_handles_closed(c);
}

static void conn_close(struct http_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->ex != NULL && c->x.owned && c->x.on_abort == NULL) {
        /* The owner cannot be told: the socket stays until it lets go of the exchange.
         * A body it waits for will not come. */
        if (!c->close_pending) {
            c->close_pending = true;
            conn_read_stop(c);
            uv_timer_stop(&c->timer);
            if (c->x.body_mode == BODY_STREAM && !c->x.body_end_called) {
                c->x.body_failed = true;
                c->x.body_fail_status = 400;
                conn_defer(c, DEFER_BODY_END);
            }
        }
        return;
    }
    /* Writes still queued are cancelled by uv_close; their callbacks run before the
     * handle's close callback. */
    c->state = CONN_CLOSED;
    conn_read_stop(c);
    uv_timer_stop(&c->timer);
    c->tcp->data = c;
    uv_close((uv_handle_t *)c->tcp, tcp_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct http_server *srv = listener->data;
    assert(srv->magic == HTTP_SERVER_MAGIC);
    if (status < 0) {
        /* libuv already applied its EMFILE trick (a reserve descriptor closed to accept
         * and drop the connection); say so at most once a second. */
        uint64_t now = now_ms(srv);
        if (now - srv->last_accept_error_log >= 1000) {
            srv->last_accept_error_log = now;
            log_event(LOG_WARN, "http.accept_failed", "error", uv_strerror(status),
                      (const char *)NULL);
        }
        return;
    }
    struct http_conn *c = xcalloc(1, sizeof *c);
    c->magic = HTTP_CONN_MAGIC;
    c->srv = srv;
    c->tcp = xmalloc(sizeof *c->tcp);
    uv_tcp_init(srv->loop, c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp->data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->parser = http_parse_new(HTTP_PARSE_REQUEST, &srv->opt.parse, &parse_callbacks, c);
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;

    if (uv_accept(listener, (uv_stream_t *)c->tcp) != 0 || srv->shutting_down) {
        conn_close(c);
        return;
    }
    if (srv->nconns + srv->ntunnels > srv->opt.max_connections) {
        uint64_t now = now_ms(srv);
        if (now - srv->last_accept_error_log >= 1000) {
            srv->last_accept_error_log = now;
            log_event(LOG_WARN, "http.too_many_connections", (const char *)NULL);
        }
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a6, c->remote_addr, sizeof c->remote_addr);
            c->remote_port = ntohs(a6->sin6_port);
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
            uv_ip4_name(a4, c->remote_addr, sizeof c->remote_addr);
            c->remote_port = ntohs(a4->sin_port);
        }
    }
    c->state = CONN_READING;
    c->idle_since_ms = now_ms(srv);
    conn_timer_update(c);
    conn_read_start(c);
}

/* --- server ------------------------------------------------------------------------- */

struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_options *options,
                                    http_handler_cb handler, http_done_cb done, void *data)
{
    struct http_server *srv = xcalloc(1, sizeof *srv);
    srv->magic = HTTP_SERVER_MAGIC;
    srv->loop = loop;
    srv->opt = *options;
    srv->handler = handler;
    srv->done = done;
    srv->data = data;
    return srv;
}

void http_server_set_head_handler(struct http_server *srv, http_head_cb hook)
{
    srv->head_hook = hook;
}

int http_server_listen(struct http_server *srv, const char *host, int port)
{
    struct sockaddr_storage ss;
    int rc;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (strchr(host, ':') != NULL)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc != 0)
        return rc;
    uv_tcp_init(srv->loop, &srv->listener);
    srv->listener.data = srv;
    srv->listener_open = true;
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc != 0)
        return rc;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

size_t http_server_connection_count(const struct http_server *srv)
{
    return srv->nconns + srv->ntunnels;
}

static void listener_closed(uv_handle_t *handle)
{
    struct http_server *srv = handle->data;
    srv->listener_open = false;
    server_maybe_report_shutdown(srv);
}

static void grace_timer_closed(uv_handle_t *handle)
{
    struct http_server *srv = handle->data;
    srv->grace_timer_open = false;
    server_maybe_report_shutdown(srv);
}

static void idle_closed(uv_handle_t *handle)
{
    struct http_server *srv = handle->data;
    srv->idle_open = false;
    server_maybe_report_shutdown(srv);
}

static void server_maybe_report_shutdown(struct http_server *srv)
{
    if (!srv->shutting_down || srv->shutdown_reported)
        return;
    if (srv->nconns > 0 || srv->ntunnels > 0 || srv->listener_open)
        return;
    if (srv->grace_timer_open) {
        if (!uv_is_closing((uv_handle_t *)&srv->grace_timer))
            uv_close((uv_handle_t *)&srv->grace_timer, grace_timer_closed);
        return;
    }
    if (srv->idle_open) {
        if (!uv_is_closing((uv_handle_t *)&srv->idle))
            uv_close((uv_handle_t *)&srv->idle, idle_closed);
        return;
    }
    srv->shutdown_reported = true;
    if (srv->shutdown_cb != NULL)
        srv->shutdown_cb(srv->shutdown_data);
}

static void grace_expired(uv_timer_t *timer)
{
    struct http_server *srv = timer->data;
    srv->grace_over = true;
    if (srv->nconns > 0 || srv->ntunnels > 0)
        log_event(LOG_WARN, "http.shutdown_forced", (const char *)NULL);
    struct http_conn *c = srv->conns;
    while (c != NULL) {
        struct http_conn *next = c->next;
        conn_close(c);
        c = next;
    }
    /* A tunnel removes itself only once its sockets are closed, so the list is stable
     * while its owners are asked. */
    for (struct http_tunnel *t = srv->tunnels; t != NULL; t = t->next) {
        if (t->close_cb != NULL)
            t->close_cb(t);
    }
    server_maybe_report_shutdown(srv);
}

void http_server_shutdown(struct http_server *srv, uint64_t grace_ms, void (*done_cb)(void *),
                          void *done_data)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->shutdown_cb = done_cb;
    srv->shutdown_data = done_data;
    if (srv->listener_open)
        uv_close((uv_handle_t *)&srv->listener, listener_closed);
    /* Idle connections go at once; busy ones close after their current response. */
    struct http_conn *c = srv->conns;
    while (c != NULL) {
        struct http_conn *next = c->next;
        if (c->state == CONN_READING && c->ex == NULL && !c->head_started)
            conn_close(c);
        else if (c->state == CONN_LINGERING)
            conn_close(c);
        c = next;
    }
    uv_timer_init(srv->loop, &srv->grace_timer);
    srv->grace_timer.data = srv;
    srv->grace_timer_open = true;
    uv_timer_start(&srv->grace_timer, grace_expired, grace_ms, 0);
    server_maybe_report_shutdown(srv);
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL)
        return;
    assert(srv->magic == HTTP_SERVER_MAGIC);
    assert(srv->nconns == 0);
    while (srv->free_writes != NULL) {
        struct http_write *w = srv->free_writes;
        srv->free_writes = w->next_free;
        free(w);
    }
    srv->magic = 0;
    free(srv);
}

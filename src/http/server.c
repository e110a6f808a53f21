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

enum conn_state {
    CONN_READING,  /* waiting for or reading a request */
    CONN_HANDLING, /* the handler owns the exchange */
    CONN_WRITING,  /* the response is being written */
    CONN_LINGERING, /* write side shut, draining input before close */
    CONN_CLOSED,   /* uv_close called; freed in the close callback */
};

struct http_conn {
    uint32_t magic;
    struct http_server *srv;
    struct http_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    int open_handles;
    enum conn_state state;
    struct http_parse *parser;
    struct buf in;   /* bytes read but not yet consumed by the parser */
    struct buf head; /* the serialized response head being written */
    struct http_exchange *ex;
    bool reading;
    bool head_started;    /* bytes of a request head have arrived */
    bool dispatch_pending; /* a request completed inside the parser */
    bool close_after;     /* close once the current response is written */
    bool close_pending;   /* closed while the handler held the exchange */
    int error_status;     /* set by callbacks to turn a parse abort into this status */
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
    struct http_server_options opt;
    http_handler_cb handler;
    http_done_cb done;
    void *data;
    struct http_conn *conns;
    size_t nconns;
    uv_timer_t grace_timer;
    bool grace_timer_open;
    void (*shutdown_cb)(void *);
    void *shutdown_data;
    int port;
    uint64_t last_accept_error_log;
    uint64_t date_second;
    char date[64];
    char read_buffer[READ_BUFFER_SIZE];
    bool read_buffer_busy;
};

static void conn_close(struct http_conn *c);
static void conn_process_input(struct http_conn *c);
static void conn_send_error(struct http_conn *c, int status, const char *reason);
static void server_maybe_report_shutdown(struct http_server *srv);

static uint64_t now_ms(const struct http_server *srv)
{
    return uv_now(srv->loop);
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
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
    buf_appendf(&res->headers, "%s: %s\r\n", name, value);
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

/* --- timers ------------------------------------------------------------------------ */

static void conn_timer_cb(uv_timer_t *timer)
{
    struct http_conn *c = timer->data;
    assert(c->magic == HTTP_CONN_MAGIC);
    switch (c->state) {
    case CONN_READING:
        if (c->ex != NULL || c->head_started) {
            /* A slow or stalled client: answer 408 so a real client learns why. */
            conn_send_error(c, 408, c->ex ? "request body timed out" : "request head timed out");
        } else {
            conn_close(c); /* idle keep-alive connection */
        }
        break;
    case CONN_WRITING:
        log_event(LOG_INFO, "http.write_timeout", "addr", c->remote_addr, (const char *)NULL);
        conn_close(c);
        break;
    case CONN_LINGERING:
        conn_close(c);
        break;
    default:
        break;
    }
}

static void conn_arm_timer(struct http_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, conn_timer_cb, ms, 0);
}

/* --- parser callbacks ---------------------------------------------------------------- */

static struct http_exchange *exchange_new(struct http_conn *c)
{
    struct http_exchange *ex = xcalloc(1, sizeof *ex);
    ex->magic = HTTP_EXCHANGE_MAGIC;
    ex->conn = c;
    ex->server = c->srv;
    arena_init(&ex->arena, 4096);
    ex->res.status = 200;
    ex->req.method_name = "-";
    ex->req.target = "-";
    ex->req.path = "-";
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

static int on_head(void *data, struct http_head *head)
{
    struct http_conn *c = data;
    struct http_exchange *ex = exchange_new(c);
    struct arena *a = &ex->arena;
    struct http_request *req = &ex->req;

    req->method = head->method;
    req->method_name = arena_strdup(a, head->method_name);
    req->target = arena_strndup(a, head->target, head->target_len);
    const char *q = memchr(head->target, '?', head->target_len);
    if (q != NULL) {
        req->path = arena_strndup(a, head->target, (size_t)(q - head->target));
        req->query = arena_strndup(a, q + 1, head->target_len - (size_t)(q - head->target) - 1);
    } else {
        req->path = req->target;
    }
    req->headers = arena_alloc(a, sizeof *req->headers * (head->nheaders ? head->nheaders : 1));
    for (size_t i = 0; i < head->nheaders; i++) {
        const struct http_header *h = &head->headers[i];
        req->headers[i].name = arena_strndup(a, h->name, h->name_len);
        req->headers[i].name_len = h->name_len;
        req->headers[i].value = arena_strndup(a, h->value, h->value_len);
        req->headers[i].value_len = h->value_len;
    }
    req->nheaders = head->nheaders;
    req->version_minor = head->version_minor;
    req->keep_alive = head->keep_alive;
    req->upgrade = head->upgrade;
    c->ex = ex;

    if (head->content_length > 0 && (uint64_t)head->content_length > c->srv->opt.max_body) {
        c->error_status = 413;
        return 2;
    }
    bool has_body = head->chunked || head->content_length > 0;
    if (has_body) {
        const char *expect = http_request_header(req, "Expect");
        if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && req->version_minor >= 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        conn_arm_timer(c, c->srv->opt.body_timeout_ms);
    }
    return 0;
}

static int on_body(void *data, const char *chunk, size_t len)
{
    struct http_conn *c = data;
    struct http_request *req = &c->ex->req;
    if (req->body.len + len > c->srv->opt.max_body) {
        c->error_status = 413;
        return 2;
    }
    buf_append(&req->body, chunk, len);
    conn_arm_timer(c, c->srv->opt.body_timeout_ms);
    return 0;
}

static int on_complete(void *data)
{
    struct http_conn *c = data;
    /* Never call the handler from inside the parser: it may answer at once, and the
     * answer must not start the next pipelined request while the parser is mid-call. */
    c->dispatch_pending = true;
    return 0;
}

static const struct http_parse_callbacks parse_callbacks = {on_head, on_body, on_complete};

/* --- reading ------------------------------------------------------------------------ */

static void conn_read_stop(struct http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = handle->data;
    struct http_server *srv = c->srv;
    /* One read buffer serves every connection: the loop reads one socket at a time and
     * read_cb copies out whatever the parser does not consume at once. */
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

static void dispatch(struct http_conn *c)
{
    struct http_exchange *ex = c->ex;
    c->dispatch_pending = false;
    c->state = CONN_HANDLING;
    c->head_started = false;
    conn_read_stop(c);
    uv_timer_stop(&c->timer);
    if (ex->req.upgrade || c->srv->shutting_down)
        c->close_after = true;
    c->srv->handler(ex, c->srv->data);
}

static void conn_process_input(struct http_conn *c)
{
    while (c->state == CONN_READING && c->in.len > 0) {
        bool was_idle = http_parse_idle(c->parser);
        ssize_t n = http_parse_feed(c->parser, c->in.data, c->in.len);
        if (n < 0) {
            int status = c->error_status ? c->error_status : http_parse_error_status(c->parser);
            const char *reason = c->error_status == 413 ? "request body too large"
                                                        : http_parse_error_reason(c->parser);
            conn_send_error(c, status, reason);
            return;
        }
        buf_consume(&c->in, (size_t)n);
        if (c->dispatch_pending) {
            dispatch(c);
            return;
        }
        if (was_idle && !http_parse_idle(c->parser) && c->ex == NULL && !c->head_started) {
            c->head_started = true;
            conn_arm_timer(c, c->srv->opt.head_timeout_ms);
        }
        if (n == 0)
            break;
    }
    /* After an upgrade request the parser consumes nothing more; anything left is not
     * ours to read here. */
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = stream->data;
    assert(c->magic == HTTP_CONN_MAGIC);
    struct http_server *srv = c->srv;

    if (nread < 0) {
        release_read_buffer(srv, buf);
        conn_close(c);
        return;
    }
    if (c->state == CONN_LINGERING) {
        release_read_buffer(srv, buf);
        return;
    }
    if (nread > 0)
        buf_append(&c->in, buf->base, (size_t)nread);
    release_read_buffer(srv, buf);
    if (nread > 0 && c->state == CONN_READING) {
        if (c->ex == NULL && !c->head_started)
            uv_timer_stop(&c->timer);
        conn_process_input(c);
    }
}

static void conn_read_start(struct http_conn *c)
{
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
        c->reading = true;
}

/* --- writing ------------------------------------------------------------------------ */

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
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
    conn_arm_timer(c, LINGER_MS);
}

static void write_cb(uv_write_t *req, int status)
{
    struct http_conn *c = req->data;
    assert(c->magic == HTTP_CONN_MAGIC);
    struct http_exchange *ex = c->ex;
    struct http_server *srv = c->srv;

    buf_reset(&c->head);
    if (ex != NULL) {
        if (srv->done != NULL)
            srv->done(ex, uv_hrtime() - ex->req.start_ns, srv->data);
        exchange_free(ex);
        c->ex = NULL;
    }
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after || srv->shutting_down) {
        conn_linger(c);
        server_maybe_report_shutdown(srv);
        return;
    }
    c->state = CONN_READING;
    conn_arm_timer(c, srv->opt.idle_timeout_ms);
    conn_read_start(c);
    conn_process_input(c);
}

void http_exchange_finish(struct http_exchange *ex)
{
    assert(ex->magic == HTTP_EXCHANGE_MAGIC);
    struct http_conn *c = ex->conn;
    struct http_server *srv = c->srv;
    struct http_response *res = &ex->res;

    if (c->close_pending) {
        /* The connection was closed (shutdown grace ran out) while the handler worked. */
        exchange_free(ex);
        c->ex = NULL;
        conn_close(c);
        return;
    }
    if (res->close || !ex->req.keep_alive || srv->shutting_down)
        c->close_after = true;

    int status = res->status;
    bool bodyless = (status >= 100 && status < 200) || status == 204 || status == 304;
    buf_appendf(&c->head, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, http_status_reason(status),
                server_date(srv));
    if (!bodyless)
        buf_appendf(&c->head, "Content-Length: %zu\r\n", res->body.len);
    if (c->close_after)
        buf_append_str(&c->head, "Connection: close\r\n");
    else if (ex->req.version_minor == 0)
        buf_append_str(&c->head, "Connection: keep-alive\r\n");
    buf_append(&c->head, res->headers.data, res->headers.len);
    buf_append_str(&c->head, "\r\n");

    uv_buf_t bufs[2];
    unsigned nbufs = 1;
    bufs[0] = uv_buf_init(c->head.data, (unsigned)c->head.len);
    if (!bodyless && ex->req.method != HTTP_HEAD && res->body.len > 0)
        bufs[nbufs++] = uv_buf_init(res->body.data, (unsigned)res->body.len);

    c->state = CONN_WRITING;
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, nbufs, write_cb) != 0) {
        exchange_free(ex);
        c->ex = NULL;
        conn_close(c);
        return;
    }
    conn_arm_timer(c, srv->opt.body_timeout_ms);
}

static void conn_send_error(struct http_conn *c, int status, const char *reason)
{
    if (c->ex == NULL)
        c->ex = exchange_new(c);
    struct http_exchange *ex = c->ex;
    uv_timer_stop(&c->timer);
    conn_read_stop(c);
    c->dispatch_pending = false;
    c->close_after = true;
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

/* --- connection lifetime ---------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *handle)
{
    struct http_conn *c = handle->data;
    if (--c->open_handles > 0)
        return;
    struct http_server *srv = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->nconns--;
    http_parse_free(c->parser);
    buf_free(&c->in);
    buf_free(&c->head);
    c->magic = 0;
    free(c);
    server_maybe_report_shutdown(srv);
}

static void conn_close(struct http_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_HANDLING) {
        c->close_pending = true;
        return;
    }
    /* A response still being written keeps its exchange until write_cb, which libuv
     * calls with UV_ECANCELED once the handle closes. */
    c->state = CONN_CLOSED;
    conn_read_stop(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
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
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->parser = http_parse_new(HTTP_PARSE_REQUEST, &srv->opt.parse, &parse_callbacks, c);
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;

    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || srv->shutting_down) {
        conn_close(c);
        return;
    }
    if (srv->nconns > srv->opt.max_connections) {
        uint64_t now = now_ms(srv);
        if (now - srv->last_accept_error_log >= 1000) {
            srv->last_accept_error_log = now;
            log_event(LOG_WARN, "http.too_many_connections", (const char *)NULL);
        }
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
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
    conn_arm_timer(c, srv->opt.idle_timeout_ms);
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
        srv->port = ntohs(bound.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&bound)->sin6_port
                              : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

size_t http_server_connection_count(const struct http_server *srv)
{
    return srv->nconns;
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

static void server_maybe_report_shutdown(struct http_server *srv)
{
    if (!srv->shutting_down || srv->shutdown_reported)
        return;
    if (srv->nconns > 0 || srv->listener_open)
        return;
    if (srv->grace_timer_open) {
        if (!uv_is_closing((uv_handle_t *)&srv->grace_timer))
            uv_close((uv_handle_t *)&srv->grace_timer, grace_timer_closed);
        return;
    }
    srv->shutdown_reported = true;
    if (srv->shutdown_cb != NULL)
        srv->shutdown_cb(srv->shutdown_data);
}

static void grace_expired(uv_timer_t *timer)
{
    struct http_server *srv = timer->data;
    if (srv->nconns > 0)
        log_event(LOG_WARN, "http.shutdown_forced", (const char *)NULL);
    struct http_conn *c = srv->conns;
    while (c != NULL) {
        struct http_conn *next = c->next;
        conn_close(c);
        c = next;
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
    srv->magic = 0;
    free(srv);
}

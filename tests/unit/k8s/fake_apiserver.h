/* A fake apiserver for the k8s unit tests: a plain-HTTP/1.1 server on 127.0.0.1 that runs
 * on the test's own libuv loop. It is not a Kubernetes API server: each test installs a
 * handler that answers as it pleases, which is the point, since it must produce on demand
 * the faults a real one rarely shows (a 410 in the middle of a stream, a stream that goes
 * silent, a dropped connection, a 500 on a list). Tests against a real kube-apiserver go
 * through the Go harness in tests/kube/.
 *
 * Header-only (static functions) so that each test executable gets its own copy. */
#ifndef CODEHUB_TESTS_K8S_FAKE_APISERVER_H
#define CODEHUB_TESTS_K8S_FAKE_APISERVER_H

#include "core/alloc.h"
#include "core/buf.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* Not every test uses every helper. */
#define FAKE_FN static __attribute__((unused))

struct fake_server;
struct fake_conn;

/* One request as received. Everything is freed after the handler returns. */
struct fake_request {
    struct fake_conn *conn;
    char method[16];
    char *url; /* path and query */
    char *authorization;
    char *content_type;
    char *accept;
    struct buf body;
};

typedef void (*fake_handler)(void *data, struct fake_request *req);

struct fake_conn {
    uv_tcp_t tcp;
    struct fake_server *srv;
    http_parser parser;
    struct fake_request req;
    struct buf field; /* the header name being read */
    struct buf value;
    bool in_value;
    bool closing;
    struct fake_conn **slot; /* cleared when the connection closes (fake_conn_hold) */
    struct fake_conn *next;
};

struct fake_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    fake_handler handler;
    void *data;
    struct fake_conn *conns;
    int connections; /* accepted so far */
    int requests;    /* complete requests so far */
    int open;        /* handles not yet closed */
    bool stopping;
};

static http_parser_settings fake_settings;

FAKE_FN void fake_conn_closed(uv_handle_t *h)
{
    struct fake_conn *c = h->data;
    struct fake_server *s = c->srv;
    for (struct fake_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    free(c->req.url);
    free(c->req.authorization);
    free(c->req.content_type);
    free(c->req.accept);
    buf_free(&c->req.body);
    buf_free(&c->field);
    buf_free(&c->value);
    free(c);
    s->open--;
}

/* Closes the connection at once, without ending any response: a dropped connection. */
FAKE_FN void fake_conn_drop(struct fake_conn *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    if (c->slot) {
        *c->slot = NULL;
        c->slot = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, fake_conn_closed);
}

/* Remembers `c` in *slot until it closes, when *slot becomes NULL. */
FAKE_FN void fake_conn_hold(struct fake_conn *c, struct fake_conn **slot)
{
    /* A connection held here before lets go: its close must not clear the new one. */
    if (*slot && *slot != c)
        (*slot)->slot = NULL;
    c->slot = slot;
    *slot = c;
}

struct fake_write {
    uv_write_t req;
    char *data;
};

FAKE_FN void fake_written(uv_write_t *w, int status)
{
    struct fake_write *fw = (struct fake_write *)w;
    free(fw->data);
    free(fw);
}

FAKE_FN void fake_send(struct fake_conn *c, const char *data, size_t len)
{
    if (c == NULL || c->closing || len == 0)
        return;
    struct fake_write *fw = xcalloc(1, sizeof(*fw));
    fw->data = xmalloc(len);
    memcpy(fw->data, data, len);
    uv_buf_t b = uv_buf_init(fw->data, (unsigned)len);
    if (uv_write(&fw->req, (uv_stream_t *)&c->tcp, &b, 1, fake_written) < 0) {
        free(fw->data);
        free(fw);
        fake_conn_drop(c);
    }
}

FAKE_FN const char *fake_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 410:
        return "Gone";
    case 500:
        return "Internal Server Error";
    default:
        return "Whatever";
    }
}

/* A complete response with Content-Length, connection kept open. */
FAKE_FN void fake_respond(struct fake_conn *c, int status, const char *content_type,
                          const char *body)
{
    struct buf b = BUF_INIT;
    size_t len = body ? strlen(body) : 0;
    buf_appendf(&b, "HTTP/1.1 %d %s\r\n", status, fake_reason(status));
    if (content_type)
        buf_appendf(&b, "Content-Type: %s\r\n", content_type);
    buf_appendf(&b, "Content-Length: %zu\r\n\r\n", len);
    if (body)
        buf_append(&b, body, len);
    fake_send(c, b.data, b.len);
    buf_free(&b);
}

FAKE_FN void fake_respond_json(struct fake_conn *c, int status, const char *json)
{
    fake_respond(c, status, "application/json", json);
}

/* A Status object as the API server writes it. */
FAKE_FN void fake_respond_status(struct fake_conn *c, int code, const char *reason,
                                 const char *message)
{
    char *body = xasprintf("{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
                           "\"status\":\"Failure\",\"message\":\"%s\",\"reason\":\"%s\","
                           "\"code\":%d}",
                           message, reason, code);
    fake_respond_json(c, code, body);
    free(body);
}

/* Starts a chunked 200 response whose body the test writes with fake_stream_send. */
FAKE_FN void fake_stream_begin(struct fake_conn *c)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
    fake_send(c, head, sizeof(head) - 1);
}

FAKE_FN void fake_stream_send(struct fake_conn *c, const char *data, size_t len)
{
    if (len == 0)
        return;
    struct buf b = BUF_INIT;
    buf_appendf(&b, "%zx\r\n", len);
    buf_append(&b, data, len);
    buf_append_str(&b, "\r\n");
    fake_send(c, b.data, b.len);
    buf_free(&b);
}

FAKE_FN void fake_stream_end(struct fake_conn *c)
{
    fake_send(c, "0\r\n\r\n", 5);
}

/* ---- parsing ---- */

FAKE_FN void fake_req_reset(struct fake_request *r)
{
    free(r->url);
    free(r->authorization);
    free(r->content_type);
    free(r->accept);
    r->url = r->authorization = r->content_type = r->accept = NULL;
    buf_reset(&r->body);
    r->method[0] = '\0';
}

FAKE_FN int fake_on_url(http_parser *p, const char *at, size_t len)
{
    struct fake_conn *c = p->data;
    struct buf b = BUF_INIT;
    if (c->req.url)
        buf_append_str(&b, c->req.url);
    buf_append(&b, at, len);
    free(c->req.url);
    c->req.url = buf_steal(&b);
    return 0;
}

FAKE_FN void fake_header_done(struct fake_conn *c)
{
    if (c->field.len == 0)
        return;
    char **slot = NULL;
    if (strcasecmp(c->field.data, "Authorization") == 0)
        slot = &c->req.authorization;
    else if (strcasecmp(c->field.data, "Content-Type") == 0)
        slot = &c->req.content_type;
    else if (strcasecmp(c->field.data, "Accept") == 0)
        slot = &c->req.accept;
    if (slot) {
        free(*slot);
        *slot = xstrdup(c->value.data ? c->value.data : "");
    }
    buf_reset(&c->field);
    buf_reset(&c->value);
}

FAKE_FN int fake_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct fake_conn *c = p->data;
    if (c->in_value) {
        fake_header_done(c);
        c->in_value = false;
    }
    buf_append(&c->field, at, len);
    return 0;
}

FAKE_FN int fake_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct fake_conn *c = p->data;
    c->in_value = true;
    buf_append(&c->value, at, len);
    return 0;
}

FAKE_FN int fake_on_headers_complete(http_parser *p)
{
    struct fake_conn *c = p->data;
    fake_header_done(c);
    c->in_value = false;
    snprintf(c->req.method, sizeof(c->req.method), "%s",
             http_method_str((enum http_method)p->method));
    return 0;
}

FAKE_FN int fake_on_body(http_parser *p, const char *at, size_t len)
{
    struct fake_conn *c = p->data;
    buf_append(&c->req.body, at, len);
    return 0;
}

FAKE_FN int fake_on_message_complete(http_parser *p)
{
    struct fake_conn *c = p->data;
    c->srv->requests++;
    c->req.conn = c;
    if (c->req.body.data == NULL)
        buf_append(&c->req.body, "", 0);
    c->srv->handler(c->srv->data, &c->req);
    fake_req_reset(&c->req);
    return 0;
}

FAKE_FN void fake_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    b->base = xmalloc(65536);
    b->len = 65536;
}

FAKE_FN void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fake_conn *c = s->data;
    if (n < 0) {
        fake_conn_drop(c);
    } else if (n > 0 && !c->closing) {
        size_t done = http_parser_execute(&c->parser, &fake_settings, b->base, (size_t)n);
        if (done != (size_t)n || HTTP_PARSER_ERRNO(&c->parser) != HPE_OK)
            fake_conn_drop(c);
    }
    free(b->base);
}

FAKE_FN void fake_on_connection(uv_stream_t *l, int status)
{
    struct fake_server *s = l->data;
    if (status < 0)
        return;
    struct fake_conn *c = xcalloc(1, sizeof(*c));
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    s->open++;
    c->next = s->conns;
    s->conns = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) < 0) {
        fake_conn_drop(c);
        return;
    }
    s->connections++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, fake_alloc, fake_read);
}

/* Listens on 127.0.0.1 on a free port (s->port). Returns 0 or a libuv error. */
FAKE_FN int fake_start(struct fake_server *s, uv_loop_t *loop, fake_handler handler, void *data)
{
    memset(s, 0, sizeof(*s));
    http_parser_settings_init(&fake_settings);
    fake_settings.on_url = fake_on_url;
    fake_settings.on_header_field = fake_on_header_field;
    fake_settings.on_header_value = fake_on_header_value;
    fake_settings.on_headers_complete = fake_on_headers_complete;
    fake_settings.on_body = fake_on_body;
    fake_settings.on_message_complete = fake_on_message_complete;
    s->loop = loop;
    s->handler = handler;
    s->data = data;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->open = 1;
    int r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 64, fake_on_connection);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (r == 0)
        r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (r == 0)
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return r;
}

FAKE_FN void fake_listener_closed(uv_handle_t *h)
{
    struct fake_server *s = h->data;
    s->open--;
}

/* Drops every connection and stops listening; done once s->open is 0. */
FAKE_FN void fake_stop(struct fake_server *s)
{
    if (s->stopping)
        return;
    s->stopping = true;
    for (struct fake_conn *c = s->conns; c; c = c->next)
        fake_conn_drop(c);
    uv_close((uv_handle_t *)&s->listener, fake_listener_closed);
}

/* "http://127.0.0.1:PORT"; caller frees. */
FAKE_FN char *fake_url(const struct fake_server *s)
{
    return xasprintf("http://127.0.0.1:%d", s->port);
}

/* ---- driving the loop ---- */

FAKE_FN void fake_tick(uv_timer_t *t)
{
    /* Only wakes the loop up so that run_until can look at the clock. */
}

FAKE_FN uint64_t fake_now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Runs `loop` until cond(arg) holds or `timeout_ms` pass; `tick` is an initialised timer
 * used to wake up. Returns whether the condition held. */
FAKE_FN bool run_until(uv_loop_t *loop, uv_timer_t *tick, bool (*cond)(void *), void *arg,
                       unsigned timeout_ms)
{
    uint64_t deadline = fake_now_ms() + timeout_ms;
    uv_timer_start(tick, fake_tick, 5, 5);
    bool ok = cond(arg);
    while (!ok && fake_now_ms() < deadline) {
        uv_run(loop, UV_RUN_ONCE);
        ok = cond(arg);
    }
    uv_timer_stop(tick);
    return ok;
}

FAKE_FN bool never(void *arg)
{
    return false;
}

/* Runs the loop for `ms` milliseconds. */
FAKE_FN void run_for(uv_loop_t *loop, uv_timer_t *tick, unsigned ms)
{
    run_until(loop, tick, never, NULL, ms);
}

#endif

/* See probe.h. One connection, one request, the status line is all that matters: the first
 * parsed response head ends the probe. */
#include "spawn/probe.h"

#include "core/alloc.h"
#include "http/parse.h"

#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_MAGIC 0x50524f42u

struct spawn_probe {
    uint32_t magic;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } io;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct http_parse *parser;
    char *request;
    spawn_probe_cb cb;
    void *data;
    int open_handles;
    int status;
    int early_error; /* a connect refused at once, reported from the timer */
    bool finished;
    char rbuf[4096];
};

static void probe_closed(uv_handle_t *h)
{
    struct spawn_probe *p = h->data;
    assert(p->magic == PROBE_MAGIC);
    if (--p->open_handles > 0)
        return;
    p->magic = 0;
    http_parse_free(p->parser);
    free(p->request);
    free(p);
}

/* Reports `result` once (unless cancelled) and closes everything. */
static void probe_finish(struct spawn_probe *p, int result)
{
    if (p->finished)
        return;
    p->finished = true;
    if (p->cb != NULL)
        p->cb(p->data, result);
    uv_close(&p->io.handle, probe_closed);
    uv_close((uv_handle_t *)&p->timer, probe_closed);
}

static int probe_on_head(void *data, struct http_head *head)
{
    struct spawn_probe *p = data;
    p->status = head->status;
    return 0;
}

static int probe_on_body(void *data, const char *chunk, size_t len)
{
    return 0;
}

static int probe_on_complete(void *data)
{
    return 0;
}

static void probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct spawn_probe *p = h->data;
    buf->base = p->rbuf;
    buf->len = sizeof p->rbuf;
}

static void probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct spawn_probe *p = s->data;
    if (p->finished)
        return;
    if (nread < 0) {
        probe_finish(p, p->status > 0 ? p->status : (int)nread);
        return;
    }
    ssize_t used = http_parse_feed(p->parser, buf->base, (size_t)nread);
    if (p->status > 0)
        probe_finish(p, p->status);
    else if (used == HTTP_PARSE_ERROR)
        probe_finish(p, -EPROTO);
}

static void probe_written(uv_write_t *req, int status)
{
    struct spawn_probe *p = req->data;
    if (!p->finished && status < 0)
        probe_finish(p, status);
}

static void probe_connected(uv_connect_t *req, int status)
{
    struct spawn_probe *p = req->data;
    if (p->finished)
        return;
    if (status < 0) {
        probe_finish(p, status);
        return;
    }
    uv_buf_t b = uv_buf_init(p->request, (unsigned)strlen(p->request));
    int rc = uv_write(&p->write_req, &p->io.stream, &b, 1, probe_written);
    if (rc == 0)
        rc = uv_read_start(&p->io.stream, probe_alloc, probe_read);
    if (rc < 0)
        probe_finish(p, rc);
}

static void probe_timeout(uv_timer_t *t)
{
    struct spawn_probe *p = t->data;
    probe_finish(p, p->early_error != 0 ? p->early_error : -ETIMEDOUT);
}

/* The common part; the caller then initialises p->io and connects. */
static struct spawn_probe *probe_new(uv_loop_t *loop, const char *http_path, const char *host,
                                     unsigned timeout_ms, spawn_probe_cb cb, void *data)
{
    struct spawn_probe *p = xcalloc(1, sizeof *p);
    p->magic = PROBE_MAGIC;
    p->cb = cb;
    p->data = data;
    p->request = xasprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: codehub-spawner\r\n"
                           "Connection: close\r\n\r\n",
                           http_path, host);
    struct http_parse_callbacks pcb = {probe_on_head, probe_on_body, probe_on_complete};
    p->parser = http_parse_new(HTTP_PARSE_RESPONSE, NULL, &pcb, p);
    http_parse_set_request_method(p->parser, HTTP_GET);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->connect_req.data = p;
    p->write_req.data = p;
    p->open_handles = 2;
    uv_timer_start(&p->timer, probe_timeout, timeout_ms, 0);
    return p;
}

struct spawn_probe *spawn_probe_unix(uv_loop_t *loop, const char *socket_path,
                                     const char *http_path, unsigned timeout_ms, spawn_probe_cb cb,
                                     void *data)
{
    struct spawn_probe *p = probe_new(loop, http_path, "localhost", timeout_ms, cb, data);
    uv_pipe_init(loop, &p->io.pipe, 0);
    p->io.handle.data = p;
    uv_pipe_connect(&p->connect_req, &p->io.pipe, socket_path, probe_connected);
    return p;
}

struct spawn_probe *spawn_probe_tcp(uv_loop_t *loop, const char *ip, int port,
                                    const char *http_path, unsigned timeout_ms, spawn_probe_cb cb,
                                    void *data)
{
    struct sockaddr_storage sa;
    bool v6 = strchr(ip, ':') != NULL;
    if (v6 ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&sa) != 0
           : uv_ip4_addr(ip, port, (struct sockaddr_in *)&sa) != 0)
        return NULL;
    char *host = xasprintf("%s%s%s:%d", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    struct spawn_probe *p = probe_new(loop, http_path, host, timeout_ms, cb, data);
    free(host);
    uv_tcp_init(loop, &p->io.tcp);
    p->io.handle.data = p;
    int rc = uv_tcp_connect(&p->connect_req, &p->io.tcp, (struct sockaddr *)&sa, probe_connected);
    if (rc < 0) {
        /* Reported from the loop like every other outcome. */
        p->early_error = rc;
        uv_timer_start(&p->timer, probe_timeout, 0, 0);
    }
    return p;
}

void spawn_probe_cancel(struct spawn_probe *p)
{
    assert(p->magic == PROBE_MAGIC);
    p->cb = NULL;
    probe_finish(p, -ECANCELED);
}

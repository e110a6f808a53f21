/* A blocking HTTP/1.1 test client for the server and proxy tests: a helper thread plays
 * the client with blocking sockets (every receive has a timeout, so a bug fails instead of
 * hanging) and records failures for the main thread to assert. Included by
 * test_server.c and test_proxy.c; every function is static, so each test gets its own
 * copy, and some tests leave some of them unused. */
#ifndef CODEHUB_TESTS_HTTP_BLOCKING_CLIENT_H
#define CODEHUB_TESTS_HTTP_BLOCKING_CLIENT_H

#include "core/buf.h"
#include "http/parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"

/* --- failures on the helper thread --------------------------------------------------------- */

static char thread_error[512];

static void thread_fail(int line, const char *what)
{
    if (thread_error[0] == '\0')
        snprintf(thread_error, sizeof thread_error, "line %d: %.400s", line, what);
}

#define T_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            thread_fail(__LINE__, #cond);                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- a blocking test client ---------------------------------------------------------------- */

struct cl {
    int fd;
    struct buf in; /* received, not yet parsed */
    struct http_parse *p;
    int status;
    struct buf headers; /* "name: value\n" lines, names lower-cased */
    struct buf body;
    bool complete;
    bool verify; /* check the body against gen() instead of keeping it */
    bool bad;    /* a body byte differed */
    size_t verified;
    bool eof;       /* the server closed (or reset) the connection */
    bool timed_out; /* nothing came within the receive timeout */
};

static int cl_head(void *data, struct http_head *h)
{
    struct cl *c = data;
    c->status = h->status;
    buf_reset(&c->headers);
    buf_reset(&c->body);
    for (size_t i = 0; i < h->nheaders; i++) {
        for (size_t k = 0; k < h->headers[i].name_len; k++)
            buf_append_char(&c->headers, (char)(h->headers[i].name[k] | 0x20));
        buf_appendf(&c->headers, ": %s\n", h->headers[i].value);
    }
    return 0;
}

/* The byte at offset i of the big test bodies. */
static char gen(size_t i)
{
    return (char)('A' + (i * 13 + i / 7) % 57);
}

static void gen_fill(char *out, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = gen(off + i);
}

static bool gen_check(const char *data, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (data[i] != gen(off + i))
            return false;
    return true;
}

static int cl_body(void *data, const char *chunk, size_t len)
{
    struct cl *c = data;
    if (c->verify) {
        c->bad = c->bad || !gen_check(chunk, c->verified, len);
        c->verified += len;
        return 0;
    }
    buf_append(&c->body, chunk, len);
    return 0;
}

static int cl_complete(void *data)
{
    struct cl *c = data;
    c->complete = true;
    return 0;
}

static const struct http_parse_callbacks cl_callbacks = {cl_head, cl_body, cl_complete};

static void cl_open(struct cl *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        thread_fail(__LINE__, "connect");
    c->p = http_parse_new(HTTP_PARSE_RESPONSE, NULL, &cl_callbacks, c);
}

static void cl_close(struct cl *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    http_parse_free(c->p);
    c->p = NULL;
    buf_free(&c->in);
    buf_free(&c->headers);
    buf_free(&c->body);
}

static bool cl_send(struct cl *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

static bool cl_sends(struct cl *c, const char *s)
{
    return cl_send(c, s, strlen(s));
}

/* Receives more bytes into c->in. Returns false on EOF, error or timeout. */
static bool cl_recv(struct cl *c)
{
    char tmp[65536];
    ssize_t k = recv(c->fd, tmp, sizeof tmp, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->timed_out = true;
        return false;
    }
    if (k <= 0) {
        c->eof = true;
        return false;
    }
    buf_append(&c->in, tmp, (size_t)k);
    return true;
}

/* Reads one complete response (interim ones included). `method` is the request's. */
static bool cl_response(struct cl *c, int method)
{
    c->complete = false;
    c->status = 0;
    http_parse_set_request_method(c->p, method);
    for (;;) {
        if (c->in.len > 0 || c->complete == false) {
            ssize_t n = http_parse_feed(c->p, c->in.data ? c->in.data : "", c->in.len);
            if (n < 0)
                return false;
            buf_consume(&c->in, (size_t)n);
            if (c->complete)
                return true;
        }
        if (!cl_recv(c)) {
            if (http_parse_finish(c->p) == 0 && c->complete)
                return true;
            return false;
        }
    }
}

/* Reads until the server closes. Returns true when it did within the timeout. */
static bool cl_wait_eof(struct cl *c)
{
    for (int i = 0; i < 100; i++) {
        if (!cl_recv(c))
            return c->eof;
    }
    return false;
}

static bool has_header(const struct cl *c, const char *line)
{
    return c->headers.data != NULL && strstr(c->headers.data, line) != NULL;
}

#pragma GCC diagnostic pop

#endif

/* Shared by fuzz_http_request.c and fuzz_http_response.c: runs one input through the
 * parser twice, once in one piece and once split at a byte chosen from the input (with
 * pauses from on_body), and checks that both runs tell exactly the same story. A parser
 * whose reading depends on how the bytes arrive is a smuggling bug even when it does not
 * crash. Not a translation unit of its own: the drivers include it. */
#ifndef CODEHUB_FUZZ_HTTP_COMMON_H
#define CODEHUB_FUZZ_HTTP_COMMON_H

#include "core/buf.h"
#include "http/parse.h"

#include <http_parser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct fuzz_rec {
    struct buf trace;
    const struct http_parse_limits *limits;
    enum http_parse_kind kind;
    unsigned pause_every; /* pause on every Nth body callback (0: never) */
    unsigned body_calls;
    int events;
};

static void fuzz_check(int ok)
{
    if (!ok)
        abort();
}

static int fuzz_on_head(void *data, struct http_head *h)
{
    struct fuzz_rec *r = data;
    r->events++;
    fuzz_check(h->version_major == 1 && (h->version_minor == 0 || h->version_minor == 1));
    fuzz_check(h->nheaders <= r->limits->max_headers);
    fuzz_check(h->content_length >= -1);
    fuzz_check(!(h->chunked && h->content_length >= 0));
    fuzz_check(!(h->chunked && h->version_minor == 0));
    if (r->kind == HTTP_PARSE_REQUEST) {
        fuzz_check(h->target != NULL && strlen(h->target) == h->target_len);
        fuzz_check(h->target_len > 0 && h->target_len <= r->limits->max_url);
        fuzz_check(h->method_name != NULL && h->method >= 0);
        fuzz_check(h->version_minor == 0 || http_head_find(h, "Host") != NULL);
        fuzz_check(!h->body_until_close);
        buf_appendf(&r->trace, "REQ %s %s", h->method_name, h->target);
    } else {
        fuzz_check(h->status >= 100 && h->status <= 999);
        fuzz_check(h->reason != NULL);
        fuzz_check(strchr(h->reason, '\r') == NULL && strchr(h->reason, '\n') == NULL);
        buf_appendf(&r->trace, "RES %d %s", h->status, h->reason);
    }
    buf_appendf(&r->trace, " 1.%d cl=%lld ch=%d ka=%d up=%d uc=%d\n", h->version_minor,
                (long long)h->content_length, h->chunked, h->keep_alive, h->upgrade,
                h->body_until_close);
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct http_header *f = &h->headers[i];
        fuzz_check(strlen(f->name) == f->name_len && f->name_len > 0);
        fuzz_check(strlen(f->value) == f->value_len);
        /* What the proxy forwards can never carry a line break or a NUL. */
        fuzz_check(strpbrk(f->name, " \t\r\n:") == NULL);
        fuzz_check(strpbrk(f->value, "\r\n") == NULL);
        fuzz_check(f->value_len == 0 ||
                   (f->value[0] != ' ' && f->value[0] != '\t' &&
                    f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t'));
        buf_appendf(&r->trace, "  %s: %s\n", f->name, f->value);
    }
    buf_append_str(&r->trace, "B:");
    return 0;
}

static int fuzz_on_body(void *data, const char *chunk, size_t len)
{
    struct fuzz_rec *r = data;
    r->events++;
    fuzz_check(len > 0);
    buf_append(&r->trace, chunk, len);
    r->body_calls++;
    if (r->pause_every && r->body_calls % r->pause_every == 0)
        return 1;
    return 0;
}

static int fuzz_on_complete(void *data)
{
    struct fuzz_rec *r = data;
    r->events++;
    buf_append_str(&r->trace, "\nDONE\n");
    return 0;
}

static const struct http_parse_callbacks fuzz_callbacks = {fuzz_on_head, fuzz_on_body,
                                                           fuzz_on_complete};

/* Feeds data[0..end) the way a connection would, re-offering unconsumed bytes. Returns
 * the bytes consumed, or -1 after an error. `*off` is where feeding starts. */
static ssize_t fuzz_feed(struct http_parse *p, struct fuzz_rec *r, const uint8_t *data, size_t end,
                         size_t off)
{
    while (off < end) {
        int events = r->events;
        bool was_idle = http_parse_idle(p);
        ssize_t n = http_parse_feed(p, (const char *)data + off, end - off);
        if (n < 0) {
            /* Errors are final and carry a status and a reason. */
            int st = http_parse_error_status(p);
            fuzz_check(st >= 400 && st <= 599);
            fuzz_check(http_parse_error_reason(p)[0] != '\0');
            fuzz_check(http_parse_feed(p, "x", 1) == HTTP_PARSE_ERROR);
            buf_appendf(&r->trace, "\nERROR %d %s\n", st, http_parse_error_reason(p));
            return -1;
        }
        fuzz_check((size_t)n <= end - off);
        off += (size_t)n;
        if (n == 0 && r->events == events) {
            /* Only a tunnel or a closed parser refuses bytes without saying why. */
            fuzz_check(!was_idle);
            break;
        }
    }
    return (ssize_t)off;
}

/* The whole exercise for one input. */
static void fuzz_http_run(enum http_parse_kind kind, const uint8_t *data, size_t size)
{
    /* Small limits so that the fuzzer reaches them; a byte of the input picks them. */
    static const struct http_parse_limits limits[2] = {{32 * 1024, 100, 8 * 1024}, {256, 6, 32}};
    uint8_t knob = size ? data[size - 1] : 0;
    const struct http_parse_limits *lim = &limits[knob & 1];
    int method = (knob & 2) ? HTTP_HEAD : HTTP_GET;

    struct fuzz_rec one = {BUF_INIT, lim, kind, 0, 0, 0};
    struct http_parse *p = http_parse_new(kind, lim, &fuzz_callbacks, &one);
    if (kind == HTTP_PARSE_RESPONSE)
        http_parse_set_request_method(p, method);
    ssize_t n1 = fuzz_feed(p, &one, data, size, 0);
    int fin1 = n1 < 0 ? -1 : http_parse_finish(p);
    if (n1 >= 0)
        buf_appendf(&one.trace, "\nFIN %d\n", fin1);
    http_parse_free(p);

    size_t split = size ? (size_t)(data[0] * 131u + size * 7u) % (size + 1) : 0;
    struct fuzz_rec two = {BUF_INIT, lim, kind, (knob >> 2) & 3, 0, 0};
    p = http_parse_new(kind, lim, &fuzz_callbacks, &two);
    if (kind == HTTP_PARSE_RESPONSE)
        http_parse_set_request_method(p, method);
    ssize_t n2 = fuzz_feed(p, &two, data, split, 0);
    if (n2 >= 0)
        n2 = fuzz_feed(p, &two, data, size, (size_t)n2);
    /* A pause on the last body byte leaves on_complete for a feed with no bytes. */
    if (n2 >= 0 && http_parse_feed(p, "", 0) < 0)
        n2 = -1;
    int fin2 = n2 < 0 ? -1 : http_parse_finish(p);
    if (n2 >= 0)
        buf_appendf(&two.trace, "\nFIN %d\n", fin2);
    http_parse_free(p);

    /* One story, however the bytes arrived. (Pauses only change where calls end.) */
    fuzz_check(n1 == n2);
    fuzz_check(one.trace.len == two.trace.len);
    fuzz_check(one.trace.len == 0 || memcmp(one.trace.data, two.trace.data, one.trace.len) == 0);
    buf_free(&one.trace);
    buf_free(&two.trace);
}

#endif

/* libFuzzer driver: the chunked body decoder (RFC 9112 7.1) of http_parse.
 *
 * The decoder is a static state machine inside http/parse.c, so the driver reaches it the
 * way a connection does: a fixed head that says "Transfer-Encoding: chunked", then the
 * fuzzer's bytes as the body. Each input is decoded three ways:
 *   1. fed in one piece;
 *   2. fed in pieces whose sizes come from the input's first bytes, with on_body pausing
 *      every Nth call;
 *   3. by a reference decoder written here from the RFC grammar, line by line over the
 *      whole buffer, with the same limits (chunk line <= 4096 bytes, 16 size digits,
 *      sizes below 2^62, trailer section <= max_head bytes and <= max_headers fields).
 * All three must agree on the outcome (complete, needs more, error), on the decoded bytes
 * (on error too: what was delivered before the bad byte) and on where the message ended.
 * A decoder whose reading depends on how the bytes arrive, or that accepts what the
 * grammar does not, is a request-smuggling bug even when nothing crashes.
 *
 * Input layout: byte 0 picks the message kind, the limits and the pause rhythm; bytes 1..3
 * pick the piece sizes of run 2; the rest is the body. */
#include "fuzz_check.h"
#include "core/buf.h"
#include "http/parse.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX 4
#define REF_MAX_LINE 4096 /* parse.c MAX_CHUNK_LINE: bytes of a chunk line, CRLF included */
#define REF_MAX_DIGITS 16
#define REF_MAX_SIZE ((uint64_t)1 << 62)

enum outcome { OUT_MORE, OUT_DONE, OUT_ERROR };

/* ---- the code under test, fed as a connection would ---------------------------------- */

struct run {
    struct buf body;
    unsigned pause_every; /* on_body pauses on every Nth call (0: never) */
    unsigned body_calls;
    int heads, completes, events;
};

static int on_head(void *data, struct http_head *h)
{
    struct run *r = data;
    r->heads++;
    r->events++;
    check(h->chunked && h->content_length == -1);
    return 0;
}

static int on_body(void *data, const char *chunk, size_t len)
{
    struct run *r = data;
    check(r->heads == 1 && r->completes == 0 && len > 0);
    r->events++;
    buf_append(&r->body, chunk, len);
    r->body_calls++;
    return r->pause_every && r->body_calls % r->pause_every == 0;
}

static int on_complete(void *data)
{
    struct run *r = data;
    check(r->heads == 1 && r->completes == 0);
    r->completes++;
    r->events++;
    return 0;
}

static const struct http_parse_callbacks callbacks = {on_head, on_body, on_complete};

struct result {
    enum outcome out;
    size_t consumed; /* bytes of the stream (head included) up to the message's end */
    int status;
    char reason[128];
};

/* Size of the next piece from one selector byte: mostly small, sometimes the rest. */
static size_t piece_size(uint8_t sel, size_t left)
{
    size_t n = sel >= 0xf0 ? left : (size_t)(sel % 37) + 1;
    return n < left ? n : left;
}

/* Feeds stream[0..len) in pieces (none: one piece), re-offering what a paused parser
 * left, and stops at the end of the message. */
static void run_feed(struct http_parse *p, struct run *r, const char *stream, size_t len,
                     const uint8_t *sel, size_t nsel, struct result *res)
{
    size_t off = 0, k = 0;
    memset(res, 0, sizeof *res);
    while (off < len && r->completes == 0) {
        size_t end = off + (nsel ? piece_size(sel[k++ % nsel], len - off) : len - off);
        while (off < end && r->completes == 0) {
            int events = r->events;
            ssize_t n = http_parse_feed(p, stream + off, end - off);
            if (n < 0)
                goto error;
            check((size_t)n <= end - off);
            off += (size_t)n;
            /* Inside one message the parser never refuses bytes without a reason. */
            check(n > 0 || r->events != events);
        }
    }
    /* A pause on the last data byte leaves the rest of the work to a feed with no bytes. */
    if (r->completes == 0 && http_parse_feed(p, "", 0) < 0)
        goto error;
    res->consumed = off;
    res->out = r->completes ? OUT_DONE : OUT_MORE;
    /* The peer closing now: fine between messages, an error inside one. */
    check((http_parse_finish(p) == 0) == (res->out == OUT_DONE));
    return;
error:
    res->out = OUT_ERROR;
    res->status = http_parse_error_status(p);
    snprintf(res->reason, sizeof res->reason, "%s", http_parse_error_reason(p));
    check(res->status == 400 || res->status == 431);
    check(res->reason[0] != '\0');
    check(http_parse_feed(p, "x", 1) == HTTP_PARSE_ERROR);
}

/* ---- the reference decoder --------------------------------------------------------- */

enum { REF_MORE = -2, REF_ERR = -1 };

static bool ref_tchar(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* HTAB, SP, VCHAR, obs-text: what a field value and a quoted string may hold. */
static bool ref_field_byte(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int ref_hex(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* chunk-size [ chunk-ext ] CRLF, where
 *   chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] )   (no BWS: strict)
 * Returns the line's length with its CRLF and sets *size, or REF_MORE when s[0..n) is a
 * proper prefix of a valid line, or REF_ERR. */
static long ref_chunk_line(const uint8_t *s, size_t n, uint64_t *size)
{
    size_t i = 0;
    uint64_t v = 0;
    for (; i < n && ref_hex(s[i]) >= 0; i++) {
        unsigned d = (unsigned)ref_hex(s[i]);
        /* v * 16 cannot overflow once v <= REF_MAX_SIZE / 16. */
        if (i + 1 > REF_MAX_DIGITS || v > REF_MAX_SIZE / 16 || v * 16 + d > REF_MAX_SIZE)
            return REF_ERR;
        v = v * 16 + d;
    }
    if (i == n)
        return REF_MORE;
    if (i == 0)
        return REF_ERR;
    for (;;) {
        if (i == n)
            return REF_MORE;
        if (s[i] == '\r') {
            if (++i == n)
                return REF_MORE;
            if (s[i] != '\n')
                return REF_ERR;
            *size = v;
            return (long)i + 1;
        }
        if (s[i++] != ';')
            return REF_ERR;
        size_t name = i;
        while (i < n && ref_tchar(s[i]))
            i++;
        if (i == n)
            return REF_MORE;
        if (i == name)
            return REF_ERR;
        if (s[i] != '=')
            continue;
        if (++i == n)
            return REF_MORE;
        if (ref_tchar(s[i])) {
            while (i < n && ref_tchar(s[i]))
                i++;
            continue;
        }
        if (s[i++] != '"')
            return REF_ERR;
        for (;;) {
            if (i == n)
                return REF_MORE;
            uint8_t c = s[i++];
            if (c == '"')
                break;
            if (c == '\\') {
                if (i == n)
                    return REF_MORE;
                c = s[i++];
            }
            if (!ref_field_byte(c))
                return REF_ERR;
        }
    }
}

/* trailer-section CRLF: *( field-name ":" field-value CRLF ) CRLF, field-name a token,
 * no whitespace before the colon nor at a line start (obs-fold). Returns its length,
 * REF_MORE or REF_ERR. */
static long ref_trailers(const uint8_t *s, size_t n, size_t max_fields)
{
    size_t i = 0, fields = 0;
    for (;;) {
        if (i == n)
            return REF_MORE;
        if (s[i] == '\r') {
            if (++i == n)
                return REF_MORE;
            return s[i] == '\n' ? (long)i + 1 : REF_ERR;
        }
        if (!ref_tchar(s[i]) || ++fields > max_fields)
            return REF_ERR;
        while (i < n && ref_tchar(s[i]))
            i++;
        if (i == n)
            return REF_MORE;
        if (s[i++] != ':')
            return REF_ERR;
        while (i < n && s[i] != '\r' && ref_field_byte(s[i]))
            i++;
        if (i == n)
            return REF_MORE;
        if (s[i++] != '\r')
            return REF_ERR;
        if (i == n)
            return REF_MORE;
        if (s[i++] != '\n')
            return REF_ERR;
    }
}

/* The grammar ran over at most `cap` of the `avail` bytes: a prefix still incomplete
 * after `cap` bytes is too long. */
static long ref_capped(long r, size_t avail, size_t cap)
{
    return r == REF_MORE && avail > cap ? REF_ERR : r;
}

/* Decodes body[0..len) into *out. Returns the outcome and sets *used to the bytes of the
 * message when it is complete. */
static enum outcome ref_decode(const uint8_t *body, size_t len, const struct http_parse_limits *lim,
                               struct buf *out, size_t *used)
{
    size_t pos = 0;
    for (;;) {
        size_t avail = len - pos;
        uint64_t size = 0;
        size_t window = avail < REF_MAX_LINE ? avail : REF_MAX_LINE;
        long l = ref_capped(ref_chunk_line(body + pos, window, &size), avail, REF_MAX_LINE);
        if (l == REF_ERR)
            return OUT_ERROR;
        if (l == REF_MORE)
            return OUT_MORE;
        pos += (size_t)l;
        if (size == 0) {
            avail = len - pos;
            window = avail < lim->max_head ? avail : lim->max_head;
            l = ref_capped(ref_trailers(body + pos, window, lim->max_headers), avail,
                           lim->max_head);
            if (l < 0)
                return l == REF_ERR ? OUT_ERROR : OUT_MORE;
            *used = pos + (size_t)l;
            return OUT_DONE;
        }
        if (size > len - pos) {
            buf_append(out, body + pos, len - pos);
            return OUT_MORE;
        }
        buf_append(out, body + pos, (size_t)size);
        pos += (size_t)size;
        if (pos == len)
            return OUT_MORE;
        if (body[pos] != '\r')
            return OUT_ERROR;
        if (++pos == len)
            return OUT_MORE;
        if (body[pos++] != '\n')
            return OUT_ERROR;
    }
}

/* ---- the exercise ------------------------------------------------------------------ */

static const char request_head[] = "POST /upload HTTP/1.1\r\nHost: fuzz\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n";
static const char response_head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Small limits so that the fuzzer reaches the trailer caps; the head fits in both. */
    static const struct http_parse_limits limits[2] = {{32 * 1024, 100, 8 * 1024}, {96, 3, 64}};
    if (size < PREFIX)
        return 0;
    uint8_t knob = data[0];
    enum http_parse_kind kind = (knob & 1) ? HTTP_PARSE_RESPONSE : HTTP_PARSE_REQUEST;
    const struct http_parse_limits *lim = &limits[(knob >> 1) & 1];
    const char *head = kind == HTTP_PARSE_REQUEST ? request_head : response_head;
    size_t head_len = strlen(head);
    const uint8_t *body = data + PREFIX;
    size_t body_len = size - PREFIX;

    struct buf stream = BUF_INIT;
    buf_append(&stream, head, head_len);
    buf_append(&stream, body, body_len);

    struct run one = {BUF_INIT, 0, 0, 0, 0, 0};
    struct result r1;
    struct http_parse *p = http_parse_new(kind, lim, &callbacks, &one);
    if (kind == HTTP_PARSE_RESPONSE)
        http_parse_set_request_method(p, HTTP_GET);
    run_feed(p, &one, stream.data, stream.len, NULL, 0, &r1);
    http_parse_free(p);

    struct run two = {BUF_INIT, (knob >> 2) & 7, 0, 0, 0, 0};
    struct result r2;
    p = http_parse_new(kind, lim, &callbacks, &two);
    if (kind == HTTP_PARSE_RESPONSE)
        http_parse_set_request_method(p, HTTP_GET);
    run_feed(p, &two, stream.data, stream.len, data + 1, PREFIX - 1, &r2);
    http_parse_free(p);

    struct buf ref_body = BUF_INIT;
    size_t ref_used = 0;
    enum outcome ref = ref_decode(body, body_len, lim, &ref_body, &ref_used);

    /* The head is always accepted; decoding never makes bytes up. */
    check(one.heads == 1 && two.heads == 1);
    check(one.body.len <= body_len);

    /* One story, however the bytes arrived. */
    check(r1.out == r2.out);
    check(r1.consumed == r2.consumed);
    check(r1.status == r2.status && strcmp(r1.reason, r2.reason) == 0);
    check(one.body.len == two.body.len);
    check(one.body.len == 0 || memcmp(one.body.data, two.body.data, one.body.len) == 0);

    /* And the grammar's story. */
    check(r1.out == ref);
    check(one.body.len == ref_body.len);
    check(one.body.len == 0 || memcmp(one.body.data, ref_body.data, one.body.len) == 0);
    if (ref == OUT_DONE)
        check(r1.consumed == head_len + ref_used);

    buf_free(&stream);
    buf_free(&one.body);
    buf_free(&two.body);
    buf_free(&ref_body);
    return 0;
}

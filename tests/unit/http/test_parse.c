/* Tests for src/http/parse.c through its public header. Each message is recorded as a
 * text trace (head, body, completion) so that feeding in one piece, byte by byte or split
 * at every offset can be compared exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "http/parse.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rec {
    struct buf trace;
    struct buf body; /* the current message's body, flushed into trace on completion */
    int heads;
    int completes;
    int body_calls;
    size_t pause_at; /* pause once after this many body bytes of the connection (0: never) */
    size_t body_total;
    int fail_head;
    const struct http_head *last_head;
    int events; /* bumped on every callback */
};

static int rec_head(void *data, struct http_head *h)
{
    struct rec *r = data;
    r->heads++;
    r->events++;
    r->last_head = h;
    if (h->method >= 0)
        buf_appendf(&r->trace, "REQ %s %s 1.%d", h->method_name, h->target, h->version_minor);
    else
        buf_appendf(&r->trace, "RES %d [%s] 1.%d", h->status, h->reason, h->version_minor);
    buf_appendf(&r->trace, " cl=%lld ch=%d ka=%d up=%d uc=%d\n", (long long)h->content_length,
                h->chunked, h->keep_alive, h->upgrade, h->body_until_close);
    for (size_t i = 0; i < h->nheaders; i++) {
        assert_int_equal(strlen(h->headers[i].name), h->headers[i].name_len);
        assert_int_equal(strlen(h->headers[i].value), h->headers[i].value_len);
        buf_appendf(&r->trace, "  %s=[%s]\n", h->headers[i].name, h->headers[i].value);
    }
    return r->fail_head;
}

static int rec_body(void *data, const char *chunk, size_t len)
{
    struct rec *r = data;
    r->events++;
    r->body_calls++;
    assert_true(len > 0);
    buf_append(&r->body, chunk, len);
    size_t before = r->body_total;
    r->body_total += len;
    if (r->pause_at && before < r->pause_at && r->body_total >= r->pause_at)
        return 1;
    return 0;
}

static int rec_complete(void *data)
{
    struct rec *r = data;
    r->events++;
    r->completes++;
    buf_appendf(&r->trace, "BODY %zu [", r->body.len);
    if (r->body.len)
        buf_append(&r->trace, r->body.data, r->body.len);
    buf_append_str(&r->trace, "]\nDONE\n");
    buf_reset(&r->body);
    return 0;
}

static const struct http_parse_callbacks rec_callbacks = {rec_head, rec_body, rec_complete};

static const struct http_parse_limits test_limits = {32 * 1024, 100, 8 * 1024};

static void rec_free(struct rec *r)
{
    buf_free(&r->trace);
    buf_free(&r->body);
}

/* Feeds `len` bytes in slices of `step` (0: all at once), re-offering whatever a call did
 * not consume as the caller of a pipelined connection would. Returns the total consumed,
 * or HTTP_PARSE_ERROR. Stops when a call consumes nothing and nothing happened (after an
 * upgrade). */
static ssize_t feed_steps(struct http_parse *p, struct rec *r, const char *s, size_t len,
                          size_t step)
{
    size_t off = 0;
    size_t avail_end = step ? 0 : len;
    while (off < len) {
        if (avail_end <= off)
            avail_end = off + step < len ? off + step : len;
        int events = r->events;
        ssize_t n = http_parse_feed(p, s + off, avail_end - off);
        if (n < 0)
            return n;
        off += (size_t)n;
        if (n == 0 && r->events == events)
            break;
    }
    return (ssize_t)off;
}

/* Parses a whole stream, returns the trace (caller frees) and the consumed count. */
static char *parse_trace(enum http_parse_kind kind, const char *s, size_t len, size_t step,
                         ssize_t *consumed)
{
    struct rec r = {0};
    struct http_parse *p = http_parse_new(kind, &test_limits, &rec_callbacks, &r);
    ssize_t n = feed_steps(p, &r, s, len, step);
    if (consumed)
        *consumed = n;
    if (n < 0)
        buf_appendf(&r.trace, "ERROR %d %s\n", http_parse_error_status(p),
                    http_parse_error_reason(p));
    http_parse_free(p);
    buf_free(&r.body);
    return buf_steal(&r.trace);
}

/* Feeds `s` in one piece to a fresh parser and returns the error status (0 when none). */
static int status_of(enum http_parse_kind kind, const char *s, size_t len)
{
    struct rec r = {0};
    struct http_parse *p = http_parse_new(kind, &test_limits, &rec_callbacks, &r);
    ssize_t n = feed_steps(p, &r, s, len, 0);
    int status = n < 0 ? http_parse_error_status(p) : 0;
    if (n < 0) {
        assert_non_null(http_parse_error_reason(p));
        assert_true(strlen(http_parse_error_reason(p)) > 0);
        /* Errors are final. */
        assert_int_equal(http_parse_feed(p, "GET / HTTP/1.1\r\n", 16), HTTP_PARSE_ERROR);
        assert_int_equal(http_parse_finish(p), HTTP_PARSE_ERROR);
        assert_int_equal(http_parse_error_status(p), status);
    }
    http_parse_free(p);
    rec_free(&r);
    return status;
}

#define REQ_STATUS(lit) status_of(HTTP_PARSE_REQUEST, lit, sizeof(lit) - 1)
#define RES_STATUS(lit) status_of(HTTP_PARSE_RESPONSE, lit, sizeof(lit) - 1)

/* The same stream fed at once, byte by byte, and split at every offset gives one trace. */
static void assert_split_invariant(enum http_parse_kind kind, const char *s, size_t len)
{
    ssize_t whole_n, n;
    char *whole = parse_trace(kind, s, len, 0, &whole_n);
    char *bytes = parse_trace(kind, s, len, 1, &n);
    assert_string_equal(whole, bytes);
    assert_int_equal(whole_n, n);
    free(bytes);
    for (size_t cut = 1; cut < len; cut++) {
        struct rec r = {0};
        struct http_parse *p = http_parse_new(kind, &test_limits, &rec_callbacks, &r);
        ssize_t total = feed_steps(p, &r, s, cut, 0);
        if (total >= 0) {
            /* Bytes before the cut that were not consumed are offered again. */
            ssize_t more = feed_steps(p, &r, s + total, len - (size_t)total, 0);
            total = more < 0 ? more : total + more;
        }
        if (total < 0)
            buf_appendf(&r.trace, "ERROR %d %s\n", http_parse_error_status(p),
                        http_parse_error_reason(p));
        assert_string_equal(whole, r.trace.data ? r.trace.data : "");
        assert_int_equal(whole_n, total);
        http_parse_free(p);
        rec_free(&r);
    }
    free(whole);
}

/* ------------------------------------------------------------------------------------ */

static void test_simple_get(void **state)
{
    const char req[] = "GET /user/ann/x?y=1 HTTP/1.1\r\nHost: hub.example:8000\r\n"
                       "X-Thing:   spaced value \t \r\nEmpty:\r\nconnection: Keep-Alive\r\n\r\n";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_true(http_parse_idle(p));
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.completes, 1);
    assert_true(http_parse_idle(p));
    const struct http_head *h = r.last_head;
    /* The head stays valid after on_complete until the next message begins. */
    assert_int_equal(h->method, HTTP_GET);
    assert_string_equal(h->method_name, "GET");
    assert_string_equal(h->target, "/user/ann/x?y=1");
    assert_int_equal(h->target_len, strlen("/user/ann/x?y=1"));
    assert_int_equal(h->version_major, 1);
    assert_int_equal(h->version_minor, 1);
    assert_int_equal(h->nheaders, 4);
    assert_string_equal(h->headers[0].name, "Host");
    assert_string_equal(h->headers[0].value, "hub.example:8000");
    assert_string_equal(http_head_find(h, "x-thing")->value, "spaced value");
    assert_string_equal(http_head_find(h, "EMPTY")->value, "");
    assert_int_equal(http_head_find(h, "EMPTY")->value_len, 0);
    assert_null(http_head_find(h, "Missing"));
    assert_true(http_head_has_token(h, "Connection", "keep-alive"));
    assert_false(http_head_has_token(h, "Connection", "close"));
    assert_int_equal(h->content_length, -1);
    assert_false(h->chunked);
    assert_true(h->keep_alive);
    assert_false(h->upgrade);
    assert_int_equal(http_parse_finish(p), 0);
    http_parse_free(p);
    rec_free(&r);
}

static void test_has_token_lists(void **state)
{
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo , Upgrade,, bar\r\n"
                       "Connection: close\r\nUpgrade: websocket\r\n\r\n";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    const struct http_head *h = r.last_head;
    assert_true(http_head_has_token(h, "connection", "upgrade"));
    assert_true(http_head_has_token(h, "connection", "BAR"));
    assert_true(http_head_has_token(h, "connection", "close"));
    assert_false(http_head_has_token(h, "connection", "upgr"));
    assert_false(http_head_has_token(h, "connection", ""));
    assert_true(h->upgrade);
    assert_false(h->keep_alive);
    http_parse_free(p);
    rec_free(&r);
}

static void test_post_content_length(void **state)
{
    const char req[] = "POST /hub/login HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                       "hello worldGET / HTTP/1.1\r\n";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    ssize_t n = http_parse_feed(p, req, sizeof(req) - 1);
    /* Exactly the message: nothing of the next request is consumed. */
    assert_int_equal(n, strstr(req, "GET") - req);
    assert_int_equal(r.completes, 1);
    assert_int_equal(r.last_head->content_length, 11);
    assert_string_equal(r.trace.data,
                        "REQ POST /hub/login 1.1 cl=11 ch=0 ka=1 up=0 uc=0\n"
                        "  Host=[a]\n  Content-Length=[11]\nBODY 11 [hello world]\nDONE\n");
    assert_true(http_parse_idle(p));
    http_parse_free(p);
    rec_free(&r);
}

static void test_pipelined_requests(void **state)
{
    const char req[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                       "\r\n" /* the one empty line tolerated between messages */
                       "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t len = sizeof(req) - 1;
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    size_t off = 0;
    ssize_t n = http_parse_feed(p, req, len);
    assert_int_equal(n, strstr(req, "POST") - req);
    assert_int_equal(r.completes, 1);
    assert_string_equal(r.last_head->target, "/1");
    off += (size_t)n;
    n = http_parse_feed(p, req + off, len - off);
    assert_int_equal(off + (size_t)n, (size_t)(strstr(req, "abc") - req) + 3);
    assert_int_equal(r.completes, 2);
    assert_string_equal(r.last_head->target, "/2");
    off += (size_t)n;
    n = http_parse_feed(p, req + off, len - off);
    assert_int_equal(off + (size_t)n, len);
    assert_int_equal(r.completes, 3);
    assert_string_equal(r.last_head->target, "/3");
    assert_int_equal(http_parse_feed(p, "", 0), 0);
    http_parse_free(p);
    rec_free(&r);
    assert_split_invariant(HTTP_PARSE_REQUEST, req, len);
}

static void test_split_invariant_chunked(void **state)
{
    const char req[] = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5;ext=val;flag;q=\"quoted; \\\"x\\\"\"\r\nhello\r\n"
                       "000A\r\n0123456789\r\n"
                       "0;last\r\nTrailer-One: a\r\nX-Sum: 123\r\n\r\n"
                       "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    char *t = parse_trace(HTTP_PARSE_REQUEST, req, sizeof(req) - 1, 0, NULL);
    assert_string_equal(t, "REQ POST /up 1.1 cl=-1 ch=1 ka=1 up=0 uc=0\n"
                           "  Host=[a]\n  Transfer-Encoding=[chunked]\n"
                           "BODY 15 [hello0123456789]\nDONE\n"
                           "REQ GET /next 1.1 cl=-1 ch=0 ka=1 up=0 uc=0\n  Host=[a]\n"
                           "BODY 0 []\nDONE\n");
    free(t);
    assert_split_invariant(HTTP_PARSE_REQUEST, req, sizeof(req) - 1);
}

static void test_chunk_split_across_feeds(void **state)
{
    const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, head, sizeof(head) - 1), sizeof(head) - 1);
    assert_int_equal(r.heads, 1);
    assert_false(http_parse_idle(p));
    assert_int_equal(http_parse_feed(p, "1", 1), 1);
    assert_int_equal(http_parse_feed(p, "0\r", 2), 2);
    assert_int_equal(http_parse_feed(p, "\nabcdefgh", 9), 9);
    assert_int_equal(r.body.len, 8);
    assert_int_equal(http_parse_feed(p, "ijklmnop\r", 9), 9);
    assert_int_equal(http_parse_feed(p, "\n0\r\n\r", 5), 5);
    assert_int_equal(r.completes, 0);
    assert_int_equal(http_parse_finish(p), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 400);
    http_parse_free(p);
    rec_free(&r);

    memset(&r, 0, sizeof(r));
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, head, sizeof(head) - 1), sizeof(head) - 1);
    assert_int_equal(http_parse_feed(p, "10\r\nabcdefghijklmnop\r\n0\r\n\r", 26), 26);
    assert_int_equal(http_parse_feed(p, "\nGET", 4), 1);
    assert_int_equal(r.completes, 1);
    assert_string_equal(strstr(r.trace.data, "BODY"), "BODY 16 [abcdefghijklmnop]\nDONE\n");
    http_parse_free(p);
    rec_free(&r);
}

static void test_pause_content_length(void **state)
{
    const char req[] = "PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789"
                       "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t head_len = strstr(req, "0123") - req;
    struct rec r = {0};
    r.pause_at = 4;
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    /* The head and the first four body bytes, then the pause. */
    assert_int_equal(http_parse_feed(p, req, head_len + 4), head_len + 4);
    assert_int_equal(r.body.len, 4);
    assert_int_equal(r.completes, 0);
    /* Offered more, it consumes nothing further in the paused call. */
    r.pause_at = 0;
    ssize_t n = http_parse_feed(p, req + head_len + 4, sizeof(req) - 1 - head_len - 4);
    assert_int_equal(n, 6);
    assert_int_equal(r.completes, 1);
    http_parse_free(p);
    rec_free(&r);

    /* Pause on the last body byte: the message completes on the next feed, even empty. */
    memset(&r, 0, sizeof(r));
    r.pause_at = 10;
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    n = http_parse_feed(p, req, sizeof(req) - 1);
    assert_int_equal(n, head_len + 10);
    assert_int_equal(r.completes, 0);
    assert_false(http_parse_idle(p));
    assert_int_equal(http_parse_feed(p, "", 0), 0);
    assert_int_equal(r.completes, 1);
    assert_true(http_parse_idle(p));
    http_parse_free(p);
    rec_free(&r);
}

static void test_pause_chunked(void **state)
{
    const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "6\r\nabcdef\r\n0\r\n\r\n";
    size_t head_len = strstr(req, "6\r\n") - req;
    struct rec r = {0};
    r.pause_at = 2;
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    /* Body pieces are delivered per feed; make the first piece 2 bytes long. */
    assert_int_equal(http_parse_feed(p, req, head_len + 5), head_len + 5);
    assert_int_equal(r.body_total, 2);
    ssize_t n = http_parse_feed(p, req + head_len + 5, sizeof(req) - 1 - head_len - 5);
    assert_int_equal(n, sizeof(req) - 1 - head_len - 5);
    assert_int_equal(r.completes, 1);
    assert_string_equal(strstr(r.trace.data, "BODY"), "BODY 6 [abcdef]\nDONE\n");
    http_parse_free(p);
    rec_free(&r);

    /* Pause in the middle of one delivered piece returns right after that piece. */
    memset(&r, 0, sizeof(r));
    r.pause_at = 1;
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    n = http_parse_feed(p, req, sizeof(req) - 1);
    assert_int_equal(n, head_len + 3 + 6);
    assert_int_equal(r.completes, 0);
    n = http_parse_feed(p, req + head_len + 9, sizeof(req) - 1 - head_len - 9);
    assert_int_equal(n, sizeof(req) - 1 - head_len - 9);
    assert_int_equal(r.completes, 1);
    http_parse_free(p);
    rec_free(&r);
}

static int fail_body(void *data, const char *chunk, size_t len)
{
    return 7;
}

static int fail_complete(void *data)
{
    return -1;
}

static void test_callback_failures(void **state)
{
    const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab";
    struct rec r = {0};
    r.fail_head = 1; /* only on_body may return 1 */
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 500);
    http_parse_free(p);
    rec_free(&r);

    struct http_parse_callbacks cb = {NULL, fail_body, NULL};
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &cb, NULL);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 500);
    http_parse_free(p);

    struct http_parse_callbacks cb2 = {NULL, NULL, fail_complete};
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &cb2, NULL);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 500);
    assert_string_equal(http_parse_error_reason(p), "callback failed");
    http_parse_free(p);

    /* No callbacks at all is fine. */
    p = http_parse_new(HTTP_PARSE_REQUEST, NULL, NULL, NULL);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    assert_int_equal(http_parse_error_status(p), 0);
    assert_string_equal(http_parse_error_reason(p), "");
    http_parse_free(p);
}

/* --- head rejections ----------------------------------------------------------------- */

static void test_reject_bare_cr(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\nX: a\rContent-Length: 0\r\n\r\n"), 400);
}

static void test_reject_bare_lf(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"), 400);
}

static void test_reject_obs_fold(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"), 400);
    /* The classic: a folded Transfer-Encoding some parsers join and others drop. */
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\n X: a\r\n\r\n"), 400);
}

static void test_reject_space_before_colon(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n"
                                "\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"), 400);
}

static void test_reject_empty_field_name(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\n:\r\n\r\n"), 400);
}

static void test_reject_bad_field_name(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX@y: 1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX\"y: 1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: 1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX\x01: 1\r\n\r\n"), 400);
    /* All of tchar is fine. */
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: 1\r\n\r\n"),
                     0);
}

static void test_reject_control_in_value(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n"), 400);
    /* HT and obs-text are allowed. */
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb \xff\xc3\xa9\r\n\r\n"), 0);
}

static void test_reject_nul(void **state)
{
    static const char in_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    static const char in_target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char in_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n";
    assert_int_equal(status_of(HTTP_PARSE_REQUEST, in_value, sizeof(in_value) - 1), 400);
    assert_int_equal(status_of(HTTP_PARSE_REQUEST, in_target, sizeof(in_target) - 1), 400);
    assert_int_equal(status_of(HTTP_PARSE_REQUEST, in_name, sizeof(in_name) - 1), 400);
}

static void test_reject_leading_whitespace(void **state)
{
    assert_int_equal(REQ_STATUS(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("\tGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("\r\n GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    /* One leading CRLF is tolerated (RFC 9112 2.2), for requests only. */
    assert_int_equal(REQ_STATUS("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(RES_STATUS("\r\nHTTP/1.1 204 No Content\r\n\r\n"), 400);
}

static void test_leading_crlf_idle(void **state)
{
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, "\r", 1), 1);
    assert_false(http_parse_idle(p));
    assert_int_equal(http_parse_feed(p, "\n", 1), 1);
    assert_true(http_parse_idle(p));
    assert_int_equal(http_parse_finish(p), 0);
    http_parse_free(p);
    rec_free(&r);
}

static void test_reject_request_line(void **state)
{
    assert_int_equal(REQ_STATUS("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET /\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / http/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1/\r\nHost: a\r\n\r\n"), 400);
}

static void test_reject_version(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    assert_int_equal(REQ_STATUS("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505);
    assert_int_equal(RES_STATUS("HTTP/2.0 200 OK\r\n\r\n"), 505);
    assert_int_equal(RES_STATUS("HTTP/1.x 200 OK\r\n\r\n"), 400);
}

static void test_unknown_method(void **state)
{
    assert_int_equal(REQ_STATUS("FROB / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    assert_int_equal(REQ_STATUS("get / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
}

static void test_reject_status_line(void **state)
{
    assert_int_equal(RES_STATUS("HTTP/1.1 20 OK\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 2000 OK\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 099 OK\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1  200 OK\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 O\x01K\r\n\r\n"), 400);
    assert_int_equal(RES_STATUS("HTTP/1.1 abc OK\r\n\r\n"), 400);
}

static void test_limits_url(void **state)
{
    struct http_parse_limits lim = {4096, 10, 16};
    const char ok[] = "GET /234567890123456 HTTP/1.1\r\nHost: a\r\n\r\n";
    const char bad[] = "GET /2345678901234567 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, ok, sizeof(ok) - 1), sizeof(ok) - 1);
    http_parse_free(p);
    p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, bad, sizeof(bad) - 1), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 414);
    http_parse_free(p);
}

static void test_limits_headers(void **state)
{
    struct http_parse_limits lim = {4096, 3, 100};
    const char ok[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    const char bad[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, ok, sizeof(ok) - 1), sizeof(ok) - 1);
    http_parse_free(p);
    p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, bad, sizeof(bad) - 1), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 431);
    http_parse_free(p);
}

static void test_limits_head(void **state)
{
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nX: 12345\r\n\r\n";
    size_t len = sizeof(req) - 1;
    struct http_parse_limits lim = {len, 100, 100};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, req, len), len);
    /* A second message on the same connection gets the whole budget again. */
    assert_int_equal(http_parse_feed(p, req, len), len);
    http_parse_free(p);
    lim.max_head = len - 1;
    p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, req, len), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 431);
    http_parse_free(p);
    /* A head that never ends is cut off at the limit without waiting for a line end. */
    p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    char junk[64];
    memset(junk, 'a', sizeof(junk));
    assert_int_equal(http_parse_feed(p, junk, sizeof(junk)), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 431);
    http_parse_free(p);
}

static void test_limits_default(void **state)
{
    /* Zero limits mean the defaults, not "nothing allowed". */
    struct http_parse_limits lim = {0, 0, 0};
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &lim, NULL, NULL);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    http_parse_free(p);
}

/* --- framing rejections -------------------------------------------------------------- */

static void test_reject_cl_and_te(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                "Content-Length: 4\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
}

static void test_reject_duplicate_cl(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                "Content-Length: 3\r\n\r\nabc"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                "content-length: 4\r\n\r\nabcd"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc"),
                     400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n"
                                "\r\na"),
                     400);
}

static void test_reject_bad_cl(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 3\r\n\r\nabc"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Content-Length: 9223372036854775808\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Content-Length: 99999999999999999999999\r\n\r\n"),
                     400);
    /* The largest int64 is a valid length; surrounding OWS is not part of the value. */
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    const char big[] =
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t9223372036854775807 \r\n\r\n";
    assert_int_equal(http_parse_feed(p, big, sizeof(big) - 1), sizeof(big) - 1);
    assert_int_equal(r.last_head->content_length, INT64_MAX);
    http_parse_free(p);
    rec_free(&r);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n1234567"),
                     0);
}

static void test_reject_te_values(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
                     501);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
                     501);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: gzip\r\n\r\n"),
                     501);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: chunked, gzip\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding:\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: chunked,\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: ,chunked\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: chunked;q=1\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding: \"chunked\"\r\n\r\n"),
                     400);
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(RES_STATUS("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                     501);
    /* Case does not matter; surrounding OWS is not part of the value. */
    assert_int_equal(REQ_STATUS("POST / HTTP/1.1\r\nHost: a\r\n"
                                "Transfer-Encoding:  CHUNKED \r\n\r\n0\r\n\r\n"),
                     0);
}

static void test_reject_te_http10(void **state)
{
    assert_int_equal(REQ_STATUS("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
    assert_int_equal(RES_STATUS("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
}

static void test_reject_host(void **state)
{
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), 400);
    /* HTTP/1.0 needs none; an empty Host, an IP literal with port are fine. */
    assert_int_equal(REQ_STATUS("GET / HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 0);
    assert_int_equal(REQ_STATUS("GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n"), 0);
}

/* --- chunk syntax -------------------------------------------------------------------- */

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_reject_chunk_size(void **state)
{
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "g\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "-5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "+5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD " 5\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n"), 400);
    /* Too large: over 2^62, or digits that would overflow 64 bits. */
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "4000000000000001\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "10000000000000005\r\nhello\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "fffffffffffffffff\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "00000000000000005\r\nhello\r\n"), 400);
    /* 2^62 itself is accepted (the body is then just incomplete). */
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "4000000000000000\r\nabc"), 0);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0005\r\nhello\r\n0\r\n\r\n"), 0);
}

static void test_reject_chunk_line_ends(void **state)
{
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\rhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhello\r0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhelloX\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhello\r\n0\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhello\r\n0\r\n\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5\r\nhello\r\n0\r\n\rX"), 400);
}

static void test_reject_chunk_extensions(void **state)
{
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5 ;a=b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5; a=b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a =b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a= b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=b \r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;=b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a==b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=\"b\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a\n\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "5;a=b;c=\"d e\\\"\";f\r\nhello\r\n0\r\n\r\n"), 0);
    /* An endless extension is cut off. */
    struct buf b = BUF_INIT;
    buf_append_str(&b, CHUNKED_HEAD "5;a=");
    for (int i = 0; i < 5000; i++)
        buf_append_char(&b, 'x');
    assert_int_equal(status_of(HTTP_PARSE_REQUEST, b.data, b.len), 400);
    buf_free(&b);
}

static void test_reject_trailers(void **state)
{
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX : a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX: a\r\n b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\n: a\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX: a\rb\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX: a\nY: b\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX: a\x01\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nNoColon\r\n\r\n"), 400);
    assert_int_equal(REQ_STATUS(CHUNKED_HEAD "0\r\nX(: a\r\n\r\n"), 400);
    /* Trailer bytes are capped like a head. */
    struct buf b = BUF_INIT;
    buf_append_str(&b, CHUNKED_HEAD "0\r\n");
    for (int i = 0; i < 2000; i++)
        buf_append_str(&b, "X-Pad: 0123456789012345678901234567890123456789\r\n");
    buf_append_str(&b, "\r\n");
    assert_int_equal(status_of(HTTP_PARSE_REQUEST, b.data, b.len), 431);
    buf_free(&b);
}

/* --- responses ------------------------------------------------------------------------ */

static void test_response_content_length(void **state)
{
    const char res[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n"
                       "helloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    char *t = parse_trace(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1, 0, NULL);
    assert_string_equal(t, "RES 200 [OK] 1.1 cl=5 ch=0 ka=1 up=0 uc=0\n"
                           "  Content-Length=[5]\n  Content-Type=[text/plain]\n"
                           "BODY 5 [hello]\nDONE\n"
                           "RES 404 [Not Found] 1.1 cl=0 ch=0 ka=1 up=0 uc=0\n"
                           "  Content-Length=[0]\nBODY 0 []\nDONE\n");
    free(t);
    assert_split_invariant(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1);
}

static void test_response_chunked(void **state)
{
    const char res[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3;a=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 1\r\n\r\n";
    char *t = parse_trace(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1, 0, NULL);
    assert_string_equal(t, "RES 200 [OK] 1.1 cl=-1 ch=1 ka=1 up=0 uc=0\n"
                           "  Transfer-Encoding=[chunked]\nBODY 5 [abcde]\nDONE\n");
    free(t);
    assert_split_invariant(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1);
}

static void test_response_until_close(void **state)
{
    const char res[] = "HTTP/1.1 200\r\nContent-Type: text/plain\r\n\r\nall of this is body";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, res, sizeof(res) - 1), sizeof(res) - 1);
    assert_true(r.last_head->body_until_close);
    assert_false(r.last_head->keep_alive);
    assert_string_equal(r.last_head->reason, "");
    assert_int_equal(r.completes, 0);
    assert_int_equal(http_parse_feed(p, "HTTP/1.1 200 OK\r\n", 17), 17);
    assert_int_equal(http_parse_finish(p), 0);
    assert_int_equal(r.completes, 1);
    assert_string_equal(strstr(r.trace.data, "BODY"),
                        "BODY 36 [all of this is bodyHTTP/1.1 200 OK\r\n]\nDONE\n");
    /* Closed: nothing more is taken. */
    assert_int_equal(http_parse_feed(p, "x", 1), 0);
    http_parse_free(p);
    rec_free(&r);
}

static void test_response_head(void **state)
{
    const char res[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, &rec_callbacks, &r);
    http_parse_set_request_method(p, HTTP_HEAD);
    ssize_t n = http_parse_feed(p, res, sizeof(res) - 1);
    assert_int_equal(n, strstr(res + 1, "HTTP") - res);
    assert_int_equal(r.completes, 1);
    assert_int_equal(r.last_head->content_length, 1000);
    /* The method applied to one response only: the next one has its body. */
    assert_int_equal(http_parse_feed(p, res + n, sizeof(res) - 1 - (size_t)n),
                     sizeof(res) - 1 - (size_t)n);
    assert_int_equal(r.completes, 2);
    assert_string_equal(strstr(r.trace.data, "BODY 2"), "BODY 2 [ok]\nDONE\n");
    http_parse_free(p);
    rec_free(&r);

    /* Chunked response to HEAD: no body either. */
    const char res2[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    memset(&r, 0, sizeof(r));
    p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, &rec_callbacks, &r);
    http_parse_set_request_method(p, HTTP_HEAD);
    assert_int_equal(http_parse_feed(p, res2, sizeof(res2) - 1), sizeof(res2) - 1);
    assert_int_equal(r.completes, 1);
    assert_true(http_parse_idle(p));
    http_parse_free(p);
    rec_free(&r);
}

static void test_response_no_body_statuses(void **state)
{
    const char res[] = "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
                       "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"
                       "HTTP/1.1 100 Continue\r\n\r\n"
                       "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    char *t = parse_trace(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1, 0, NULL);
    assert_string_equal(t, "RES 204 [No Content] 1.1 cl=10 ch=0 ka=1 up=0 uc=0\n"
                           "  Content-Length=[10]\nBODY 0 []\nDONE\n"
                           "RES 304 [Not Modified] 1.1 cl=10 ch=0 ka=1 up=0 uc=0\n"
                           "  Content-Length=[10]\nBODY 0 []\nDONE\n"
                           "RES 100 [Continue] 1.1 cl=-1 ch=0 ka=1 up=0 uc=0\nBODY 0 []\nDONE\n"
                           "RES 103 [Early Hints] 1.1 cl=-1 ch=0 ka=1 up=0 uc=0\n"
                           "  Link=[</a.css>]\nBODY 0 []\nDONE\n"
                           "RES 200 [OK] 1.1 cl=1 ch=0 ka=1 up=0 uc=0\n"
                           "  Content-Length=[1]\nBODY 1 [x]\nDONE\n");
    free(t);
    assert_split_invariant(HTTP_PARSE_RESPONSE, res, sizeof(res) - 1);
}

static void test_response_head_kept_across_1xx(void **state)
{
    const char res[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, &rec_callbacks, &r);
    http_parse_set_request_method(p, HTTP_HEAD);
    ssize_t n = http_parse_feed(p, res, sizeof(res) - 1);
    assert_int_equal(r.completes, 1);
    assert_int_equal(http_parse_feed(p, res + n, sizeof(res) - 1 - (size_t)n),
                     sizeof(res) - 1 - (size_t)n);
    assert_int_equal(r.completes, 2);
    http_parse_free(p);
    rec_free(&r);
}

static void test_response_101(void **state)
{
    const char res[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                       "Upgrade: websocket\r\n\r\n\x81\x05hello";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, &rec_callbacks, &r);
    ssize_t n = http_parse_feed(p, res, sizeof(res) - 1);
    assert_int_equal(n, strstr(res, "\x81") - res);
    assert_true(r.last_head->upgrade);
    assert_false(r.last_head->keep_alive);
    assert_int_equal(r.completes, 1);
    assert_false(http_parse_idle(p));
    assert_int_equal(http_parse_feed(p, res + n, sizeof(res) - 1 - (size_t)n), 0);
    assert_int_equal(r.body_calls, 0);
    assert_int_equal(http_parse_finish(p), 0);
    http_parse_free(p);
    rec_free(&r);
}

/* --- upgrade requests, keep-alive ----------------------------------------------------- */

static void test_upgrade_request(void **state)
{
    const char req[] = "GET /user/ann/ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                       "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85xxxxGET";
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    ssize_t n = http_parse_feed(p, req, sizeof(req) - 1);
    assert_int_equal(n, strstr(req, "\x81") - req);
    assert_true(r.last_head->upgrade);
    assert_int_equal(r.completes, 1);
    assert_int_equal(http_parse_feed(p, req + n, sizeof(req) - 1 - (size_t)n), 0);
    http_parse_free(p);
    rec_free(&r);

    /* Upgrade with a Content-Length body: the body first, then nothing. */
    const char req2[] = "POST /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
                        "Content-Length: 3\r\n\r\nabctunnel";
    memset(&r, 0, sizeof(r));
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    n = http_parse_feed(p, req2, sizeof(req2) - 1);
    assert_int_equal(n, strstr(req2, "tunnel") - req2);
    assert_string_equal(strstr(r.trace.data, "BODY"), "BODY 3 [abc]\nDONE\n");
    assert_int_equal(http_parse_feed(p, "more", 4), 0);
    http_parse_free(p);
    rec_free(&r);

    /* Upgrade header without Connection: upgrade is not an upgrade. */
    const char req3[] = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET";
    memset(&r, 0, sizeof(r));
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, req3, sizeof(req3) - 1), sizeof(req3) - 4);
    assert_false(r.last_head->upgrade);
    assert_int_equal(http_parse_feed(p, "GET", 3), 3);
    http_parse_free(p);
    rec_free(&r);
}

static bool keep_alive_of(enum http_parse_kind kind, const char *s)
{
    struct rec r = {0};
    struct http_parse *p = http_parse_new(kind, &test_limits, &rec_callbacks, &r);
    assert_true(http_parse_feed(p, s, strlen(s)) > 0);
    assert_int_equal(r.heads, 1);
    bool ka = r.last_head->keep_alive;
    http_parse_free(p);
    rec_free(&r);
    return ka;
}

static void test_keep_alive_rules(void **state)
{
    assert_true(keep_alive_of(HTTP_PARSE_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(keep_alive_of(HTTP_PARSE_REQUEST,
                               "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert_false(keep_alive_of(HTTP_PARSE_REQUEST,
                               "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n"));
    assert_false(keep_alive_of(HTTP_PARSE_REQUEST, "GET / HTTP/1.0\r\n\r\n"));
    assert_true(
        keep_alive_of(HTTP_PARSE_REQUEST, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_false(keep_alive_of(HTTP_PARSE_REQUEST,
                               "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    assert_true(keep_alive_of(HTTP_PARSE_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_false(
        keep_alive_of(HTTP_PARSE_RESPONSE, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert_true(
        keep_alive_of(HTTP_PARSE_RESPONSE,
                      "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert_false(keep_alive_of(HTTP_PARSE_RESPONSE,
                               "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody"));
}

static void test_http10_request_body(void **state)
{
    /* No Content-Length in a request means no body, in 1.0 as in 1.1. */
    const char req[] = "POST / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n";
    char *t = parse_trace(HTTP_PARSE_REQUEST, req, sizeof(req) - 1, 0, NULL);
    assert_string_equal(t, "REQ POST / 1.0 cl=-1 ch=0 ka=0 up=0 uc=0\nBODY 0 []\nDONE\n"
                           "REQ GET / 1.0 cl=-1 ch=0 ka=0 up=0 uc=0\nBODY 0 []\nDONE\n");
    free(t);
}

/* --- finish, idle ---------------------------------------------------------------------- */

static void test_finish(void **state)
{
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, NULL, NULL);
    assert_int_equal(http_parse_finish(p), 0);
    http_parse_free(p);

    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, NULL, NULL);
    assert_int_equal(http_parse_feed(p, "GET / HT", 8), 8);
    assert_false(http_parse_idle(p));
    assert_int_equal(http_parse_finish(p), HTTP_PARSE_ERROR);
    assert_int_equal(http_parse_error_status(p), 400);
    http_parse_free(p);

    const char req[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab";
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, NULL, NULL);
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    assert_int_equal(http_parse_finish(p), HTTP_PARSE_ERROR);
    http_parse_free(p);

    /* A response with a Content-Length cut short is an error too. */
    const char res[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
    p = http_parse_new(HTTP_PARSE_RESPONSE, &test_limits, NULL, NULL);
    assert_int_equal(http_parse_feed(p, res, sizeof(res) - 1), sizeof(res) - 1);
    assert_int_equal(http_parse_finish(p), HTTP_PARSE_ERROR);
    http_parse_free(p);

    /* Paused on the last byte, the peer closes: the message still completes. */
    struct rec r = {0};
    r.pause_at = 3;
    const char req2[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    assert_int_equal(http_parse_feed(p, req2, sizeof(req2) - 1), sizeof(req2) - 1);
    assert_int_equal(r.completes, 0);
    assert_int_equal(http_parse_finish(p), 0);
    assert_int_equal(r.completes, 1);
    http_parse_free(p);
    rec_free(&r);
}

/* Regression cases found by the fuzz drivers live here as plain inputs. */
static void test_regressions(void **state)
{
    /* A header value of only whitespace is an empty value, not the next line. */
    struct rec r = {0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &test_limits, &rec_callbacks, &r);
    const char req[] = "GET / HTTP/1.1\r\nX:   \t\r\nHost: a\r\n\r\n";
    assert_int_equal(http_parse_feed(p, req, sizeof(req) - 1), sizeof(req) - 1);
    assert_string_equal(http_head_find(r.last_head, "x")->value, "");
    assert_string_equal(http_head_find(r.last_head, "host")->value, "a");
    http_parse_free(p);
    rec_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_has_token_lists),
        cmocka_unit_test(test_post_content_length),
        cmocka_unit_test(test_pipelined_requests),
        cmocka_unit_test(test_split_invariant_chunked),
        cmocka_unit_test(test_chunk_split_across_feeds),
        cmocka_unit_test(test_pause_content_length),
        cmocka_unit_test(test_pause_chunked),
        cmocka_unit_test(test_callback_failures),
        cmocka_unit_test(test_reject_bare_cr),
        cmocka_unit_test(test_reject_bare_lf),
        cmocka_unit_test(test_reject_obs_fold),
        cmocka_unit_test(test_reject_space_before_colon),
        cmocka_unit_test(test_reject_empty_field_name),
        cmocka_unit_test(test_reject_bad_field_name),
        cmocka_unit_test(test_reject_control_in_value),
        cmocka_unit_test(test_reject_nul),
        cmocka_unit_test(test_reject_leading_whitespace),
        cmocka_unit_test(test_leading_crlf_idle),
        cmocka_unit_test(test_reject_request_line),
        cmocka_unit_test(test_reject_version),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_reject_status_line),
        cmocka_unit_test(test_limits_url),
        cmocka_unit_test(test_limits_headers),
        cmocka_unit_test(test_limits_head),
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_reject_cl_and_te),
        cmocka_unit_test(test_reject_duplicate_cl),
        cmocka_unit_test(test_reject_bad_cl),
        cmocka_unit_test(test_reject_te_values),
        cmocka_unit_test(test_reject_te_http10),
        cmocka_unit_test(test_reject_host),
        cmocka_unit_test(test_reject_chunk_size),
        cmocka_unit_test(test_reject_chunk_line_ends),
        cmocka_unit_test(test_reject_chunk_extensions),
        cmocka_unit_test(test_reject_trailers),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_until_close),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_response_no_body_statuses),
        cmocka_unit_test(test_response_head_kept_across_1xx),
        cmocka_unit_test(test_response_101),
        cmocka_unit_test(test_upgrade_request),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_http10_request_body),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_regressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for src/http/websocket.c: the handshake check, the frame scanner (split frames,
 * masks, 16/64-bit lengths, control frames, errors) and the activity classifier for VS
 * Code tunnels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "http/server.h"
#include "http/websocket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- handshake -------------------------------------------------------------------------- */

static void test_key_valid(void **state)
{
    const char *ok = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455's example */
    assert_true(websocket_key_valid(ok, strlen(ok)));
    assert_true(websocket_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    assert_true(websocket_key_valid("+/+/+/+/+/+/+/+/+/+/+w==", 24));
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBub25jZR==", 24)); /* stray low bits */
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBub25jZQ===", 25));
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBub25jZQAA", 24));
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBub2-jZQ==", 24)); /* url-safe alphabet */
    assert_false(websocket_key_valid("dGhlIHNhbXBsZSBu=25jZQ==", 24));
    assert_false(websocket_key_valid("", 0));
}

struct req_fx {
    struct http_request req;
    struct http_header h[8];
};

static void add(struct req_fx *r, const char *name, const char *value)
{
    struct http_header *h = &r->h[r->req.nheaders++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

static void ws_request(struct req_fx *r)
{
    memset(r, 0, sizeof *r);
    r->req.method = HTTP_GET;
    r->req.method_name = "GET";
    r->req.version_minor = 1;
    r->req.upgrade = true;
    r->req.headers = r->h;
    add(r, "Host", "x");
    add(r, "Connection", "keep-alive, Upgrade");
    add(r, "Upgrade", "websocket");
}

static int check(struct req_fx *r)
{
    const char *why = "unset";
    int st = websocket_handshake_check(&r->req, &why);
    if (st == 0)
        assert_null(why);
    else
        assert_non_null(why);
    return st;
}

static void test_handshake(void **state)
{
    struct req_fx r;
    ws_request(&r);
    add(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add(&r, "Sec-WebSocket-Version", "13");
    assert_int_equal(check(&r), 0);

    r.req.method = HTTP_POST;
    assert_int_equal(check(&r), 400);
    r.req.method = HTTP_GET;
    r.req.version_minor = 0;
    assert_int_equal(check(&r), 400);
    r.req.version_minor = 1;
    r.req.upgrade = false;
    assert_int_equal(check(&r), 400);

    ws_request(&r);
    r.h[2].value = "h2c";
    add(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add(&r, "Sec-WebSocket-Version", "13");
    assert_int_equal(check(&r), 400);
    r.h[2].value = "foo, WebSocket"; /* a list, case-insensitive */
    assert_int_equal(check(&r), 0);

    ws_request(&r);
    add(&r, "Sec-WebSocket-Version", "13");
    assert_int_equal(check(&r), 400); /* no key */
    add(&r, "Sec-WebSocket-Key", "short==");
    assert_int_equal(check(&r), 400);

    ws_request(&r);
    add(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add(&r, "Sec-WebSocket-Version", "13");
    assert_int_equal(check(&r), 400); /* two keys */

    ws_request(&r);
    add(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    assert_int_equal(check(&r), 400); /* no version */
    add(&r, "Sec-WebSocket-Version", "8");
    assert_int_equal(check(&r), 400);
    r.h[4].value = "13";
    add(&r, "sec-websocket-version", "13");
    assert_int_equal(check(&r), 400); /* two versions */
}

/* --- frames -------------------------------------------------------------------------------- */

static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a frame. rsv: 1 sets RSV1, 2 sets RSV2. len_form: 0 smallest, 16 or 64 to force
 * an encoding (even a wrong one). */
static void frame(struct buf *out, bool fin, unsigned rsv, unsigned opcode, bool masked,
                  const void *payload, size_t len, int len_form)
{
    uint8_t h[14];
    size_t n = 0;
    h[n++] = (uint8_t)((fin ? 0x80 : 0) | ((rsv & 1) << 6) | ((rsv & 2) << 4) | opcode);
    uint8_t m = masked ? 0x80 : 0;
    if (len_form == 64 || (len_form == 0 && len > 0xffff)) {
        h[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    } else if (len_form == 16 || (len_form == 0 && len > 125)) {
        h[n++] = m | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = m | (uint8_t)len;
    }
    if (masked) {
        memcpy(h + n, mask_key, 4);
        n += 4;
    }
    buf_append(out, h, n);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = p[i] ^ (masked ? mask_key[i & 3] : 0);
        buf_append(out, &b, 1);
    }
}

struct trace {
    struct buf t;        /* frame headers seen */
    struct buf data;     /* data stream bytes delivered */
    uint64_t skip_every; /* after each delivery, skip this many bytes (0: none) */
};

static void tr_frame(void *data, const struct websocket_frame *f)
{
    struct trace *t = data;
    buf_appendf(&t->t, "[op=%u fin=%d rsv1=%d m=%d len=%llu]", f->opcode, f->fin, f->rsv1,
                f->masked, (unsigned long long)f->length);
}

static uint64_t tr_data(void *data, const uint8_t *bytes, size_t n)
{
    struct trace *t = data;
    assert_true(n > 0 && n <= WEBSOCKET_PEEK);
    buf_append(&t->data, bytes, n);
    return t->skip_every;
}

static const struct websocket_scan_callbacks tr_cb = {tr_frame, tr_data};

/* Scans `in` split at `split` (0: whole; 1: byte by byte); returns the feed result. */
static int scan(const struct buf *in, bool masked, size_t split, struct trace *t, uint64_t skip)
{
    struct websocket_scan s;
    memset(t, 0, sizeof *t);
    t->skip_every = skip;
    websocket_scan_init(&s, masked, &tr_cb, t);
    if (split == 0)
        return websocket_scan_feed(&s, in->data, in->len);
    int rc = 0;
    for (size_t off = 0; off < in->len; off += split) {
        size_t n = in->len - off < split ? in->len - off : split;
        rc = websocket_scan_feed(&s, in->data + off, n);
        if (rc != 0)
            break;
    }
    return rc;
}

static void trace_free(struct trace *t)
{
    buf_free(&t->t);
    buf_free(&t->data);
}

static void test_scan_frames(void **state)
{
    struct buf in = BUF_INIT, want = BUF_INIT;
    char big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 23);
    frame(&in, true, 0, WEBSOCKET_BINARY, true, "hello", 5, 0);
    frame(&in, false, 0, WEBSOCKET_TEXT, true, big, 300, 0);             /* 16-bit length */
    frame(&in, true, 0, WEBSOCKET_PING, true, "pp", 2, 0);               /* between fragments */
    frame(&in, true, 0, WEBSOCKET_CONTINUATION, true, big + 300, 70, 0); /* ends the message */
    frame(&in, true, 1, WEBSOCKET_BINARY, true, big, sizeof big, 0);     /* 64-bit, rsv1 */
    frame(&in, true, 0, WEBSOCKET_BINARY, true, "", 0, 0);               /* empty */
    frame(&in, true, 0, WEBSOCKET_CLOSE, true, "\x03\xe8", 2, 0);
    buf_append(&want, "hello", 5);
    buf_append(&want, big, 370);
    buf_append(&want, big, sizeof big);
    const char *frames = "[op=2 fin=1 rsv1=0 m=1 len=5][op=1 fin=0 rsv1=0 m=1 len=300]"
                         "[op=9 fin=1 rsv1=0 m=1 len=2][op=0 fin=1 rsv1=0 m=1 len=70]"
                         "[op=2 fin=1 rsv1=1 m=1 len=70000][op=2 fin=1 rsv1=0 m=1 len=0]"
                         "[op=8 fin=1 rsv1=0 m=1 len=2]";
    size_t splits[] = {0, 1, 2, 3, 7, 13, 64, 65, 4096};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        struct trace t;
        assert_int_equal(scan(&in, true, splits[i], &t, 0), 0);
        assert_string_equal(t.t.data, frames);
        assert_int_equal(t.data.len, want.len);
        assert_memory_equal(t.data.data, want.data, want.len);
        trace_free(&t);
    }
    /* Split at every offset into two feeds. */
    for (size_t cut = 1; cut < 400; cut++) {
        struct websocket_scan s;
        struct trace t;
        memset(&t, 0, sizeof t);
        websocket_scan_init(&s, true, &tr_cb, &t);
        assert_int_equal(websocket_scan_feed(&s, in.data, cut), 0);
        assert_int_equal(websocket_scan_feed(&s, in.data + cut, in.len - cut), 0);
        assert_string_equal(t.t.data, frames);
        assert_memory_equal(t.data.data, want.data, want.len);
        assert_int_equal(s.frames, 7);
        trace_free(&t);
    }
    /* Skipping: after every delivery the observer skips 100 bytes, across frames. */
    struct trace t;
    assert_int_equal(scan(&in, true, 0, &t, 100), 0);
    struct buf expect = BUF_INIT;
    size_t pos = 0;
    while (pos < want.len) {
        size_t k = want.len - pos < WEBSOCKET_PEEK ? want.len - pos : WEBSOCKET_PEEK;
        /* Deliveries never cross a frame's end: 5 then the text frame's first bytes. */
        size_t frame_ends[] = {5, 305, 375, 375 + sizeof big};
        for (size_t i = 0; i < 4; i++) {
            if (pos < frame_ends[i]) {
                if (pos + k > frame_ends[i])
                    k = frame_ends[i] - pos;
                break;
            }
        }
        buf_append(&expect, want.data + pos, k);
        pos += k + 100;
    }
    assert_int_equal(t.data.len, expect.len);
    assert_memory_equal(t.data.data, expect.data, expect.len);
    buf_free(&expect);
    trace_free(&t);

    /* Server-to-client frames are not masked. */
    buf_reset(&in);
    frame(&in, true, 0, WEBSOCKET_TEXT, false, "abc", 3, 0);
    assert_int_equal(scan(&in, false, 1, &t, 0), 0);
    assert_int_equal(t.data.len, 3);
    assert_memory_equal(t.data.data, "abc", 3);
    trace_free(&t);
    buf_free(&in);
    buf_free(&want);
}

static void expect_error(void (*build)(struct buf *), bool masked)
{
    struct buf in = BUF_INIT;
    build(&in);
    size_t splits[] = {0, 1, 5};
    for (size_t i = 0; i < 3; i++) {
        struct trace t;
        assert_int_equal(scan(&in, masked, splits[i], &t, 0), -EPROTO);
        trace_free(&t);
    }
    /* An error is final. */
    struct websocket_scan s;
    struct trace t;
    memset(&t, 0, sizeof t);
    websocket_scan_init(&s, masked, &tr_cb, &t);
    assert_int_equal(websocket_scan_feed(&s, in.data, in.len), -EPROTO);
    struct buf ok = BUF_INIT;
    frame(&ok, true, 0, WEBSOCKET_BINARY, masked, "x", 1, 0);
    assert_int_equal(websocket_scan_feed(&s, ok.data, ok.len), -EPROTO);
    buf_free(&ok);
    trace_free(&t);
    buf_free(&in);
}

static void b_reserved_opcode(struct buf *b)
{
    frame(b, true, 0, 3, true, "x", 1, 0);
}
static void b_reserved_control(struct buf *b)
{
    frame(b, true, 0, 0xb, true, "x", 1, 0);
}
static void b_unmasked(struct buf *b)
{
    frame(b, true, 0, WEBSOCKET_BINARY, false, "x", 1, 0);
}
static void b_long_control(struct buf *b)
{
    char p[126] = {0};
    frame(b, true, 0, WEBSOCKET_PING, true, p, sizeof p, 0);
}
static void b_fragmented_control(struct buf *b)
{
    frame(b, false, 0, WEBSOCKET_PING, true, "x", 1, 0);
}
static void b_lone_continuation(struct buf *b)
{
    frame(b, true, 0, WEBSOCKET_CONTINUATION, true, "x", 1, 0);
}
static void b_new_message_inside(struct buf *b)
{
    frame(b, false, 0, WEBSOCKET_TEXT, true, "x", 1, 0);
    frame(b, true, 0, WEBSOCKET_BINARY, true, "y", 1, 0);
}
static void b_non_minimal16(struct buf *b)
{
    frame(b, true, 0, WEBSOCKET_BINARY, true, "hello", 5, 16);
}
static void b_non_minimal64(struct buf *b)
{
    char p[300] = {0};
    frame(b, true, 0, WEBSOCKET_BINARY, true, p, sizeof p, 64);
}
static void b_top_bit(struct buf *b)
{
    static const uint8_t h[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4};
    buf_append(b, h, sizeof h);
}
static void b_rsv2(struct buf *b)
{
    frame(b, true, 2, WEBSOCKET_BINARY, true, "x", 1, 0);
}

static void test_scan_errors(void **state)
{
    expect_error(b_reserved_opcode, true);
    expect_error(b_reserved_control, true);
    expect_error(b_unmasked, true);
    expect_error(b_long_control, true);
    expect_error(b_fragmented_control, true);
    expect_error(b_lone_continuation, true);
    expect_error(b_new_message_inside, true);
    expect_error(b_non_minimal16, true);
    expect_error(b_non_minimal64, true);
    expect_error(b_top_bit, true);
    expect_error(b_rsv2, true);
    /* A masked frame where none may be. */
    struct buf in = BUF_INIT;
    struct trace t;
    frame(&in, true, 0, WEBSOCKET_BINARY, true, "x", 1, 0);
    assert_int_equal(scan(&in, false, 0, &t, 0), -EPROTO);
    trace_free(&t);
    buf_free(&in);
}

/* --- activity ------------------------------------------------------------------------------ */

static void vs_msg(struct buf *out, unsigned type, const void *body, size_t len)
{
    uint8_t h[13] = {(uint8_t)type, 0, 0, 0, 7, 0, 0, 0, 3};
    h[9] = (uint8_t)(len >> 24);
    h[10] = (uint8_t)(len >> 16);
    h[11] = (uint8_t)(len >> 8);
    h[12] = (uint8_t)len;
    buf_append(out, h, 13);
    buf_append(out, body, len);
}

/* An extension host RPC request: type, request id, proxy id, method, arguments. */
static void rpc(struct buf *out, unsigned type, const char *method, const char *args)
{
    struct buf b = BUF_INIT;
    uint8_t head[7] = {(uint8_t)type, 0, 0, 1, 2, 'Q', (uint8_t)strlen(method)};
    buf_append(&b, head, 7);
    buf_append_str(&b, method);
    uint8_t alen[4] = {0, 0, 0, (uint8_t)strlen(args)};
    buf_append(&b, alen, 4);
    buf_append_str(&b, args);
    vs_msg(out, WEBSOCKET_VSCODE_REGULAR, b.data, b.len);
    buf_free(&b);
}

/* A management connection IPC message [type, id, channel, command] + undefined body. */
static void ipc(struct buf *out, unsigned type, unsigned id, const char *channel,
                const char *command)
{
    struct buf b = BUF_INIT;
    uint8_t head[3] = {0x04, 0x04, 0x06};
    buf_append(&b, head, 3);
    uint8_t t = (uint8_t)type;
    buf_append(&b, &t, 1);
    buf_append_char(&b, 0x06);
    if (id < 128) {
        buf_append_char(&b, (char)id);
    } else {
        buf_append_char(&b, (char)(0x80 | (id & 0x7f)));
        buf_append_char(&b, (char)(id >> 7));
    }
    buf_append_char(&b, 0x01);
    buf_append_char(&b, (char)strlen(channel));
    buf_append_str(&b, channel);
    buf_append_char(&b, 0x01);
    buf_append_char(&b, (char)strlen(command));
    buf_append_str(&b, command);
    buf_append_char(&b, 0x00);
    vs_msg(out, WEBSOCKET_VSCODE_REGULAR, b.data, b.len);
    buf_free(&b);
}

static void auth(struct buf *out)
{
    const char *json = "{\"type\":\"auth\",\"auth\":\"00000000000000000000\"}";
    vs_msg(out, WEBSOCKET_VSCODE_CONTROL, json, strlen(json));
}

/* Wraps `payload` into binary frames of at most `frame_size` bytes (continuations). */
static void frames_of(struct buf *out, const struct buf *payload, size_t frame_size)
{
    size_t off = 0;
    bool first = true;
    do {
        size_t n = payload->len - off < frame_size ? payload->len - off : frame_size;
        bool last = off + n == payload->len;
        frame(out, last, 0, first ? WEBSOCKET_BINARY : WEBSOCKET_CONTINUATION, true,
              payload->data + off, n, 0);
        off += n;
        first = false;
    } while (off < payload->len);
}

static uint64_t feed_split(const struct buf *in, size_t split, struct websocket_activity *a)
{
    websocket_activity_init(a);
    uint64_t n = 0;
    if (split == 0)
        return websocket_activity_feed(a, in->data, in->len);
    for (size_t off = 0; off < in->len; off += split) {
        size_t k = in->len - off < split ? in->len - off : split;
        n += websocket_activity_feed(a, in->data + off, k);
    }
    return n;
}

static void test_activity_vscode(void **state)
{
    struct buf msgs = BUF_INIT;
    auth(&msgs);
    vs_msg(&msgs, WEBSOCKET_VSCODE_KEEPALIVE, "", 0);
    vs_msg(&msgs, WEBSOCKET_VSCODE_ACK, "", 0);
    uint8_t rpc_ack[5] = {5, 0, 0, 0, 9};
    vs_msg(&msgs, WEBSOCKET_VSCODE_REGULAR, rpc_ack, 5);
    rpc(&msgs, 1, "$onDidChangeWindowActive", "[false]");
    rpc(&msgs, 1, "$shellExecutionData", "[1,\"Mon Nov 30 13:40:57 UTC 2026\\r\\n\"]");
    ipc(&msgs, 100, 5, "telemetry", "ping");
    ipc(&msgs, 100, 300, "extensions", "getExtensionsControlManifest");
    ipc(&msgs, 102, 6, "remoteterminal", "$input"); /* an event listener, not a call */
    /* Now the user: */
    rpc(&msgs, 1, "$acceptModelChanged", "[{\"$mid\":1,\"fsPath\":\"/tmp/p/main.py\"}]");
    rpc(&msgs, 2, "$provideFileSearchResults", "[2,1,{}]");
    ipc(&msgs, 100, 200, "remoteterminal", "$input"); /* 2-byte id */
    /* A long user message (larger than the peek) followed by a background one. */
    char args[3000];
    memset(args, 'x', sizeof args - 1);
    args[sizeof args - 1] = '\0';
    rpc(&msgs, 1, "$acceptEditorPropertiesChanged", args);
    ipc(&msgs, 100, 7, "telemetry", "ping");
    size_t frame_sizes[] = {1 << 20, 1, 7, 13, 100};
    size_t splits[] = {0, 1, 3, 64, 1000};
    for (size_t i = 0; i < sizeof frame_sizes / sizeof frame_sizes[0]; i++) {
        struct buf wire = BUF_INIT;
        frames_of(&wire, &msgs, frame_sizes[i]);
        for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
            struct websocket_activity a;
            assert_int_equal(feed_split(&wire, splits[k], &a), 4);
            assert_int_equal(a.mode, WEBSOCKET_ACTIVITY_VSCODE);
            assert_int_equal(a.messages, 14);
            assert_int_equal(a.user, 4);
        }
        buf_free(&wire);
    }
    /* Several messages per frame, interleaved with pings. */
    struct buf wire = BUF_INIT;
    struct buf m1 = BUF_INIT, m2 = BUF_INIT;
    auth(&m1);
    vs_msg(&m1, WEBSOCKET_VSCODE_KEEPALIVE, "", 0);
    rpc(&m2, 1, "$acceptTerminalInteraction", "[1]");
    rpc(&m2, 1, "$acceptModelSaved", "[]");
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, m1.data, m1.len, 0);
    frame(&wire, true, 0, WEBSOCKET_PING, true, "p", 1, 0);
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, m2.data, m2.len, 0);
    struct websocket_activity a;
    websocket_activity_init(&a);
    assert_int_equal(websocket_activity_feed(&a, wire.data, wire.len), 2);
    /* A compressed frame cannot be read: from then on every message counts. */
    buf_reset(&wire);
    frame(&wire, true, 1, WEBSOCKET_BINARY, true, "\x01\x02", 2, 0);
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, "\x01\x02", 2, 0);
    assert_int_equal(websocket_activity_feed(&a, wire.data, wire.len), 2);
    assert_int_equal(a.mode, WEBSOCKET_ACTIVITY_FOREIGN);
    buf_free(&wire);
    buf_free(&m1);
    buf_free(&m2);
    buf_free(&msgs);
}

static void test_activity_fallbacks(void **state)
{
    /* Not VS Code: every text or binary message counts, control frames do not. */
    struct buf wire = BUF_INIT;
    frame(&wire, true, 0, WEBSOCKET_TEXT, true, "{\"type\":\"hello\"}", 16, 0);
    frame(&wire, true, 0, WEBSOCKET_PING, true, "", 0, 0);
    frame(&wire, false, 0, WEBSOCKET_TEXT, true, "ab", 2, 0);
    frame(&wire, true, 0, WEBSOCKET_CONTINUATION, true, "cd", 2, 0);
    struct websocket_activity a;
    assert_int_equal(feed_split(&wire, 0, &a), 2);
    assert_int_equal(a.mode, WEBSOCKET_ACTIVITY_FOREIGN);
    assert_int_equal(feed_split(&wire, 1, &a), 2);

    /* VS Code, then a header that makes no sense: the framing is lost, nothing counts. */
    buf_reset(&wire);
    struct buf m = BUF_INIT;
    auth(&m);
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, m.data, m.len, 0);
    buf_reset(&m);
    vs_msg(&m, 77, "zz", 2);
    rpc(&m, 1, "$acceptModelChanged", "[]");
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, m.data, m.len, 0);
    assert_int_equal(feed_split(&wire, 0, &a), 0);
    assert_int_equal(a.mode, WEBSOCKET_ACTIVITY_LOST);
    buf_reset(&m);
    rpc(&m, 1, "$acceptModelChanged", "[]");
    buf_reset(&wire);
    frame(&wire, true, 0, WEBSOCKET_BINARY, true, m.data, m.len, 0);
    assert_int_equal(websocket_activity_feed(&a, wire.data, wire.len), 0);

    /* Malformed frames: counting stops. */
    buf_reset(&wire);
    frame(&wire, true, 0, WEBSOCKET_BINARY, false, "x", 1, 0);
    assert_int_equal(feed_split(&wire, 0, &a), 0);
    assert_int_equal(a.mode, WEBSOCKET_ACTIVITY_LOST);
    buf_free(&m);
    buf_free(&wire);
}

static void test_message_classifier(void **state)
{
    struct buf m = BUF_INIT;
    rpc(&m, 1, "$acceptModelChanged", "[]");
    const uint8_t *body = (const uint8_t *)m.data + 13;
    size_t n = m.len - 13;
    assert_true(websocket_vscode_message_is_user(body, n));
    /* The method must be complete in what was read. */
    assert_false(websocket_vscode_message_is_user(body, 7 + 5));
    assert_false(websocket_vscode_message_is_user(body, 3));
    /* Replies and acknowledgements never count. */
    uint8_t reply[16] = {9, 0, 0, 0, 1, 0x13};
    memcpy(reply + 6, "$acceptModelChanged", 10);
    assert_false(websocket_vscode_message_is_user(reply, sizeof reply));
    buf_reset(&m);
    rpc(&m, 1, "$acceptModelChangedX", "[]");
    assert_false(websocket_vscode_message_is_user((const uint8_t *)m.data + 13, m.len - 13));
    buf_reset(&m);
    ipc(&m, 100, 1, "remoteterminal", "$input");
    body = (const uint8_t *)m.data + 13;
    n = m.len - 13;
    assert_true(websocket_vscode_message_is_user(body, n));
    /* Cut anywhere before the command's last byte: not readable, so not counted. */
    for (size_t k = 0; k + 1 < n; k++)
        assert_false(websocket_vscode_message_is_user(body, k));
    assert_true(websocket_vscode_message_is_user(body, n - 1));
    buf_reset(&m);
    ipc(&m, 100, 1, "remoteterminal", "$inputX");
    assert_false(websocket_vscode_message_is_user((const uint8_t *)m.data + 13, m.len - 13));
    buf_reset(&m);
    ipc(&m, 100, 1, "remoteterminalX", "$input");
    assert_false(websocket_vscode_message_is_user((const uint8_t *)m.data + 13, m.len - 13));
    buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_valid),          cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_scan_frames),        cmocka_unit_test(test_scan_errors),
        cmocka_unit_test(test_activity_vscode),    cmocka_unit_test(test_activity_fallbacks),
        cmocka_unit_test(test_message_classifier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

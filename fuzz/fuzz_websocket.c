/* libFuzzer driver: the WebSocket opening handshake check and what follows it on the
 * tunnel (http/websocket.c).
 *
 * The input is what a client sends: a request head, read by http_parse and turned into a
 * struct http_request as the server does (server.c on_head), then websocket_handshake_check
 * as the proxy calls it. Its verdict is compared with the rule of RFC 6455 4.2.1 written
 * out here (GET, HTTP/1.1, an upgrade, "websocket" among the Upgrade tokens, exactly one
 * Sec-WebSocket-Key that is base64 of 16 bytes, exactly one Sec-WebSocket-Version: 13),
 * with the key checked by libsodium's base64 decoder rather than by the same hand-written
 * alphabet: websocket_key_valid is also run on the raw input against it.
 *
 * After an upgrade request the parser leaves the rest of the bytes alone: they are the
 * tunnel. They go through the frame scanner in both directions (masked and unmasked), in
 * one piece and in pieces, with an observer that skips payload in a fixed pattern, and
 * through the activity classifier the same two ways. Frames, unmasked payload bytes,
 * frame counts, the error and the activity counts must not depend on the cut, and must
 * match a whole-buffer frame reader written here from RFC 6455 5.2. */
#include "fuzz_check.h"
#include "http/parse.h"
#include "http/server.h"
#include "http/websocket.h"

#include <errno.h>
#include <http_parser.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the handshake ----------------------------------------------------------------- */

static bool key_oracle(const char *key, size_t len)
{
    unsigned char bin[32];
    size_t bin_len = 0;
    const char *end = NULL;
    if (len != 24)
        return false;
    /* libsodium 1.0.18 (Debian bookworm) decodes every byte >= 0x80 as if it were '/':
     * the alphabet is ASCII, so say so first. */
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)key[i] >= 0x80)
            return false;
    }
    return sodium_base642bin(bin, sizeof bin, key, len, NULL, &bin_len, &end,
                             sodium_base64_VARIANT_ORIGINAL) == 0 &&
           end == key + len && bin_len == 16;
}

/* `token` among the comma-separated, OWS-padded items of `v`, ignoring case. */
static bool has_token(const char *v, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = v;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == tlen && strncasecmp(a, token, tlen) == 0)
            return true;
        if (p[n] == '\0')
            return false;
        p += n + 1;
    }
}

static bool handshake_oracle(const struct http_request *req)
{
    unsigned keys = 0, versions = 0;
    bool ws = false, key_ok = false, version_ok = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (strcasecmp(h->name, "Sec-WebSocket-Key") == 0) {
            keys++;
            key_ok = key_oracle(h->value, h->value_len);
        } else if (strcasecmp(h->name, "Sec-WebSocket-Version") == 0) {
            versions++;
            version_ok = strcmp(h->value, "13") == 0;
        } else if (strcasecmp(h->name, "Upgrade") == 0) {
            ws = ws || has_token(h->value, "websocket");
        }
    }
    return req->method == HTTP_GET && req->version_minor == 1 && req->upgrade && ws && keys == 1 &&
           key_ok && versions == 1 && version_ok;
}

struct head_state {
    bool seen, upgrade, complete;
    int verdict;
};

static int on_head(void *data, struct http_head *head)
{
    struct head_state *st = data;
    /* The request as server.c's on_head builds it. */
    struct http_request req;
    memset(&req, 0, sizeof req);
    req.method = head->method;
    req.method_name = head->method_name;
    req.target = head->target;
    req.path = head->target;
    req.headers = head->headers;
    req.nheaders = head->nheaders;
    req.version_minor = head->version_minor;
    req.keep_alive = head->keep_alive;
    req.upgrade = head->upgrade;
    req.content_length = head->content_length;
    req.chunked = head->chunked;

    const char *why = (const char *)&why; /* must be overwritten */
    int rc = websocket_handshake_check(&req, &why);
    check(rc == 0 || rc == 400);
    check((rc == 0) == (why == NULL));
    check(why == NULL || why[0] != '\0');
    check((rc == 0) == handshake_oracle(&req));
    for (size_t i = 0; i < req.nheaders; i++) {
        const struct http_header *h = &req.headers[i];
        if (strcasecmp(h->name, "Sec-WebSocket-Key") == 0)
            check(websocket_key_valid(h->value, h->value_len) ==
                  key_oracle(h->value, h->value_len));
    }
    st->seen = true;
    st->upgrade = head->upgrade;
    st->verdict = rc;
    return 0;
}

static int on_complete(void *data)
{
    struct head_state *st = data;
    st->complete = true;
    return 0;
}

static const struct http_parse_callbacks head_callbacks = {on_head, NULL, on_complete};

/* ---- the tunnel: scanner observer ------------------------------------------------- */

/* Wants payload bytes in windows [0, 64) of every 192 stream bytes and skips the rest, so
 * that skipping is exercised; records frames and the wanted bytes. */
#define WANT 64
#define PERIOD 192

struct observer {
    struct buf frames;
    struct buf bytes;
    uint64_t pos; /* data-stream position of the next byte the scanner hands over */
};

static void want_byte(struct buf *out, uint64_t pos, uint8_t b)
{
    if (pos % PERIOD < WANT)
        buf_append(out, &b, 1);
}

static void obs_frame(void *data, const struct websocket_frame *f)
{
    struct observer *o = data;
    buf_appendf(&o->frames, "%u%c%c%c%llu ", f->opcode, f->fin ? 'F' : '-', f->rsv1 ? 'R' : '-',
                f->masked ? 'M' : '-', (unsigned long long)f->length);
}

static uint64_t obs_data(void *data, const uint8_t *bytes, size_t n)
{
    struct observer *o = data;
    check(n > 0 && n <= WEBSOCKET_PEEK);
    for (size_t i = 0; i < n; i++)
        want_byte(&o->bytes, o->pos + i, bytes[i]);
    o->pos += n;
    uint64_t r = o->pos % PERIOD;
    if (r < WANT)
        return 0;
    o->pos += PERIOD - r;
    return PERIOD - r;
}

static size_t piece_size(uint8_t sel, size_t left)
{
    size_t n = sel >= 0xe0 ? left : (size_t)(sel % 29) + 1;
    return n < left ? n : left;
}

struct scan_result {
    struct observer obs;
    int rc;
    uint64_t frames;
};

static void scan_run(bool masked, const uint8_t *s, size_t n, const uint8_t *sel, size_t nsel,
                     struct scan_result *r)
{
    static const struct websocket_scan_callbacks cb = {obs_frame, obs_data};
    struct websocket_scan sc;
    memset(r, 0, sizeof *r);
    websocket_scan_init(&sc, masked, &cb, &r->obs);
    size_t off = 0, k = 0;
    while (off < n) {
        size_t len = nsel ? piece_size(sel[k++ % nsel], n - off) : n - off;
        int rc = websocket_scan_feed(&sc, s + off, len);
        check(rc == 0 || rc == -EPROTO);
        check(r->rc == 0 || rc == -EPROTO);
        r->rc = rc;
        off += len;
    }
    check((r->rc != 0) == sc.failed);
    r->frames = sc.frames;
}

/* RFC 6455 5.2 over the whole buffer, with the scanner's documented refusals. */
static void scan_reference(bool masked, const uint8_t *s, size_t n, struct scan_result *r)
{
    bool in_message = false;
    uint64_t data_pos = 0;
    size_t pos = 0;
    memset(r, 0, sizeof *r);
    while (n - pos >= 2) {
        uint8_t b0 = s[pos], b1 = s[pos + 1];
        unsigned op = b0 & 0x0f, len7 = b1 & 0x7f;
        bool fin = b0 & 0x80, m = b1 & 0x80, control = op >= 8;
        if ((b0 & 0x30) || (op >= 3 && op <= 7) || op >= 11 || m != masked ||
            (control && (!fin || len7 > 125)) || (op == 0 && !in_message) ||
            ((op == 1 || op == 2) && in_message)) {
            r->rc = -EPROTO;
            return;
        }
        size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        size_t hdr = 2 + ext + (m ? 4 : 0);
        if (n - pos < hdr)
            return;
        uint64_t length = len7;
        if (ext > 0) {
            length = 0;
            for (size_t i = 0; i < ext; i++)
                length = length << 8 | s[pos + 2 + i];
            if ((ext == 2 && length < 126) ||
                (ext == 8 && (length > INT64_MAX || length <= 0xffff))) {
                r->rc = -EPROTO;
                return;
            }
        }
        const uint8_t *mask = m ? s + pos + 2 + ext : (const uint8_t *)"\0\0\0\0";
        if (!control)
            in_message = !fin;
        struct websocket_frame f = {op, fin, (b0 & 0x40) != 0, m, length};
        obs_frame(&r->obs, &f);
        pos += hdr;
        size_t avail = n - pos < length ? n - pos : (size_t)length;
        if (!control) {
            for (size_t i = 0; i < avail; i++)
                want_byte(&r->obs.bytes, data_pos + i, s[pos + i] ^ mask[i & 3]);
            data_pos += avail;
        }
        pos += avail;
        if (avail < length)
            return;
        r->frames++;
    }
}

static void check_same(const struct scan_result *a, const struct scan_result *b)
{
    check(a->rc == b->rc && a->frames == b->frames);
    check(a->obs.frames.len == b->obs.frames.len && a->obs.bytes.len == b->obs.bytes.len);
    check(a->obs.frames.len == 0 ||
          memcmp(a->obs.frames.data, b->obs.frames.data, a->obs.frames.len) == 0);
    check(a->obs.bytes.len == 0 ||
          memcmp(a->obs.bytes.data, b->obs.bytes.data, a->obs.bytes.len) == 0);
}

static void scan_free(struct scan_result *r)
{
    buf_free(&r->obs.frames);
    buf_free(&r->obs.bytes);
}

static void check_tunnel(const uint8_t *s, size_t n, const uint8_t *sel, size_t nsel)
{
    for (int dir = 0; dir < 2; dir++) {
        struct scan_result whole, pieces, ref;
        scan_run(dir == 0, s, n, NULL, 0, &whole);
        scan_run(dir == 0, s, n, sel, nsel, &pieces);
        scan_reference(dir == 0, s, n, &ref);
        check_same(&whole, &pieces);
        check_same(&whole, &ref);
        scan_free(&whole);
        scan_free(&pieces);
        scan_free(&ref);
    }

    /* The activity count does not depend on how the bytes arrive either. */
    struct websocket_activity a, b;
    websocket_activity_init(&a);
    websocket_activity_init(&b);
    uint64_t ua = websocket_activity_feed(&a, s, n);
    uint64_t ub = 0;
    size_t off = 0, k = 0;
    while (off < n) {
        size_t len = piece_size(sel[k++ % nsel], n - off);
        ub += websocket_activity_feed(&b, s + off, len);
        off += len;
    }
    check(ua == a.user && ub == b.user);
    check(ua == ub && a.mode == b.mode && a.messages == b.messages);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_parse_limits limits = {32 * 1024, 100, 8 * 1024};
    if (sodium_init() < 0)
        abort();
    check(websocket_key_valid((const char *)data, size) == key_oracle((const char *)data, size));

    struct head_state st = {false, false, false, 0};
    struct http_parse *p = http_parse_new(HTTP_PARSE_REQUEST, &limits, &head_callbacks, &st);
    ssize_t n = http_parse_feed(p, (const char *)data, size);
    http_parse_free(p);
    if (n < 0 || !st.complete || !st.upgrade)
        return 0;
    /* Bytes after an upgrade request belong to the tunnel; the piece sizes of the second
     * runs come from the input's last three bytes (the head is at least that long). */
    check_tunnel(data + n, size - (size_t)n, data + size - 3, 3);
    return 0;
}

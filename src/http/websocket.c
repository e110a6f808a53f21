/* WebSocket handshake checks, a frame scanner that only observes, and the activity
 * classifier for code-server tunnels (see websocket.h and docs/proxy.md). */
#include "http/websocket.h"

#include "http/server.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/* --- handshake ------------------------------------------------------------------------ */

static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

bool websocket_key_valid(const char *key, size_t len)
{
    /* 16 bytes are 128 bits: 21 full sextets plus 2 bits in the 22nd character, whose
     * other 4 bits must be zero (RFC 4648 3.5: canonical encoding), then "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        if (base64_value((unsigned char)key[i]) < 0)
            return false;
    }
    return (base64_value((unsigned char)key[21]) & 0x0f) == 0;
}

/* True when the comma-separated list `v` holds `token` (case-insensitive). */
static bool list_has(const char *v, const char *token)
{
    size_t tlen = strlen(token);
    while (*v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *start = v;
        while (*v != '\0' && *v != ',')
            v++;
        const char *end = v;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0)
            return true;
    }
    return false;
}

int websocket_handshake_check(const struct http_request *req, const char **reason)
{
    const char *key = NULL, *version = NULL;
    unsigned nkey = 0, nversion = 0;
    bool upgrade_ws = false;

    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (strcasecmp(h->name, "Sec-WebSocket-Key") == 0) {
            key = h->value;
            nkey++;
        } else if (strcasecmp(h->name, "Sec-WebSocket-Version") == 0) {
            version = h->value;
            nversion++;
        } else if (strcasecmp(h->name, "Upgrade") == 0 && list_has(h->value, "websocket")) {
            upgrade_ws = true;
        }
    }
    *reason = NULL;
    if (req->method != HTTP_GET)
        *reason = "WebSocket handshake must be GET";
    else if (req->version_minor != 1)
        *reason = "WebSocket handshake must be HTTP/1.1";
    else if (!req->upgrade || !upgrade_ws)
        *reason = "not a WebSocket upgrade";
    else if (nkey != 1 || !websocket_key_valid(key, strlen(key)))
        *reason = "bad Sec-WebSocket-Key";
    else if (nversion != 1 || strcmp(version, "13") != 0)
        *reason = "unsupported Sec-WebSocket-Version";
    return *reason == NULL ? 0 : 400;
}

/* --- frame scanner ---------------------------------------------------------------------- */

void websocket_scan_init(struct websocket_scan *s, bool masked,
                         const struct websocket_scan_callbacks *cb, void *data)
{
    memset(s, 0, sizeof *s);
    s->want_masked = masked;
    if (cb != NULL)
        s->cb = *cb;
    s->data = data;
    s->head_need = 2;
}

static int scan_fail(struct websocket_scan *s)
{
    s->failed = true;
    return -EPROTO;
}

static bool is_data_opcode(unsigned op)
{
    return op <= WEBSOCKET_BINARY;
}

/* The first two header bytes are in: validate them and work out the header's size. */
static int head_first(struct websocket_scan *s)
{
    uint8_t b0 = s->head[0], b1 = s->head[1];
    struct websocket_frame *f = &s->frame;
    f->fin = (b0 & 0x80) != 0;
    f->rsv1 = (b0 & 0x40) != 0;
    f->opcode = b0 & 0x0f;
    f->masked = (b1 & 0x80) != 0;
    unsigned len7 = b1 & 0x7f;

    if ((b0 & 0x30) != 0) /* RSV2/RSV3: no extension we know of uses them */
        return scan_fail(s);
    if (f->opcode > WEBSOCKET_BINARY && f->opcode < WEBSOCKET_CLOSE)
        return scan_fail(s);
    if (f->opcode > WEBSOCKET_PONG)
        return scan_fail(s);
    if (f->masked != s->want_masked)
        return scan_fail(s);
    if (f->opcode >= WEBSOCKET_CLOSE && (!f->fin || len7 > 125))
        return scan_fail(s);
    if (f->opcode == WEBSOCKET_CONTINUATION && !s->in_message)
        return scan_fail(s);
    if ((f->opcode == WEBSOCKET_TEXT || f->opcode == WEBSOCKET_BINARY) && s->in_message)
        return scan_fail(s);

    s->head_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (f->masked ? 4 : 0);
    f->length = len7;
    return 0;
}

/* The whole header is in. */
static int head_done(struct websocket_scan *s)
{
    struct websocket_frame *f = &s->frame;
    unsigned len7 = s->head[1] & 0x7f;
    unsigned off = 2;
    if (len7 == 126) {
        f->length = (uint64_t)s->head[2] << 8 | s->head[3];
        if (f->length < 126) /* RFC 6455 5.2: the minimal encoding must be used */
            return scan_fail(s);
        off = 4;
    } else if (len7 == 127) {
        uint64_t v = 0;
        for (unsigned i = 0; i < 8; i++)
            v = v << 8 | s->head[2 + i];
        if ((v >> 63) != 0 || v <= 0xffff)
            return scan_fail(s);
        f->length = v;
        off = 10;
    }
    if (f->masked)
        memcpy(s->mask, s->head + off, 4);
    else
        memset(s->mask, 0, 4);
    if (is_data_opcode(f->opcode))
        s->in_message = !f->fin;
    s->payload_left = f->length;
    s->payload_off = 0;
    if (s->cb.on_frame != NULL)
        s->cb.on_frame(s->data, f);
    return 0;
}

/* Consumes payload bytes of the current frame from data[0..n). Returns bytes used. */
static size_t payload(struct websocket_scan *s, const uint8_t *data, size_t n)
{
    size_t take = n;
    if (take > s->payload_left)
        take = (size_t)s->payload_left;
    if (!is_data_opcode(s->frame.opcode) || s->cb.on_data == NULL) {
        s->payload_left -= take;
        s->payload_off += take;
        return take;
    }
    size_t used = 0;
    while (used < take) {
        if (s->skip > 0) {
            size_t k = take - used;
            if (k > s->skip)
                k = (size_t)s->skip;
            s->skip -= k;
            used += k;
            s->payload_off += k;
            continue;
        }
        uint8_t peek[WEBSOCKET_PEEK];
        size_t k = take - used;
        if (k > sizeof peek)
            k = sizeof peek;
        for (size_t i = 0; i < k; i++)
            peek[i] = data[used + i] ^ s->mask[(s->payload_off + i) & 3];
        used += k;
        s->payload_off += k;
        s->skip = s->cb.on_data(s->data, peek, k);
    }
    s->payload_left -= take;
    return take;
}

int websocket_scan_feed(struct websocket_scan *s, const void *bytes, size_t len)
{
    const uint8_t *p = bytes;
    size_t off = 0;
    if (s->failed)
        return -EPROTO;
    while (off < len) {
        if (s->head_len < s->head_need) {
            size_t k = s->head_need - s->head_len;
            if (k > len - off)
                k = len - off;
            memcpy(s->head + s->head_len, p + off, k);
            s->head_len += (unsigned)k;
            off += k;
            if (s->head_len < s->head_need)
                break;
            if (s->head_len == 2 && head_first(s) < 0)
                return -EPROTO;
            if (s->head_len < s->head_need)
                continue;
            if (head_done(s) < 0)
                return -EPROTO;
        }
        off += payload(s, p + off, len - off);
        if (s->payload_left == 0) {
            s->frames++;
            s->head_len = 0;
            s->head_need = 2;
        }
    }
    return 0;
}

/* --- activity ----------------------------------------------------------------------- */

static bool vscode_type_known(unsigned t)
{
    return (t >= WEBSOCKET_VSCODE_REGULAR && t <= WEBSOCKET_VSCODE_ACK) ||
           (t >= WEBSOCKET_VSCODE_DISCONNECT && t <= WEBSOCKET_VSCODE_KEEPALIVE);
}

/* Larger than any message VS Code sends in one piece; a header claiming more means we are
 * not reading VS Code's protocol (or lost its framing). */
#define VSCODE_MAX_MESSAGE (256u * 1024 * 1024)

/* Extension host RPC (vs/workbench/services/extensions/common/rpcProtocol.ts): type (1),
 * request id (4), proxy id (1), method (1-byte length + bytes), arguments. Types 1-4 are
 * requests; 5-12 acknowledgements, cancellations and replies. The methods the renderer
 * calls because someone typed, clicked, scrolled, opened a file or searched: */
static const char *const rpc_user_methods[] = {
    "$acceptModelChanged",             /* an edit in an editor or notebook cell */
    "$acceptEditorPropertiesChanged",  /* cursor, selection, scrolling */
    "$acceptDocumentsAndEditorsDelta", /* opening, closing, switching editors */
    "$acceptModelSaved",               /* saving */
    "$acceptTerminalInteraction",      /* typing in a terminal */
    "$provideFileSearchResults",       /* typing in Quick Open */
    "$provideTextSearchResults",       /* searching in files */
};

/* Management connection IPC (vs/base/parts/ipc/common/ipc.ts): the header is serialized
 * as [type, id, channel, command]: 0x04 (array) 0x04 (length), 0x06 (int) VQL type,
 * 0x06 VQL id, 0x01 (string) VQL length + channel, 0x01 VQL length + command. Type 100 is
 * a call. The calls that are user input: */
static const char *const ipc_user_calls[] = {
    "remoteterminal.$input", /* typing in a terminal */
};

/* Reads a VS Code variable-length quantity (7 bits a byte, low group first). */
static bool read_vql(const uint8_t *d, size_t n, size_t *i, uint32_t *out)
{
    uint32_t v = 0;
    for (unsigned shift = 0; shift < 35; shift += 7) {
        if (*i >= n)
            return false;
        uint8_t b = d[(*i)++];
        v |= (uint32_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool read_ipc_string(const uint8_t *d, size_t n, size_t *i, const uint8_t **s, uint32_t *len)
{
    if (*i >= n || d[*i] != 0x01)
        return false;
    (*i)++;
    if (!read_vql(d, n, i, len) || *len > n - *i)
        return false;
    *s = d + *i;
    *i += *len;
    return true;
}

static bool in_list(const char *const *list, size_t count, const uint8_t *s, size_t len)
{
    for (size_t k = 0; k < count; k++) {
        if (strlen(list[k]) == len && memcmp(list[k], s, len) == 0)
            return true;
    }
    return false;
}

bool websocket_vscode_message_is_user(const uint8_t *d, size_t n)
{
    if (n >= 3 && d[0] == 0x04 && d[1] == 0x04 && d[2] == 0x06) {
        size_t i = 3;
        uint32_t type, id, clen, mlen;
        const uint8_t *channel, *command;
        if (!read_vql(d, n, &i, &type) || type != 100)
            return false;
        if (i >= n || d[i++] != 0x06 || !read_vql(d, n, &i, &id))
            return false;
        if (!read_ipc_string(d, n, &i, &channel, &clen) ||
            !read_ipc_string(d, n, &i, &command, &mlen))
            return false;
        char name[96];
        if ((size_t)clen + 1 + mlen >= sizeof name)
            return false;
        memcpy(name, channel, clen);
        name[clen] = '.';
        memcpy(name + clen + 1, command, mlen);
        return in_list(ipc_user_calls, sizeof ipc_user_calls / sizeof ipc_user_calls[0],
                       (const uint8_t *)name, (size_t)clen + 1 + mlen);
    }
    if (n >= 7 && d[0] >= 1 && d[0] <= 4) {
        size_t mlen = d[6];
        if (7 + mlen > n)
            return false;
        return in_list(rpc_user_methods, sizeof rpc_user_methods / sizeof rpc_user_methods[0],
                       d + 7, mlen);
    }
    return false;
}

static void activity_frame(void *data, const struct websocket_frame *f)
{
    struct websocket_activity *a = data;
    if (f->opcode != WEBSOCKET_TEXT && f->opcode != WEBSOCKET_BINARY)
        return;
    if (f->rsv1 && a->mode != WEBSOCKET_ACTIVITY_LOST) {
        /* Compressed: nothing inside can be read, so every message counts. */
        a->mode = WEBSOCKET_ACTIVITY_FOREIGN;
    }
    if (a->mode == WEBSOCKET_ACTIVITY_FOREIGN) {
        a->user++;
        a->pending++;
    }
}

/* A complete header is in a->header. Returns false when the stream is not (or no longer)
 * VS Code's protocol. */
static bool activity_header(struct websocket_activity *a, unsigned *type, uint32_t *length)
{
    *type = a->header[0];
    *length = (uint32_t)a->header[9] << 24 | (uint32_t)a->header[10] << 16 |
              (uint32_t)a->header[11] << 8 | a->header[12];
    bool ok = vscode_type_known(*type) && *length <= VSCODE_MAX_MESSAGE;
    if (a->mode == WEBSOCKET_ACTIVITY_UNDECIDED) {
        if (!ok || *type != WEBSOCKET_VSCODE_CONTROL) {
            /* Not VS Code: count this first message too, then every one after it. */
            a->mode = WEBSOCKET_ACTIVITY_FOREIGN;
            a->user++;
            a->pending++;
            return false;
        }
        a->mode = WEBSOCKET_ACTIVITY_VSCODE;
        return true;
    }
    if (!ok) {
        a->mode = WEBSOCKET_ACTIVITY_LOST;
        return false;
    }
    return true;
}

static uint64_t activity_data(void *data, const uint8_t *bytes, size_t n)
{
    struct websocket_activity *a = data;
    size_t i = 0;
    while (i < n) {
        if (a->mode == WEBSOCKET_ACTIVITY_FOREIGN || a->mode == WEBSOCKET_ACTIVITY_LOST)
            return UINT64_MAX; /* nothing more to read in the data */
        if (a->in_body) {
            size_t k = a->body_want - a->body_len;
            if (k > n - i)
                k = n - i;
            memcpy(a->body + a->body_len, bytes + i, k);
            a->body_len += (unsigned)k;
            i += k;
            if (a->body_len < a->body_want)
                return 0;
            a->in_body = false;
            if (websocket_vscode_message_is_user(a->body, a->body_len)) {
                a->user++;
                a->pending++;
            }
            uint32_t rest = a->body_total - a->body_want;
            if (rest <= n - i) {
                i += rest;
                continue;
            }
            return rest - (n - i);
        }
        size_t k = 13 - a->header_len;
        if (k > n - i)
            k = n - i;
        memcpy(a->header + a->header_len, bytes + i, k);
        a->header_len += (unsigned)k;
        i += k;
        if (a->header_len < 13)
            return 0;
        a->header_len = 0;
        unsigned type;
        uint32_t length;
        if (!activity_header(a, &type, &length))
            return UINT64_MAX;
        a->messages++;
        if (type == WEBSOCKET_VSCODE_REGULAR && length > 0) {
            a->in_body = true;
            a->body_total = length;
            a->body_want = length < WEBSOCKET_ACTIVITY_PEEK ? length : WEBSOCKET_ACTIVITY_PEEK;
            a->body_len = 0;
            continue;
        }
        if (length <= n - i) {
            i += length;
            continue;
        }
        return length - (n - i);
    }
    return 0;
}

void websocket_activity_init(struct websocket_activity *a)
{
    memset(a, 0, sizeof *a);
    static const struct websocket_scan_callbacks cb = {activity_frame, activity_data};
    websocket_scan_init(&a->scan, true, &cb, a);
}

uint64_t websocket_activity_feed(struct websocket_activity *a, const void *bytes, size_t len)
{
    a->pending = 0;
    if (a->mode == WEBSOCKET_ACTIVITY_LOST)
        return 0;
    if (websocket_scan_feed(&a->scan, bytes, len) < 0) {
        /* Malformed frames: nothing more can be read. Counting stops here; the count of
         * this feed up to the error stands. */
        a->mode = WEBSOCKET_ACTIVITY_LOST;
    }
    return a->pending;
}

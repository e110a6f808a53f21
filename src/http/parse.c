/* The strict HTTP/1.1 message parser (see parse.h and docs/http.md).
 *
 * A message goes through three stages:
 *   1. The head is collected line by line into `raw` (one buffer per parser, reused for
 *      every message). Each line is checked as soon as its LF arrives: line ends, start
 *      line, field-name and field-value syntax, field count. The handful of fields that
 *      decide framing (Content-Length, Transfer-Encoding, Host) are noted on the way.
 *   2. When the blank line arrives the framing is decided from those notes, then
 *      http-parser splits the (already validated) head into method, target, status and
 *      fields. Names, values and the target are NUL-terminated in place in `raw`, so a
 *      head costs one copy and no allocation once the buffers have grown.
 *   3. The body is framed here, not by http-parser: Content-Length bodies are passed
 *      through in bulk and chunked bodies go through a byte-exact state machine for the
 *      chunk lines (the data itself is passed through in bulk).
 * Every ambiguity is an error, and an error is final. */
#include "http/parse.h"

#include "core/alloc.h"
#include "core/buf.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_HEAD (32 * 1024)
#define DEFAULT_MAX_HEADERS 100
#define DEFAULT_MAX_URL (8 * 1024)

/* A chunk line ("1f;name=value") longer than this is an attack, not a chunk. */
#define MAX_CHUNK_LINE 4096
/* 16 hex digits hold any size we accept; more is only padding meant to confuse. */
#define MAX_CHUNK_DIGITS 16
#define MAX_CHUNK_SIZE ((uint64_t)1 << 62)

enum state {
    ST_IDLE,             /* between messages */
    ST_HEAD,             /* collecting head lines */
    ST_DONE,             /* the message is complete; on_complete not yet called */
    ST_BODY_LENGTH,      /* Content-Length body, `remaining` bytes left */
    ST_BODY_UNTIL_CLOSE, /* response body framed by the connection closing */
    /* chunked body */
    ST_CHUNK_SIZE_START,
    ST_CHUNK_SIZE,
    ST_CHUNK_EXT_NAME_START,
    ST_CHUNK_EXT_NAME,
    ST_CHUNK_EXT_VALUE_START,
    ST_CHUNK_EXT_TOKEN,
    ST_CHUNK_EXT_QUOTED,
    ST_CHUNK_EXT_QUOTED_ESCAPE,
    ST_CHUNK_EXT_QUOTED_END,
    ST_CHUNK_SIZE_LF,
    ST_CHUNK_DATA,
    ST_CHUNK_DATA_CR,
    ST_CHUNK_DATA_LF,
    ST_TRAILER_START,
    ST_TRAILER_NAME,
    ST_TRAILER_VALUE,
    ST_TRAILER_LF,
    ST_TRAILER_END_LF,
    /* terminal */
    ST_UPGRADED, /* the rest of the stream belongs to a tunnel */
    ST_CLOSED,   /* the peer closed; nothing more can come */
    ST_ERROR,
};

/* Where a framing field sits in `raw` (offsets: `raw` may move while the head grows). */
struct field_note {
    unsigned count;
    size_t off; /* first occurrence's trimmed value */
    size_t len;
};

struct http_parse {
    enum http_parse_kind kind;
    struct http_parse_limits limits;
    struct http_parse_callbacks cb;
    void *data;
    enum state state;
    int error_status;
    const char *error_reason;

    /* Head collection. */
    struct buf raw;
    size_t line_start;    /* offset of the line being collected */
    bool have_start_line; /* the request or status line has been seen */
    bool crlf_skipped;    /* the one empty line allowed before a request line */
    size_t nfields;
    int version_minor;
    int status;
    struct field_note content_length, transfer_encoding, host;

    /* The head handed out, and the splitter filling it. */
    struct http_head head;
    size_t headers_cap;
    bool last_was_value; /* http-parser callback bookkeeping */
    const char *url;
    size_t url_len;
    const char *reason;
    size_t reason_len;
    http_parser hp;

    /* Responses: the method of the request being answered, -1 when not known. */
    int request_method;

    /* Body framing. */
    uint64_t remaining; /* bytes left in a Content-Length body or the current chunk */
    size_t chunk_line;  /* bytes of the current chunk line */
    unsigned chunk_digits;
    size_t trailer_bytes; /* bytes of trailer section so far */
    size_t trailer_fields;
};

/* ---------------------------------------------------------------------------------------
 * Character classes (RFC 9110 5.6.2 tchar, 5.5 field-vchar; RFC 9112 chunk grammar). */

static const unsigned char tchar_table[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline bool is_tchar(unsigned char c)
{
    return tchar_table[c] != 0;
}

/* 1 for the control bytes a field value may not hold: all of 0x00-0x1f but HT, and DEL. */
static const unsigned char ctl_table[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1, [0x07] = 1,
    [0x08] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1,
    [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1,
    [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, [0x7f] = 1,
};

/* field-value bytes: HT, SP, VCHAR, obs-text. Everything else is a control byte. */
static inline bool is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void trim_ows(const char **s, size_t *n)
{
    while (*n > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* ---------------------------------------------------------------------------------------
 * Errors. */

static ssize_t fail(struct http_parse *p, int status, const char *reason)
{
    p->state = ST_ERROR;
    p->error_status = status;
    p->error_reason = reason;
    return HTTP_PARSE_ERROR;
}

int http_parse_error_status(const struct http_parse *p)
{
    return p->state == ST_ERROR ? p->error_status : 0;
}

const char *http_parse_error_reason(const struct http_parse *p)
{
    return p->state == ST_ERROR ? p->error_reason : "";
}

/* ---------------------------------------------------------------------------------------
 * Header lookups. */

const struct http_header *http_head_find(const struct http_head *head, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < head->nheaders; i++) {
        const struct http_header *h = &head->headers[i];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0)
            return h;
    }
    return NULL;
}

static bool list_has_token(const char *v, size_t n, const char *token, size_t token_len)
{
    size_t i = 0;
    while (i < n) {
        const char *comma = memchr(v + i, ',', n - i);
        size_t end = comma ? (size_t)(comma - v) : n;
        const char *e = v + i;
        size_t elen = end - i;
        trim_ows(&e, &elen);
        if (elen == token_len && strncasecmp(e, token, token_len) == 0)
            return true;
        i = end + 1;
    }
    return false;
}

bool http_head_has_token(const struct http_head *head, const char *name, const char *token)
{
    size_t n = strlen(name);
    size_t token_len = strlen(token);
    /* Empty list elements (",,") are no tokens at all. */
    if (token_len == 0)
        return false;
    for (size_t i = 0; i < head->nheaders; i++) {
        const struct http_header *h = &head->headers[i];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0 &&
            list_has_token(h->value, h->value_len, token, token_len))
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------
 * Life cycle. */

struct http_parse *http_parse_new(enum http_parse_kind kind, const struct http_parse_limits *limits,
                                  const struct http_parse_callbacks *callbacks, void *data)
{
    struct http_parse *p = xcalloc(1, sizeof(*p));
    p->kind = kind;
    if (limits)
        p->limits = *limits;
    /* A zero limit would reject everything; read it as "use the default". */
    if (p->limits.max_head == 0)
        p->limits.max_head = DEFAULT_MAX_HEAD;
    if (p->limits.max_headers == 0)
        p->limits.max_headers = DEFAULT_MAX_HEADERS;
    if (p->limits.max_url == 0)
        p->limits.max_url = DEFAULT_MAX_URL;
    if (callbacks)
        p->cb = *callbacks;
    p->data = data;
    p->state = ST_IDLE;
    p->request_method = -1;
    return p;
}

void http_parse_free(struct http_parse *p)
{
    if (p == NULL)
        return;
    buf_free(&p->raw);
    free(p->head.headers);
    free(p);
}

void http_parse_set_request_method(struct http_parse *p, int method)
{
    p->request_method = method;
}

bool http_parse_idle(const struct http_parse *p)
{
    /* An empty line skipped before a request line is not part of the next message. */
    return p->state == ST_IDLE || (p->state == ST_HEAD && p->raw.len == 0);
}

/* Starts a new message: from here on the previous head is gone. */
static void message_begin(struct http_parse *p)
{
    buf_reset(&p->raw);
    p->line_start = 0;
    p->have_start_line = false;
    p->crlf_skipped = false;
    p->nfields = 0;
    p->version_minor = 0;
    p->status = 0;
    memset(&p->content_length, 0, sizeof(p->content_length));
    memset(&p->transfer_encoding, 0, sizeof(p->transfer_encoding));
    memset(&p->host, 0, sizeof(p->host));
    struct http_header *keep = p->head.headers;
    memset(&p->head, 0, sizeof(p->head));
    p->head.headers = keep;
    p->remaining = 0;
    p->state = ST_HEAD;
}

/* ---------------------------------------------------------------------------------------
 * Stage 1: head lines. Each returns 0 to go on, 1 at the end of the head, or
 * HTTP_PARSE_ERROR. */

/* HTTP-version: only 1.0 and 1.1 are spoken here; any other well-formed version is 505. */
static int parse_version(struct http_parse *p, const char *v, size_t n)
{
    if (n == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        p->version_minor = v[7] - '0';
        return 0;
    }
    if (n == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
        v[7] >= '0' && v[7] <= '9')
        return (int)fail(p, 505, "HTTP version not supported");
    return (int)fail(p, 400, "malformed HTTP version");
}

/* request-line = method SP request-target SP HTTP-version, single spaces only. */
static int request_line(struct http_parse *p, const char *line, size_t n)
{
    if (is_ows(line[0]))
        return (int)fail(p, 400, "whitespace before request line");
    const char *sp1 = memchr(line, ' ', n);
    if (sp1 == NULL)
        return (int)fail(p, 400, "malformed request line");
    size_t method_len = (size_t)(sp1 - line);
    for (size_t i = 0; i < method_len; i++) {
        if (!is_tchar((unsigned char)line[i]))
            return (int)fail(p, 400, "invalid character in method");
    }
    const char *target = sp1 + 1;
    size_t rest = n - method_len - 1;
    const char *sp2 = memchr(target, ' ', rest);
    if (sp2 == NULL)
        return (int)fail(p, 400, "malformed request line");
    size_t target_len = (size_t)(sp2 - target);
    if (target_len == 0)
        return (int)fail(p, 400, "malformed request line");
    if (target_len > p->limits.max_url)
        return (int)fail(p, 414, "request target too long");
    for (size_t i = 0; i < target_len; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c >= 0x7f)
            return (int)fail(p, 400, "invalid character in request target");
    }
    const char *version = sp2 + 1;
    return parse_version(p, version, (size_t)(line + n - version));
}

/* status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]. A missing final SP when the
 * reason is empty is tolerated: it cannot change how the message is framed. */
static int status_line(struct http_parse *p, const char *line, size_t n)
{
    if (n < 12 || line[8] != ' ')
        return (int)fail(p, 400, "malformed status line");
    if (parse_version(p, line, 8) < 0)
        return HTTP_PARSE_ERROR;
    if (line[9] < '1' || line[9] > '9' || line[10] < '0' || line[10] > '9' || line[11] < '0' ||
        line[11] > '9')
        return (int)fail(p, 400, "malformed status code");
    p->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (n == 12)
        return 0;
    if (line[12] != ' ')
        return (int)fail(p, 400, "malformed status line");
    for (size_t i = 13; i < n; i++) {
        if (!is_field_byte((unsigned char)line[i]))
            return (int)fail(p, 400, "control character in reason phrase");
    }
    return 0;
}

static void note_field(struct field_note *note, size_t off, size_t len)
{
    if (note->count++ == 0) {
        note->off = off;
        note->len = len;
    }
}

static bool name_is(const char *name, size_t n, const char *lower, size_t lower_len)
{
    return n == lower_len && strncasecmp(name, lower, n) == 0;
}

/* field-line = field-name ":" OWS field-value OWS; `off` is the line's offset in raw. */
static int header_line(struct http_parse *p, const char *line, size_t n, size_t off)
{
    if (is_ows(line[0]))
        return (int)fail(p, 400, "obs-fold in header");
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)line[i]))
        i++;
    if (i == n)
        return (int)fail(p, 400, "missing colon in header");
    if (line[i] != ':') {
        if (is_ows(line[i]))
            return (int)fail(p, 400, "whitespace before colon");
        return (int)fail(p, 400, "invalid character in field name");
    }
    if (i == 0)
        return (int)fail(p, 400, "empty field name");
    /* Branch-free over the whole value: this loop runs over most bytes of every head. */
    unsigned bad = 0;
    for (size_t j = i + 1; j < n; j++)
        bad |= ctl_table[(unsigned char)line[j]];
    if (bad)
        return (int)fail(p, 400, "control character in field value");
    if (++p->nfields > p->limits.max_headers)
        return (int)fail(p, 431, "too many header fields");

    const char *value = line + i + 1;
    size_t value_len = n - i - 1;
    trim_ows(&value, &value_len);
    size_t value_off = off + (size_t)(value - line);
    switch (i) {
    case 4:
        if (name_is(line, i, "host", 4))
            note_field(&p->host, value_off, value_len);
        break;
    case 14:
        if (name_is(line, i, "content-length", 14))
            note_field(&p->content_length, value_off, value_len);
        break;
    case 17:
        if (name_is(line, i, "transfer-encoding", 17))
            note_field(&p->transfer_encoding, value_off, value_len);
        break;
    default:
        break;
    }
    return 0;
}

/* The line [line_start, raw.len) ends in LF. */
static int head_line(struct http_parse *p)
{
    size_t start = p->line_start;
    size_t lf = p->raw.len - 1;
    if (lf == start || p->raw.data[lf - 1] != '\r')
        return (int)fail(p, 400, "bare LF in head");
    const char *line = p->raw.data + start;
    size_t n = lf - 1 - start;
    p->line_start = p->raw.len;
    if (memchr(line, '\r', n) != NULL)
        return (int)fail(p, 400, "bare CR in head");
    if (memchr(line, '\0', n) != NULL)
        return (int)fail(p, 400, "NUL in head");

    if (!p->have_start_line) {
        if (n == 0) {
            /* RFC 9112 2.2: one empty line before a request line may be ignored (some
             * clients send an extra CRLF after a POST body). One, and nothing else. */
            if (p->kind == HTTP_PARSE_REQUEST && !p->crlf_skipped && start == 0) {
                p->crlf_skipped = true;
                buf_reset(&p->raw);
                p->line_start = 0;
                return 0;
            }
            return (int)fail(p, 400, "empty line before start line");
        }
        p->have_start_line = true;
        if (p->kind == HTTP_PARSE_REQUEST)
            return request_line(p, line, n);
        return status_line(p, line, n);
    }
    if (n == 0)
        return 1;
    return header_line(p, line, n, start);
}

/* Takes head bytes up to and including the blank line. Returns the bytes consumed or
 * HTTP_PARSE_ERROR; sets *done when the head is complete. */
static ssize_t head_feed(struct http_parse *p, const char *data, size_t len, bool *done)
{
    size_t off = 0;
    while (off < len) {
        const char *lf = memchr(data + off, '\n', len - off);
        size_t n = lf ? (size_t)(lf - (data + off)) + 1 : len - off;
        if (p->raw.len + n > p->limits.max_head)
            return fail(p, 431, "head too large");
        buf_append(&p->raw, data + off, n);
        off += n;
        if (lf == NULL)
            break;
        int rc = head_line(p);
        if (rc < 0)
            return HTTP_PARSE_ERROR;
        if (rc == 1) {
            *done = true;
            break;
        }
    }
    return (ssize_t)off;
}

/* ---------------------------------------------------------------------------------------
 * Stage 2: framing decision, splitting with http-parser, the head. */

/* Content-Length = 1*DIGIT. A list ("5, 5") or a second field is refused elsewhere. */
static int check_content_length(struct http_parse *p, int64_t *out)
{
    const char *v = p->raw.data + p->content_length.off;
    size_t n = p->content_length.len;
    if (n == 0)
        return (int)fail(p, 400, "empty Content-Length");
    if (memchr(v, ',', n) != NULL)
        return (int)fail(p, 400, "Content-Length list");
    int64_t value = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return (int)fail(p, 400, "invalid Content-Length");
        int d = v[i] - '0';
        if (value > (INT64_MAX - d) / 10)
            return (int)fail(p, 400, "Content-Length too large");
        value = value * 10 + d;
    }
    *out = value;
    return 0;
}

/* Only "chunked" alone is framed here. A well-formed list naming another coding is a
 * coding we do not implement (501); anything else is malformed (400). */
static int check_transfer_encoding(struct http_parse *p)
{
    const char *v = p->raw.data + p->transfer_encoding.off;
    size_t n = p->transfer_encoding.len;
    if (n == 7 && strncasecmp(v, "chunked", 7) == 0)
        return 0;
    if (n == 0)
        return (int)fail(p, 400, "empty Transfer-Encoding");
    unsigned chunked = 0, others = 0;
    bool last_is_chunked = false;
    size_t i = 0;
    while (i <= n) {
        const char *comma = memchr(v + i, ',', n - i);
        size_t end = comma ? (size_t)(comma - v) : n;
        const char *e = v + i;
        size_t elen = end - i;
        trim_ows(&e, &elen);
        if (elen == 0)
            return (int)fail(p, 400, "malformed Transfer-Encoding");
        for (size_t j = 0; j < elen; j++) {
            if (!is_tchar((unsigned char)e[j]))
                return (int)fail(p, 400, "malformed Transfer-Encoding");
        }
        last_is_chunked = elen == 7 && strncasecmp(e, "chunked", 7) == 0;
        if (last_is_chunked)
            chunked++;
        else
            others++;
        i = end + 1;
    }
    if (chunked > 1 || (chunked == 1 && !last_is_chunked))
        return (int)fail(p, 400, "malformed Transfer-Encoding");
    if (others > 0)
        return (int)fail(p, 501, "unsupported transfer coding");
    return (int)fail(p, 400, "malformed Transfer-Encoding");
}

/* Host = uri-host [ ":" port ]: letters, digits, the RFC 3986 unreserved and sub-delims,
 * ':' and the brackets of an IP literal. The value is forwarded, so nothing else may pass. */
static bool host_is_valid(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c != 0 && strchr("-._~!$&'()*+,;=:[]%", c) != NULL);
        if (!ok)
            return false;
    }
    return true;
}

static int check_framing(struct http_parse *p)
{
    struct http_head *h = &p->head;
    h->content_length = -1;
    if (p->content_length.count > 1)
        return (int)fail(p, 400, "duplicate Content-Length");
    if (p->transfer_encoding.count > 1)
        return (int)fail(p, 400, "duplicate Transfer-Encoding");
    if (p->transfer_encoding.count == 1) {
        if (p->content_length.count == 1)
            return (int)fail(p, 400, "Content-Length with Transfer-Encoding");
        if (p->version_minor == 0)
            return (int)fail(p, 400, "Transfer-Encoding in HTTP/1.0");
        if (check_transfer_encoding(p) < 0)
            return HTTP_PARSE_ERROR;
        h->chunked = true;
    }
    if (p->content_length.count == 1 && check_content_length(p, &h->content_length) < 0)
        return HTTP_PARSE_ERROR;
    if (p->kind == HTTP_PARSE_REQUEST) {
        if (p->host.count > 1)
            return (int)fail(p, 400, "duplicate Host");
        if (p->host.count == 0 && p->version_minor == 1)
            return (int)fail(p, 400, "missing Host");
        if (p->host.count == 1 && !host_is_valid(p->raw.data + p->host.off, p->host.len))
            return (int)fail(p, 400, "invalid Host");
    }
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct http_parse *p = hp->data;
    if (p->url == NULL)
        p->url = at;
    p->url_len = (size_t)(at + len - p->url);
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    struct http_parse *p = hp->data;
    if (p->reason == NULL)
        p->reason = at;
    p->reason_len = (size_t)(at + len - p->reason);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct http_parse *p = hp->data;
    struct http_head *h = &p->head;
    if (h->nheaders == 0 || p->last_was_value) {
        /* The pre-scan counted the fields, so this cannot outgrow max_headers. */
        if (h->nheaders == p->headers_cap) {
            p->headers_cap = p->headers_cap ? p->headers_cap * 2 : 16;
            h->headers = xrealloc(h->headers, p->headers_cap * sizeof(*h->headers));
        }
        struct http_header *f = &h->headers[h->nheaders++];
        f->name = at;
        f->name_len = len;
        f->value = NULL;
        f->value_len = 0;
    } else {
        struct http_header *f = &h->headers[h->nheaders - 1];
        f->name_len = (size_t)(at + len - f->name);
    }
    p->last_was_value = false;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct http_parse *p = hp->data;
    struct http_head *h = &p->head;
    if (h->nheaders == 0)
        return -1;
    struct http_header *f = &h->headers[h->nheaders - 1];
    /* An empty value is reported with length 0 at an arbitrary position; only the
     * first non-empty piece fixes where the value starts. */
    if (len > 0) {
        if (f->value_len == 0)
            f->value = at;
        f->value_len = (size_t)(at + len - f->value);
    }
    p->last_was_value = true;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct http_parse *p = hp->data;
    /* Tells http-parser a response to HEAD has no body; it is only splitting the head,
     * but this keeps it from reading the head's end as the start of a body. */
    if (p->kind == HTTP_PARSE_RESPONSE && p->request_method == HTTP_HEAD)
        return 1;
    return 0;
}

static const http_parser_settings split_settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
};

/* Runs http-parser over the validated head and NUL-terminates the parts in place. */
static int split_head(struct http_parse *p)
{
    struct http_head *h = &p->head;
    p->url = NULL;
    p->url_len = 0;
    p->reason = NULL;
    p->reason_len = 0;
    p->last_was_value = false;
    h->nheaders = 0;
    http_parser_init(&p->hp, p->kind == HTTP_PARSE_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    p->hp.data = p;
    size_t n = http_parser_execute(&p->hp, &split_settings, p->raw.data, p->raw.len);
    enum http_errno err = HTTP_PARSER_ERRNO(&p->hp);
    if (err == HPE_INVALID_METHOD)
        return (int)fail(p, 501, "unknown method");
    if (err == HPE_HEADER_OVERFLOW)
        return (int)fail(p, 431, "head too large");
    if (err != HPE_OK || n != p->raw.len)
        return (int)fail(p, 400, http_errno_description(err));
    if (h->nheaders != p->nfields)
        return (int)fail(p, 400, "header fields split inconsistently");

    /* Every part is followed by a byte of its own line (':' after a name, SP after the
     * target, trailing OWS or CR after a value or reason), so NULs can go in place. */
    for (size_t i = 0; i < h->nheaders; i++) {
        struct http_header *f = &h->headers[i];
        ((char *)f->name)[f->name_len] = '\0';
        const char *v = f->value;
        size_t vn = f->value_len;
        if (v != NULL)
            trim_ows(&v, &vn);
        if (v == NULL || vn == 0) {
            f->value = "";
            f->value_len = 0;
        } else {
            ((char *)v)[vn] = '\0';
            f->value = v;
            f->value_len = vn;
        }
    }
    h->version_major = 1;
    h->version_minor = p->version_minor;
    if (p->kind == HTTP_PARSE_REQUEST) {
        if (p->url == NULL || p->url_len == 0)
            return (int)fail(p, 400, "missing request target");
        ((char *)p->url)[p->url_len] = '\0';
        h->method = (int)p->hp.method;
        h->method_name = http_method_str((enum http_method)p->hp.method);
        h->target = p->url;
        h->target_len = p->url_len;
        h->reason = NULL;
    } else {
        h->method = -1;
        h->status = p->status;
        if (p->reason == NULL || p->reason_len == 0) {
            h->reason = "";
        } else {
            ((char *)p->reason)[p->reason_len] = '\0';
            h->reason = p->reason;
        }
    }
    return 0;
}

/* Called at the blank line: decides framing, splits, calls on_head, picks the next state. */
static int head_complete(struct http_parse *p)
{
    struct http_head *h = &p->head;
    if (check_framing(p) < 0 || split_head(p) < 0)
        return HTTP_PARSE_ERROR;

    bool close = http_head_has_token(h, "Connection", "close");
    bool keep = http_head_has_token(h, "Connection", "keep-alive");
    h->keep_alive = p->version_minor == 1 ? !close : keep && !close;

    enum state next;
    if (p->kind == HTTP_PARSE_REQUEST) {
        h->upgrade =
            http_head_has_token(h, "Connection", "upgrade") && http_head_find(h, "Upgrade") != NULL;
        if (h->chunked)
            next = ST_CHUNK_SIZE_START;
        else if (h->content_length > 0)
            next = ST_BODY_LENGTH;
        else
            next = ST_DONE;
    } else {
        h->upgrade = h->status == 101;
        bool no_body = (h->status >= 100 && h->status < 200) || h->status == 204 ||
                       h->status == 304 || p->request_method == HTTP_HEAD;
        if (no_body)
            next = ST_DONE;
        else if (h->chunked)
            next = ST_CHUNK_SIZE_START;
        else if (h->content_length > 0)
            next = ST_BODY_LENGTH;
        else if (h->content_length == 0)
            next = ST_DONE;
        else {
            next = ST_BODY_UNTIL_CLOSE;
            h->body_until_close = true;
        }
    }
    /* After a tunnel or a close-delimited body the connection carries no further message. */
    if (h->upgrade || h->body_until_close)
        h->keep_alive = false;

    p->remaining = next == ST_BODY_LENGTH ? (uint64_t)h->content_length : 0;
    p->chunk_line = 0;
    p->chunk_digits = 0;
    p->state = next;
    if (p->cb.on_head != NULL && p->cb.on_head(p->data, h) != 0)
        return (int)fail(p, 500, "callback failed");
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Stage 3: bodies. */

static int message_complete(struct http_parse *p)
{
    struct http_head *h = &p->head;
    bool tunnel = h->upgrade;
    if (p->kind == HTTP_PARSE_RESPONSE && (h->status >= 200 || h->status == 101))
        p->request_method = -1; /* a final response consumed the request it answered */
    p->state = tunnel ? ST_UPGRADED : ST_IDLE;
    if (p->cb.on_complete != NULL && p->cb.on_complete(p->data) != 0)
        return (int)fail(p, 500, "callback failed");
    return 0;
}

/* Passes body bytes on. Returns 0, 1 when the callback paused, or HTTP_PARSE_ERROR. */
static int deliver(struct http_parse *p, const char *data, size_t len)
{
    if (p->cb.on_body == NULL || len == 0)
        return 0;
    int rc = p->cb.on_body(p->data, data, len);
    if (rc == 0 || rc == 1)
        return rc;
    return (int)fail(p, 500, "callback failed");
}

enum chunk_event { CHUNK_MORE, CHUNK_COMPLETE, CHUNK_PAUSED };

/* The chunked body state machine (RFC 9112 7.1), with no whitespace tolerated anywhere
 * and CRLF required exactly. Returns bytes consumed or HTTP_PARSE_ERROR. */
static ssize_t chunked_feed(struct http_parse *p, const char *data, size_t len,
                            enum chunk_event *event)
{
    size_t i = 0;
    *event = CHUNK_MORE;
    while (i < len) {
        if (p->state == ST_CHUNK_DATA) {
            size_t n = len - i;
            if (n > p->remaining)
                n = (size_t)p->remaining;
            int rc = deliver(p, data + i, n);
            if (rc < 0)
                return HTTP_PARSE_ERROR;
            i += n;
            p->remaining -= n;
            if (p->remaining == 0)
                p->state = ST_CHUNK_DATA_CR;
            if (rc == 1) {
                *event = CHUNK_PAUSED;
                return (ssize_t)i;
            }
            continue;
        }
        unsigned char c = (unsigned char)data[i++];
        if (p->state >= ST_CHUNK_SIZE_START && p->state <= ST_CHUNK_SIZE_LF &&
            ++p->chunk_line > MAX_CHUNK_LINE)
            return fail(p, 400, "chunk line too long");
        if (p->state >= ST_TRAILER_START && p->state <= ST_TRAILER_END_LF &&
            ++p->trailer_bytes > p->limits.max_head)
            return fail(p, 431, "trailer section too large");

        switch (p->state) {
        case ST_CHUNK_SIZE_START:
        case ST_CHUNK_SIZE: {
            int d = hex_value(c);
            if (d >= 0) {
                if (++p->chunk_digits > MAX_CHUNK_DIGITS ||
                    p->remaining > (MAX_CHUNK_SIZE - (uint64_t)d) / 16)
                    return fail(p, 400, "chunk size too large");
                p->remaining = p->remaining * 16 + (uint64_t)d;
                p->state = ST_CHUNK_SIZE;
            } else if (p->state == ST_CHUNK_SIZE_START) {
                return fail(p, 400, "invalid chunk size");
            } else if (c == ';') {
                p->state = ST_CHUNK_EXT_NAME_START;
            } else if (c == '\r') {
                p->state = ST_CHUNK_SIZE_LF;
            } else if (c == '\n') {
                return fail(p, 400, "bare LF in chunk line");
            } else {
                return fail(p, 400, "invalid chunk size");
            }
            break;
        }
        case ST_CHUNK_EXT_NAME_START:
            if (!is_tchar(c))
                return fail(p, 400, "invalid chunk extension");
            p->state = ST_CHUNK_EXT_NAME;
            break;
        case ST_CHUNK_EXT_NAME:
        case ST_CHUNK_EXT_TOKEN:
            if (is_tchar(c))
                break;
            if (c == '=' && p->state == ST_CHUNK_EXT_NAME)
                p->state = ST_CHUNK_EXT_VALUE_START;
            else if (c == ';')
                p->state = ST_CHUNK_EXT_NAME_START;
            else if (c == '\r')
                p->state = ST_CHUNK_SIZE_LF;
            else
                return fail(p, 400, "invalid chunk extension");
            break;
        case ST_CHUNK_EXT_VALUE_START:
            if (is_tchar(c))
                p->state = ST_CHUNK_EXT_TOKEN;
            else if (c == '"')
                p->state = ST_CHUNK_EXT_QUOTED;
            else
                return fail(p, 400, "invalid chunk extension");
            break;
        case ST_CHUNK_EXT_QUOTED:
            /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
            if (c == '"')
                p->state = ST_CHUNK_EXT_QUOTED_END;
            else if (c == '\\')
                p->state = ST_CHUNK_EXT_QUOTED_ESCAPE;
            else if (!is_field_byte(c))
                return fail(p, 400, "invalid chunk extension");
            break;
        case ST_CHUNK_EXT_QUOTED_ESCAPE:
            if (!is_field_byte(c))
                return fail(p, 400, "invalid chunk extension");
            p->state = ST_CHUNK_EXT_QUOTED;
            break;
        case ST_CHUNK_EXT_QUOTED_END:
            if (c == ';')
                p->state = ST_CHUNK_EXT_NAME_START;
            else if (c == '\r')
                p->state = ST_CHUNK_SIZE_LF;
            else
                return fail(p, 400, "invalid chunk extension");
            break;
        case ST_CHUNK_SIZE_LF:
            if (c != '\n')
                return fail(p, 400, "bare CR in chunk line");
            if (p->remaining == 0) {
                p->state = ST_TRAILER_START;
                p->trailer_bytes = 0;
                p->trailer_fields = 0;
            } else {
                p->state = ST_CHUNK_DATA;
            }
            break;
        case ST_CHUNK_DATA_CR:
            if (c != '\r')
                return fail(p, 400, "missing CRLF after chunk data");
            p->state = ST_CHUNK_DATA_LF;
            break;
        case ST_CHUNK_DATA_LF:
            if (c != '\n')
                return fail(p, 400, "missing CRLF after chunk data");
            p->state = ST_CHUNK_SIZE_START;
            p->chunk_line = 0;
            p->chunk_digits = 0;
            break;
        case ST_TRAILER_START:
            if (c == '\r') {
                p->state = ST_TRAILER_END_LF;
            } else if (is_tchar(c)) {
                if (++p->trailer_fields > p->limits.max_headers)
                    return fail(p, 431, "too many trailer fields");
                p->state = ST_TRAILER_NAME;
            } else if (is_ows(c)) {
                return fail(p, 400, "obs-fold in trailer");
            } else if (c == ':') {
                return fail(p, 400, "empty field name in trailer");
            } else {
                return fail(p, 400, "invalid trailer field");
            }
            break;
        case ST_TRAILER_NAME:
            if (is_tchar(c))
                break;
            if (c == ':')
                p->state = ST_TRAILER_VALUE;
            else if (is_ows(c))
                return fail(p, 400, "whitespace before colon in trailer");
            else
                return fail(p, 400, "invalid trailer field");
            break;
        case ST_TRAILER_VALUE:
            if (c == '\r')
                p->state = ST_TRAILER_LF;
            else if (!is_field_byte(c))
                return fail(p, 400, "control character in trailer");
            break;
        case ST_TRAILER_LF:
            if (c != '\n')
                return fail(p, 400, "bare CR in trailer");
            p->state = ST_TRAILER_START;
            break;
        case ST_TRAILER_END_LF:
            if (c != '\n')
                return fail(p, 400, "bare CR in trailer");
            *event = CHUNK_COMPLETE;
            return (ssize_t)i;
        default:
            return fail(p, 500, "internal parser state");
        }
    }
    return (ssize_t)i;
}

ssize_t http_parse_feed(struct http_parse *p, const char *data, size_t len)
{
    size_t off = 0;
    for (;;) {
        switch (p->state) {
        case ST_ERROR:
            return HTTP_PARSE_ERROR;
        case ST_UPGRADED:
        case ST_CLOSED:
            return (ssize_t)off;
        case ST_IDLE:
            if (off == len)
                return (ssize_t)off;
            message_begin(p);
            break;
        case ST_HEAD: {
            bool done = false;
            ssize_t n = head_feed(p, data + off, len - off, &done);
            if (n < 0)
                return HTTP_PARSE_ERROR;
            off += (size_t)n;
            if (!done)
                return (ssize_t)off;
            if (head_complete(p) < 0)
                return HTTP_PARSE_ERROR;
            break;
        }
        case ST_DONE:
            if (message_complete(p) < 0)
                return HTTP_PARSE_ERROR;
            return (ssize_t)off;
        case ST_BODY_LENGTH: {
            if (p->remaining == 0) {
                p->state = ST_DONE;
                break;
            }
            if (off == len)
                return (ssize_t)off;
            size_t n = len - off;
            if (n > p->remaining)
                n = (size_t)p->remaining;
            int rc = deliver(p, data + off, n);
            if (rc < 0)
                return HTTP_PARSE_ERROR;
            off += n;
            p->remaining -= n;
            if (rc == 1)
                return (ssize_t)off;
            break;
        }
        case ST_BODY_UNTIL_CLOSE: {
            if (off == len)
                return (ssize_t)off;
            int rc = deliver(p, data + off, len - off);
            if (rc < 0)
                return HTTP_PARSE_ERROR;
            return (ssize_t)len;
        }
        default: {
            if (off == len)
                return (ssize_t)off;
            enum chunk_event event;
            ssize_t n = chunked_feed(p, data + off, len - off, &event);
            if (n < 0)
                return HTTP_PARSE_ERROR;
            off += (size_t)n;
            if (event == CHUNK_COMPLETE)
                p->state = ST_DONE;
            else
                return (ssize_t)off;
            break;
        }
        }
    }
}

int http_parse_finish(struct http_parse *p)
{
    switch (p->state) {
    case ST_ERROR:
        return HTTP_PARSE_ERROR;
    case ST_IDLE:
    case ST_CLOSED:
        p->state = ST_CLOSED;
        return 0;
    case ST_UPGRADED:
        return 0;
    case ST_HEAD:
        if (p->raw.len == 0) {
            p->state = ST_CLOSED;
            return 0;
        }
        return (int)fail(p, 400, "connection closed mid-message");
    case ST_BODY_LENGTH:
        if (p->remaining != 0)
            return (int)fail(p, 400, "connection closed mid-message");
        /* A pause on the body's last bytes left only on_complete to do. */
        if (message_complete(p) < 0)
            return HTTP_PARSE_ERROR;
        break;
    case ST_DONE:
    case ST_BODY_UNTIL_CLOSE:
        if (message_complete(p) < 0)
            return HTTP_PARSE_ERROR;
        break;
    default:
        return (int)fail(p, 400, "connection closed mid-message");
    }
    if (p->state == ST_IDLE)
        p->state = ST_CLOSED;
    return 0;
}

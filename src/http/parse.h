/* The HTTP/1.1 message parser: a narrow, strict wrapper around http-parser 2.9.4.
 *
 * http-parser is archived and lenient: it accepts a bare CR as a line end, whitespace
 * before the colon and obs-fold. This wrapper collects the raw head first, rejects
 * anything a strict reading of RFC 9112 does not allow, caps its size, then lets
 * http-parser split it into parts. Bodies (Content-Length or chunked) are framed with
 * the chunk syntax checked strictly as well. Anything that could be read two ways by two
 * parsers — the root of request smuggling — is an error, never a guess.
 *
 * One struct http_parse per connection direction. Feed it bytes as they arrive; it calls
 * back on a complete head, on each piece of decoded body and on message end. It stops
 * after each complete message and consumes no further bytes in that call, so a server
 * can answer pipelined requests one at a time. */
#ifndef CODEHUB_HTTP_PARSE_H
#define CODEHUB_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum http_parse_kind { HTTP_PARSE_REQUEST, HTTP_PARSE_RESPONSE };

struct http_parse_limits {
    size_t max_head;    /* bytes from the first byte to the blank line inclusive (32 KiB) */
    size_t max_headers; /* header fields (100) */
    size_t max_url;     /* bytes of the request target (8 KiB) */
};

struct http_header {
    const char *name; /* NUL-terminated, as sent (case preserved) */
    size_t name_len;
    const char *value; /* NUL-terminated, leading and trailing SP/HT removed */
    size_t value_len;
};

struct http_head {
    /* Requests. */
    int method;              /* enum http_method of http_parser.h */
    const char *method_name; /* "GET" */
    const char *target;      /* the request-target exactly as sent, NUL-terminated */
    size_t target_len;
    /* Responses. */
    int status;         /* 100..999 */
    const char *reason; /* may be "" */
    /* Both. */
    int version_major; /* 1 */
    int version_minor; /* 0 or 1 */
    struct http_header *headers;
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* the connection may carry another message afterwards */
    bool upgrade;           /* request: Connection has "upgrade" and Upgrade is present;
                               response: status 101 */
    bool body_until_close;  /* response framed by the connection closing */
};

/* Returns the first header named `name` (ASCII case-insensitive), or NULL. Borrowed. */
const struct http_header *http_head_find(const struct http_head *head, const char *name);
/* Returns true when header `name` holds `token` in its comma-separated list
 * (case-insensitive), e.g. Connection: keep-alive, Upgrade. */
bool http_head_has_token(const struct http_head *head, const char *name, const char *token);

/* Each callback returns 0 to go on. on_body may return 1 to pause: http_parse_feed then
 * returns at once with the bytes consumed so far, and the next feed resumes. Any other
 * nonzero value aborts with status 500 ("callback failed"). */
struct http_parse_callbacks {
    int (*on_head)(void *data, struct http_head *head);
    int (*on_body)(void *data, const char *chunk, size_t len);
    int (*on_complete)(void *data);
};

/* Errors returned by http_parse_feed / http_parse_finish. */
#define HTTP_PARSE_ERROR (-1)

struct http_parse;

/* Returns a new parser; caller frees with http_parse_free(). `limits` and `callbacks` are
 * copied; `data` is passed to every callback. */
struct http_parse *http_parse_new(enum http_parse_kind kind, const struct http_parse_limits *limits,
                                  const struct http_parse_callbacks *callbacks, void *data);
void http_parse_free(struct http_parse *p);

/* Response parsers only: the method of the request the next response answers, so that a
 * response to HEAD (or a 1xx/204/304) is known to have no body. */
void http_parse_set_request_method(struct http_parse *p, int method);

/* Feeds `len` bytes. Returns the number consumed (0..len) or HTTP_PARSE_ERROR.
 * It stops right after a message's on_complete; the caller feeds the rest (the next
 * pipelined message) when it is ready. After an upgrade request or a 101 response it
 * consumes nothing more: the remaining bytes belong to the tunnel.
 * The head passed to on_head stays valid until the next call that begins a new message. */
ssize_t http_parse_feed(struct http_parse *p, const char *data, size_t len);

/* The peer closed its side. Completes a body framed by the close (calls on_complete).
 * Returns 0 when the parser sat between messages or the body completed, or
 * HTTP_PARSE_ERROR when a message was cut short. */
int http_parse_finish(struct http_parse *p);

/* After an error: the status to answer with (400, 413, 414, 431, 501, 500) and a short
 * reason for logs and the error page ("bare CR in header"). Borrowed. */
int http_parse_error_status(const struct http_parse *p);
const char *http_parse_error_reason(const struct http_parse *p);

/* True between messages (no byte of a next message seen yet). */
bool http_parse_idle(const struct http_parse *p);

#endif

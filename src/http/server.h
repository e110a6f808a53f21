/* The HTTP/1.1 server on libuv.
 *
 * One struct http_conn per accepted socket. Bytes are fed to the strict parser
 * (http/parse.h); a complete request (head plus body, buffered up to a limit) becomes a
 * struct http_exchange handed to the server's handler. While an exchange is in flight
 * the connection stops reading, so pipelined requests are answered strictly in order and
 * a client cannot make the server queue unbounded work. The handler answers later,
 * from the loop thread, with http_exchange_finish(); it may do its work on the thread
 * pool in between, touching nothing but the exchange.
 *
 * Every phase has a timeout (head, body, idle keep-alive). Malformed requests are
 * answered with the parser's 4xx/5xx and the connection is closed. Shutdown stops
 * accepting, closes idle connections, lets in-flight requests finish within a grace
 * period and then closes what is left. */
#ifndef CODEHUB_HTTP_SERVER_H
#define CODEHUB_HTTP_SERVER_H

#include "core/arena.h"
#include "core/buf.h"
#include "http/parse.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_conn;

struct http_server_options {
    struct http_parse_limits parse;
    size_t max_body;          /* bytes of a buffered request body (413 beyond) */
    uint64_t head_timeout_ms; /* from the first byte of a request to the end of its head */
    uint64_t body_timeout_ms; /* without progress while reading a body */
    uint64_t idle_timeout_ms; /* keep-alive connection waiting for a next request */
    size_t max_connections;   /* beyond this, new connections are closed at once */
};

struct http_request {
    int method;              /* enum http_method */
    const char *method_name; /* "GET" */
    const char *target;      /* as sent */
    const char *path;        /* raw path part of the target (still percent-encoded) */
    const char *query;       /* raw query without '?', NULL when none */
    struct http_header *headers;
    size_t nheaders;
    int version_minor;
    bool keep_alive;
    bool upgrade;
    struct buf body;
    char remote_addr[64]; /* peer IP as text */
    int remote_port;
    uint64_t start_ns;    /* uv_hrtime() when the head was complete */
};

struct http_response {
    int status;
    struct buf headers; /* "Name: value\r\n" lines, added with http_response_header */
    struct buf body;
    bool close;         /* close the connection after this response */
};

/* One request and its response. Owned by the server; valid from the handler call until
 * http_exchange_finish(). */
struct http_exchange {
    uint32_t magic;
    struct http_conn *conn;
    struct http_server *server;
    struct http_request req;
    struct http_response res;
    struct arena arena; /* request-scoped memory, freed with the exchange */
    void *user_data;    /* for the handler */
    const char *log_user; /* set by the handler for the request log; borrowed */
};

/* Called on the loop thread for every complete request. The handler must eventually
 * call http_exchange_finish(ex) exactly once, on the loop thread. */
typedef void (*http_handler_cb)(struct http_exchange *ex, void *data);
/* Called on the loop thread after a response is written (for logs and metrics). */
typedef void (*http_done_cb)(struct http_exchange *ex, uint64_t duration_ns, void *data);

/* Returns a new server bound to nothing yet; caller frees with http_server_free() after
 * shutdown completed. `options` is copied. */
struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_options *options,
                                    http_handler_cb handler, http_done_cb done, void *data);
/* Binds and listens on host:port (IPv4 or IPv6 literal, or "localhost"). Returns 0 or a
 * negative libuv error. When port is 0 the kernel picks one; http_server_port() tells. */
int http_server_listen(struct http_server *srv, const char *host, int port);
int http_server_port(const struct http_server *srv);
/* Stops accepting, closes idle connections, waits up to grace_ms for in-flight requests,
 * then closes everything and calls `done_cb` on the loop thread. */
void http_server_shutdown(struct http_server *srv, uint64_t grace_ms, void (*done_cb)(void *),
                          void *done_data);
/* Frees a server whose shutdown completed (or that never listened). */
void http_server_free(struct http_server *srv);
size_t http_server_connection_count(const struct http_server *srv);

/* Adds a response header; silently drops a name or value holding CR, LF or NUL (they
 * would allow response splitting) and logs it. */
void http_response_header(struct http_response *res, const char *name, const char *value);
void http_response_headerf(struct http_response *res, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets status, a Content-Type and the body (copied). */
void http_response_set(struct http_response *res, int status, const char *content_type,
                       const void *body, size_t len);

/* Writes the response and releases the exchange. Loop thread only. */
void http_exchange_finish(struct http_exchange *ex);

/* Returns the first request header named `name` (case-insensitive) or NULL. Borrowed. */
const char *http_request_header(const struct http_request *req, const char *name);

/* The standard reason phrase for a status ("Not Found"), "Unknown" otherwise. */
const char *http_status_reason(int status);

#endif

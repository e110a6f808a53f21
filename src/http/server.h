/* The HTTP/1.1 server on libuv.
 *
 * One struct http_conn per accepted socket. Bytes are fed to the strict parser
 * (http/parse.h) straight from the read buffer; only what the parser cannot take yet is
 * copied aside. A request becomes a struct http_exchange. While an exchange is in flight
 * no further request is parsed, so pipelined requests are answered strictly in order and
 * a client cannot make the server queue unbounded work. The socket is still read once the
 * request is complete (bytes of a next request are kept, up to 64 KiB, then reading
 * pauses): that notices a client going away, and spares two epoll_ctl calls per request.
 * A client that shuts its sending side after a request still gets the response (then the
 * connection closes), unless the owner registered an abort callback: a proxied or streamed
 * response is abandoned, as nginx does.
 *
 * Two ways to handle a request:
 *  - Buffered (the default): the body is read up to max_body, then the handler gets the
 *    whole request and answers later, from the loop thread, with http_exchange_finish().
 *    It may do its work on the thread pool in between, touching nothing but the exchange.
 *  - Streaming: a head hook (http_server_set_head_handler) sees every request as soon as
 *    its head is complete and may take it over (HTTP_HEAD_DEFER). The owner then reads
 *    the body as it arrives (http_exchange_read_body, with pause/resume for
 *    backpressure), streams the response (http_exchange_write_head/_body/_end), or takes
 *    the socket over after an upgrade (http_exchange_upgrade). The reverse proxy and the
 *    hub's server-sent events work this way.
 *
 * Every phase has a timeout: head, body (no progress while the client should be sending),
 * write (queued response bytes the client does not take), idle keep-alive. Malformed
 * requests are answered with the parser's 4xx/5xx and the connection is closed.
 *
 * Shutdown stops accepting, closes idle connections, lets in-flight exchanges finish
 * within a grace period and then closes what is left. Upgraded connections (tunnels) are
 * no longer HTTP connections, but they still count: their owner registers them
 * (http_server_tunnel_add), they count against max_connections, shutdown leaves them
 * open during the grace period (a WebSocket cannot be "finished", and closing it early
 * only makes the editor reconnect sooner to a hub that is going away) and asks their
 * owner to close them when the grace period ends. Shutdown completes when the last HTTP
 * connection and the last tunnel are gone. */
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
    size_t max_body;           /* bytes of a buffered request body (413 beyond) */
    uint64_t head_timeout_ms;  /* from the first byte of a request to the end of its head */
    uint64_t body_timeout_ms;  /* without progress while reading a body */
    uint64_t idle_timeout_ms;  /* keep-alive connection waiting for a next request */
    size_t max_connections;    /* beyond this, new connections are closed at once (tunnels
                                  count too) */
    uint64_t write_timeout_ms; /* response bytes queued and none taken by the client for
                                  this long: the connection is closed. 0: body_timeout_ms */
};

/* The request. Strings and headers stay valid until the exchange is released. */
struct http_request {
    int method;                  /* enum http_method */
    const char *method_name;     /* "GET" */
    const char *target;          /* as sent */
    const char *path;            /* raw path part of the target (still percent-encoded) */
    const char *query;           /* raw query without '?', NULL when none */
    struct http_header *headers; /* names and values as parsed (validated: no CR, LF, NUL) */
    size_t nheaders;
    int version_minor;
    bool keep_alive;
    bool upgrade;
    int64_t content_length; /* -1 when the request has no Content-Length */
    bool chunked;           /* Transfer-Encoding: chunked */
    struct buf body;        /* buffered requests only */
    char remote_addr[64];   /* peer IP as text */
    int remote_port;
    uint64_t start_ns; /* uv_hrtime() when the head was complete */
};

struct http_response {
    int status;
    struct buf headers; /* "Name: value\r\n" lines, added with http_response_header */
    struct buf body;
    bool close; /* close the connection after this response */
};

/* One request and its response. Owned by the server; valid from the handler call until
 * http_exchange_finish(). */
struct http_exchange {
    uint32_t magic;
    struct http_conn *conn;
    struct http_server *server;
    struct http_request req;
    struct http_response res;
    struct arena arena;   /* request-scoped memory, freed with the exchange */
    void *user_data;      /* for the handler */
    const char *log_user; /* set by the handler for the request log; borrowed */
};

/* Called on the loop thread for every complete request. The handler must eventually
 * call http_exchange_finish(ex) exactly once, on the loop thread. */
typedef void (*http_handler_cb)(struct http_exchange *ex, void *data);
/* Called on the loop thread after a response is written, or a streamed response ended,
 * or an exchange was upgraded (status 101): for logs and metrics. */
typedef void (*http_done_cb)(struct http_exchange *ex, uint64_t duration_ns, void *data);

/* What a head hook returns. */
#define HTTP_HEAD_BUFFER 0 /* the normal path: body buffered up to max_body, then the handler */
#define HTTP_HEAD_DEFER 1  /* the hook took the exchange; see http_server_set_head_handler */

/* Called on the loop thread when a request head is complete, before its body is read
 * (the server stops reading while the hook decides). `data` is the server's handler
 * data. */
typedef int (*http_head_cb)(struct http_exchange *ex, void *data);

/* Returns a new server bound to nothing yet; caller frees with http_server_free() after
 * shutdown completed. `options` is copied; a zero timeout means no limit, except
 * write_timeout_ms (see above). */
struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_options *options,
                                    http_handler_cb handler, http_done_cb done, void *data);
/* Binds and listens on host:port (IPv4 or IPv6 literal, or "localhost"). Returns 0 or a
 * negative libuv error. When port is 0 the kernel picks one; http_server_port() tells. */
int http_server_listen(struct http_server *srv, const char *host, int port);
int http_server_port(const struct http_server *srv);
/* Sets the head hook (NULL: none, every request is buffered). With HTTP_HEAD_DEFER the
 * hook's caller owns the exchange and must, on the loop thread, now or later, do exactly
 * one of:
 *  - http_exchange_buffer(ex): go on as with HTTP_HEAD_BUFFER;
 *  - answer at once: fill ex->res and call http_exchange_finish(ex). If the request has a
 *    body that was not read, the connection closes after the response;
 *  - stream: http_exchange_read_body() and/or http_exchange_write_head() ...
 *    http_exchange_end();
 *  - http_exchange_upgrade() after an upgrade request.
 * The hook may do any of these before it returns. */
void http_server_set_head_handler(struct http_server *srv, http_head_cb hook);

/* Stops accepting, closes idle connections, waits up to grace_ms for in-flight exchanges
 * and tunnels, then closes what is left (asking tunnel owners to close theirs) and calls
 * `done_cb` on the loop thread once every connection and tunnel is gone. */
void http_server_shutdown(struct http_server *srv, uint64_t grace_ms, void (*done_cb)(void *),
                          void *done_data);
/* Frees a server whose shutdown completed (or that never listened). */
void http_server_free(struct http_server *srv);
/* Open HTTP connections plus registered tunnels. */
size_t http_server_connection_count(const struct http_server *srv);
size_t http_server_tunnel_count(const struct http_server *srv);

/* Adds a response header; silently drops a name or value holding CR, LF or NUL (they
 * would allow response splitting) and logs it. */
void http_response_header(struct http_response *res, const char *name, const char *value);
void http_response_headerf(struct http_response *res, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets status, a Content-Type and the body (copied). */
void http_response_set(struct http_response *res, int status, const char *content_type,
                       const void *body, size_t len);

/* Writes the response in ex->res and releases the exchange. Loop thread only. */
void http_exchange_finish(struct http_exchange *ex);

/* After HTTP_HEAD_DEFER: continue on the buffered path (413 beyond max_body, then the
 * handler). Loop thread only. */
void http_exchange_buffer(struct http_exchange *ex);

/* --- streaming request bodies ------------------------------------------------------------ */

/* Decoded body bytes (chunk framing removed). They are valid only during the call. */
typedef void (*http_body_cb)(void *data, const char *bytes, size_t len);
/* The body ended. status 0: complete (the last on_data has been called). Otherwise the
 * body is incomplete and will not continue: the HTTP status a server answers with (400 for
 * malformed chunking or a client that closed mid-body, 408 for the body timeout, or the
 * parser's status); the connection closes after the response, and the owner answers with
 * that status itself if it has not sent a response head yet. */
typedef void (*http_body_end_cb)(void *data, int status);

/* Streams the request body of a deferred exchange to `on_data`, then calls `on_end`
 * exactly once. Body bytes that arrived with the head come first; a request without a body
 * gets on_end(data, 0) at once. Either callback may be called before this returns. Sends
 * "100 Continue" when the client asked for it. The body timeout counts only while the body
 * is not paused. If the client connection dies and an abort callback is registered, only
 * that is called (not on_end). */
void http_exchange_read_body(struct http_exchange *ex, http_body_cb on_data,
                             http_body_end_cb on_end, void *data);
/* Backpressure: stop / start reading the client socket. Resume may deliver buffered bytes
 * before it returns. */
void http_exchange_pause_body(struct http_exchange *ex);
void http_exchange_resume_body(struct http_exchange *ex);

/* --- streaming responses --------------------------------------------------------------- */

/* Starts the response: status, the caller's header lines (`headers`, "Name: value\r\n"
 * each; NULL for none; copied; they must not hold Date, Connection, Content-Length or
 * Transfer-Encoding, which the server writes) and the body length: >= 0 exact bytes
 * (Content-Length), -1 unknown: chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0.
 * Responses to HEAD and 1xx/204/304 carry no body (a length >= 0 is still announced for
 * HEAD and 304). The hub's security headers are not added. The head goes out together
 * with the first body bytes, or on the next loop iteration, whichever comes first.
 * Returns 0, -EINVAL when a response was already started or the status is out of range,
 * -ECONNRESET when the client is gone. */
int http_exchange_write_head(struct http_exchange *ex, int status, const struct buf *headers,
                             int64_t content_length);
/* Queues body bytes (len 0 only flushes the head). With `written` NULL the bytes are
 * copied and the caller may reuse its buffer at once. Otherwise they are not copied: they
 * must stay valid until `written(data)` is called, which happens exactly once for every
 * call that returned 0, when the bytes have left the process or were dropped because the
 * connection died, possibly after http_exchange_end(). For a HEAD request the bytes are
 * dropped. Returns 0, -EINVAL (no head yet, bytes for a 1xx/204/304 response, more bytes
 * than the announced length), or -ECONNRESET (the client is gone; `written` will not be
 * called). */
int http_exchange_write_body(struct http_exchange *ex, const char *data, size_t len,
                             void (*written)(void *data), void *data_arg);
/* Response bytes queued in the process and not yet taken by the kernel. */
size_t http_exchange_write_queue_size(const struct http_exchange *ex);
/* Completes a streamed response and releases the exchange: writes the last chunk of a
 * chunked body, then goes on with the next pipelined request, or closes the connection
 * when keep_alive is false, the request or response asked for it, the request body was
 * not read to its end, or fewer bytes were written than announced. After an abort it only
 * releases. Called without a response head, it closes the connection without answering. */
void http_exchange_end(struct http_exchange *ex, bool keep_alive);
/* Releases the exchange and closes the connection at once, leaving a streamed response
 * visibly incomplete (no last chunk): for an upstream that failed mid-response. */
void http_exchange_abort(struct http_exchange *ex);
/* Registers `cb(data)`, called once on the loop if the client connection dies (reset,
 * EOF, write failure or timeout, shutdown's grace period running out) while the owner
 * holds the exchange. After it the owner must still call http_exchange_end() (which then
 * only releases), and no `written` callback is pending any more. With an abort callback
 * registered, a client that shuts its sending side (EOF) counts as gone. */
void http_exchange_on_abort(struct http_exchange *ex, void (*cb)(void *data), void *data);

/* --- upgrades and tunnels ----------------------------------------------------------------- */

/* Takes the client socket over after an upgrade request (ex->req.upgrade) whose body, if
 * any, has been read, before any response byte was written. On success returns 0,
 * *client_out is the socket (a uv_tcp_t; the caller owns it: it sets handle->data, writes
 * the 101 response itself, and closes it with uv_close, freeing it with free() in the
 * close callback), the bytes the client sent after the request head are appended to
 * `leftover`, the done callback runs with status 101 and the exchange is released.
 * Returns -EINVAL (not an upgrade request, a response started, body unread) or
 * -ECONNRESET (the client is gone); the exchange is then still the caller's. */
int http_exchange_upgrade(struct http_exchange *ex, uv_stream_t **client_out, struct buf *leftover);

/* A tunnel's entry in the server's books, embedded in the owner's tunnel object. */
struct http_tunnel {
    /* Set by the owner: called (once, on the loop) when the server wants the tunnel gone
     * (shutdown's grace period ended). The owner closes its sockets and, once they are
     * closed, calls http_server_tunnel_remove(). */
    void (*close_cb)(struct http_tunnel *t);
    /* The server's. */
    struct http_server *srv;
    struct http_tunnel *prev, *next;
};

/* Counts tunnel `t` (close_cb set by the caller) as a connection of `srv` until
 * http_server_tunnel_remove(t). During shutdown close_cb is called when the grace period
 * ends; if the server is already past that point, it is called at once. */
void http_server_tunnel_add(struct http_server *srv, struct http_tunnel *t);
/* Forgets a tunnel (its sockets are closed); may complete a pending shutdown. */
void http_server_tunnel_remove(struct http_tunnel *t);

/* Returns the first request header named `name` (case-insensitive) or NULL. Borrowed. */
const char *http_request_header(const struct http_request *req, const char *name);

/* The standard reason phrase for a status ("Not Found"), "Unknown" otherwise. */
const char *http_status_reason(int status);

#endif

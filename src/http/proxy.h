/* The reverse proxy's data path: forwards an exchange the server handed over (head
 * complete, body unread) to a workspace's code-server and streams the answer back, or
 * turns a WebSocket upgrade into a byte tunnel after the upstream's 101.
 *
 * The hub decides who may go where and passes the decision in struct proxy_target; the
 * proxy only moves bytes, safely: the upstream request head is rebuilt from parsed values
 * (hop-by-hop headers, Authorization, the hub's cookies and client-sent X-Forwarded-*
 * removed), bodies are streamed both ways with bounded buffering, upstream connections
 * are kept alive in a small pool per upstream address, and every phase has a timeout.
 * See docs/proxy.md. Loop thread only. */
#ifndef CODEHUB_HTTP_PROXY_H
#define CODEHUB_HTTP_PROXY_H

#include "http/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct proxy_options {
    uint64_t connect_timeout_ms;   /* connecting to the upstream: 504 after it */
    uint64_t response_timeout_ms;  /* request sent, no response head yet: 504 after it */
    uint64_t websocket_timeout_ms; /* a tunnel silent in both directions this long closes */
    uint64_t body_timeout_ms;      /* a body (either way) making no progress this long */
    size_t keepalive_per_upstream; /* idle upstream connections kept per address */
    /* Connections for plain exchanges open at once per address (tunnels not counted); a
     * request beyond it waits for one to come free, up to connect_timeout_ms, then gets a
     * 503. 0: no cap. */
    size_t max_conns_per_upstream;
};

struct proxy_stats {
    uint64_t requests;        /* exchanges forwarded (WebSocket upgrades included) */
    uint64_t bytes_up;        /* client to upstream: request heads, bodies, tunnel bytes */
    uint64_t bytes_down;      /* upstream to client: response heads, bodies, tunnel bytes */
    uint64_t websockets_open; /* tunnels open now */
    uint64_t upstream_errors; /* 502/503/504 answered, and failures after the head */
    uint64_t retries;         /* requests retried on a fresh connection */
    uint64_t connections;     /* upstream connections opened */
    uint64_t reused;          /* requests sent on a pooled connection */
    uint64_t waited;          /* requests that queued for a connection (at the cap) */
    uint64_t wait_timeouts;   /* of those, answered 503 when no connection came free */
};

struct proxy;

/* Returns a new proxy (never NULL); free it with proxy_close(). `opt` is copied; a zero
 * timeout is read as its default (connect 10 s, response 60 s, websocket 1 h, body 60 s). */
struct proxy *proxy_new(uv_loop_t *loop, const struct proxy_options *opt);

/* Closes pooled and active upstream connections and open tunnels: an exchange still
 * waiting for its response head is answered 503, one whose response is streaming is cut
 * (connection closed). From now on proxy_forward answers 503. Calls done(data) on the
 * loop thread once every handle is closed, then frees `p`. */
void proxy_close(struct proxy *p, void (*done)(void *), void *data);

/* Counters for metrics. Borrowed; valid until proxy_close() completes. */
const struct proxy_stats *proxy_stats(const struct proxy *p);

struct proxy_target {
    const char *upstream;        /* "unix:/path" or "http://HOST:PORT" (IPv4 or [IPv6] literal) */
    const char *strip_prefix;    /* "/user/ann": removed from the raw path ("/user/ann" alone
                                    becomes "/"); NULL or "" for none */
    const char *forwarded_for;   /* the X-Forwarded-For value to send (NULL: none) */
    const char *forwarded_proto; /* "http"/"https" (NULL: none) */
    const char *forwarded_host;  /* public host[:port] (NULL: none) */
    /* Selects the hub's own cookies, which are removed (may be NULL). */
    bool (*drop_cookie)(const char *name, size_t len, void *data);
    void *cookie_data;
    /* User-initiated traffic (see docs/proxy.md, "What counts as activity"); may be
     * NULL. Called on the loop thread, at most about once per second per exchange or
     * tunnel. activity_data must outlive every exchange and tunnel it is given to. */
    void (*on_activity)(void *data);
    void *activity_data;
    /* Optional: the proxy answered 502/503/504 (upstream unreachable, timed out, broken)
     * or an upstream failed after its response began (status 502). Same data as above. */
    void (*on_upstream_error)(void *data, int status);
};

/* Forwards `ex`, whose head is complete and whose body is unread (the head hook returned
 * HTTP_HEAD_DEFER), to target->upstream. Copies what it needs from `target`. The proxy
 * owns the exchange from now on and always finishes it: with the upstream's response,
 * with a 502/503/504 error page, 400 for a malformed WebSocket handshake or a path that
 * does not start with strip_prefix, or by handing the socket to a tunnel. The forwarded
 * path is taken from ex->req.target (the raw target), not from ex->req.path. */
void proxy_forward(struct proxy *p, struct http_exchange *ex, const struct proxy_target *target);

#endif

/* An asynchronous Kubernetes API client on one libuv loop (see docs/k8s.md).
 *
 * libcurl's multi interface does the HTTP and TLS; libuv tells it when its sockets are
 * ready. Requests are JSON in, JSON out. Everything happens on the loop's thread, and every
 * callback is called from the loop, never from inside the function that started the work.
 *
 * Ownership:
 *  - The client copies what it needs from the `struct k8s_config`; the caller may free it
 *    after k8s_client_new.
 *  - A request's `struct k8s_request *` is valid from the call that returns it until its
 *    final callback starts, or until k8s_request_cancel. After either it is dangling: clear
 *    your copy in the callback.
 *  - Bodies given to a callback are borrowed for the call: json_incref what you keep. */
#ifndef CODEHUB_K8S_CLIENT_H
#define CODEHUB_K8S_CLIENT_H

#include "core/buf.h"
#include "k8s/kubeconfig.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct k8s_client;
struct k8s_request;

struct k8s_client_options {
    /* Whole-request limit for ordinary requests, in milliseconds (default 30 s). Streams
     * (watches) have none: the watch has its own silence timeout. */
    unsigned request_timeout_ms;
    /* TCP + TLS connect limit, in milliseconds (default 10 s). */
    unsigned connect_timeout_ms;
    /* How often a token file is checked for a new token, in milliseconds (default 60 s;
     * kubelet rotates projected tokens well before they expire). A 401 answer also makes
     * the client check at once, and retry the request once if the token changed. */
    unsigned token_check_ms;
    /* Largest response body read for an ordinary request (default 64 MiB). */
    size_t max_body;
    /* The User-Agent header (default "codehub"). Copied. */
    const char *user_agent;
};

/* Called once when a request ends.
 *  - `status`: the HTTP status, or 0 when no answer came (connection refused, TLS failure,
 *    timeout, response too large). A stream that broke after its 2xx head keeps its
 *    status, with `error` set.
 *  - `body`: the parsed JSON body when the answer carried one, for any status (the API
 *    server explains errors with a Status object); otherwise NULL. Borrowed for the call.
 *  - `error`: NULL exactly when the request succeeded (2xx and, if a body came, it was
 *    valid JSON); otherwise a one-line reason for logs: "HTTP 404: <the Status message>",
 *    "HTTP 503", curl's description ("Operation timed out after ..."). Borrowed.
 * The callback may start and cancel other requests, and close the client. */
typedef void (*k8s_response_cb)(void *data, int status, json_t *body, const char *error);

/* Called with each piece of a streaming response's body, once the status is known to be
 * 2xx (a non-2xx answer is collected and handed to the final callback instead). `bytes`
 * is borrowed for the call. Return 0 to go on, or a negative value to end the stream: the
 * final callback then follows with error "stream stopped by the consumer".
 * Inside this callback, starting or cancelling requests (this one included) is allowed and
 * takes effect as soon as curl returns. */
typedef int (*k8s_data_cb)(void *data, const char *bytes, size_t len);

/* Creates a client for `cfg` on `loop`. Fails (NULL with *err set, caller frees) when the
 * server URL is not https (unless cfg->allow_http), its token file cannot be read, or curl
 * cannot start.
 * Returns the client; free it with k8s_client_close. */
struct k8s_client *k8s_client_new(uv_loop_t *loop, const struct k8s_config *cfg,
                                  const struct k8s_client_options *opt, char **err);

/* Starts `method` on `path` (it begins with "/" and may carry a query; it is appended to
 * the server URL), with `body` (NULL for none) sent as application/json. `body` is
 * borrowed: it is serialised before this returns.
 * Returns the request (see the ownership rules above), or NULL when it cannot even begin
 * (a bad path or method, the client closing): then `cb` is never called. */
struct k8s_request *k8s_client_request(struct k8s_client *c, const char *method, const char *path,
                                       json_t *body, k8s_response_cb cb, void *data);

/* As k8s_client_request with a raw body of `len` bytes (copied) and its content type, for
 * application/merge-patch+json and friends. */
struct k8s_request *k8s_client_request_raw(struct k8s_client *c, const char *method,
                                           const char *path, const char *content_type,
                                           const void *body, size_t len, k8s_response_cb cb,
                                           void *data);

/* A GET whose 2xx body is handed to `on_data` as it arrives, with no overall timeout:
 * for watches. `done` ends it as for any request, with body NULL after a 2xx. */
struct k8s_request *k8s_client_stream(struct k8s_client *c, const char *path, k8s_data_cb on_data,
                                      k8s_response_cb done, void *data);

/* Abandons a request that has not called back yet: its callbacks are never called, and
 * its connection is closed if the answer was incomplete. Safe inside any client callback. */
void k8s_request_cancel(struct k8s_request *r);

/* The loop the client runs on (borrowed). */
uv_loop_t *k8s_client_loop(const struct k8s_client *c);

/* The namespace the config named (borrowed, lives as long as the client). */
const char *k8s_client_namespace(const struct k8s_client *c);

struct k8s_client_stats {
    uint64_t requests;       /* started, retries included */
    uint64_t failures;       /* ended without a 2xx */
    uint64_t token_reloads;  /* times a changed token was read from the token file */
    uint64_t retries_401;    /* requests sent again after a 401 with a new token */
    uint64_t sockets_opened; /* TCP connections opened (keep-alive reuse shows here) */
    unsigned active;         /* requests in flight now */
};

/* Copies the counters into *out. */
void k8s_client_stats_get(const struct k8s_client *c, struct k8s_client_stats *out);

/* Cancels every request still in flight (their callbacks are not called), closes the
 * connections, and frees the client once libuv has closed its handles; then calls `done`
 * (may be NULL) from the loop, never from inside this call. Stop every watch on this
 * client before: a watch holds requests. Safe inside a client callback. */
void k8s_client_close(struct k8s_client *c, void (*done)(void *data), void *data);

/* Appends "?key=value" or "&key=value" to the path in `b`, percent-encoding `value`
 * (everything but RFC 3986 unreserved characters). */
void k8s_query_append(struct buf *b, const char *key, const char *value);

/* ---- inside the k8s area only ---- */

/* Counts watches using the client, so that closing it under a live watch is caught in
 * debug builds. */
void k8s__client_watch_ref(struct k8s_client *c, int delta);

#endif

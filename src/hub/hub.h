/* The hub: the process that serves codehub's pages, REST API and (later) the proxy.
 *
 * Threading. Everything that touches the store or hashes a password runs on libuv's
 * thread pool: the loop thread routes a request, then hub_call_queue() runs a handler
 * (struct hub_call) on a worker. A worker handler fills ex->res and touches nothing
 * else of the server; the exchange is finished on the loop thread when it returns.
 * Static assets, /hub/health and /hub/metrics are answered on the loop directly. */
#ifndef CODEHUB_HUB_HUB_H
#define CODEHUB_HUB_HUB_H

#include "auth/csrf.h"
#include "core/config.h"
#include "http/server.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct auth_throttle;
struct metric;
struct metric_histogram;

struct hub_metrics {
    struct metric *requests[6]; /* by status class: [1] 1xx … [5] 5xx, [0] other */
    struct metric_histogram *request_seconds;
    struct metric *logins_ok;
    struct metric *logins_failed;
    struct metric *logins_throttled;
    struct metric *csrf_failures;
    struct metric *users;    /* gauge, refreshed by the maintenance job and on changes */
    struct metric *sessions; /* gauge, refreshed by the maintenance job and on changes */
};

struct hub {
    uint32_t magic;
    uv_loop_t *loop;
    struct config *cfg;  /* borrowed from main */
    struct store *store; /* owned */
    struct http_server *http;
    struct auth_throttle *throttle;
    unsigned char secret[32];   /* keys CSRF tokens; shared by every process on the store */
    bool secure;                /* public_url is https: Secure + __Host- cookies, HSTS */
    const char *session_cookie; /* "codehub-session" or "__Host-codehub-session" */
    const char *xsrf_cookie;    /* "codehub-xsrf" or "__Host-codehub-xsrf" (login form) */
    uv_sem_t hash_slots;        /* bounds concurrent Argon2id hashes (memory-hard) */
    struct hub_metrics metrics;
    uv_signal_t sigterm, sigint;
    uv_timer_t maintenance;
    bool stopping;
    int exit_code;
};

enum hub_auth_via { HUB_AUTH_NONE = 0, HUB_AUTH_SESSION, HUB_AUTH_TOKEN };

/* Who made a request. */
struct hub_identity {
    enum hub_auth_via via;
    int64_t user_id;
    char name[40];
    bool user_admin; /* the account is an admin */
    bool admin;      /* this request may act as admin: session of an admin, or admin-scoped token */
    char session_hash[72]; /* via session: the stored hash of the cookie token */
    int64_t token_id;      /* via token */
    enum store_token_scope scope;
};

/* One request on its way through a worker. */
struct hub_call {
    struct hub *hub;
    struct http_exchange *ex;
    struct hub_identity id; /* filled by hub_identify() before the handler runs */
    char *path;             /* normalised path (percent-decoded unreserved chars, no dot
                               segments); owned by the call */
};

typedef void (*hub_work_fn)(struct hub_call *call);

/* Runs `fn` on the thread pool after identifying the caller, then finishes the exchange
 * on the loop thread. Takes ownership of `path` (freed with the call). */
void hub_call_queue(struct hub *hub, struct http_exchange *ex, char *path, hub_work_fn fn);

/* Resolves the session cookie or the Authorization header (`Bearer T` or `token T`) to
 * an identity. Worker thread. Returns 0 (possibly with via == HUB_AUTH_NONE), or -EIO
 * when the store failed. */
int hub_identify(struct hub *hub, const struct http_request *req, struct hub_identity *out);

/* The CSRF token for an identity's session (empty string for token callers). */
void hub_csrf_token(const struct hub *hub, const struct hub_identity *id, char out[AUTH_CSRF_LEN]);
/* True when a state-changing request carries proof it came from our own pages: always for
 * token callers; for session callers the X-XSRF-Token header or, for forms, the `_xsrf`
 * field (pass the decoded field, or NULL). Logs and counts failures. */
bool hub_csrf_ok(struct hub_call *call, const char *form_xsrf);

/* Response helpers; worker-safe (they only touch call->ex->res). */
void hub_respond_json(struct hub_call *call, int status, json_t *body /* stolen; NULL = no body */);
/* JSON error {"status": N, "message": "..."}. */
void hub_respond_error(struct hub_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void hub_respond_redirect(struct hub_call *call, int status, const char *location);
/* Adds Set-Cookie for the session (or clears it when token is NULL). */
void hub_set_session_cookie(struct hub_call *call, const char *token);

/* Adds the security headers every hub response carries (CSP, frame-ancestors, nosniff,
 * Referrer-Policy, no-store, HSTS over https). */
void hub_security_headers(const struct hub *hub, struct http_response *res);

/* Starts the maintenance job's work immediately (tests, start-up): refreshes gauges
 * and expires old sessions. Loop thread. */
void hub_maintenance_kick(struct hub *hub);

/* Milliseconds since the Unix epoch. */
int64_t hub_now_ms(void);
/* Formats ms since the epoch as ISO 8601 UTC with milliseconds ("2026-11-30T12:00:00.000Z"). */
void hub_iso8601(int64_t ms, char out[32]);

/* Runs the hub until SIGTERM/SIGINT; returns the process exit code. `cfg` is borrowed. */
int hub_serve(struct config *cfg);

#endif

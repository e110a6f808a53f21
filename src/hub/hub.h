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
struct proxy;
struct spawn_manager;
struct hub_identity_cache;
struct cidr;

/* A user's name with a stable address, handed to callbacks that outlive a request (the
 * proxy's activity callback of a WebSocket that stays open for hours). */
struct hub_user_ref {
    struct hub *hub;
    struct hub_user_ref *next; /* in its hash bucket */
    char name[40];
};

struct hub_metrics {
    struct metric *requests[6]; /* by status class: [1] 1xx … [5] 5xx, [0] other */
    struct metric_histogram *request_seconds;
    struct metric *logins_ok;
    struct metric *logins_failed;
    struct metric *logins_throttled;
    struct metric *csrf_failures;
    struct metric *users;    /* gauge, refreshed by the maintenance job and on changes */
    struct metric *sessions; /* gauge, refreshed by the maintenance job and on changes */
    struct metric *servers_running;
    struct metric *servers_starting;
    struct metric *spawn_failures;
    struct metric *servers_culled;
    struct metric_histogram *spawn_seconds;
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
    struct spawn_manager *spawner;         /* loop thread only */
    struct proxy *proxy;                   /* loop thread only */
    struct hub_identity_cache *identities; /* credential hash → identity, any thread */
    char *public_origin;                   /* scheme://host[:port] for the Origin check */
    /* Per-user origins (proxy.user_subdomains, src/hub/subdomain.c); ws_domain NULL when
     * workspaces are served under /user/NAME/ on the hub's origin. */
    const char *ws_domain;        /* borrowed from cfg */
    char *ws_origin_tail;         /* ".DOMAIN[:PORT]", what follows NAME in its origin */
    const char *ws_cookie;        /* "codehub-ws" or "__Host-codehub-ws" */
    const char *ws_state_cookie;  /* "codehub-ws-state" or "__Host-codehub-ws-state", + "-ID" */
    unsigned char ws_key[32];     /* MACs handoff codes and workspace cookies */
    struct cidr *trusted_proxies; /* parsed server.trusted_proxies */
    size_t n_trusted_proxies;
    struct hub_user_ref **user_refs; /* interned names for long-lived callbacks: a chained
                                        hash table of n_user_buckets (a power of two) */
    size_t n_user_buckets;
    size_t n_user_refs;
    /* Several replicas (src/hub/cluster.c): NULL listener when the store is not shared. */
    struct store_listener *listener;
    char replica_id[80];
    bool listener_was_up; /* a later "up" follows a gap: caches are re-read */
    struct metric *cluster_leader;
    struct metric *cluster_notifications;
    struct metric *cluster_reconnects;
    uv_signal_t sigterm, sigint;
    uv_timer_t maintenance;
    bool stopping;
    bool stopping_early; /* start-up failed after parts were made */
    int exit_code;
};

enum hub_auth_via { HUB_AUTH_NONE = 0, HUB_AUTH_SESSION, HUB_AUTH_TOKEN };

/* Several replicas on one store (src/hub/cluster.c). When the store is shared
 * (PostgreSQL), names this process (HOST-PID-RANDOM), makes the spawn manager one replica
 * among several (spawn_manager_share) and opens the store's listener, whose notifications
 * evict the identity cache and refresh server records, and whose leadership goes to the
 * spawn manager. Call after the spawn manager exists and before its restore. Returns 0
 * (also when the store is not shared: nothing to do) or -EINVAL after logging why. */
int hub_cluster_start(struct hub *hub);
/* Closes the listener (leadership ends with its connection). Safe to call when none. */
void hub_cluster_stop(struct hub *hub);

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
    /* Set by a worker handler to have the loop stop this user's server afterwards (for
     * example when the account was deleted). */
    char stop_server_after[40];
    /* Set by a worker handler to have the loop start call->target's server afterwards. */
    bool start_server_after;
    /* For handlers that act on another user's server: filled by their worker step. */
    char target[40];
    int64_t target_id; /* 0 when the target user does not exist */
};

typedef void (*hub_work_fn)(struct hub_call *call);
typedef void (*hub_loop_fn)(struct hub_call *call);

/* Runs `fn` on the thread pool after identifying the caller, then finishes the exchange
 * on the loop thread. Takes ownership of `path` (freed with the call). */
void hub_call_queue(struct hub *hub, struct http_exchange *ex, char *path, hub_work_fn fn);

/* Like hub_call_queue, but then runs `then` on the loop thread instead of finishing the
 * exchange. `fn` may be NULL (identify the caller only). `then` owns the exchange from
 * there on (finish it, or stream) and must release the call with hub_call_free(). */
void hub_call_queue_then(struct hub *hub, struct http_exchange *ex, char *path, hub_work_fn fn,
                         hub_loop_fn then);
void hub_call_free(struct hub_call *call);
/* hub_call_queue_then for a handler acting on user `target` (copied into call->target
 * before the worker runs). */
void hub_call_queue_target(struct hub *hub, struct http_exchange *ex, char *path,
                           const char *target, hub_work_fn fn, hub_loop_fn then);

/* The hash that identifies the credential a request carries (bearer token or session
 * cookie) in hex, or "" when it carries none; `*is_token` tells which. Loop-safe. */
void hub_credential_hash(const struct hub *hub, const struct http_request *req, char out[72],
                         bool *is_token);

/* Resolves the session cookie or the Authorization header (`Bearer T` or `token T`) to
 * an identity. Worker thread. Returns 0 (possibly with via == HUB_AUTH_NONE), or -EIO
 * when the store failed. */
int hub_identify(struct hub *hub, const struct http_request *req, struct hub_identity *out);
/* The same for a credential already hashed (hub_credential_hash(), or the hub session a
 * workspace cookie names): `hash` "" gives HUB_AUTH_NONE. Worker thread. */
int hub_identify_hash(struct hub *hub, const char *hash, bool is_token, struct hub_identity *out);

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

/* Returns the interned reference for `name` (created on first use, freed with the hub).
 * Loop thread only. */
struct hub_user_ref *hub_user_ref(struct hub *hub, const char *name);

/* Routing of /user/NAME/... (src/hub/workspace.c). The server's head hook: returns
 * HTTP_HEAD_DEFER for workspace requests (authorised and proxied, or refused), else
 * HTTP_HEAD_BUFFER. */
int hub_workspace_head(struct http_exchange *ex, void *data);

/* Server control endpoints (src/hub/servers.c): POST/DELETE /hub/api/users/NAME/server,
 * GET …/server/progress (server-sent events), POST /hub/api/cull. Returns true when `path`
 * is one of them and the exchange was taken. Loop thread. */
bool hub_servers_route(struct hub *hub, struct http_exchange *ex, char *path);

/* Runs the hub until SIGTERM/SIGINT; returns the process exit code. `cfg` is borrowed. */
int hub_serve(struct config *cfg);

#endif

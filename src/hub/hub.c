/* The hub's process: start-up, request routing, identity, worker dispatch, shutdown. */
#include "hub/hub.h"

#include "api/api.h"
#include "auth/password.h"
#include "auth/secret.h"
#include "auth/throttle.h"
#include "auth/token.h"
#include "core/alloc.h"
#include "core/cidr.h"
#include "core/log.h"
#include "http/proxy.h"
#include "http/cookie.h"
#include "http/url.h"
#include "hub/identity_cache.h"
#include "hub/metrics.h"
#include "hub/subdomain.h"
#include "spawn/spawner.h"
#include "web/assets.h"
#include "web/pages.h"

#include <assert.h>
#include <sodium.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HUB_MAGIC 0x48554221u
#define MAINTENANCE_EVERY_MS (60 * 1000)
/* Sessions and tokens record their last use at most this often: a write per request
 * would make every page view a database write. */
#define TOUCH_EVERY_MS (60 * 1000)
/* How long a credential's identity is trusted from memory on the proxy path. */
#define IDENTITY_TTL_MS (30 * 1000)
/* While the store cannot be reached, identities the cache learnt up to this long ago
 * still let their users into running workspaces (and nobody else: nothing new can be
 * learnt without the store). Revocations made before the outage have already evicted
 * their entries. */
#define STALE_IDENTITY_MAX_MS (15 * 60 * 1000)

static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                          "frame-ancestors 'none'; base-uri 'none'";

int64_t hub_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void hub_iso8601(int64_t ms, char out[32])
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char stamp[24];
    gmtime_r(&sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", stamp, (int)(ms % 1000));
}

void hub_security_headers(const struct hub *hub, struct http_response *res)
{
    http_response_header(res, "Content-Security-Policy", csp);
    http_response_header(res, "X-Frame-Options", "DENY");
    http_response_header(res, "X-Content-Type-Options", "nosniff");
    http_response_header(res, "Referrer-Policy", "same-origin");
    http_response_header(res, "Cross-Origin-Opener-Policy", "same-origin");
    if (hub->secure)
        http_response_header(res, "Strict-Transport-Security", "max-age=31536000");
}

/* --- identity ------------------------------------------------------------------------ */

static const char *bearer_token(const struct http_request *req)
{
    const char *auth = http_request_header(req, "Authorization");
    if (auth == NULL)
        return NULL;
    if (strncasecmp(auth, "Bearer ", 7) == 0)
        auth += 7;
    else if (strncasecmp(auth, "token ", 6) == 0)
        auth += 6;
    else
        return NULL;
    while (*auth == ' ')
        auth++;
    return *auth ? auth : NULL;
}

void hub_credential_hash(const struct hub *hub, const struct http_request *req, char out[72],
                         bool *is_token)
{
    out[0] = '\0';
    *is_token = false;
    const char *bearer = bearer_token(req);
    if (bearer != NULL) {
        auth_token_hash(bearer, out);
        *is_token = true;
        return;
    }
    const char *cookie = http_request_header(req, "Cookie");
    char *token = NULL;
    if (cookie == NULL || http_cookie_get(cookie, strlen(cookie), hub->session_cookie, &token) != 0)
        return;
    auth_token_hash(token, out);
    sodium_memzero(token, strlen(token));
    free(token);
}

int hub_identify(struct hub *hub, const struct http_request *req, struct hub_identity *out)
{
    char hash[72];
    bool is_token;
    hub_credential_hash(hub, req, hash, &is_token);
    return hub_identify_hash(hub, hash, is_token, out);
}

int hub_identify_hash(struct hub *hub, const char *hash, bool is_token, struct hub_identity *out)
{
    memset(out, 0, sizeof *out);
    int64_t now = hub_now_ms();
    if (hash[0] == '\0')
        return 0;
    /* The cache is read only on the proxy path (src/hub/workspace.c); the hub's own
     * pages and API always ask the store, so that a password changed or a session ended
     * by another process (the CLI, another replica) takes effect at once here. */
    if (is_token) {
        struct store_token tok = {0};
        int rc = store_token_get(hub->store, hash, now, &tok);
        if (rc == -ENOENT)
            return 0;
        if (rc != 0)
            return -EIO;
        out->via = HUB_AUTH_TOKEN;
        out->user_id = tok.user_id;
        snprintf(out->name, sizeof out->name, "%s", tok.user_name);
        out->user_admin = tok.user_admin;
        out->scope = tok.scope;
        out->admin = tok.user_admin && tok.scope == STORE_SCOPE_ADMIN;
        out->token_id = tok.id;
        if (now - tok.last_used_ms >= TOUCH_EVERY_MS)
            store_token_touch(hub->store, tok.id, now);
        store_token_clear(&tok);
    } else {
        struct store_session s = {0};
        int rc = store_session_get(hub->store, hash, now, &s);
        if (rc == -ENOENT)
            return 0;
        if (rc != 0)
            return -EIO;
        out->via = HUB_AUTH_SESSION;
        out->user_id = s.user_id;
        snprintf(out->name, sizeof out->name, "%s", s.user_name);
        out->user_admin = s.user_admin;
        out->admin = s.user_admin;
        snprintf(out->session_hash, sizeof out->session_hash, "%s", hash);
        if (now - s.last_seen_ms >= TOUCH_EVERY_MS)
            store_session_touch(hub->store, hash, now);
        store_session_clear(&s);
    }
    if (hub->identities != NULL)
        hub_identity_cache_put(hub->identities, hash, out, now);
    return 0;
}

void hub_csrf_token(const struct hub *hub, const struct hub_identity *id, char out[AUTH_CSRF_LEN])
{
    if (id->via != HUB_AUTH_SESSION) {
        out[0] = '\0';
        return;
    }
    auth_csrf_for_session(hub->secret, id->session_hash, out);
}

bool hub_csrf_ok(struct hub_call *call, const char *form_xsrf)
{
    if (call->id.via == HUB_AUTH_TOKEN)
        return true;
    const char *presented = form_xsrf;
    if (presented == NULL)
        presented = http_request_header(&call->ex->req, "X-XSRF-Token");
    if (call->id.via == HUB_AUTH_SESSION && presented != NULL &&
        auth_csrf_check(call->hub->secret, call->id.session_hash, presented))
        return true;
    metric_add(call->hub->metrics.csrf_failures, 1);
    log_event(LOG_WARN, "csrf.fail", "user", call->id.name[0] ? call->id.name : NULL, "addr",
              call->ex->req.remote_addr, "path", call->path, (const char *)NULL);
    return false;
}

/* --- responses ----------------------------------------------------------------------- */

void hub_respond_json(struct hub_call *call, int status, json_t *body)
{
    struct http_response *res = &call->ex->res;
    res->status = status;
    buf_reset(&res->body);
    if (body != NULL) {
        char *text = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(body);
        if (text == NULL) {
            res->status = 500;
            text = xstrdup("{\"status\":500,\"message\":\"could not encode response\"}");
        }
        http_response_header(res, "Content-Type", "application/json");
        buf_append_str(&res->body, text);
        free(text);
    }
}

void hub_respond_error(struct hub_call *call, int status, const char *fmt, ...)
{
    struct buf msg = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&msg, fmt, ap);
    va_end(ap);
    json_t *body = json_pack("{s:i, s:s}", "status", status, "message", msg.data ? msg.data : "");
    buf_free(&msg);
    if (status == 503)
        http_response_header(&call->ex->res, "Retry-After", "1");
    hub_respond_json(call, status, body);
}

void hub_respond_redirect(struct hub_call *call, int status, const char *location)
{
    struct http_response *res = &call->ex->res;
    res->status = status;
    buf_reset(&res->body);
    http_response_header(res, "Location", location);
}

void hub_set_session_cookie(struct hub_call *call, const char *token)
{
    struct hub *hub = call->hub;
    struct http_cookie_attrs attrs = {
        .path = "/",
        .max_age = token ? -1 : 0,
        .http_only = true,
        .secure = hub->secure,
        .same_site = "Lax",
        .domain = NULL,
    };
    char *value = http_cookie_format(hub->session_cookie, token ? token : "", &attrs);
    if (value != NULL)
        http_response_header(&call->ex->res, "Set-Cookie", value);
    free(value);
}

/* --- worker dispatch --------------------------------------------------------------------- */

struct hub_job {
    struct hub_call call; /* first: hub_call_free() converts back */
    uv_work_t work;
    hub_work_fn fn;
    hub_loop_fn then;
};

static void job_run(uv_work_t *work)
{
    struct hub_job *job = work->data;
    struct hub_call *call = &job->call;
    if (hub_identify(call->hub, &call->ex->req, &call->id) != 0) {
        hub_respond_error(call, 503, "store unavailable");
        job->then = NULL;
        return;
    }
    if (call->id.via != HUB_AUTH_NONE)
        call->ex->log_user = arena_strdup(&call->ex->arena, call->id.name);
    if (job->fn != NULL)
        job->fn(call);
}

void hub_call_free(struct hub_call *call)
{
    struct hub_job *job = (struct hub_job *)call;
    free(call->path);
    free(job);
}

static void job_done(uv_work_t *work, int status)
{
    struct hub_job *job = work->data;
    struct hub_call *call = &job->call;
    struct http_exchange *ex = call->ex;
    if (call->stop_server_after[0] != '\0' && call->hub->spawner != NULL)
        spawn_stop(call->hub->spawner, call->stop_server_after);
    if (call->start_server_after && call->target_id > 0 && call->hub->spawner != NULL) {
        int rc = spawn_start(call->hub->spawner, call->target_id, call->target);
        if (rc < 0)
            log_event(LOG_WARN, "server.start_refused", "user", call->target, "error",
                      strerror(-rc), (const char *)NULL);
    }
    if (status == 0 && job->then != NULL) {
        job->then(call);
        return;
    }
    if (status != 0)
        http_response_set(&ex->res, 503, "text/plain; charset=utf-8", "busy\n", 5);
    hub_call_free(call);
    http_exchange_finish(ex);
}

void hub_call_queue_then(struct hub *hub, struct http_exchange *ex, char *path, hub_work_fn fn,
                         hub_loop_fn then)
{
    hub_call_queue_target(hub, ex, path, "", fn, then);
}

void hub_call_queue_target(struct hub *hub, struct http_exchange *ex, char *path,
                           const char *target, hub_work_fn fn, hub_loop_fn then)
{
    struct hub_job *job = xcalloc(1, sizeof *job);
    snprintf(job->call.target, sizeof job->call.target, "%s", target);
    job->work.data = job;
    job->call.hub = hub;
    job->call.ex = ex;
    job->call.path = path;
    job->fn = fn;
    job->then = then;
    if (uv_queue_work(hub->loop, &job->work, job_run, job_done) != 0) {
        hub_call_free(&job->call);
        http_response_set(&ex->res, 503, "text/plain; charset=utf-8", "busy\n", 5);
        http_exchange_finish(ex);
    }
}

void hub_call_queue(struct hub *hub, struct http_exchange *ex, char *path, hub_work_fn fn)
{
    hub_call_queue_then(hub, ex, path, fn, NULL);
}

/* --- routing ------------------------------------------------------------------------- */

static bool path_is(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static void respond_text(struct http_exchange *ex, int status, const char *text)
{
    http_response_set(&ex->res, status, "text/plain; charset=utf-8", text, strlen(text));
    http_response_header(&ex->res, "Cache-Control", "no-store");
}

static void serve_static(struct http_exchange *ex, const char *path)
{
    /* Only files under static/ are public; templates are not. */
    char name[256];
    snprintf(name, sizeof name, "static/%s", path + strlen("/hub/static/"));
    const struct web_asset *a = web_asset_find(name);
    if (a == NULL || (ex->req.method != HTTP_GET && ex->req.method != HTTP_HEAD)) {
        respond_text(ex, 404, "not found\n");
        http_exchange_finish(ex);
        return;
    }
    http_response_set(&ex->res, 200, a->content_type, a->data, a->len);
    http_response_header(&ex->res, "Cache-Control", "public, max-age=300");
    http_exchange_finish(ex);
}

static void serve_metrics(struct hub_call *call)
{
    struct http_response *res = &call->ex->res;
    if (call->id.via == HUB_AUTH_NONE) {
        hub_respond_error(call, 401, "authentication required: an admin token or session");
        return;
    }
    if (!call->id.admin) {
        hub_respond_error(call, 403, "metrics are for admins");
        return;
    }
    res->status = 200;
    buf_reset(&res->body);
    metrics_render(&res->body);
    http_response_header(res, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
}

static void hub_handle(struct http_exchange *ex, void *data)
{
    struct hub *hub = data;
    assert(hub->magic == HUB_MAGIC);
    struct http_request *req = &ex->req;
    char *path = NULL;

    hub_security_headers(hub, &ex->res);
    http_response_header(&ex->res, "Cache-Control", "no-store");
    if (http_path_normalize(req->path, &path) != 0) {
        respond_text(ex, 400, "bad request path\n");
        http_exchange_finish(ex);
        return;
    }
    if (req->upgrade) {
        free(path);
        respond_text(ex, 400, "WebSocket upgrades are only accepted for workspaces\n");
        http_exchange_finish(ex);
        return;
    }
    if (strcmp(path, "/hub/health") == 0) {
        free(path);
        if (hub->stopping)
            respond_text(ex, 503, "stopping\n");
        else
            http_response_set(&ex->res, 200, "application/json", "{\"status\":\"ok\"}", 15);
        http_exchange_finish(ex);
        return;
    }
    if (strncmp(path, "/hub/static/", 12) == 0) {
        serve_static(ex, path);
        free(path);
        return;
    }
    if (strcmp(path, "/hub/metrics") == 0) {
        hub_call_queue(hub, ex, path, serve_metrics);
        return;
    }
    if (hub_servers_route(hub, ex, path))
        return;
    if (path_is(path, "/hub/api")) {
        hub_call_queue(hub, ex, path, api_handle);
        return;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/hub") == 0 || strcmp(path, "/hub/") == 0) {
        free(path);
        ex->res.status = 302;
        http_response_header(&ex->res, "Location", "/hub/home");
        http_exchange_finish(ex);
        return;
    }
    if (path_is(path, "/hub") || path_is(path, "/user")) {
        hub_call_queue(hub, ex, path, web_handle);
        return;
    }
    free(path);
    web_respond_error_page(ex, 404, "There is nothing at this address.");
    http_exchange_finish(ex);
}

static void hub_request_done(struct http_exchange *ex, uint64_t duration_ns, void *data)
{
    struct hub *hub = data;
    int status = ex->res.status;
    int cls = status / 100;
    metric_add(hub->metrics.requests[cls >= 1 && cls <= 5 ? cls : 0], 1);
    metric_histogram_observe(hub->metrics.request_seconds, (double)duration_ns / 1e9);
    if (!hub->cfg->log.requests)
        return;
    char st[8], ms[32];
    snprintf(st, sizeof st, "%d", status);
    snprintf(ms, sizeof ms, "%.3f", (double)duration_ns / 1e6);
    /* The query string is left out: it may carry secrets such as OAuth codes. */
    log_event(LOG_INFO, "request", "method", ex->req.method_name, "path", ex->req.path, "status",
              st, "ms", ms, "addr", ex->req.remote_addr, "user", ex->log_user, (const char *)NULL);
}

/* --- maintenance ------------------------------------------------------------------------ */

struct maintenance_job {
    uv_work_t work;
    struct hub *hub;
    size_t users, sessions;
    int rc;
};

static void maintenance_run(uv_work_t *work)
{
    struct maintenance_job *job = work->data;
    struct store *st = job->hub->store;
    int64_t now = hub_now_ms();
    size_t removed = 0;
    hub_identity_cache_sweep(job->hub->identities, now);
    job->rc = store_expire(st, now, &removed);
    if (job->rc == 0)
        job->rc = store_user_count(st, &job->users);
    if (job->rc == 0)
        job->rc = store_session_count(st, now, &job->sessions);
}

static void maintenance_done(uv_work_t *work, int status)
{
    struct maintenance_job *job = work->data;
    if (status == 0 && job->rc == 0) {
        metric_set(job->hub->metrics.users, (int64_t)job->users);
        metric_set(job->hub->metrics.sessions, (int64_t)job->sessions);
    }
    free(job);
}

void hub_maintenance_kick(struct hub *hub)
{
    struct maintenance_job *job = xcalloc(1, sizeof *job);
    job->work.data = job;
    job->hub = hub;
    if (uv_queue_work(hub->loop, &job->work, maintenance_run, maintenance_done) != 0)
        free(job);
}

static void maintenance_tick(uv_timer_t *timer)
{
    hub_maintenance_kick(timer->data);
}

/* --- start and stop ------------------------------------------------------------------------ */

/* Proxy statistics are plain counters owned by the loop thread; a scrape reads them
 * from a worker, which can see a value a moment old but never a torn one (aligned 64-bit
 * loads). */
static double proxy_stat_requests(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->requests : 0;
}

static double proxy_stat_bytes_up(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->bytes_up : 0;
}

static double proxy_stat_bytes_down(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->bytes_down : 0;
}

static double proxy_stat_websockets(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->websockets_open : 0;
}

static double proxy_stat_connections(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->connections : 0;
}

static double proxy_stat_reused(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->reused : 0;
}

static double proxy_stat_waited(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->waited : 0;
}

static double proxy_stat_wait_timeouts(void *data)
{
    struct hub *hub = data;
    return hub->proxy ? (double)proxy_stats(hub->proxy)->wait_timeouts : 0;
}

static void register_metrics(struct hub *hub)
{
    static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    struct hub_metrics *m = &hub->metrics;
    for (int i = 0; i < 6; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "class=\"%s\"", classes[i]);
        m->requests[i] = metrics_counter("codehub_http_requests_total",
                                         "HTTP requests answered, by status class", labels);
    }
    m->request_seconds =
        metrics_histogram("codehub_http_request_duration_seconds",
                          "Time from a complete request head to the response written", bounds,
                          sizeof bounds / sizeof bounds[0]);
    m->logins_ok =
        metrics_counter("codehub_logins_total", "Login attempts by outcome", "result=\"ok\"");
    m->logins_failed =
        metrics_counter("codehub_logins_total", "Login attempts by outcome", "result=\"failed\"");
    m->logins_throttled = metrics_counter("codehub_logins_total", "Login attempts by outcome",
                                          "result=\"throttled\"");
    m->csrf_failures =
        metrics_counter("codehub_csrf_failures_total",
                        "State-changing requests refused for a missing or wrong XSRF token", NULL);
    m->users = metrics_gauge("codehub_users", "User accounts", NULL);
    m->sessions = metrics_gauge("codehub_sessions", "Unexpired login sessions", NULL);
    m->servers_running = metrics_gauge("codehub_servers_running", "Servers running", NULL);
    m->servers_starting = metrics_gauge("codehub_servers_starting", "Servers starting", NULL);
    m->spawn_failures =
        metrics_counter("codehub_spawn_failures_total", "Server starts that failed", NULL);
    m->servers_culled =
        metrics_counter("codehub_servers_culled_total", "Servers stopped for being idle", NULL);
    static const double spawn_bounds[] = {0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300};
    m->spawn_seconds = metrics_histogram(
        "codehub_spawn_duration_seconds", "Time from a start request to the server answering",
        spawn_bounds, sizeof spawn_bounds / sizeof spawn_bounds[0]);
    metrics_counter_fn("codehub_proxy_requests_total", "Requests forwarded to workspaces",
                       proxy_stat_requests, hub);
    metrics_counter_fn("codehub_proxy_bytes_up_total", "Bytes forwarded to workspaces",
                       proxy_stat_bytes_up, hub);
    metrics_counter_fn("codehub_proxy_bytes_down_total", "Bytes forwarded from workspaces",
                       proxy_stat_bytes_down, hub);
    metrics_gauge_fn("codehub_proxy_websockets_open", "WebSockets open to workspaces",
                     proxy_stat_websockets, hub);
    metrics_counter_fn("codehub_proxy_upstream_connections_total",
                       "Connections opened to workspace servers", proxy_stat_connections, hub);
    metrics_counter_fn("codehub_proxy_upstream_reused_total",
                       "Requests sent on a kept-alive workspace connection", proxy_stat_reused,
                       hub);
    metrics_counter_fn("codehub_proxy_upstream_waited_total",
                       "Requests that waited for a workspace connection (upstream_max_conns)",
                       proxy_stat_waited, hub);
    metrics_counter_fn("codehub_proxy_upstream_busy_total",
                       "Requests answered 503 after waiting connect_timeout for a connection",
                       proxy_stat_wait_timeouts, hub);
}

static void spawner_closed(void *data)
{
    (void)data;
}

static void proxy_closed(void *data)
{
    (void)data;
}

static void restore_done(void *data, int status)
{
    int *flag = data;
    if (status != 0)
        log_event(LOG_WARN, "hub.restore_incomplete", "error", strerror(-status),
                  (const char *)NULL);
    *flag = 0;
}

static int load_trusted_proxies(struct hub *hub)
{
    const struct config_list *list = &hub->cfg->server.trusted_proxies;
    hub->trusted_proxies = xcalloc(list->n ? list->n : 1, sizeof *hub->trusted_proxies);
    for (size_t i = 0; i < list->n; i++) {
        if (cidr_parse(list->items[i], &hub->trusted_proxies[i]) != 0) {
            log_event(LOG_ERROR, "hub.bad_trusted_proxy", "value", list->items[i],
                      (const char *)NULL);
            return -EINVAL;
        }
    }
    hub->n_trusted_proxies = list->n;
    return 0;
}

static void http_stopped(void *data)
{
    struct hub *hub = data;
    hub_cluster_stop(hub);
    if (hub->spawner != NULL)
        spawn_manager_close(hub->spawner, spawner_closed, hub);
    if (hub->proxy != NULL)
        proxy_close(hub->proxy, proxy_closed, hub);
    uv_close((uv_handle_t *)&hub->sigterm, NULL);
    uv_close((uv_handle_t *)&hub->sigint, NULL);
    uv_close((uv_handle_t *)&hub->maintenance, NULL);
    log_event(LOG_INFO, "hub.stopped", (const char *)NULL);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct hub *hub = sig->data;
    if (hub->stopping) {
        log_event(LOG_WARN, "hub.stop_again", "signal", strsignal(signum), (const char *)NULL);
        return;
    }
    hub->stopping = true;
    log_event(LOG_INFO, "hub.stopping", "signal", strsignal(signum), (const char *)NULL);
    uv_timer_stop(&hub->maintenance);
    http_server_shutdown(hub->http, (uint64_t)hub->cfg->server.shutdown_grace * 1000, http_stopped,
                         hub);
}

/* Gives every admin named in the config the admin flag (accounts that do not exist yet
 * get it when they sign up). */
static void sync_config_admins(struct hub *hub)
{
    const struct config_list *admins = &hub->cfg->auth.admin_users;
    for (size_t i = 0; i < admins->n; i++) {
        int rc = store_user_set_admin(hub->store, admins->items[i], true);
        if (rc != 0 && rc != -ENOENT)
            log_event(LOG_WARN, "hub.admin_sync_failed", "user", admins->items[i],
                      (const char *)NULL);
    }
}

/* Reads the hub secret from auth.secret_file when one is configured. The meta table's
 * secret is then neither read nor replaced, so emptying the key brings the old one back. */
static int load_secret_file(struct hub *hub, const char *path)
{
    char err[512];
    unsigned mode = 0;
    int rc = auth_secret_from_file(path, hub->secret, &mode, err, sizeof err);
    if (rc != 0) {
        log_event(LOG_ERROR, "hub.secret_file_invalid", "file", path, "error", err,
                  (const char *)NULL);
        return rc;
    }
    if ((mode & 0004) != 0) {
        /* A Kubernetes Secret volume is 0644 unless its defaultMode says otherwise: warn,
         * since refusing would break the default chart, but say how to close it. */
        char text[8];
        snprintf(text, sizeof text, "%04o", mode & 07777u);
        log_event(LOG_WARN, "hub.secret_file_mode", "file", path, "mode", text, "hint",
                  "readable by others; chmod 0600, or 0440 for a group (the volume's defaultMode)",
                  (const char *)NULL);
    }
    log_event(LOG_INFO, "hub.secret_from_file", "file", path, (const char *)NULL);
    return 0;
}

static int load_secret(struct hub *hub)
{
    char fresh[65];
    char *stored = NULL;
    if (hub->cfg->auth.secret_file != NULL && hub->cfg->auth.secret_file[0] != '\0')
        return load_secret_file(hub, hub->cfg->auth.secret_file);
    auth_secret_generate(fresh);
    int rc = store_meta_get_or_set(hub->store, "cookie_secret", fresh, &stored);
    sodium_memzero(fresh, sizeof fresh);
    if (rc == 0)
        rc = auth_secret_decode(stored, hub->secret);
    if (stored != NULL) {
        sodium_memzero(stored, strlen(stored));
        free(stored);
    }
    return rc;
}

int hub_serve(struct config *cfg)
{
    struct hub hub_storage;
    struct hub *hub = &hub_storage;
    memset(hub, 0, sizeof *hub);
    hub->magic = HUB_MAGIC;
    hub->cfg = cfg;
    hub->exit_code = 1;

    /* Request handlers, Argon2id hashes and the store all share the thread pool. */
    if (getenv("UV_THREADPOOL_SIZE") == NULL)
        setenv("UV_THREADPOOL_SIZE", "8", 1);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (RLIMIT_FSIZE) reached by the store is a failed write (EFBIG) that
     * the store reports, not a reason to die. */
    signal(SIGXFSZ, SIG_IGN);
    hub->loop = uv_default_loop();

    char *err = NULL;
    char *host = NULL;
    int port = 0;
    hub->store = store_open_pool(cfg->store.url, cfg->server.data_dir, cfg->store.password_file,
                                 (unsigned)cfg->store.pool_size, &err);
    if (hub->store == NULL) {
        log_event(LOG_ERROR, "hub.store_failed", "error", err ? err : "unknown",
                  (const char *)NULL);
        free(err);
        goto out;
    }
    if (load_secret(hub) != 0) {
        log_event(LOG_ERROR, "hub.secret_failed", (const char *)NULL);
        goto out;
    }
    sync_config_admins(hub);
    hub->secure = strncmp(cfg->server.public_url, "https://", 8) == 0;
    hub->session_cookie = hub->secure ? "__Host-codehub-session" : "codehub-session";
    hub->xsrf_cookie = hub->secure ? "__Host-codehub-xsrf" : "codehub-xsrf";
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uv_sem_init(&hub->hash_slots, cpus > 1 ? (unsigned)cpus : 1);
    hub->throttle = auth_throttle_new((unsigned)cfg->auth.throttle_free_attempts,
                                      cfg->auth.throttle_max_delay * 1000, 100000);
    register_metrics(hub);
    hub->identities = hub_identity_cache_new(8192, IDENTITY_TTL_MS, STALE_IDENTITY_MAX_MS);
    if (load_trusted_proxies(hub) != 0)
        goto out;

    struct spawn_metrics sm = {
        .running = hub->metrics.servers_running,
        .starting = hub->metrics.servers_starting,
        .failures = hub->metrics.spawn_failures,
        .culled = hub->metrics.servers_culled,
        .duration = hub->metrics.spawn_seconds,
    };
    hub->spawner = spawn_manager_new(hub->loop, cfg, hub->store, &sm, &err);
    if (hub->spawner == NULL) {
        log_event(LOG_ERROR, "hub.spawner_failed", "error", err ? err : "unknown",
                  (const char *)NULL);
        free(err);
        goto out;
    }
    if (hub_cluster_start(hub) != 0)
        goto out;
    /* Re-attach servers that kept running while no hub was there before taking any
     * request, so that no workspace request ever sees a half-known state. */
    int restored = 1;
    if (spawn_manager_restore(hub->spawner, restore_done, &restored) == 0) {
        while (restored == 1)
            uv_run(hub->loop, UV_RUN_ONCE);
    }
    struct proxy_options popt = {
        .connect_timeout_ms = (uint64_t)cfg->proxy.connect_timeout * 1000,
        .response_timeout_ms = (uint64_t)cfg->proxy.response_timeout * 1000,
        .websocket_timeout_ms = (uint64_t)cfg->proxy.websocket_timeout * 1000,
        .body_timeout_ms = (uint64_t)cfg->http.body_timeout * 1000,
        .keepalive_per_upstream = (size_t)cfg->proxy.upstream_keepalive,
        .max_conns_per_upstream = (size_t)cfg->proxy.upstream_max_conns,
    };
    hub->proxy = proxy_new(hub->loop, &popt);

    struct http_server_options opt = {
        .parse = {.max_head = (size_t)cfg->http.max_head_size,
                  .max_headers = (size_t)cfg->http.max_headers,
                  .max_url = (size_t)cfg->http.max_url_length},
        .max_body = (size_t)cfg->http.max_body_size,
        .head_timeout_ms = (uint64_t)cfg->http.head_timeout * 1000,
        .body_timeout_ms = (uint64_t)cfg->http.body_timeout * 1000,
        .idle_timeout_ms = (uint64_t)cfg->http.idle_timeout * 1000,
        .max_connections = (size_t)cfg->http.max_connections,
    };
    hub->http = http_server_new(hub->loop, &opt, hub_handle, hub_request_done, hub);
    http_server_set_head_handler(hub->http, hub_workspace_head);
    if (config_parse_bind(cfg->server.bind, &host, &port) != 0) {
        log_event(LOG_ERROR, "hub.bad_bind", "bind", cfg->server.bind, (const char *)NULL);
        goto out;
    }
    int rc = http_server_listen(hub->http, host, port);
    if (rc != 0) {
        log_event(LOG_ERROR, "hub.listen_failed", "bind", cfg->server.bind, "error",
                  uv_strerror(rc), (const char *)NULL);
        goto out;
    }

    uv_signal_init(hub->loop, &hub->sigterm);
    uv_signal_init(hub->loop, &hub->sigint);
    hub->sigterm.data = hub->sigint.data = hub;
    uv_signal_start(&hub->sigterm, on_signal, SIGTERM);
    uv_signal_start(&hub->sigint, on_signal, SIGINT);
    uv_timer_init(hub->loop, &hub->maintenance);
    hub->maintenance.data = hub;
    uv_timer_start(&hub->maintenance, maintenance_tick, 0, MAINTENANCE_EVERY_MS);

    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", http_server_port(hub->http));
    if (cfg->server.public_url[0] == '\0') {
        /* Port 0 in the bind: the public URL is known only now. */
        free(cfg->server.public_url);
        bool v6 = strchr(host, ':') != NULL;
        cfg->server.public_url =
            xasprintf("http://%s%s%s:%s", v6 ? "[" : "",
                      strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host, v6 ? "]" : "", portbuf);
    }
    hub->public_origin = xstrdup(cfg->server.public_url);
    hub_subdomain_setup(hub);
    if (hub->listener != NULL) {
        /* Operators see each replica under the address it really serves on. */
        char *where = xasprintf("%s:%s", host, portbuf);
        spawn_manager_set_address(hub->spawner, where);
        free(where);
    }
    log_event(LOG_INFO, "hub.listening", "bind", host, "port", portbuf, "url",
              cfg->server.public_url, "data_dir", cfg->server.data_dir, (const char *)NULL);

    uv_run(hub->loop, UV_RUN_DEFAULT);
    hub->exit_code = 0;

out:
    if (hub->http != NULL && !hub->stopping) {
        /* Listening failed: nothing is connected, but the listener handle may be open. */
        hub->stopping = true;
        hub->stopping_early = true;
        http_server_shutdown(hub->http, 0, NULL, NULL);
        uv_run(hub->loop, UV_RUN_DEFAULT);
    } else if (hub->http == NULL) {
        hub->stopping_early = true;
    }
    if (hub->stopping_early) {
        hub_cluster_stop(hub);
        if (hub->spawner != NULL)
            spawn_manager_close(hub->spawner, spawner_closed, hub);
        if (hub->proxy != NULL)
            proxy_close(hub->proxy, proxy_closed, hub);
        uv_run(hub->loop, UV_RUN_DEFAULT);
    }
    http_server_free(hub->http);
    free(host);
    hub_identity_cache_free(hub->identities);
    free(hub->trusted_proxies);
    hub_subdomain_cleanup(hub);
    free(hub->public_origin);
    for (size_t i = 0; i < hub->n_user_buckets; i++) {
        struct hub_user_ref *ref = hub->user_refs[i];
        while (ref != NULL) {
            struct hub_user_ref *next = ref->next;
            free(ref);
            ref = next;
        }
    }
    free(hub->user_refs);
    if (hub->throttle != NULL) {
        auth_throttle_free(hub->throttle);
        uv_sem_destroy(&hub->hash_slots);
    }
    if (hub->store != NULL)
        store_close(hub->store);
    metrics_reset_for_tests();
    uv_loop_close(hub->loop);
    return hub->exit_code;
}

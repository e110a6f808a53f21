/* Starting and stopping servers through the REST API, and the progress stream.
 *
 * The spawn manager lives on the loop thread, so these endpoints identify the caller
 * (and look up the target user) on a worker, then continue on the loop. */
#include "hub/hub.h"

#include "core/alloc.h"
#include "core/log.h"
#include "hub/metrics.h"
#include "spawn/spawner.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define START_WAIT_MS 10000 /* like JupyterHub's slow_spawn_timeout: 201 if ready by then */
#define STOP_WAIT_MS 5000   /* like slow_stop_timeout: 204 if stopped by then */
#define STOP_POLL_MS 10

enum server_op { OP_START, OP_STOP, OP_PROGRESS, OP_CULL };

/* --- worker step: who is asking, and for whom ---------------------------------------- */

static void load_target(struct hub_call *call)
{
    struct store_user u = {0};
    if (call->target[0] == '\0')
        return;
    int rc = store_user_get(call->hub->store, call->target, &u);
    if (rc == 0)
        call->target_id = u.id;
    else if (rc != -ENOENT)
        call->target_id = -1;
    store_user_clear(&u);
}

static bool allowed(struct hub_call *call)
{
    if (call->id.via == HUB_AUTH_NONE) {
        hub_respond_error(call, 401, "authentication required");
        return false;
    }
    if (call->target_id < 0) {
        hub_respond_error(call, 503, "store unavailable");
        return false;
    }
    bool self = strcmp(call->id.name, call->target) == 0;
    if (call->target_id == 0 || (!self && !call->id.admin)) {
        /* Like JupyterHub: no hint that a name exists to those who may not see it. */
        hub_respond_error(call, 404, "no such user: %s", call->target);
        return false;
    }
    return true;
}

static void finish(struct hub_call *call)
{
    struct http_exchange *ex = call->ex;
    hub_call_free(call);
    http_exchange_finish(ex);
}

/* --- start ---------------------------------------------------------------------------- */

struct start_wait {
    struct hub_call *call;
    struct spawn_subscription *sub;
    uv_timer_t timer;
    bool answered;
    int outcome; /* 0 pending, 1 ready, -1 failed */
    char *message;
};

static void start_wait_closed(uv_handle_t *handle)
{
    struct start_wait *w = handle->data;
    free(w->message);
    free(w);
}

static void start_wait_answer(struct start_wait *w)
{
    if (w->answered)
        return;
    w->answered = true;
    struct hub_call *call = w->call;
    if (w->outcome > 0) {
        json_t *body = json_pack("{s:s, s:s}", "status", "ready", "url", "");
        char url[64];
        snprintf(url, sizeof url, "/user/%s/", call->target);
        json_object_set_new(body, "url", json_string(url));
        hub_respond_json(call, 201, body);
    } else if (w->outcome < 0) {
        hub_respond_error(call, 500, "%s", w->message ? w->message : "the server failed to start");
    } else {
        hub_respond_json(call, 202, NULL);
    }
    finish(call);
    uv_timer_stop(&w->timer);
    /* The subscription may be the caller of this function: release it from the next
     * loop turn by closing the timer first, whose close callback frees the rest. */
    spawn_unsubscribe(w->sub);
    w->sub = NULL;
    uv_close((uv_handle_t *)&w->timer, start_wait_closed);
}

static void start_timer_cb(uv_timer_t *timer)
{
    start_wait_answer(timer->data);
}

static void start_event(void *data, const struct spawn_event *ev)
{
    struct start_wait *w = data;
    if (w->answered || (!ev->ready && !ev->failed))
        return;
    w->outcome = ev->ready ? 1 : -1;
    if (ev->failed)
        w->message = xstrdup(ev->message ? ev->message : "");
    /* Answer from a timer callback, not from inside the manager's callback. */
    uv_timer_start(&w->timer, start_timer_cb, 0, 0);
}

static void start_server(struct hub_call *call)
{
    struct hub *hub = call->hub;
    struct http_request *req = &call->ex->req;
    /* JupyterHub's body: {"profile": "NAME"} picks a kube.profiles entry (user_options). */
    json_t *body = NULL;
    const char *profile = NULL;
    if (req->body.len > 0) {
        json_error_t jerr;
        body = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
        json_t *v = body != NULL ? json_object_get(body, "profile") : NULL;
        if (body == NULL || !json_is_object(body) || (v != NULL && !json_is_string(v))) {
            json_decref(body);
            hub_respond_error(call, 400, "expected a JSON object such as {\"profile\": \"name\"}");
            finish(call);
            return;
        }
        profile = json_string_value(v);
    }
    int rc = spawn_start_profile(hub->spawner, call->target_id, call->target, profile);
    if (rc == -EINVAL) {
        hub_respond_error(call, 400, "unknown profile '%s'", profile != NULL ? profile : "");
        json_decref(body);
        finish(call);
        return;
    }
    json_decref(body);
    switch (rc) {
    case 0:
        hub_respond_error(call, 400, "%s's server is already running", call->target);
        finish(call);
        return;
    case 1:
        break;
    case -EBUSY:
        http_response_header(&call->ex->res, "Retry-After", "5");
        hub_respond_error(call, 429, "too many servers are starting; try again in a few seconds");
        finish(call);
        return;
    case -EDQUOT:
        http_response_header(&call->ex->res, "Retry-After", "30");
        hub_respond_error(call, 429, "the limit of active servers is reached");
        finish(call);
        return;
    case -EALREADY:
        hub_respond_error(call, 400, "%s's server is stopping; try again shortly", call->target);
        finish(call);
        return;
    default:
        hub_respond_error(call, 500, "could not start the server: %s", strerror(-rc));
        finish(call);
        return;
    }
    log_event(LOG_INFO, "server.start_requested", "user", call->target, "actor", call->id.name,
              (const char *)NULL);
    struct start_wait *w = xcalloc(1, sizeof *w);
    w->call = call;
    uv_timer_init(hub->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, start_timer_cb, START_WAIT_MS, 0);
    w->sub = spawn_subscribe(hub->spawner, call->target, start_event, w);
}

/* --- stop ----------------------------------------------------------------------------- */

struct stop_wait {
    struct hub_call *call;
    uv_timer_t timer;
    uint64_t waited_ms;
};

static void stop_wait_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void stop_poll(uv_timer_t *timer)
{
    struct stop_wait *w = timer->data;
    struct hub_call *call = w->call;
    enum spawn_state st = spawn_state_of(call->hub->spawner, call->target);
    w->waited_ms += STOP_POLL_MS;
    bool done = st == SPAWN_STOPPED || st == SPAWN_FAILED;
    if (!done && w->waited_ms < STOP_WAIT_MS)
        return;
    hub_respond_json(call, done ? 204 : 202, NULL);
    finish(call);
    uv_timer_stop(timer);
    uv_close((uv_handle_t *)timer, stop_wait_closed);
}

static void stop_server(struct hub_call *call)
{
    int rc = spawn_stop(call->hub->spawner, call->target);
    if (rc == 0) {
        hub_respond_json(call, 204, NULL);
        finish(call);
        return;
    }
    log_event(LOG_INFO, "server.stop_requested", "user", call->target, "actor", call->id.name,
              (const char *)NULL);
    struct stop_wait *w = xcalloc(1, sizeof *w);
    w->call = call;
    uv_timer_init(call->hub->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, stop_poll, STOP_POLL_MS, STOP_POLL_MS);
}

/* --- progress (server-sent events) ------------------------------------------------------ */

struct progress_stream {
    struct hub_call *call;
    struct spawn_subscription *sub;
    uv_idle_t closer; /* ends the stream outside the manager's callback */
    bool ended;
};

static void progress_closed(uv_handle_t *handle)
{
    struct progress_stream *ps = handle->data;
    free(ps);
}

static void progress_end(uv_idle_t *idle)
{
    struct progress_stream *ps = idle->data;
    uv_idle_stop(idle);
    if (ps->sub != NULL)
        spawn_unsubscribe(ps->sub);
    ps->sub = NULL;
    struct http_exchange *ex = ps->call->ex;
    hub_call_free(ps->call);
    http_exchange_end(ex, true);
    uv_close((uv_handle_t *)idle, progress_closed);
}

static void progress_schedule_end(struct progress_stream *ps)
{
    if (ps->ended)
        return;
    ps->ended = true;
    uv_idle_start(&ps->closer, progress_end);
}

static void progress_event(void *data, const struct spawn_event *ev)
{
    struct progress_stream *ps = data;
    if (ps->ended)
        return;
    json_t *o = json_pack("{s:i, s:s, s:b, s:b}", "progress", ev->progress, "message",
                          ev->message ? ev->message : "", "ready", ev->ready, "failed", ev->failed);
    if (ev->url != NULL)
        json_object_set_new(o, "url", json_string(ev->url));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    struct buf line = BUF_INIT;
    buf_appendf(&line, "data: %s\n\n", text);
    free(text);
    http_exchange_write_body(ps->call->ex, line.data, line.len, NULL, NULL);
    buf_free(&line);
    if (ev->ready || ev->failed)
        progress_schedule_end(ps);
}

static void progress_abort(void *data)
{
    progress_schedule_end(data);
}

static void progress_stream(struct hub_call *call)
{
    struct buf headers = BUF_INIT;
    buf_append_str(&headers, "Content-Type: text/event-stream\r\n"
                             "Cache-Control: no-store\r\n"
                             "X-Accel-Buffering: no\r\n"
                             "X-Content-Type-Options: nosniff\r\n");
    if (http_exchange_write_head(call->ex, 200, &headers, -1) != 0) {
        buf_free(&headers);
        struct http_exchange *ex = call->ex;
        hub_call_free(call);
        http_exchange_end(ex, false);
        return;
    }
    buf_free(&headers);
    struct progress_stream *ps = xcalloc(1, sizeof *ps);
    ps->call = call;
    uv_idle_init(call->hub->loop, &ps->closer);
    ps->closer.data = ps;
    http_exchange_on_abort(call->ex, progress_abort, ps);
    ps->sub = spawn_subscribe(call->hub->spawner, call->target, progress_event, ps);
}

/* --- cull ----------------------------------------------------------------------------- */

static void cull_now(struct hub_call *call)
{
    struct http_request *req = &call->ex->req;
    int64_t idle_s = call->hub->cfg->cull.timeout > 0 ? call->hub->cfg->cull.timeout : 3600;
    if (req->body.len > 0) {
        json_error_t err;
        json_t *body = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &err);
        json_t *v = body ? json_object_get(body, "idle_seconds") : NULL;
        if (body == NULL || !json_is_object(body) || (v != NULL && !json_is_integer(v)) ||
            (v != NULL && json_integer_value(v) < 0)) {
            json_decref(body);
            hub_respond_error(call, 400, "expected {\"idle_seconds\": N} with N >= 0");
            finish(call);
            return;
        }
        if (v != NULL)
            idle_s = json_integer_value(v);
        json_decref(body);
    }
    int n = spawn_cull_idle(call->hub->spawner, idle_s * 1000, hub_now_ms());
    log_event(LOG_INFO, "server.cull_all", "actor", call->id.name, (const char *)NULL);
    hub_respond_json(call, 200, json_pack("{s:i}", "stopped", n));
    finish(call);
}

/* --- dispatch ------------------------------------------------------------------------- */

static enum server_op op_of(const struct hub_call *call)
{
    const char *p = call->path;
    if (strcmp(p, "/hub/api/cull") == 0)
        return OP_CULL;
    return strstr(p, "/server/progress") != NULL ? OP_PROGRESS
           : call->ex->req.method == HTTP_DELETE ? OP_STOP
                                                 : OP_START;
}

static void on_loop(struct hub_call *call)
{
    enum server_op op = op_of(call);
    if (op == OP_CULL) {
        if (call->id.via == HUB_AUTH_NONE) {
            hub_respond_error(call, 401, "authentication required");
        } else if (!hub_csrf_ok(call, NULL)) {
            hub_respond_error(call, 403, "XSRF token missing or invalid");
        } else if (!call->id.admin) {
            hub_respond_error(call, 403, "only admins may stop idle servers");
        } else {
            cull_now(call);
            return;
        }
        finish(call);
        return;
    }
    if (!allowed(call)) {
        finish(call);
        return;
    }
    if (op == OP_PROGRESS) {
        progress_stream(call);
        return;
    }
    if (!hub_csrf_ok(call, NULL)) {
        hub_respond_error(call, 403, "XSRF token missing or invalid");
        finish(call);
        return;
    }
    if (op == OP_START)
        start_server(call);
    else
        stop_server(call);
}

static void on_worker(struct hub_call *call)
{
    load_target(call);
}

/* Parses /hub/api/users/NAME/server[/progress] into NAME. */
static bool server_path(const char *path, char name[40], bool *progress)
{
    const char *prefix = "/hub/api/users/";
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n) != 0)
        return false;
    const char *p = path + n;
    const char *slash = strchr(p, '/');
    if (slash == NULL || slash == p || (size_t)(slash - p) >= 40)
        return false;
    if (strcmp(slash, "/server") == 0)
        *progress = false;
    else if (strcmp(slash, "/server/progress") == 0)
        *progress = true;
    else
        return false;
    memcpy(name, p, (size_t)(slash - p));
    name[slash - p] = '\0';
    return true;
}

bool hub_servers_route(struct hub *hub, struct http_exchange *ex, char *path)
{
    char name[40] = "";
    bool progress = false;
    int method = ex->req.method;
    bool cull = strcmp(path, "/hub/api/cull") == 0;
    if (!cull && !server_path(path, name, &progress))
        return false;
    const char *allow = cull ? "POST" : progress ? "GET" : "POST, DELETE";
    bool ok = cull       ? method == HTTP_POST
              : progress ? method == HTTP_GET
                         : (method == HTTP_POST || method == HTTP_DELETE);
    if (!ok) {
        free(path);
        json_t *body = json_pack("{s:i, s:s}", "status", 405, "message", "method not allowed");
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        http_response_set(&ex->res, 405, "application/json", text, strlen(text));
        http_response_header(&ex->res, "Allow", allow);
        free(text);
        http_exchange_finish(ex);
        return true;
    }
    if (hub->spawner == NULL) {
        free(path);
        static const char msg[] = "{\"status\":503,\"message\":\"spawner not ready\"}";
        http_response_set(&ex->res, 503, "application/json", msg, sizeof msg - 1);
        http_response_header(&ex->res, "Retry-After", "1");
        http_exchange_finish(ex);
        return true;
    }
    hub_call_queue_target(hub, ex, path, name, on_worker, on_loop);
    return true;
}

/* The kubernetes backend: per user a PersistentVolumeClaim (kept across stops) and a pod
 * (see spawn/kube.h for the manifests and docs/spawn.md for the flow).
 *
 * The backend talks to the API server through one k8s client (src/k8s) and watches with
 * two shared list+watch informers, never a request per user per poll:
 *  - pods with app=codehub-workspace,codehub.io/hub=HUB: placement (podIP), readiness,
 *    container waiting reasons (ErrImagePull, ImagePullBackOff, CrashLoopBackOff, ...),
 *    unschedulable pods, and deletion;
 *  - Events of core (v1) objects in the namespace: progress (Scheduled, Pulling, Pulled,
 *    Created, Started) and early failures (FailedScheduling, a claim's
 *    ProvisioningFailed, pull and back-off failures), matched to a server by the uid of
 *    its pod or claim so that events of an earlier pod of the same name are ignored.
 *
 * A start: POST the claim (409: it exists; a GET then tells its uid and phase), POST the
 * pod (409: a stale pod holds the name: it is deleted and the create retried once it is
 * gone), `placed` with {"namespace","pod","uid","pvc"} once created and again with the
 * route "http://POD_IP:PORT" once the pod has an IP, then, when the pod reports Ready, one
 * GET of kube.health_path at POD_IP:PORT over plain TCP (a small libuv client below,
 * retried until it answers) before `ready`.
 *
 * A failure deletes the pod at once (grace period 0, nothing of it is worth keeping) and
 * reports `failed` with the reason. A stop deletes the pod with its grace period and
 * reports `exited(requested)` when the pod watch says DELETED (or the DELETE answers 404).
 * A pod deleted behind the hub's back is reported as `exited(not requested)`.
 *
 * Reattach after a restart waits for the pod watch's first complete list, then finds the
 * pod by name and uid: a pod that is Ready and answers is `ready`; one still starting is
 * followed like a start; a missing one is `failed`. */
#include "spawn/backend.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "hub/metrics.h"
#include "http/parse.h"
#include "k8s/client.h"
#include "k8s/kubeconfig.h"
#include "k8s/watch.h"
#include "spawn/kube.h"
#include "spawn/probe.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KUBE_MAGIC 0x4b554245u
#define KSRV_MAGIC 0x4b535256u

#define PROBE_TIMEOUT_MS 2000
#define PROBE_RETRY_MS 200
#define RETRY_MS 1000    /* a failed API call, or a stale pod not gone yet */
#define STALE_RETRIES 60 /* creates retried while a stale pod goes away */
#define METRICS_EVERY_MS 5000
#define REASON_MAX 600 /* the part of an API message shown to users */

/* ---- types ---- */

struct kube_counters {
    struct metric *lists, *relists, *restarts, *silences, *events, *errors;
    struct k8s_watch_stats last;
};

struct kube {
    uint32_t magic;
    uv_loop_t *loop;
    const struct config *cfg;
    const struct spawner_events *ev;
    struct k8s_client *client;
    char *ns;
    struct k8s_watch *pods;
    struct k8s_watch *events;
    bool pods_synced;
    struct spawner_server *servers;
    int nservers;     /* allocated, including released ones whose handles are closing */
    uv_timer_t timer; /* metrics export; also makes close()'s `done` asynchronous */
    bool closing;
    void (*close_done)(void *data);
    void *close_data;
    struct kube_counters pod_stats, event_stats;
    struct metric *api_requests, *api_failures;
    uint64_t last_requests, last_failures;
};

enum phase {
    PH_CLAIM,    /* creating or reading the claim */
    PH_CREATE,   /* the pod create is in flight */
    PH_STALE,    /* a stale pod holds the name; waiting for it to go */
    PH_WAIT,     /* the pod exists; waiting for it to be Ready */
    PH_PROBE,    /* Ready; waiting for code-server to answer */
    PH_READY,    /* answering */
    PH_REATTACH, /* after a restart: waiting for the pod watch's first list */
    PH_DELETING, /* stop (or failure) sent the DELETE; waiting for the pod to go */
    PH_GONE,     /* the end was reported; handles closing */
};

struct spawner_server {
    uint32_t magic;
    struct kube *kb;
    struct spawner_server *prev, *next;
    void *ctx; /* the manager's; NULL once the end is reported or the backend closes */
    char *name;
    char *profile;
    char *pod_name;
    char *pvc_name;
    char *pod_uid; /* once the create answered, or from the persisted state */
    char *pvc_uid;
    bool pvc_bound;
    char *route;
    enum phase phase;
    bool stop_requested;
    bool reattaching;
    bool delete_sent;
    bool ended; /* a final event is due (`final_*`), reported from `tick` */
    bool final_failed;
    bool final_requested;
    char *final_reason;
    int stale_tries;
    int percent; /* progress so far: never goes back */
    struct k8s_request *req;
    struct spawn_probe *probe;
    uv_timer_t tick;     /* deferred work: retries, probes, final events */
    uv_timer_t deadline; /* spawn.start_timeout */
    int open_handles;
};

static void server_check_pod(struct spawner_server *s, json_t *pod);
static void pod_create(struct spawner_server *s);
static void on_tick(uv_timer_t *t);

/* ---- small helpers ---- */

static const char *jstr(json_t *obj, const char *path)
{
    /* `path` is dot-separated object keys: "metadata.name". */
    char key[64];
    json_t *cur = obj;
    const char *p = path;
    while (cur != NULL && *p != '\0') {
        size_t n = strcspn(p, ".");
        if (n >= sizeof key)
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        cur = json_object_get(cur, key);
        p += n;
        if (*p == '.')
            p++;
    }
    return json_string_value(cur);
}

static void set_str(char **slot, const char *value)
{
    char *copy = value != NULL ? xstrdup(value) : NULL;
    free(*slot);
    *slot = copy;
}

static bool str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* A reason for users: one line, bounded. Caller frees. */
static char *reason_clean(const char *text)
{
    struct buf b = BUF_INIT;
    for (const char *p = text != NULL ? text : ""; *p && b.len < REASON_MAX; p++)
        buf_append_char(&b, *p == '\n' || *p == '\r' ? ' ' : *p);
    if (b.data == NULL)
        buf_append_str(&b, "");
    return buf_steal(&b);
}

static char *state_json(const struct spawner_server *s)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "namespace", s->kb->ns, "pod", s->pod_name,
                          "uid", s->pod_uid != NULL ? s->pod_uid : "", "pvc", s->pvc_name,
                          "profile", s->profile != NULL ? s->profile : "");
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

static void emit_placed(struct spawner_server *s)
{
    if (s->ctx == NULL)
        return;
    char *st = state_json(s);
    s->kb->ev->placed(s->ctx, s->route != NULL ? s->route : "", st);
    free(st);
}

static void progress(struct spawner_server *s, int percent, const char *message)
{
    if (s->ctx == NULL || s->reattaching)
        return;
    if (percent < s->percent)
        percent = s->percent;
    if (percent > 99)
        percent = 99;
    s->percent = percent;
    s->kb->ev->progress(s->ctx, percent, message);
}

static struct spawner_server *server_by_pod(struct kube *kb, const char *pod_name)
{
    for (struct spawner_server *s = kb->servers; s != NULL; s = s->next) {
        if (s->phase != PH_GONE && str_eq(s->pod_name, pod_name))
            return s;
    }
    return NULL;
}

static struct spawner_server *server_by_pvc_uid(struct kube *kb, const char *name, const char *uid)
{
    for (struct spawner_server *s = kb->servers; s != NULL; s = s->next) {
        if (s->phase != PH_GONE && str_eq(s->pvc_name, name) &&
            (s->pvc_uid == NULL || str_eq(s->pvc_uid, uid)))
            return s;
    }
    return NULL;
}

static bool starting(const struct spawner_server *s)
{
    return s->phase == PH_CLAIM || s->phase == PH_CREATE || s->phase == PH_STALE ||
           s->phase == PH_WAIT || s->phase == PH_PROBE || s->phase == PH_REATTACH;
}

/* ---- the end of a server ---- */

static void kube_maybe_done(struct kube *kb);

static void server_handle_closed(uv_handle_t *h)
{
    struct spawner_server *s = h->data;
    assert(s->magic == KSRV_MAGIC);
    if (--s->open_handles > 0)
        return;
    struct kube *kb = s->kb;
    s->magic = 0;
    free(s->name);
    free(s->profile);
    free(s->pod_name);
    free(s->pvc_name);
    free(s->pod_uid);
    free(s->pvc_uid);
    free(s->route);
    free(s->final_reason);
    free(s);
    kb->nservers--;
    kube_maybe_done(kb);
}

/* Forgets the server: unlinks it, cancels what it has in flight, closes its handles (the
 * memory goes in the last close callback). */
static void server_release(struct spawner_server *s)
{
    struct kube *kb = s->kb;
    if (s->phase == PH_GONE && s->open_handles == 0)
        return;
    s->phase = PH_GONE;
    s->ctx = NULL;
    if (s->req != NULL) {
        k8s_request_cancel(s->req);
        s->req = NULL;
    }
    if (s->probe != NULL) {
        spawn_probe_cancel(s->probe);
        s->probe = NULL;
    }
    if (s->prev != NULL)
        s->prev->next = s->next;
    else if (kb->servers == s)
        kb->servers = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->tick)) {
        uv_close((uv_handle_t *)&s->tick, server_handle_closed);
        uv_close((uv_handle_t *)&s->deadline, server_handle_closed);
    }
}

/* Reports the final event now (never call from inside start/stop/reattach) and forgets
 * the server. */
static void server_report_end(struct spawner_server *s, bool failed, bool requested,
                              const char *reason)
{
    void *ctx = s->ctx;
    const struct spawner_events *ev = s->kb->ev;
    char *why = xstrdup(reason != NULL ? reason : "");
    server_release(s);
    if (ctx != NULL) {
        if (failed)
            ev->failed(ctx, why);
        else
            ev->exited(ctx, requested, why);
    }
    free(why);
}

/* Reports the end from the next loop turn: used where a final event may not be given
 * right away (inside start/stop/reattach). */
static void server_end_later(struct spawner_server *s, bool failed, bool requested,
                             const char *reason)
{
    s->ended = true;
    s->final_failed = failed;
    s->final_requested = requested;
    set_str(&s->final_reason, reason);
    if (s->req != NULL) {
        k8s_request_cancel(s->req);
        s->req = NULL;
    }
    if (s->probe != NULL) {
        spawn_probe_cancel(s->probe);
        s->probe = NULL;
    }
    uv_timer_stop(&s->deadline);
    uv_timer_start(&s->tick, on_tick, 0, 0);
}

static void on_delete_answer(void *data, int status, json_t *body, const char *error)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    s->req = NULL;
    if (status == 404 || status == 409) {
        /* Gone already, or (409: the uid precondition failed) replaced by a pod that is not
         * this server's: either way this server's pod no longer exists. */
        if (s->phase == PH_DELETING)
            server_report_end(s, false, true, "");
        return;
    }
    if (error != NULL) {
        log_event(LOG_WARN, "kube.pod_delete_failed", "user", s->name, "pod", s->pod_name, "error",
                  error, NULL);
        /* Try again: the pod must not outlive a stop. */
        s->delete_sent = false;
        uv_timer_start(&s->tick, on_tick, RETRY_MS, 0);
    }
    /* Otherwise the pod watch's DELETED ends it. */
}

static void delete_pod(struct spawner_server *s, int grace_seconds)
{
    struct kube *kb = s->kb;
    struct buf path = BUF_INIT;
    buf_appendf(&path, "/api/v1/namespaces/%s/pods/%s", kb->ns, s->pod_name);
    json_t *body = json_object();
    json_object_set_new(body, "kind", json_string("DeleteOptions"));
    json_object_set_new(body, "apiVersion", json_string("v1"));
    if (grace_seconds >= 0)
        json_object_set_new(body, "gracePeriodSeconds", json_integer(grace_seconds));
    if (s->pod_uid != NULL && s->pod_uid[0] != '\0')
        json_object_set_new(body, "preconditions", json_pack("{s:s}", "uid", s->pod_uid));
    s->req = k8s_client_request(kb->client, "DELETE", path.data, body, on_delete_answer, s);
    s->delete_sent = s->req != NULL;
    json_decref(body);
    buf_free(&path);
}

static void on_orphan_delete(void *data, int status, json_t *body, const char *error)
{
    if (error != NULL && status != 404)
        log_event(LOG_WARN, "kube.pod_delete_failed", "pod", (const char *)data, "error", error,
                  NULL);
    free(data);
}

/* Deletes a pod nobody waits for: a failed start's, with no grace (`grace_seconds` 0:
 * nothing in it is worth keeping, and a new start may want the name at once), or a stale
 * one's (-1: its own grace period). */
static void delete_orphan(struct kube *kb, const char *pod_name, const char *uid, int grace_seconds)
{
    struct buf path = BUF_INIT;
    buf_appendf(&path, "/api/v1/namespaces/%s/pods/%s", kb->ns, pod_name);
    json_t *body = json_pack("{s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1");
    if (grace_seconds >= 0)
        json_object_set_new(body, "gracePeriodSeconds", json_integer(grace_seconds));
    if (uid != NULL && uid[0] != '\0')
        json_object_set_new(body, "preconditions", json_pack("{s:s}", "uid", uid));
    char *name = xstrdup(pod_name);
    if (k8s_client_request(kb->client, "DELETE", path.data, body, on_orphan_delete, name) == NULL)
        free(name);
    json_decref(body);
    buf_free(&path);
}

/* A start (or reattach) that cannot succeed: remove the pod if one exists and report. */
static void server_fail(struct spawner_server *s, const char *reason)
{
    if (s->phase == PH_GONE)
        return;
    char *why = reason_clean(reason);
    log_event(LOG_INFO, "kube.start_failed", "user", s->name, "pod", s->pod_name, "reason", why,
              NULL);
    /* A reattach that did not find its pod has nothing to delete. */
    if (s->pod_uid != NULL && s->phase != PH_REATTACH)
        delete_orphan(s->kb, s->pod_name, s->pod_uid, 0);
    if (s->stop_requested)
        server_report_end(s, false, true, "");
    else
        server_report_end(s, true, false, why);
    free(why);
}

/* server_fail() with a printf-style reason. */
__attribute__((format(printf, 2, 3))) static void server_failf(struct spawner_server *s,
                                                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *why = NULL;
    if (vasprintf(&why, fmt, ap) < 0)
        why = NULL;
    va_end(ap);
    server_fail(s, why != NULL ? why : "the start failed");
    free(why);
}

/* ---- the start ---- */

static void on_deadline(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (!starting(s))
        return;
    char *why;
    if (s->phase == PH_REATTACH)
        why = xasprintf("the Kubernetes API did not list the pods within %llds",
                        (long long)s->kb->cfg->spawn.start_timeout);
    else
        why = xasprintf("the server did not become ready within %llds (pod %s)",
                        (long long)s->kb->cfg->spawn.start_timeout, s->pod_name);
    server_fail(s, why);
    free(why);
}

static void on_probe(void *data, int result)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    s->probe = NULL;
    if (s->phase != PH_PROBE)
        return;
    if (result >= 200 && result < 400) {
        s->phase = PH_READY;
        s->reattaching = false;
        uv_timer_stop(&s->deadline);
        if (s->ctx != NULL)
            s->kb->ev->ready(s->ctx);
        return;
    }
    uv_timer_start(&s->tick, on_tick, PROBE_RETRY_MS, 0);
}

static void probe_now(struct spawner_server *s)
{
    json_t *pod = k8s_watch_get(s->kb->pods, s->kb->ns, s->pod_name);
    const char *ip = jstr(pod, "status.podIP");
    if (ip == NULL || ip[0] == '\0') {
        uv_timer_start(&s->tick, on_tick, PROBE_RETRY_MS, 0);
        return;
    }
    s->probe = spawn_probe_tcp(s->kb->loop, ip, (int)s->kb->cfg->kube.port,
                               s->kb->cfg->kube.health_path, PROBE_TIMEOUT_MS, on_probe, s);
    if (s->probe == NULL) {
        server_failf(s, "pod %s has an unusable IP address '%s'", s->pod_name, ip);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    assert(s->magic == KSRV_MAGIC);
    if (s->ended) {
        char *why = s->final_reason != NULL ? xstrdup(s->final_reason) : NULL;
        server_report_end(s, s->final_failed, s->final_requested, why);
        free(why);
        return;
    }
    switch (s->phase) {
    case PH_PROBE:
        if (s->probe == NULL)
            probe_now(s);
        break;
    case PH_STALE:
        pod_create(s);
        break;
    case PH_DELETING:
        if (!s->delete_sent && s->req == NULL)
            delete_pod(s, -1);
        break;
    case PH_REATTACH:
        if (s->kb->pods_synced) {
            json_t *pod = k8s_watch_get(s->kb->pods, s->kb->ns, s->pod_name);
            if (pod == NULL || !str_eq(jstr(pod, "metadata.uid"), s->pod_uid)) {
                server_fail(s, "the pod no longer exists");
                return;
            }
            s->phase = PH_WAIT;
            server_check_pod(s, pod);
        }
        break;
    default:
        break;
    }
}

/* What went wrong with a pod that is not running, or NULL. Caller frees. */

/* True for the scheduler's messages about a state that passes by itself, so that they do not
 * fail a start early: the user's claim not bound yet (a claim that cannot bind says so with
 * ProvisioningFailed), or not yet in the scheduler's view of claims at all (it lags behind
 * the claim the hub has just created, e.g. right after the API server came back). A claim
 * that really stays missing ends the start at spawn.start_timeout. */
static bool scheduling_will_retry(const char *msg)
{
    return strstr(msg, "unbound immediate PersistentVolumeClaims") != NULL ||
           (strstr(msg, "persistentvolumeclaim \"") != NULL && strstr(msg, "\" not found") != NULL);
}

static char *pod_problem(json_t *pod)
{
    static const char *const fatal[] = {
        "ErrImagePull",         "ImagePullBackOff",  "InvalidImageName",
        "ErrImageNeverPull",    "CrashLoopBackOff",  "CreateContainerConfigError",
        "CreateContainerError", "RunContainerError", NULL};
    json_t *statuses = json_object_get(json_object_get(pod, "status"), "containerStatuses");
    size_t i;
    json_t *cs;
    json_array_foreach(statuses, i, cs)
    {
        const char *reason = jstr(cs, "state.waiting.reason");
        if (reason == NULL)
            continue;
        for (const char *const *f = fatal; *f; f++) {
            if (strcmp(*f, reason) != 0)
                continue;
            const char *msg = jstr(cs, "state.waiting.message");
            struct buf b = BUF_INIT;
            buf_appendf(&b, "%s: %s", reason, msg != NULL ? msg : "");
            json_t *term = json_object_get(json_object_get(cs, "lastState"), "terminated");
            if (term != NULL && strcmp(reason, "CrashLoopBackOff") == 0)
                buf_appendf(&b, " (last exit code %lld%s%s)",
                            (long long)json_integer_value(json_object_get(term, "exitCode")),
                            jstr(term, "reason") != NULL ? ", " : "",
                            jstr(term, "reason") != NULL ? jstr(term, "reason") : "");
            return buf_steal(&b);
        }
    }
    json_t *conds = json_object_get(json_object_get(pod, "status"), "conditions");
    json_t *c;
    json_array_foreach(conds, i, c)
    {
        if (!str_eq(jstr(c, "type"), "PodScheduled") || !str_eq(jstr(c, "status"), "False") ||
            !str_eq(jstr(c, "reason"), "Unschedulable"))
            continue;
        const char *msg = jstr(c, "message");
        if (msg != NULL && scheduling_will_retry(msg))
            continue;
        return xasprintf("Unschedulable: %s", msg != NULL ? msg : "no node fits the pod");
    }
    const char *phase = jstr(pod, "status.phase");
    if (str_eq(phase, "Failed") || str_eq(phase, "Succeeded")) {
        const char *r = jstr(pod, "status.reason");
        const char *m = jstr(pod, "status.message");
        return xasprintf("the pod ended (%s)%s%s", r != NULL ? r : phase, m != NULL ? ": " : "",
                         m != NULL ? m : "");
    }
    return NULL;
}

static bool pod_ready(json_t *pod)
{
    if (!str_eq(jstr(pod, "status.phase"), "Running"))
        return false;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i, c)
    {
        if (str_eq(jstr(c, "type"), "Ready"))
            return str_eq(jstr(c, "status"), "True");
    }
    return false;
}

/* The pod as the watch now sees it (a start, a reattach, or a running server). */
static void server_check_pod(struct spawner_server *s, json_t *pod)
{
    struct kube *kb = s->kb;
    const char *ip = jstr(pod, "status.podIP");
    if (ip != NULL && ip[0] != '\0' && s->phase != PH_DELETING) {
        bool v6 = strchr(ip, ':') != NULL;
        char *route = xasprintf(v6 ? "http://[%s]:%lld" : "http://%s:%lld", ip,
                                (long long)kb->cfg->kube.port);
        if (!str_eq(route, s->route)) {
            set_str(&s->route, route);
            emit_placed(s);
        }
        free(route);
    }
    if (s->phase != PH_WAIT && s->phase != PH_PROBE)
        return;
    if (jstr(pod, "metadata.deletionTimestamp") != NULL) {
        server_fail(s, "the pod was deleted while it started");
        return;
    }
    char *problem = pod_problem(pod);
    if (problem != NULL) {
        server_fail(s, problem);
        free(problem);
        return;
    }
    if (s->phase == PH_WAIT && pod_ready(pod)) {
        s->phase = PH_PROBE;
        progress(s, 90, "Pod is ready; waiting for code-server to answer");
        probe_now(s);
    }
}

static void on_pod_created(void *data, int status, json_t *body, const char *error);

static void on_pod_inspected(void *data, int status, json_t *body, const char *error)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    s->req = NULL;
    if (s->stop_requested) {
        server_report_end(s, false, true, "");
        return;
    }
    if (status == 404) {
        pod_create(s);
        return;
    }
    if (error != NULL) {
        uv_timer_start(&s->tick, on_tick, RETRY_MS, 0);
        return;
    }
    json_t *labels = json_object_get(json_object_get(body, "metadata"), "labels");
    const char *hub = json_string_value(json_object_get(labels, KUBE_HUB_LABEL));
    if (!str_eq(hub, s->kb->cfg->kube.hub_name)) {
        server_failf(s, "the pod name %s is taken by a pod this hub does not manage", s->pod_name);
        return;
    }
    if (jstr(body, "metadata.deletionTimestamp") == NULL) {
        /* A pod left from an earlier run: remove it (with its grace period: it may be a
         * session this hub lost track of), then create ours. */
        log_event(LOG_INFO, "kube.stale_pod", "user", s->name, "pod", s->pod_name, NULL);
        progress(s, 12, "Removing a stale pod from an earlier start");
        delete_orphan(s->kb, s->pod_name, jstr(body, "metadata.uid"), -1);
    }
    s->phase = PH_STALE;
    uv_timer_start(&s->tick, on_tick, RETRY_MS, 0);
}

static void on_pod_created(void *data, int status, json_t *body, const char *error)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    struct kube *kb = s->kb;
    s->req = NULL;
    if (status == 409) {
        if (s->stop_requested) {
            server_report_end(s, false, true, "");
            return;
        }
        if (++s->stale_tries > STALE_RETRIES) {
            server_fail(s, "a stale pod of the same name did not go away");
            return;
        }
        struct buf path = BUF_INIT;
        buf_appendf(&path, "/api/v1/namespaces/%s/pods/%s", kb->ns, s->pod_name);
        s->req = k8s_client_request(kb->client, "GET", path.data, NULL, on_pod_inspected, s);
        buf_free(&path);
        s->phase = PH_STALE;
        if (s->req == NULL)
            uv_timer_start(&s->tick, on_tick, RETRY_MS, 0);
        return;
    }
    if (error != NULL) {
        server_failf(s, "cannot create pod %s: %s", s->pod_name, error);
        return;
    }
    set_str(&s->pod_uid, jstr(body, "metadata.uid"));
    s->phase = PH_WAIT;
    emit_placed(s);
    if (s->stop_requested) {
        s->phase = PH_DELETING;
        delete_pod(s, -1);
        return;
    }
    progress(s, 20, "Pod created; waiting for a node");
    /* Status the watch delivered before this answer was skipped: look now. */
    json_t *pod = k8s_watch_get(kb->pods, kb->ns, s->pod_name);
    if (pod != NULL && str_eq(jstr(pod, "metadata.uid"), s->pod_uid))
        server_check_pod(s, pod);
}

static void pod_create(struct spawner_server *s)
{
    struct kube *kb = s->kb;
    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(kb->cfg, s->name, s->profile, &err);
    if (pod == NULL) {
        server_fail(s, err);
        free(err);
        return;
    }
    struct buf path = BUF_INIT;
    buf_appendf(&path, "/api/v1/namespaces/%s/pods", kb->ns);
    s->phase = PH_CREATE;
    s->req = k8s_client_request(kb->client, "POST", path.data, pod, on_pod_created, s);
    buf_free(&path);
    json_decref(pod);
    if (s->req == NULL)
        server_fail(s, "the Kubernetes client is closing");
}

static void on_claim_read(void *data, int status, json_t *body, const char *error)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    s->req = NULL;
    if (error != NULL) {
        server_failf(s, "cannot read volume claim %s: %s", s->pvc_name, error);
        return;
    }
    set_str(&s->pvc_uid, jstr(body, "metadata.uid"));
    s->pvc_bound = str_eq(jstr(body, "status.phase"), "Bound");
    if (jstr(body, "metadata.deletionTimestamp") != NULL) {
        server_failf(s, "volume claim %s is being deleted; try again shortly", s->pvc_name);
        return;
    }
    progress(s, 10, "Using the existing home volume");
    pod_create(s);
}

static void on_claim_created(void *data, int status, json_t *body, const char *error)
{
    struct spawner_server *s = data;
    assert(s->magic == KSRV_MAGIC);
    struct kube *kb = s->kb;
    s->req = NULL;
    if (status == 409) {
        /* Kept from an earlier session: its uid and phase tell which events are its. */
        struct buf path = BUF_INIT;
        buf_appendf(&path, "/api/v1/namespaces/%s/persistentvolumeclaims/%s", kb->ns, s->pvc_name);
        s->req = k8s_client_request(kb->client, "GET", path.data, NULL, on_claim_read, s);
        buf_free(&path);
        if (s->req == NULL)
            server_fail(s, "the Kubernetes client is closing");
        return;
    }
    if (error != NULL) {
        server_failf(s, "cannot create volume claim %s: %s", s->pvc_name, error);
        return;
    }
    set_str(&s->pvc_uid, jstr(body, "metadata.uid"));
    progress(s, 10, "Home volume claim created");
    pod_create(s);
}

/* ---- watches ---- */

static void on_pod_event(void *data, enum k8s_watch_event ev, json_t *obj)
{
    struct kube *kb = data;
    assert(kb->magic == KUBE_MAGIC);
    if (ev == K8S_WATCH_SYNCED) {
        kb->pods_synced = true;
        /* Reattaches waiting for this list: decide from the next turn. */
        for (struct spawner_server *s = kb->servers; s != NULL; s = s->next) {
            if (s->phase == PH_REATTACH)
                uv_timer_start(&s->tick, on_tick, 0, 0);
        }
        return;
    }
    const char *name = jstr(obj, "metadata.name");
    struct spawner_server *s = server_by_pod(kb, name);
    if (s == NULL || s->ended)
        return;
    const char *uid = jstr(obj, "metadata.uid");
    if (ev == K8S_WATCH_DELETED) {
        if (s->phase == PH_STALE) {
            uv_timer_start(&s->tick, on_tick, 0, 0);
            return;
        }
        if (!str_eq(uid, s->pod_uid))
            return;
        if (s->phase == PH_DELETING || s->stop_requested) {
            server_report_end(s, false, true, "");
        } else if (s->phase == PH_READY) {
            log_event(LOG_WARN, "kube.pod_deleted", "user", s->name, "pod", s->pod_name, NULL);
            server_report_end(s, false, false, "the pod was deleted");
        } else if (s->phase != PH_REATTACH) {
            server_fail(s, "the pod was deleted while it started");
        }
        return;
    }
    if (s->phase == PH_REATTACH || s->phase == PH_CREATE || !str_eq(uid, s->pod_uid))
        return;
    server_check_pod(s, obj);
}

/* Progress steps from the kubelet's and the scheduler's events. */
static void pod_event_progress(struct spawner_server *s, const char *reason, const char *message)
{
    static const struct {
        const char *reason;
        int percent;
    } steps[] = {
        {"Scheduled", 30}, {"Pulling", 40}, {"Pulled", 60}, {"Created", 70}, {"Started", 80},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (strcmp(steps[i].reason, reason) == 0) {
            char *m = reason_clean(message);
            char *text = xasprintf("%s: %s", reason, m);
            progress(s, steps[i].percent, text);
            free(text);
            free(m);
            return;
        }
    }
}

static void on_event_event(void *data, enum k8s_watch_event ev, json_t *obj)
{
    struct kube *kb = data;
    assert(kb->magic == KUBE_MAGIC);
    if (ev != K8S_WATCH_ADDED && ev != K8S_WATCH_MODIFIED)
        return;
    json_t *io = json_object_get(obj, "involvedObject");
    const char *kind = jstr(io, "kind");
    const char *name = jstr(io, "name");
    const char *uid = jstr(io, "uid");
    const char *reason = jstr(obj, "reason");
    const char *message = jstr(obj, "message");
    if (kind == NULL || name == NULL || reason == NULL)
        return;
    if (strcmp(kind, "PersistentVolumeClaim") == 0) {
        struct spawner_server *s = server_by_pvc_uid(kb, name, uid);
        if (s == NULL || s->ended || s->pvc_bound || !starting(s) || s->phase == PH_REATTACH)
            return;
        if (strcmp(reason, "ProvisioningFailed") == 0) {
            server_failf(s, "the home volume claim %s cannot be provisioned: %s", s->pvc_name,
                         message != NULL ? message : "");
        }
        return;
    }
    if (strcmp(kind, "Pod") != 0)
        return;
    struct spawner_server *s = server_by_pod(kb, name);
    if (s == NULL || s->ended || !str_eq(uid, s->pod_uid) ||
        (s->phase != PH_WAIT && s->phase != PH_PROBE))
        return;
    const char *msg = message != NULL ? message : "";
    if (strcmp(reason, "FailedScheduling") == 0) {
        if (!scheduling_will_retry(msg)) {
            server_failf(s, "Unschedulable: %s", msg);
        }
        return;
    }
    if (strcmp(reason, "Failed") == 0 && strncmp(msg, "Failed to pull image", 20) == 0) {
        server_failf(s, "ErrImagePull: %s", msg);
        return;
    }
    if (strcmp(reason, "BackOff") == 0 && strstr(msg, "restarting failed container") != NULL) {
        server_failf(s, "CrashLoopBackOff: %s", msg);
        return;
    }
    pod_event_progress(s, reason, msg);
}

/* ---- metrics ---- */

static void counters_register(struct kube_counters *c, const char *watch)
{
    char labels[64];
    snprintf(labels, sizeof labels, "watch=\"%s\"", watch);
    c->lists = metrics_counter("codehub_kube_watch_lists_total",
                               "Complete LISTs of a kubernetes spawner watch", labels);
    c->relists = metrics_counter("codehub_kube_watch_relists_total",
                                 "LISTs after the first (410 Gone, failed lists)", labels);
    c->restarts = metrics_counter("codehub_kube_watch_restarts_total",
                                  "WATCH requests started again after an error or a drop", labels);
    c->silences = metrics_counter("codehub_kube_watch_silences_total",
                                  "Watch streams torn down for silence", labels);
    c->events = metrics_counter("codehub_kube_watch_events_total",
                                "ADDED, MODIFIED and DELETED events received", labels);
    c->errors = metrics_counter("codehub_kube_watch_errors_total",
                                "Failed watch requests, ERROR events and bad lines", labels);
}

static void counters_update(struct kube_counters *c, struct k8s_watch *w)
{
    if (w == NULL)
        return;
    struct k8s_watch_stats now;
    k8s_watch_stats_get(w, &now);
    metric_add(c->lists, (int64_t)(now.lists - c->last.lists));
    metric_add(c->relists, (int64_t)(now.relists - c->last.relists));
    metric_add(c->restarts, (int64_t)(now.restarts - c->last.restarts));
    metric_add(c->silences, (int64_t)(now.silences - c->last.silences));
    metric_add(c->events, (int64_t)(now.events - c->last.events));
    metric_add(c->errors, (int64_t)(now.errors - c->last.errors));
    c->last = now;
}

static void on_metrics_timer(uv_timer_t *t)
{
    struct kube *kb = t->data;
    counters_update(&kb->pod_stats, kb->pods);
    counters_update(&kb->event_stats, kb->events);
    struct k8s_client_stats cs;
    k8s_client_stats_get(kb->client, &cs);
    metric_add(kb->api_requests, (int64_t)(cs.requests - kb->last_requests));
    metric_add(kb->api_failures, (int64_t)(cs.failures - kb->last_failures));
    kb->last_requests = cs.requests;
    kb->last_failures = cs.failures;
}

/* ---- the backend interface ---- */

static struct spawner_server *server_new(struct kube *kb, const char *name, const char *profile,
                                         void *ctx)
{
    struct spawner_server *s = xcalloc(1, sizeof *s);
    s->magic = KSRV_MAGIC;
    s->kb = kb;
    s->ctx = ctx;
    s->name = xstrdup(name);
    s->profile = profile != NULL && profile[0] != '\0' ? xstrdup(profile) : NULL;
    s->pod_name = spawn__kube_name(kb->cfg->kube.pod_name, name);
    s->pvc_name = spawn__kube_name(kb->cfg->kube.pvc_name, name);
    uv_timer_init(kb->loop, &s->tick);
    uv_timer_init(kb->loop, &s->deadline);
    s->tick.data = s;
    s->deadline.data = s;
    s->open_handles = 2;
    kb->nservers++;
    s->next = kb->servers;
    if (kb->servers != NULL)
        kb->servers->prev = s;
    kb->servers = s;
    uint64_t timeout_ms = (uint64_t)kb->cfg->spawn.start_timeout * 1000;
    uv_timer_start(&s->deadline, on_deadline, timeout_ms, 0);
    return s;
}

static struct spawner_server *kube_start_profile(void *impl, const char *name, const char *profile,
                                                 void *ctx, char **err)
{
    struct kube *kb = impl;
    assert(kb->magic == KUBE_MAGIC);
    if (!spawn__kube_profile_exists(kb->cfg, profile)) {
        *err = xasprintf("unknown profile '%s'", profile);
        return NULL;
    }
    /* Built once here so that a manifest that cannot be built fails the start at once. */
    json_t *pod = spawn__kube_pod_manifest(kb->cfg, name, profile, err);
    if (pod == NULL)
        return NULL;
    json_decref(pod);
    struct spawner_server *s = server_new(kb, name, profile, ctx);
    json_t *pvc = spawn__kube_pvc_manifest(kb->cfg, name);
    struct buf path = BUF_INIT;
    buf_appendf(&path, "/api/v1/namespaces/%s/persistentvolumeclaims", kb->ns);
    s->phase = PH_CLAIM;
    s->req = k8s_client_request(kb->client, "POST", path.data, pvc, on_claim_created, s);
    buf_free(&path);
    json_decref(pvc);
    progress(s, 5, "Creating the home volume claim");
    if (s->req == NULL) {
        s->ctx = NULL;
        server_release(s);
        *err = xstrdup("the Kubernetes client is closing");
        return NULL;
    }
    return s;
}

static struct spawner_server *kube_start(void *impl, const char *name, void *ctx, char **err)
{
    return kube_start_profile(impl, name, NULL, ctx, err);
}

static int kube_stop(void *impl, struct spawner_server *s)
{
    assert(s->magic == KSRV_MAGIC);
    if (s->stop_requested || s->ended)
        return -EALREADY;
    s->stop_requested = true;
    uv_timer_stop(&s->deadline);
    if (s->probe != NULL) {
        spawn_probe_cancel(s->probe);
        s->probe = NULL;
    }
    switch (s->phase) {
    case PH_CLAIM:
    case PH_STALE:
    case PH_REATTACH:
        /* No pod of ours exists yet. A reattach does not know yet: delete by the persisted
         * uid (the precondition makes that safe; a 404 ends the stop). */
        if (s->phase == PH_REATTACH && s->pod_uid != NULL && s->pod_uid[0] != '\0') {
            s->phase = PH_DELETING;
            s->reattaching = false;
            delete_pod(s, -1);
            return 0;
        }
        server_end_later(s, false, true, "");
        return 0;
    case PH_CREATE:
        /* The create's answer decides: delete what it made, or end. */
        return 0;
    case PH_WAIT:
    case PH_PROBE:
    case PH_READY:
        s->phase = PH_DELETING;
        if (s->req != NULL) {
            k8s_request_cancel(s->req);
            s->req = NULL;
        }
        delete_pod(s, -1);
        if (s->req == NULL)
            server_end_later(s, false, true, "");
        return 0;
    case PH_DELETING:
    case PH_GONE:
        return -EALREADY;
    }
    return 0;
}

static struct spawner_server *kube_reattach(void *impl, const char *name, const char *state,
                                            void *ctx, char **err)
{
    struct kube *kb = impl;
    assert(kb->magic == KUBE_MAGIC);
    json_error_t je;
    json_t *j = json_loads(state, JSON_REJECT_DUPLICATES, &je);
    const char *pod = jstr(j, "pod");
    const char *uid = jstr(j, "uid");
    const char *ns = jstr(j, "namespace");
    if (pod == NULL || uid == NULL || uid[0] == '\0') {
        *err = xstrdup("no pod recorded in the spawner state");
        json_decref(j);
        return NULL;
    }
    if (!str_eq(ns, kb->ns)) {
        *err = xasprintf("the pod was in namespace %s, the hub now uses %s", ns ? ns : "?", kb->ns);
        json_decref(j);
        return NULL;
    }
    const char *profile = jstr(j, "profile");
    struct spawner_server *s = server_new(kb, name, profile, ctx);
    set_str(&s->pod_name, pod);
    set_str(&s->pod_uid, uid);
    if (jstr(j, "pvc") != NULL)
        set_str(&s->pvc_name, jstr(j, "pvc"));
    json_decref(j);
    s->phase = PH_REATTACH;
    s->reattaching = true;
    s->pvc_bound = true; /* it was, for the pod to run */
    if (kb->pods_synced)
        uv_timer_start(&s->tick, on_tick, 0, 0);
    return s;
}

static void on_close_timer_closed(uv_handle_t *h)
{
    struct kube *kb = h->data;
    kb->timer.data = NULL;
    kube_maybe_done(kb);
}

static void on_client_closed(void *data)
{
    struct kube *kb = data;
    kb->client = NULL;
    kube_maybe_done(kb);
}

static void kube_maybe_done(struct kube *kb)
{
    /* Servers released during close may still be closing their timers. */
    if (!kb->closing || kb->nservers > 0 || kb->client != NULL || kb->timer.data != NULL)
        return;
    void (*done)(void *) = kb->close_done;
    void *data = kb->close_data;
    free(kb->ns);
    kb->magic = 0;
    free(kb);
    if (done != NULL)
        done(data);
}

static void kube_close(void *impl, void (*done)(void *data), void *data)
{
    struct kube *kb = impl;
    assert(kb->magic == KUBE_MAGIC);
    kb->closing = true;
    kb->close_done = done;
    kb->close_data = data;
    on_metrics_timer(&kb->timer);
    if (kb->pods != NULL)
        k8s_watch_stop(kb->pods);
    if (kb->events != NULL)
        k8s_watch_stop(kb->events);
    kb->pods = kb->events = NULL;
    /* Pods keep running: a restarted hub re-attaches them. */
    while (kb->servers != NULL)
        server_release(kb->servers);
    uv_close((uv_handle_t *)&kb->timer, on_close_timer_closed);
    k8s_client_close(kb->client, on_client_closed, kb);
}

static void *kube_create(uv_loop_t *loop, const struct config *cfg,
                         const struct spawner_events *events, char **err)
{
    struct k8s_config *kc = NULL;
    int rc;
    if (cfg->kube.kubeconfig[0] != '\0')
        rc = k8s_config_load_kubeconfig(cfg->kube.kubeconfig,
                                        cfg->kube.context[0] != '\0' ? cfg->kube.context : NULL,
                                        &kc, err);
    else
        rc = k8s_config_load_incluster(NULL, &kc, err);
    if (rc < 0)
        return NULL;
    struct k8s_client_options opt = {.user_agent = "codehub-spawner"};
    struct k8s_client *client = k8s_client_new(loop, kc, &opt, err);
    if (client == NULL) {
        k8s_config_free(kc);
        return NULL;
    }
    struct kube *kb = xcalloc(1, sizeof *kb);
    kb->magic = KUBE_MAGIC;
    kb->loop = loop;
    kb->cfg = cfg;
    kb->ev = events;
    kb->client = client;
    kb->ns = xstrdup(cfg->kube.namespace[0] != '\0' ? cfg->kube.namespace : kc->namespace);
    k8s_config_free(kc);

    char *selector = spawn__kube_selector(cfg);
    struct k8s_watch_options po = {
        .api = "/api/v1",
        .resource = "pods",
        .namespace = kb->ns,
        .label_selector = selector,
    };
    kb->pods = k8s_watch_start(client, &po, on_pod_event, kb);
    /* Events carry no labels: all core (v1) objects' events of the namespace, which covers
     * pods and claims, filtered here by uid. */
    struct k8s_watch_options eo = {
        .api = "/api/v1",
        .resource = "events",
        .namespace = kb->ns,
        .field_selector = "involvedObject.apiVersion=v1",
        /* Read as a stream, never looked up: an hour of Events would otherwise sit in
         * the cache whole (about 11 KiB each, 6-7 per spawn and stop). */
        .cache_metadata_only = true,
    };
    kb->events = k8s_watch_start(client, &eo, on_event_event, kb);
    free(selector);
    if (kb->pods == NULL || kb->events == NULL) {
        /* Only unusable options fail here: a namespace with a '/' in it. */
        *err = xasprintf("kube.namespace: cannot watch namespace '%s'", kb->ns);
        if (kb->pods != NULL)
            k8s_watch_stop(kb->pods);
        if (kb->events != NULL)
            k8s_watch_stop(kb->events);
        k8s_client_close(client, NULL, NULL);
        free(kb->ns);
        free(kb);
        return NULL;
    }
    counters_register(&kb->pod_stats, "pods");
    counters_register(&kb->event_stats, "events");
    kb->api_requests =
        metrics_counter("codehub_kube_api_requests_total",
                        "Requests the kubernetes spawner made to the API server", NULL);
    kb->api_failures = metrics_counter("codehub_kube_api_failures_total",
                                       "Kubernetes API requests that did not succeed", NULL);
    uv_timer_init(loop, &kb->timer);
    kb->timer.data = kb;
    uv_timer_start(&kb->timer, on_metrics_timer, METRICS_EVERY_MS, METRICS_EVERY_MS);
    uv_unref((uv_handle_t *)&kb->timer);
    log_event(LOG_INFO, "kube.ready", "namespace", kb->ns, "hub", cfg->kube.hub_name, NULL);
    return kb;
}

const struct spawner_backend spawn__kube_backend = {
    .name = "kubernetes",
    .create = kube_create,
    .start = kube_start,
    .start_profile = kube_start_profile,
    .stop = kube_stop,
    .reattach = kube_reattach,
    .close = kube_close,
};

/* Tests for src/k8s/watch.c, end to end through the real client against the fake
 * apiserver, which here keeps a small collection of pods with resourceVersions, answers
 * paged LISTs and holds WATCH streams open so that each test can write events into them,
 * or misbehave: 500 on a list, an expired continue token, 410 as an HTTP status or as an
 * ERROR event in the middle of a stream, a stream that goes silent, a dropped connection,
 * garbage and oversized lines, a stream cut inside an event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "k8s/client.h"
#include "k8s/watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_apiserver.h"

#define MAX_REQS 64

struct fx {
    uv_loop_t loop;
    uv_timer_t tick;
    struct fake_server srv;
    struct k8s_client *client;
    struct k8s_watch *w;
    int client_closed;

    /* the fake collection */
    json_t *pods; /* array, in creation order */
    long rv;
    int fail_lists;      /* answer the next N lists with 500 */
    int expire_continue; /* answer the next N continued pages with 410 */
    int watch_gone;      /* answer the next N watches with HTTP 410 */
    int fail_watches;    /* answer the next N watches with 503, as an API server going away */
    struct fake_conn *stream;
    char *urls[MAX_REQS]; /* every request's URL */
    uint64_t at[MAX_REQS];
    int nurls;
    int lists, watches;

    /* what the consumer saw */
    struct buf log;
    int synced;
    int events;
    int stop_after;      /* stop the watch inside the callback at this event (1-based) */
    char last_phase[32]; /* status.phase of the last object a callback got ("" if none) */
};

/* ---- the fake collection ---- */

static json_t *pod(struct fx *f, const char *name, const char *phase)
{
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", ++f->rv);
    return json_pack("{s:s, s:{s:s, s:s, s:s, s:{s:s}}, s:{s:s}}", "kind", "Pod", "metadata",
                     "name", name, "namespace", "ns1", "resourceVersion", rv, "labels", "app",
                     "codehub", "status", "phase", phase);
}

static int find_pod(struct fx *f, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(f->pods, i, p)
    {
        const char *n = json_string_value(json_object_get(json_object_get(p, "metadata"), "name"));
        if (strcmp(n, name) == 0)
            return (int)i;
    }
    return -1;
}

/* Changes the collection without telling any watcher; returns the new object (borrowed). */
static json_t *api_put(struct fx *f, const char *name, const char *phase)
{
    json_t *p = pod(f, name, phase);
    int i = find_pod(f, name);
    if (i >= 0)
        json_array_set_new(f->pods, (size_t)i, p);
    else
        json_array_append_new(f->pods, p);
    return p;
}

static json_t *api_delete(struct fx *f, const char *name)
{
    int i = find_pod(f, name);
    assert_true(i >= 0);
    json_t *p = json_deep_copy(json_array_get(f->pods, (size_t)i));
    char rv[32];
    snprintf(rv, sizeof(rv), "%ld", ++f->rv);
    json_object_set_new(json_object_get(p, "metadata"), "resourceVersion", json_string(rv));
    json_array_remove(f->pods, (size_t)i);
    return p; /* caller decrefs */
}

static void send_line(struct fx *f, const char *line)
{
    assert_non_null(f->stream);
    fake_stream_send(f->stream, line, strlen(line));
}

static void send_event(struct fx *f, const char *type, json_t *obj)
{
    json_t *ev = json_pack("{s:s, s:O}", "type", type, "object", obj);
    char *text = json_dumps(ev, JSON_COMPACT);
    char *line = xasprintf("%s\n", text);
    send_line(f, line);
    free(line);
    free(text);
    json_decref(ev);
}

/* The value of `key` in the URL's query (not decoded), or "" when absent. Caller frees. */
static char *query(const char *url, const char *key)
{
    const char *q = strchr(url, '?');
    size_t klen = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, klen) == 0 && q[klen] == '=') {
            const char *v = q + klen + 1;
            return xstrndup(v, strcspn(v, "&"));
        }
        q = strchr(q, '&');
    }
    return xstrdup("");
}

static void answer_list(struct fx *f, struct fake_request *req)
{
    char *limit_s = query(req->url, "limit");
    char *cont_s = query(req->url, "continue");
    long limit = strtol(limit_s, NULL, 10);
    long start = cont_s[0] ? strtol(cont_s, NULL, 10) : 0;
    free(limit_s);
    if (cont_s[0] && f->expire_continue > 0) {
        f->expire_continue--;
        fake_respond_status(req->conn, 410, "Expired",
                            "The provided continue parameter is too old");
        free(cont_s);
        return;
    }
    free(cont_s);
    json_t *items = json_array();
    long n = (long)json_array_size(f->pods);
    long end = limit > 0 && start + limit < n ? start + limit : n;
    for (long i = start; i < end; i++)
        json_array_append(items, json_array_get(f->pods, (size_t)i));
    char rv[32], next[32];
    snprintf(rv, sizeof(rv), "%ld", f->rv);
    snprintf(next, sizeof(next), "%ld", end);
    json_t *list =
        json_pack("{s:s, s:{s:s, s:s}, s:o}", "kind", "PodList", "metadata", "resourceVersion", rv,
                  "continue", end < n ? next : "", "items", items);
    char *text = json_dumps(list, JSON_COMPACT);
    fake_respond_json(req->conn, 200, text);
    free(text);
    json_decref(list);
}

static void handler(void *data, struct fake_request *req)
{
    struct fx *f = data;
    if (f->nurls < MAX_REQS) {
        f->urls[f->nurls] = xstrdup(req->url);
        f->at[f->nurls] = fake_now_ms();
        f->nurls++;
    }
    if (strncmp(req->url, "/api/v1/namespaces/ns1/pods?", 28) != 0) {
        fake_respond_status(req->conn, 404, "NotFound", "no such path");
        return;
    }
    char *watch = query(req->url, "watch");
    bool is_watch = strcmp(watch, "1") == 0;
    free(watch);
    if (!is_watch) {
        f->lists++;
        if (f->fail_lists > 0) {
            f->fail_lists--;
            fake_respond_status(req->conn, 500, "InternalError", "etcd is sad");
            return;
        }
        answer_list(f, req);
        return;
    }
    f->watches++;
    if (f->fail_watches > 0) {
        f->fail_watches--;
        fake_respond_status(req->conn, 503, "ServiceUnavailable", "apiserver is shutting down");
        return;
    }
    if (f->watch_gone > 0) {
        f->watch_gone--;
        fake_respond_status(req->conn, 410, "Expired", "too old resource version");
        return;
    }
    fake_stream_begin(req->conn);
    fake_conn_hold(req->conn, &f->stream);
}

/* ---- the consumer ---- */

static void on_event(void *data, enum k8s_watch_event ev, json_t *obj)
{
    struct fx *f = data;
    if (ev == K8S_WATCH_SYNCED) {
        assert_null(obj);
        f->synced++;
        buf_append_str(&f->log, "SYNCED;");
        return;
    }
    json_t *m = json_object_get(obj, "metadata");
    buf_appendf(&f->log, "%s %s/%s %s;", k8s_watch_event_name(ev),
                json_string_value(json_object_get(m, "namespace")),
                json_string_value(json_object_get(m, "name")),
                json_string_value(json_object_get(m, "resourceVersion")));
    const char *phase = json_string_value(json_object_get(json_object_get(obj, "status"), "phase"));
    snprintf(f->last_phase, sizeof f->last_phase, "%s", phase ? phase : "");
    f->events++;
    if (f->stop_after && f->events == f->stop_after) {
        k8s_watch_stop(f->w);
        f->w = NULL;
    }
}

/* Returns the log so far and clears it; caller frees. */
static char *take_log(struct fx *f)
{
    char *s = buf_steal(&f->log);
    return s;
}

/* ---- fixture ---- */

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    assert_int_equal(fake_start(&f->srv, &f->loop, handler, f), 0);
    struct k8s_config cfg = {0};
    cfg.server = fake_url(&f->srv);
    cfg.token = "watch-token";
    cfg.allow_http = true;
    char *err = NULL;
    f->client = k8s_client_new(&f->loop, &cfg, NULL, &err);
    free(cfg.server);
    assert_non_null(f->client);
    f->pods = json_array();
    *state = f;
    return 0;
}

static void on_client_closed(void *data)
{
    struct fx *f = data;
    f->client_closed = 1;
}

static bool all_closed(void *arg)
{
    struct fx *f = arg;
    return f->client_closed && f->srv.open == 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    k8s_watch_stop(f->w);
    k8s_client_close(f->client, on_client_closed, f);
    fake_stop(&f->srv);
    assert_true(run_until(&f->loop, &f->tick, all_closed, f, 2000));
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < f->nurls; i++)
        free(f->urls[i]);
    json_decref(f->pods);
    buf_free(&f->log);
    free(f);
    return 0;
}

static struct k8s_watch_options opts(void)
{
    struct k8s_watch_options o = {0};
    o.api = "/api/v1";
    o.resource = "pods";
    o.namespace = "ns1";
    o.label_selector = "app=codehub";
    o.timeout_s = 7;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 80;
    return o;
}

static void start(struct fx *f, const struct k8s_watch_options *o)
{
    f->w = k8s_watch_start(f->client, o, on_event, f);
    assert_non_null(f->w);
    assert_int_equal(f->synced, 0); /* nothing from inside start */
}

static int want_synced;

static bool synced_n(void *arg)
{
    struct fx *f = arg;
    return f->synced >= want_synced && f->stream != NULL;
}

/* Runs until the `n`th sync and a watch stream open after it. */
static void wait_synced(struct fx *f, int n)
{
    want_synced = n;
    assert_true(run_until(&f->loop, &f->tick, synced_n, f, 3000));
}

static int want_events;

static bool events_n(void *arg)
{
    struct fx *f = arg;
    return f->events >= want_events;
}

static void wait_events(struct fx *f, int n)
{
    want_events = n;
    assert_true(run_until(&f->loop, &f->tick, events_n, f, 3000));
}

static int want_watches;

static bool watches_n(void *arg)
{
    struct fx *f = arg;
    return f->watches >= want_watches && f->stream != NULL;
}

static void wait_watches(struct fx *f, int n)
{
    want_watches = n;
    assert_true(run_until(&f->loop, &f->tick, watches_n, f, 3000));
}

static struct k8s_watch_stats stats(struct fx *f)
{
    struct k8s_watch_stats s;
    k8s_watch_stats_get(f->w, &s);
    return s;
}

static const char *last_url(struct fx *f)
{
    return f->urls[f->nurls - 1];
}

/* ---- tests ---- */

static void test_paged_list_then_watch(void **state)
{
    struct fx *f = *state;
    const char *names[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        api_put(f, names[i], "Running");
    struct k8s_watch_options o = opts();
    o.page_size = 2;
    start(f, &o);
    wait_synced(f, 1);
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/a 1;ADDED ns1/b 2;ADDED ns1/c 3;ADDED ns1/d 4;"
                             "ADDED ns1/e 5;SYNCED;");
    free(log);
    assert_int_equal(f->lists, 3);
    assert_string_equal(f->urls[0], "/api/v1/namespaces/ns1/pods?limit=2&labelSelector=app%3D"
                                    "codehub");
    assert_string_equal(f->urls[1], "/api/v1/namespaces/ns1/pods?limit=2&continue=2&"
                                    "labelSelector=app%3Dcodehub");
    assert_string_equal(f->urls[3], "/api/v1/namespaces/ns1/pods?watch=1&resourceVersion=5&"
                                    "allowWatchBookmarks=true&timeoutSeconds=7&labelSelector=app"
                                    "%3Dcodehub");
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.lists, 1);
    assert_int_equal(s.relists, 0);
    assert_int_equal(s.watches, 1);
    assert_int_equal(s.events, 5);
    assert_true(s.synced);
    assert_int_equal(k8s_watch_count(f->w), 5);
    assert_string_equal(k8s_watch_resource_version(f->w), "5");
    json_t *c = k8s_watch_get(f->w, "ns1", "c");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "status"), "phase")),
                        "Running");
    assert_null(k8s_watch_get(f->w, "ns2", "c"));
    assert_null(k8s_watch_get(f->w, NULL, "c"));
}

/* cache_metadata_only: callbacks get whole objects, the cache keeps only metadata. */
static void test_metadata_only_cache(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Pending");
    struct k8s_watch_options o = opts();
    o.cache_metadata_only = true;
    start(f, &o);
    wait_synced(f, 1);
    assert_string_equal(f->last_phase, "Pending"); /* the list's ADDED: the whole object */
    json_t *a = k8s_watch_get(f->w, "ns1", "a");
    assert_non_null(a);
    assert_null(json_object_get(a, "status"));
    json_t *m = json_object_get(a, "metadata");
    assert_string_equal(json_string_value(json_object_get(m, "name")), "a");
    assert_string_equal(json_string_value(json_object_get(m, "namespace")), "ns1");
    assert_string_equal(json_string_value(json_object_get(m, "resourceVersion")), "1");
    assert_null(json_object_get(m, "labels"));
    f->events = 0;
    send_event(f, "MODIFIED", api_put(f, "a", "Running"));
    wait_events(f, 1);
    assert_string_equal(f->last_phase, "Running"); /* a watch event: the whole object */
    a = k8s_watch_get(f->w, "ns1", "a");
    assert_null(json_object_get(a, "status"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(a, "metadata"), "resourceVersion")), "2");
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/a 1;SYNCED;MODIFIED ns1/a 2;");
    free(log);
}

static void test_empty_collection_all_namespaces(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    o.namespace = NULL;
    o.label_selector = NULL;
    o.field_selector = "spec.nodeName=n1";
    f->w = k8s_watch_start(f->client, &o, on_event, f);
    assert_non_null(f->w);
    run_for(&f->loop, &f->tick, 50);
    /* the fake serves only ns1: a 404 here, retried with backoff */
    assert_string_equal(f->urls[0], "/api/v1/pods?limit=500&fieldSelector=spec.nodeName%3Dn1");
    assert_int_equal(f->synced, 0);
    assert_true(stats(f).errors >= 1);
}

static void test_events(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Pending");
    api_put(f, "b", "Pending");
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    free(take_log(f));
    f->events = 0;

    send_event(f, "ADDED", api_put(f, "c", "Pending"));
    send_event(f, "MODIFIED", api_put(f, "a", "Running"));
    json_t *gone = api_delete(f, "b");
    send_event(f, "DELETED", gone);
    json_decref(gone);
    send_event(f, "MODIFIED", api_put(f, "z", "Running")); /* unknown: reported as added */
    json_t *ghost = pod(f, "y", "Running");
    send_event(f, "DELETED", ghost); /* never seen: not reported */
    json_decref(ghost);
    send_event(f, "ADDED", api_put(f, "a", "Succeeded")); /* known: reported as modified */
    wait_events(f, 5);
    run_for(&f->loop, &f->tick, 30);
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/c 3;MODIFIED ns1/a 4;DELETED ns1/b 5;ADDED ns1/z 6;"
                             "MODIFIED ns1/a 8;");
    free(log);
    assert_int_equal(k8s_watch_count(f->w), 3);
    assert_null(k8s_watch_get(f->w, "ns1", "b"));
    assert_string_equal(k8s_watch_resource_version(f->w), "8");
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.events, 2 + 5);
    assert_int_equal(s.restarts, 0);
    assert_int_equal(s.errors, 0);
}

static void test_event_split_across_chunks(void **state)
{
    struct fx *f = *state;
    start(f, &(struct k8s_watch_options){.api = "/api/v1", .resource = "pods", .namespace = "ns1"});
    wait_synced(f, 1);
    json_t *p = api_put(f, "split", "Running");
    json_t *ev = json_pack("{s:s, s:O}", "type", "ADDED", "object", p);
    char *text = json_dumps(ev, JSON_COMPACT);
    size_t n = strlen(text);
    fake_stream_send(f->stream, text, 10);
    run_for(&f->loop, &f->tick, 20);
    fake_stream_send(f->stream, text + 10, n - 20);
    run_for(&f->loop, &f->tick, 20);
    assert_int_equal(f->events, 0);
    fake_stream_send(f->stream, text + n - 10, 10);
    fake_stream_send(f->stream, "\n", 1);
    wait_events(f, 1);
    char *log = take_log(f);
    assert_string_equal(log, "SYNCED;ADDED ns1/split 1;");
    free(log);
    free(text);
    json_decref(ev);
}

static void test_bookmark_and_clean_end(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    send_line(f, "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":"
                 "{\"resourceVersion\":\"100\"}}}\n");
    run_for(&f->loop, &f->tick, 50);
    assert_string_equal(k8s_watch_resource_version(f->w), "100");
    assert_int_equal(f->events, 1); /* the list's ADDED only */
    /* The server ends the stream at timeoutSeconds; the next watch resumes at the bookmark. */
    fake_stream_end(f->stream);
    wait_watches(f, 2);
    char *rv = query(last_url(f), "resourceVersion");
    assert_string_equal(rv, "100");
    free(rv);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.bookmarks, 1);
    assert_int_equal(s.watches, 2);
    assert_int_equal(s.restarts, 0);
    assert_int_equal(s.relists, 0);
    assert_int_equal(s.errors, 0);
    assert_int_equal(f->lists, 1);
}

static void test_410_mid_stream_relists(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Pending");
    api_put(f, "b", "Running");
    api_put(f, "c", "Running");
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    free(take_log(f));
    send_event(f, "MODIFIED", api_put(f, "c", "Failed"));
    wait_events(f, 4);
    free(take_log(f));

    /* While the watch is "behind": b goes, a changes, d comes, none of it sent. */
    json_decref(api_delete(f, "b"));
    api_put(f, "a", "Running");
    api_put(f, "d", "Pending");
    uint64_t t_err = fake_now_ms();
    send_line(f, "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                 "\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource "
                 "version: 4 (9)\",\"reason\":\"Expired\",\"code\":410}}\n");
    wait_synced(f, 2);
    char *log = take_log(f);
    /* b is reported deleted with its last known state (Running, rv 2). */
    assert_string_equal(log, "MODIFIED ns1/a 6;ADDED ns1/d 7;DELETED ns1/b 2;SYNCED;");
    free(log);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.relists, 1);
    assert_int_equal(s.lists, 2);
    assert_int_equal(f->lists, 2);
    assert_int_equal(k8s_watch_count(f->w), 3);
    char *rv = query(last_url(f), "resourceVersion");
    assert_string_equal(rv, "7");
    free(rv);
    /* the relist came at once, without a backoff: 410 is routine */
    assert_true(f->at[f->nurls - 2] - t_err < 100);
}

static void test_http_410_on_watch(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    f->watch_gone = 1;
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 2);
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/a 1;SYNCED;SYNCED;"); /* nothing changed */
    free(log);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.relists, 1);
    assert_int_equal(s.watches, 2);
    assert_int_equal(f->lists, 2);
}

/* An outage, then the API server is back and has forgotten our resourceVersion: the relist
 * comes at once, not after the backoff the outage built up. */
static void test_410_after_outage_relists_at_once(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 10000;
    start(f, &o);
    wait_synced(f, 1);
    send_event(f, "MODIFIED", api_put(f, "a", "Failed"));
    wait_events(f, 2);
    /* Four watches fail (the delays grow to 400..800 ms), the fifth is told 410. */
    f->fail_watches = 4;
    f->watch_gone = 1;
    fake_conn_drop(f->stream);
    wait_watches(f, 6);
    wait_synced(f, 2);
    assert_int_equal(f->lists, 2);
    /* requests: list, watch, 4 failed watches, the 410'd watch, the relist, its watch */
    assert_int_equal(f->nurls, 9);
    /* The backoff did grow (the timers' floors: 200 ms, then 400 ms)... */
    uint64_t last_backoff = f->at[6] - f->at[5];
    assert_true(f->at[5] - f->at[4] >= 190);
    assert_true(last_backoff >= 390);
    /* ...and the relist did not wait for more of it: the old code waited the next step
     * (800..1600 ms) here, twice the last one at least; now only the loop's own turn. */
    uint64_t relist_gap = f->at[7] - f->at[6];
    assert_true(relist_gap < last_backoff / 2);
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/a 1;SYNCED;MODIFIED ns1/a 2;SYNCED;");
    free(log);
    assert_int_equal(stats(f).relists, 1);
}

/* A server that answers 410 to every watch straight after a LIST is not relisted in a tight
 * loop: from the second time on, each relist waits a backoff. */
static void test_410_right_after_list_backs_off(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    f->watch_gone = 3;
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 100;
    o.backoff_max_ms = 10000;
    start(f, &o);
    wait_synced(f, 4);
    assert_int_equal(f->lists, 4);
    /* requests: list, 410, list, 410, list, 410, list, watch */
    assert_int_equal(f->nurls, 8);
    for (int i = 2; i <= 6; i += 2)
        assert_true(f->at[i] - f->at[i - 1] >= 45); /* 50..100 ms each */
}

static void test_silent_stream_restarted(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    struct k8s_watch_options o = opts();
    o.silence_ms = 150;
    start(f, &o);
    wait_synced(f, 1);
    uint64_t t0 = fake_now_ms();
    /* A bookmark keeps it alive... */
    run_for(&f->loop, &f->tick, 100);
    send_line(f, "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"3\"}}}\n");
    run_for(&f->loop, &f->tick, 100);
    assert_int_equal(f->watches, 1);
    /* ...then nothing at all. */
    wait_watches(f, 2);
    uint64_t took = fake_now_ms() - t0;
    assert_true(took >= 240);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.silences, 1);
    assert_int_equal(s.restarts, 1);
    assert_int_equal(s.relists, 0);
    char *rv = query(last_url(f), "resourceVersion");
    assert_string_equal(rv, "3");
    free(rv);
    /* the new stream works */
    send_event(f, "ADDED", api_put(f, "b", "Running"));
    wait_events(f, 2);
    assert_non_null(k8s_watch_get(f->w, "ns1", "b"));
}

static void test_dropped_connection_reconnects(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 40;
    o.backoff_max_ms = 1000;
    start(f, &o);
    wait_synced(f, 1);
    send_event(f, "MODIFIED", api_put(f, "a", "Failed"));
    wait_events(f, 2);
    /* A drop after a healthy stream: the shortest backoff (20..40 ms), no relist, and the
     * watch resumes where it was. */
    uint64_t t0 = fake_now_ms();
    fake_conn_drop(f->stream);
    wait_watches(f, 2);
    uint64_t took = fake_now_ms() - t0;
    assert_true(took >= 15);
    assert_true(took < 1000);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.restarts, 1);
    assert_int_equal(s.relists, 0);
    char *rv = query(last_url(f), "resourceVersion");
    assert_string_equal(rv, "2");
    free(rv);
    /* A second drop with nothing delivered in between: the delay doubles (40..80 ms). */
    t0 = fake_now_ms();
    fake_conn_drop(f->stream);
    wait_watches(f, 3);
    took = fake_now_ms() - t0;
    assert_true(took >= 35);
    /* An event resets the backoff. */
    send_event(f, "ADDED", api_put(f, "b", "Running"));
    wait_events(f, 3);
    t0 = fake_now_ms();
    fake_conn_drop(f->stream);
    wait_watches(f, 4);
    took = fake_now_ms() - t0;
    assert_true(took >= 15);
    assert_int_equal(stats(f).restarts, 3);
    assert_int_equal(f->lists, 1);
}

static void test_list_500_retried_with_backoff(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    f->fail_lists = 3;
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 40;
    o.backoff_max_ms = 1000;
    start(f, &o);
    wait_synced(f, 1);
    assert_int_equal(f->lists, 4);
    /* delays: [20,40], [40,80], [80,160] ms */
    assert_true(f->at[1] - f->at[0] >= 15);
    assert_true(f->at[2] - f->at[1] >= 35);
    assert_true(f->at[3] - f->at[2] >= 75);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.errors, 3);
    assert_int_equal(s.relists, 3);
    assert_int_equal(s.lists, 1);
    char *log = take_log(f);
    assert_string_equal(log, "ADDED ns1/a 1;SYNCED;");
    free(log);
}

static void test_backoff_capped(void **state)
{
    struct fx *f = *state;
    f->fail_lists = 8;
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 40;
    start(f, &o);
    wait_synced(f, 1);
    assert_int_equal(f->lists, 9);
    for (int i = 4; i < 9; i++) {
        uint64_t d = f->at[i] - f->at[i - 1];
        assert_true(d >= 18);  /* at the cap: 20..40 ms */
        assert_true(d <= 200); /* and never more than the cap (plus scheduling slack) */
    }
}

static void test_continue_expired_restarts_list(void **state)
{
    struct fx *f = *state;
    const char *names[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        api_put(f, names[i], "Running");
    f->expire_continue = 1;
    struct k8s_watch_options o = opts();
    o.page_size = 2;
    start(f, &o);
    wait_synced(f, 1);
    char *log = take_log(f);
    /* each object once: the half-collected first attempt was thrown away */
    assert_string_equal(log, "ADDED ns1/a 1;ADDED ns1/b 2;ADDED ns1/c 3;ADDED ns1/d 4;"
                             "ADDED ns1/e 5;SYNCED;");
    free(log);
    assert_int_equal(f->lists, 2 + 3);
    assert_int_equal(stats(f).relists, 1);
}

static void test_garbage_line_restarts(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    send_line(f, "<html>proxy error</html>\n");
    wait_watches(f, 2);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.errors, 1);
    assert_int_equal(s.restarts, 1);
    assert_int_equal(s.relists, 0);
    send_line(f, "{\"type\":\"ADDED\"}\n"); /* no object */
    wait_watches(f, 3);
    send_line(f, "{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}\n"); /* no name */
    wait_watches(f, 4);
    send_line(f, "{\"type\":\"WHATEVER\",\"object\":{\"metadata\":{\"name\":\"x\"}}}\n");
    wait_watches(f, 5);
    send_line(f, "{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}\n"); /* dup key */
    wait_watches(f, 6);
    assert_int_equal(stats(f).errors, 5);
    send_event(f, "ADDED", api_put(f, "b", "Running"));
    wait_events(f, 2);
    assert_int_equal(k8s_watch_count(f->w), 2);
}

static void test_oversized_line_restarts(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    o.max_line = 256;
    start(f, &o);
    wait_synced(f, 1);
    char big[1001];
    memset(big, 'x', 1000);
    big[1000] = '\0';
    fake_stream_send(f->stream, big, 1000);
    wait_watches(f, 2);
    assert_int_equal(stats(f).errors, 1);
    assert_int_equal(stats(f).restarts, 1);
    send_event(f, "ADDED", api_put(f, "small", "Running"));
    wait_events(f, 1);
}

static void test_stream_cut_inside_event(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    send_line(f, "{\"type\":\"ADDED\",\"obj");
    fake_stream_end(f->stream);
    wait_watches(f, 2);
    assert_int_equal(stats(f).errors, 1);
    assert_int_equal(stats(f).restarts, 1);
    assert_int_equal(f->events, 0);
}

static void test_error_event_other_than_410(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    send_line(f, "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500,"
                 "\"message\":\"internal error\"}}\n");
    wait_watches(f, 2);
    struct k8s_watch_stats s = stats(f);
    assert_int_equal(s.relists, 0);
    assert_int_equal(s.restarts, 1);
    assert_int_equal(f->lists, 1);
}

static void test_stop_inside_callback(void **state)
{
    struct fx *f = *state;
    api_put(f, "a", "Running");
    api_put(f, "b", "Running");
    f->stop_after = 1;
    struct k8s_watch_options o = opts();
    start(f, &o);
    run_for(&f->loop, &f->tick, 100);
    assert_int_equal(f->events, 1);
    assert_int_equal(f->synced, 0);
    assert_null(f->w);
    assert_int_equal(f->watches, 0);
}

static void test_stop_inside_stream_callback(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    start(f, &o);
    wait_synced(f, 1);
    f->stop_after = 1;
    /* two events in one chunk: the second must not be delivered */
    json_t *a = api_put(f, "a", "Running");
    json_t *b = api_put(f, "b", "Running");
    char *ta = json_dumps(a, JSON_COMPACT);
    char *tb = json_dumps(b, JSON_COMPACT);
    char *lines = xasprintf("{\"type\":\"ADDED\",\"object\":%s}\n{\"type\":\"ADDED\",\"object\":"
                            "%s}\n",
                            ta, tb);
    send_line(f, lines);
    free(ta);
    free(tb);
    free(lines);
    run_for(&f->loop, &f->tick, 100);
    assert_int_equal(f->events, 1);
    assert_null(f->w);
    assert_null(f->stream); /* the stream's connection was closed */
}

static void test_stop_while_waiting(void **state)
{
    struct fx *f = *state;
    f->fail_lists = 100;
    struct k8s_watch_options o = opts();
    o.backoff_min_ms = 200;
    start(f, &o);
    run_for(&f->loop, &f->tick, 50);
    assert_int_equal(f->lists, 1);
    k8s_watch_stop(f->w);
    f->w = NULL;
    run_for(&f->loop, &f->tick, 300);
    assert_int_equal(f->lists, 1);
}

static bool got_request(void *arg)
{
    struct fx *f = arg;
    return f->nurls > 0;
}

static void test_start_validation(void **state)
{
    struct fx *f = *state;
    struct k8s_watch_options o = opts();
    o.resource = "pods/x";
    assert_null(k8s_watch_start(f->client, &o, on_event, f));
    o = opts();
    o.namespace = "../kube-system";
    assert_null(k8s_watch_start(f->client, &o, on_event, f));
    o = opts();
    o.api = "api/v1";
    assert_null(k8s_watch_start(f->client, &o, on_event, f));
    o = opts();
    o.api = NULL;
    assert_null(k8s_watch_start(f->client, &o, on_event, f));
    o = opts();
    assert_null(k8s_watch_start(f->client, &o, NULL, f));
    assert_null(k8s_watch_start(NULL, &o, on_event, f));
    o.api = "/apis/apps/v1";
    o.resource = "deployments";
    struct k8s_watch *w = k8s_watch_start(f->client, &o, on_event, f);
    assert_non_null(w);
    assert_true(run_until(&f->loop, &f->tick, got_request, f, 2000));
    k8s_watch_stop(w);
    k8s_watch_stop(NULL);
    assert_string_equal(f->urls[0], "/apis/apps/v1/namespaces/ns1/deployments?limit=500&"
                                    "labelSelector=app%3Dcodehub");
}

static void test_event_names(void **state)
{
    assert_string_equal(k8s_watch_event_name(K8S_WATCH_ADDED), "ADDED");
    assert_string_equal(k8s_watch_event_name(K8S_WATCH_MODIFIED), "MODIFIED");
    assert_string_equal(k8s_watch_event_name(K8S_WATCH_DELETED), "DELETED");
    assert_string_equal(k8s_watch_event_name(K8S_WATCH_SYNCED), "SYNCED");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_paged_list_then_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_only_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_collection_all_namespaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_split_across_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bookmark_and_clean_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_410_mid_stream_relists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_410_on_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_410_after_outage_relists_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_410_right_after_list_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_stream_restarted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_connection_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_500_retried_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_continue_expired_restarts_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_line_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_line_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cut_inside_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_event_other_than_410, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_inside_stream_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_waiting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_validation, setup, teardown),
        cmocka_unit_test(test_event_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

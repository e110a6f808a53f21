/* The list+watch informer (see watch.h and docs/k8s.md).
 *
 * States: LISTING (a LIST page in flight; pages collect into `pending`), WATCHING (a stream
 * in flight; the timer is the silence timeout), WAITING (the timer is a backoff delay, then
 * LIST or WATCH again as `need_list` says), STOPPED.
 *
 * Every restart goes through restart(): it cancels the request in flight (allowed even
 * from inside the stream's data callback, where most restarts are decided), and either
 * starts again at once or arms the backoff. So a stream's final callback only ever sees
 * the stream end on its own (server timeout, drop, HTTP error), never one we ended.
 *
 * A consumer callback may stop the watch. The memory stays valid until the timer's close
 * callback, so code that called out checks `stopped` before touching anything else. */
#include "k8s/watch.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "k8s/framer.h"

#include <assert.h>
#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define WATCH_MAGIC 0x4b385754u

#define DEFAULT_PAGE_SIZE 500
#define DEFAULT_TIMEOUT_S 120
#define DEFAULT_SILENCE_GRACE_MS 30000
#define DEFAULT_BACKOFF_MIN_MS 500
#define DEFAULT_BACKOFF_MAX_MS 30000
#define DEFAULT_MAX_LINE (16 * 1024 * 1024)
/* A stream that lasted this long before ending cleanly was healthy, even if quiet. */
#define HEALTHY_STREAM_MS 1000

enum wstate { W_LISTING, W_WATCHING, W_WAITING, W_STOPPED };

struct k8s_watch {
    uint32_t magic;
    struct k8s_client *c;
    struct k8s_watch_options opt; /* strings point at the copies below */
    char *path;                   /* the collection: API/[namespaces/NS/]RESOURCE */
    char *label_selector;
    char *field_selector;
    k8s_watch_cb cb;
    void *data;

    enum wstate state;
    bool stopped;
    bool need_list;
    json_t *cache;   /* key -> object */
    json_t *pending; /* the list being collected */
    char *cont;      /* the next page's continue token */
    char *rv;        /* resourceVersion to watch from */
    struct k8s_request *req;
    struct k8s_framer framer;
    uv_timer_t timer;
    unsigned failures;    /* consecutive, for the backoff */
    bool stream_progress; /* the current stream delivered a line */
    bool fresh_from_list; /* no event or bookmark since the last LIST: a 410 now is a loop */
    uint64_t stream_started_ms;
    struct k8s_watch_stats stats;
};

static void start_list(struct k8s_watch *w);
static void start_watch(struct k8s_watch *w);

const char *k8s_watch_event_name(enum k8s_watch_event ev)
{
    switch (ev) {
    case K8S_WATCH_ADDED:
        return "ADDED";
    case K8S_WATCH_MODIFIED:
        return "MODIFIED";
    case K8S_WATCH_DELETED:
        return "DELETED";
    case K8S_WATCH_SYNCED:
        return "SYNCED";
    }
    return "?";
}

static const char *meta_str(json_t *obj, const char *field)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), field));
}

/* The cache key of `obj`: "namespace/name", or "name" for a cluster-scoped object.
 * Returns it (caller frees), or NULL when the object has no name. */
static char *object_key(json_t *obj)
{
    const char *name = meta_str(obj, "name");
    const char *ns = meta_str(obj, "namespace");
    if (name == NULL || name[0] == '\0')
        return NULL;
    return ns && ns[0] ? xasprintf("%s/%s", ns, name) : xstrdup(name);
}

static void set_rv(struct k8s_watch *w, const char *rv)
{
    if (rv == NULL || rv[0] == '\0')
        return;
    char *copy = xstrdup(rv);
    free(w->rv);
    w->rv = copy;
}

/* Calls the consumer. Returns false when it stopped the watch. */
static bool emit(struct k8s_watch *w, enum k8s_watch_event ev, json_t *obj)
{
    if (ev != K8S_WATCH_SYNCED)
        w->stats.events++;
    w->cb(w->data, ev, obj);
    return !w->stopped;
}

/* The delay before the next attempt: min * 2^failures, capped, then "equal jitter" (half
 * fixed, half random) so that many hubs hit by the same outage do not return in step. */
static unsigned backoff_ms(struct k8s_watch *w)
{
    uint64_t d = w->opt.backoff_min_ms;
    for (unsigned i = 1; i < w->failures && d < w->opt.backoff_max_ms; i++)
        d *= 2;
    if (d > w->opt.backoff_max_ms)
        d = w->opt.backoff_max_ms;
    unsigned half = (unsigned)(d / 2);
    return half + randombytes_uniform(half + 1);
}

static void on_timer(uv_timer_t *t);

/* Abandons the request in flight and starts again: at once when `immediate` and nothing
 * failed just before, else after the backoff. `relist` forces a LIST first. */
static void restart(struct k8s_watch *w, bool relist, bool immediate, bool count, const char *why)
{
    k8s_request_cancel(w->req);
    w->req = NULL;
    uv_timer_stop(&w->timer);
    json_decref(w->pending);
    w->pending = NULL;
    free(w->cont);
    w->cont = NULL;
    if (relist || w->rv == NULL)
        w->need_list = true;
    if (count)
        w->stats.restarts++;
    unsigned delay = 0;
    if (!immediate || w->failures > 0) {
        w->failures++;
        /* Never 0: an immediate start could run inside the framer that is calling us. */
        delay = backoff_ms(w);
        if (delay == 0)
            delay = 1;
    } else {
        w->failures++; /* the next failure in a row waits */
    }
    if (why) {
        char ms[32];
        snprintf(ms, sizeof(ms), "%u", delay);
        /* A 410 is routine (the history is only kept for minutes); the rest is not. */
        log_event(relist && immediate ? LOG_INFO : LOG_WARN, "k8s.watch.restart", "path", w->path,
                  "reason", why, "relist", w->need_list ? "yes" : "no", "delay_ms", ms, NULL);
    }
    if (delay == 0) {
        if (w->need_list)
            start_list(w);
        else
            start_watch(w);
        return;
    }
    w->state = W_WAITING;
    uv_timer_start(&w->timer, on_timer, delay, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct k8s_watch *w = t->data;
    assert(w->magic == WATCH_MAGIC);
    if (w->state == W_WATCHING) {
        w->stats.silences++;
        w->stats.errors++;
        restart(w, false, true, true, "watch stream silent");
    } else if (w->state == W_WAITING) {
        if (w->need_list)
            start_list(w);
        else
            start_watch(w);
    }
}

/* ---- LIST ---- */

static void add_selectors(struct k8s_watch *w, struct buf *b)
{
    if (w->label_selector)
        k8s_query_append(b, "labelSelector", w->label_selector);
    if (w->field_selector)
        k8s_query_append(b, "fieldSelector", w->field_selector);
}

static void on_list(void *data, int status, json_t *body, const char *error);

static void list_page(struct k8s_watch *w)
{
    struct buf path = BUF_INIT;
    char limit[32];
    snprintf(limit, sizeof(limit), "%u", w->opt.page_size);
    buf_append_str(&path, w->path);
    k8s_query_append(&path, "limit", limit);
    if (w->cont)
        k8s_query_append(&path, "continue", w->cont);
    add_selectors(w, &path);
    w->req = k8s_client_request(w->c, "GET", path.data, NULL, on_list, w);
    buf_free(&path);
    if (w->req == NULL) {
        /* Only a closing client refuses; keep trying until someone stops us. */
        w->stats.errors++;
        restart(w, true, false, false, "cannot start the list request");
    }
}

static void start_list(struct k8s_watch *w)
{
    if (w->stats.lists > 0 || w->stats.relists > 0 || w->stats.errors > 0)
        w->stats.relists++;
    w->state = W_LISTING;
    w->need_list = true;
    json_decref(w->pending);
    w->pending = json_object();
    free(w->cont);
    w->cont = NULL;
    list_page(w);
}

/* What the cache keeps of `obj`: a new reference to it, or to a new object holding only
 * its identifying metadata (see cache_metadata_only). */
static json_t *cache_entry(const struct k8s_watch *w, json_t *obj)
{
    if (!w->opt.cache_metadata_only)
        return json_incref(obj);
    json_t *meta = json_object_get(obj, "metadata");
    json_t *ids = json_object();
    static const char *const keep[] = {"name", "namespace", "uid", "resourceVersion"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        json_t *v = json_object_get(meta, keep[i]);
        if (v != NULL)
            json_object_set(ids, keep[i], v);
    }
    json_t *entry = json_object();
    json_object_set_new(entry, "metadata", ids);
    return entry;
}

/* Makes `pending` the cache and tells the consumer what changed. */
static void apply_list(struct k8s_watch *w)
{
    json_t *old = w->cache;
    w->cache = w->pending;
    w->pending = NULL;
    const char *key;
    json_t *obj;
    bool alive = true;
    json_object_foreach(w->cache, key, obj)
    {
        json_t *before = json_object_get(old, key);
        if (before == NULL) {
            alive = emit(w, K8S_WATCH_ADDED, obj);
        } else {
            const char *a = meta_str(before, "resourceVersion");
            const char *b = meta_str(obj, "resourceVersion");
            if (a == NULL || b == NULL || strcmp(a, b) != 0)
                alive = emit(w, K8S_WATCH_MODIFIED, obj);
        }
        if (!alive)
            break;
    }
    if (alive) {
        /* What vanished while we were not watching: deleted, with its last known state. */
        json_object_foreach(old, key, obj)
        {
            if (json_object_get(w->cache, key) == NULL && !emit(w, K8S_WATCH_DELETED, obj)) {
                alive = false;
                break;
            }
        }
    }
    json_decref(old);
    if (!alive)
        return;
    if (w->opt.cache_metadata_only) {
        /* The list's whole objects were for the callbacks above; keep only their metadata from now
         * on. */
        json_object_foreach(w->cache, key, obj)
            json_object_set_new(w->cache, key, cache_entry(w, obj));
    }
    w->stats.synced = true;
    if (!emit(w, K8S_WATCH_SYNCED, NULL))
        return;
    w->fresh_from_list = true;
    start_watch(w);
}

static void on_list(void *data, int status, json_t *body, const char *error)
{
    struct k8s_watch *w = data;
    assert(w->magic == WATCH_MAGIC);
    w->req = NULL;
    if (error) {
        w->stats.errors++;
        /* 410 on a page: the continue token expired. The list starts over. */
        restart(w, true, status == 410 && w->cont, false, error);
        return;
    }
    json_t *items = json_object_get(body, "items");
    if (!json_is_array(items)) {
        w->stats.errors++;
        restart(w, true, false, false, "list answer without items");
        return;
    }
    size_t i;
    json_t *obj;
    json_array_foreach(items, i, obj)
    {
        char *key = object_key(obj);
        if (key == NULL) {
            w->stats.errors++;
            restart(w, true, false, false, "listed object without a name");
            return;
        }
        json_object_set(w->pending, key, obj);
        free(key);
    }
    const char *cont = meta_str(body, "continue");
    if (cont && cont[0]) {
        free(w->cont);
        w->cont = xstrdup(cont);
        list_page(w);
        return;
    }
    const char *rv = meta_str(body, "resourceVersion");
    if (rv == NULL || rv[0] == '\0') {
        w->stats.errors++;
        restart(w, true, false, false, "list answer without a resourceVersion");
        return;
    }
    set_rv(w, rv);
    free(w->cont);
    w->cont = NULL;
    w->stats.lists++;
    w->need_list = false;
    w->failures = 0;
    apply_list(w);
}

/* ---- WATCH ---- */

/* The server answered the watch with 410 Gone: it is up, and our resourceVersion is older than
 * the history it keeps. Relist at once, whatever failed before: the failures counted an outage
 * the server has come back from, and waiting them out would leave the cache stale for up to
 * backoff_max_ms. Only a 410 before anything came since the last LIST means a server that
 * keeps doing this, and that one waits, like any other failure. */
static void restart_gone(struct k8s_watch *w, const char *why)
{
    bool looping = w->fresh_from_list;
    if (!looping)
        w->failures = 0;
    restart(w, true, !looping, false, why);
}

static int on_line(void *data, const char *line, size_t len)
{
    struct k8s_watch *w = data;
    json_error_t jerr;
    json_t *ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    int r = 0;
    if (type == NULL || !json_is_object(obj)) {
        w->stats.errors++;
        restart(w, false, false, true,
                ev ? "watch event without type or object" : "watch event is not JSON");
        r = -ECANCELED;
        goto out;
    }
    /* Something came: the stream is alive. */
    w->stream_progress = true;
    uv_timer_start(&w->timer, on_timer, w->opt.silence_ms, 0);

    if (strcmp(type, "BOOKMARK") == 0) {
        w->failures = 0;
        w->fresh_from_list = false;
        w->stats.bookmarks++;
        set_rv(w, meta_str(obj, "resourceVersion"));
        goto out;
    }
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(obj, "code"));
        const char *reason = json_string_value(json_object_get(obj, "reason"));
        const char *msg = json_string_value(json_object_get(obj, "message"));
        w->stats.errors++;
        if (code == 410 ||
            (reason && (strcmp(reason, "Expired") == 0 || strcmp(reason, "Gone") == 0))) {
            restart_gone(w, msg ? msg : "resourceVersion expired");
        } else {
            restart(w, false, false, true, msg ? msg : "ERROR event");
        }
        r = -ECANCELED;
        goto out;
    }
    /* An event or a bookmark: the server is sane too, so the backoff starts over. */
    w->failures = 0;
    w->fresh_from_list = false;
    bool added = strcmp(type, "ADDED") == 0;
    bool modified = strcmp(type, "MODIFIED") == 0;
    bool deleted = strcmp(type, "DELETED") == 0;
    char *key = object_key(obj);
    if ((!added && !modified && !deleted) || key == NULL) {
        free(key);
        w->stats.errors++;
        restart(w, false, false, true, key ? "unknown watch event type" : "object without a name");
        r = -ECANCELED;
        goto out;
    }
    set_rv(w, meta_str(obj, "resourceVersion"));
    bool known = json_object_get(w->cache, key) != NULL;
    bool alive = true;
    if (deleted) {
        /* Only what the consumer was told exists can be deleted. */
        if (known) {
            json_object_del(w->cache, key);
            alive = emit(w, K8S_WATCH_DELETED, obj);
        }
    } else {
        json_object_set_new(w->cache, key, cache_entry(w, obj));
        alive = emit(w, known ? K8S_WATCH_MODIFIED : K8S_WATCH_ADDED, obj);
    }
    free(key);
    if (!alive)
        r = -ECANCELED;
out:
    json_decref(ev);
    return r;
}

static int on_stream_data(void *data, const char *bytes, size_t len)
{
    struct k8s_watch *w = data;
    assert(w->magic == WATCH_MAGIC);
    int r = k8s_framer_feed(&w->framer, bytes, len, on_line, w);
    if (r == -EMSGSIZE) {
        w->stats.errors++;
        restart(w, false, false, true, "watch event larger than max_line");
    }
    return r < 0 ? -1 : 0;
}

static void on_stream_done(void *data, int status, json_t *body, const char *error)
{
    struct k8s_watch *w = data;
    assert(w->magic == WATCH_MAGIC);
    w->req = NULL;
    if (status == 410) {
        w->stats.errors++;
        restart_gone(w, error);
    } else if (error) {
        w->stats.errors++;
        restart(w, false, false, true, error);
    } else if (k8s_framer_pending(&w->framer) > 0) {
        w->stats.errors++;
        restart(w, false, false, true, "watch stream ended inside an event");
    } else {
        /* The server ended the stream at timeoutSeconds: the normal case. A stream that
         * lasted, or carried events, was healthy; one that ended at once counts as a
         * failure so that a server that keeps doing that is not hammered. */
        uint64_t lived = uv_now(k8s_client_loop(w->c)) - w->stream_started_ms;
        if (w->stream_progress || lived >= HEALTHY_STREAM_MS)
            w->failures = 0;
        restart(w, false, true, false, NULL);
    }
}

static void start_watch(struct k8s_watch *w)
{
    struct buf path = BUF_INIT;
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%u", w->opt.timeout_s);
    buf_append_str(&path, w->path);
    k8s_query_append(&path, "watch", "1");
    k8s_query_append(&path, "resourceVersion", w->rv);
    k8s_query_append(&path, "allowWatchBookmarks", "true");
    k8s_query_append(&path, "timeoutSeconds", timeout);
    add_selectors(w, &path);
    k8s_framer_reset(&w->framer);
    w->state = W_WATCHING;
    w->stream_progress = false;
    w->stream_started_ms = uv_now(k8s_client_loop(w->c));
    w->stats.watches++;
    w->req = k8s_client_stream(w->c, path.data, on_stream_data, on_stream_done, w);
    buf_free(&path);
    if (w->req == NULL) {
        w->stats.errors++;
        restart(w, false, false, false, "cannot start the watch request");
        return;
    }
    uv_timer_start(&w->timer, on_timer, w->opt.silence_ms, 0);
}

/* ---- public ---- */

static bool segment_valid(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            return false;
    }
    return true;
}

static bool api_valid(const char *api)
{
    if (api == NULL || api[0] != '/' || api[strlen(api) - 1] == '/')
        return false;
    for (const unsigned char *p = (const unsigned char *)api; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '/'))
            return false;
    }
    return true;
}

struct k8s_watch *k8s_watch_start(struct k8s_client *c, const struct k8s_watch_options *opt,
                                  k8s_watch_cb cb, void *data)
{
    if (c == NULL || opt == NULL || cb == NULL || !api_valid(opt->api) ||
        !segment_valid(opt->resource) ||
        (opt->namespace && opt->namespace[0] && !segment_valid(opt->namespace)))
        return NULL;
    if (sodium_init() < 0)
        return NULL;
    struct k8s_watch *w = xcalloc(1, sizeof(*w));
    w->magic = WATCH_MAGIC;
    w->c = c;
    w->cb = cb;
    w->data = data;
    w->opt = *opt;
    if (opt->namespace && opt->namespace[0])
        w->path = xasprintf("%s/namespaces/%s/%s", opt->api, opt->namespace, opt->resource);
    else
        w->path = xasprintf("%s/%s", opt->api, opt->resource);
    w->label_selector =
        opt->label_selector && opt->label_selector[0] ? xstrdup(opt->label_selector) : NULL;
    w->field_selector =
        opt->field_selector && opt->field_selector[0] ? xstrdup(opt->field_selector) : NULL;
    w->opt.api = w->opt.resource = w->opt.namespace = NULL; /* use w->path */
    w->opt.label_selector = w->label_selector;
    w->opt.field_selector = w->field_selector;
    if (w->opt.page_size == 0)
        w->opt.page_size = DEFAULT_PAGE_SIZE;
    if (w->opt.timeout_s == 0)
        w->opt.timeout_s = DEFAULT_TIMEOUT_S;
    if (w->opt.silence_ms == 0)
        w->opt.silence_ms = w->opt.timeout_s * 1000 + DEFAULT_SILENCE_GRACE_MS;
    if (w->opt.backoff_min_ms == 0)
        w->opt.backoff_min_ms = DEFAULT_BACKOFF_MIN_MS;
    if (w->opt.backoff_max_ms == 0)
        w->opt.backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
    if (w->opt.backoff_max_ms < w->opt.backoff_min_ms)
        w->opt.backoff_max_ms = w->opt.backoff_min_ms;
    if (w->opt.max_line == 0)
        w->opt.max_line = DEFAULT_MAX_LINE;
    w->cache = json_object();
    k8s_framer_init(&w->framer, w->opt.max_line);
    uv_timer_init(k8s_client_loop(c), &w->timer);
    w->timer.data = w;
    k8s__client_watch_ref(c, 1);
    start_list(w);
    return w;
}

static void watch_closed(uv_handle_t *h)
{
    struct k8s_watch *w = h->data;
    assert(w->magic == WATCH_MAGIC);
    json_decref(w->cache);
    json_decref(w->pending);
    k8s_framer_free(&w->framer);
    free(w->path);
    free(w->label_selector);
    free(w->field_selector);
    free(w->cont);
    free(w->rv);
    w->magic = 0;
    free(w);
}

void k8s_watch_stop(struct k8s_watch *w)
{
    if (w == NULL || w->stopped)
        return;
    assert(w->magic == WATCH_MAGIC);
    w->stopped = true;
    w->state = W_STOPPED;
    k8s_request_cancel(w->req);
    w->req = NULL;
    k8s__client_watch_ref(w->c, -1);
    uv_close((uv_handle_t *)&w->timer, watch_closed);
}

json_t *k8s_watch_get(const struct k8s_watch *w, const char *namespace, const char *name)
{
    if (name == NULL)
        return NULL;
    char *key = namespace && namespace[0] ? xasprintf("%s/%s", namespace, name) : xstrdup(name);
    json_t *obj = json_object_get(w->cache, key);
    free(key);
    return obj;
}

size_t k8s_watch_count(const struct k8s_watch *w)
{
    return json_object_size(w->cache);
}

const char *k8s_watch_resource_version(const struct k8s_watch *w)
{
    return w->rv;
}

void k8s_watch_stats_get(const struct k8s_watch *w, struct k8s_watch_stats *out)
{
    *out = w->stats;
}

/* The spawn manager: per-user state machine, progress history and subscribers, limits,
 * persistence, activity batching, the culler and restore after a restart. See
 * docs/spawn.md for the states and transitions; spawn/backend.h for what a backend does.
 *
 * Everything here runs on the loop thread. The store is only called from libuv's thread
 * pool (uv_queue_work), and at most one write per user is in flight at a time, so writes
 * for one user land in the order the state changed: a change made while a write is in
 * flight marks the user dirty, and the write's completion sends the newest snapshot. */
#include "spawn/spawner.h"

#include "core/alloc.h"
#include "core/log.h"
#include "hub/metrics.h"
#include "spawn/backend.h"
#include "spawn/kube.h"

#include <assert.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MANAGER_MAGIC 0x53504d47u
#define USER_MAGIC 0x53505553u
#define SUB_MAGIC 0x53505342u

#define ACTIVITY_FLUSH_MS (30 * 1000)
#define INITIAL_BUCKETS 64

/* ---- progress history ---- */

struct event_rec {
    int progress;
    char *message;
    bool ready;
    bool failed;
};

/* The events of one start. Reference-counted: the user holds the current one, each
 * subscription the one it follows, so a new start never frees events a subscriber is
 * still reading. */
struct history {
    int refs;
    struct event_rec *ev;
    size_t n, cap;
    bool finished; /* ends with a ready or failed event */
    char *url;     /* "/user/NAME/" */
};

static struct history *history_new(const char *name)
{
    struct history *h = xcalloc(1, sizeof *h);
    h->refs = 1;
    h->url = xasprintf("/user/%s/", name);
    return h;
}

static void history_unref(struct history *h)
{
    if (h == NULL || --h->refs > 0)
        return;
    for (size_t i = 0; i < h->n; i++)
        free(h->ev[i].message);
    free(h->ev);
    free(h->url);
    free(h);
}

static void history_add(struct history *h, int progress, const char *message, bool ready,
                        bool failed)
{
    if (h->n == h->cap) {
        h->cap = h->cap != 0 ? h->cap * 2 : 8;
        h->ev = xrealloc(h->ev, h->cap * sizeof *h->ev);
    }
    h->ev[h->n].progress = progress;
    h->ev[h->n].message = xstrdup(message);
    h->ev[h->n].ready = ready;
    h->ev[h->n].failed = failed;
    h->n++;
    if (ready || failed)
        h->finished = true;
}

/* ---- types ---- */

struct spawn_user;

struct spawn_subscription {
    uint32_t magic;
    struct spawn_manager *m;                        /* NULL once the manager is gone */
    struct spawn_user *u;                           /* set while linked into u->subs */
    struct spawn_subscription *prev, *next;         /* in u->subs */
    struct spawn_subscription *all_prev, *all_next; /* in m->all_subs until unsubscribed */
    struct spawn_subscription *grave_next;          /* on m->graveyard once unsubscribed */
    struct history *hist;
    size_t next_event;
    void (*cb)(void *data, const struct spawn_event *ev);
    void *data;
    bool dead;
};

struct spawn_user {
    uint32_t magic;
    struct spawn_manager *m;
    struct spawn_user *hnext; /* hash chain */
    char *name;
    int64_t user_id; /* 0 until known */
    enum spawn_state state;
    struct spawner_server *srv;
    bool restoring;    /* a reattach is being checked */
    bool stop_pending; /* stop asked while the backend's start had not returned yet */
    char *route;       /* set by `placed` */
    char *spawner_state;
    char *message; /* last failure */
    int64_t requested_ms;
    int64_t started_ms;
    int64_t activity_ms;
    int64_t activity_flushed_ms;
    struct history *hist;
    struct spawn_subscription *subs;
    bool persist_inflight;
    bool persist_dirty;
    bool persist_retry; /* the last write failed (store away): written again after a beat */
    /* Several replicas (m->shared). */
    bool remote;         /* mirrors a server another replica supervises: no srv here */
    char *owner;         /* the replica that owns the row, as last read */
    bool claiming;       /* a store_server_claim() is in flight */
    char *claim_profile; /* the profile to start with once the claim is won */
    bool adopting;       /* a store_server_adopt() is in flight */
};

struct spawn_manager {
    uint32_t magic;
    uv_loop_t *loop;
    const struct config *cfg;
    struct store *store;
    struct spawn_metrics metrics;
    const struct spawner_backend *be;
    void *impl;
    struct spawn_user **buckets;
    size_t nbuckets, nusers;
    size_t n_starting, n_running;
    uv_timer_t activity_timer;
    uv_timer_t cull_timer;
    int open_handles;
    int pending_work;
    int delivering;
    struct spawn_subscription *graveyard;
    struct spawn_subscription *all_subs;
    bool closing;
    bool backend_closed;
    void (*close_done)(void *data);
    void *close_data;
    bool flush_inflight;
    bool flush_again; /* a flush was asked for while one was in flight */
    /* restore */
    void (*restore_done)(void *data, int status);
    void *restore_data;
    int restore_pending;
    bool restore_listed;
    /* Several replicas on one store (spawn_manager_share). */
    bool shared;
    char *replica_id;
    char *replica_address;
    int64_t replica_started_ms;
    bool leader;             /* runs the cluster-wide jobs: adoption sweeps, culling */
    int64_t store_ok_since;  /* first successful heartbeat since the last failed one; 0 */
    size_t n_remote_active;  /* remote records starting, running or stopping */
    uv_timer_t beat_timer;   /* heartbeat, retries of failed writes, leader's sweep */
    uv_timer_t resync_timer; /* full re-read of the active servers */
    bool beat_inflight, sweep_inflight, resync_inflight, cull_inflight;
    bool resync_again;
    bool replica_deleted;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *spawn_state_name(enum spawn_state state)
{
    switch (state) {
    case SPAWN_STOPPED:
        return "stopped";
    case SPAWN_STARTING:
        return "starting";
    case SPAWN_RUNNING:
        return "running";
    case SPAWN_STOPPING:
        return "stopping";
    case SPAWN_FAILED:
        return "failed";
    }
    return "stopped";
}

/* ---- the user table ---- */

static size_t name_hash(const char *s)
{
    /* FNV-1a: names are short and not chosen by an attacker who could gain from
     * collisions beyond a slower lookup in a table of known users. */
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

static struct spawn_user *user_find(struct spawn_manager *m, const char *name)
{
    if (name == NULL)
        return NULL;
    struct spawn_user *u = m->buckets[name_hash(name) & (m->nbuckets - 1)];
    while (u != NULL && strcmp(u->name, name) != 0)
        u = u->hnext;
    return u;
}

static void table_grow(struct spawn_manager *m)
{
    size_t n = m->nbuckets * 2;
    struct spawn_user **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct spawn_user *u = m->buckets[i];
        while (u != NULL) {
            struct spawn_user *next = u->hnext;
            size_t k = name_hash(u->name) & (n - 1);
            u->hnext = b[k];
            b[k] = u;
            u = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

static struct spawn_user *user_get(struct spawn_manager *m, const char *name)
{
    struct spawn_user *u = user_find(m, name);
    if (u != NULL)
        return u;
    if (m->nusers >= m->nbuckets)
        table_grow(m);
    u = xcalloc(1, sizeof *u);
    u->magic = USER_MAGIC;
    u->m = m;
    u->name = xstrdup(name);
    u->state = SPAWN_STOPPED;
    size_t k = name_hash(name) & (m->nbuckets - 1);
    u->hnext = m->buckets[k];
    m->buckets[k] = u;
    m->nusers++;
    return u;
}

static void set_str(char **slot, const char *value)
{
    char *copy = value != NULL ? xstrdup(value) : NULL;
    free(*slot);
    *slot = copy;
}

static bool state_active(enum spawn_state st)
{
    return st == SPAWN_STARTING || st == SPAWN_RUNNING || st == SPAWN_STOPPING;
}

static void set_state(struct spawn_user *u, enum spawn_state st)
{
    struct spawn_manager *m = u->m;
    if (u->remote) {
        /* Another replica's server: counted apart, so that each replica's gauges count
         * what it supervises and the gauges of all replicas add up. */
        if (state_active(u->state))
            m->n_remote_active--;
        if (state_active(st))
            m->n_remote_active++;
        u->state = st;
        return;
    }
    if (u->state == SPAWN_STARTING)
        m->n_starting--;
    if (u->state == SPAWN_RUNNING)
        m->n_running--;
    u->state = st;
    if (st == SPAWN_STARTING)
        m->n_starting++;
    if (st == SPAWN_RUNNING)
        m->n_running++;
    metric_set(m->metrics.starting, (int64_t)m->n_starting);
    metric_set(m->metrics.running, (int64_t)m->n_running);
}

/* ---- subscriptions ---- */

static void sub_unlink(struct spawn_subscription *s)
{
    if (s->u == NULL)
        return;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->u->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->u = NULL;
}

static void sub_free(struct spawn_subscription *s)
{
    sub_unlink(s);
    history_unref(s->hist);
    s->magic = 0;
    free(s);
}

/* Frees unsubscribed subscriptions once no delivery is running: one could be the very
 * subscription whose callback is on the stack. */
static void graveyard_purge(struct spawn_manager *m)
{
    if (m->delivering > 0)
        return;
    while (m->graveyard != NULL) {
        struct spawn_subscription *s = m->graveyard;
        m->graveyard = s->grave_next;
        sub_free(s);
    }
}

/* Delivers what `s` has not seen yet of its history. */
static void sub_pump(struct spawn_subscription *s)
{
    struct history *h = s->hist;
    h->refs++;
    while (!s->dead && s->next_event < h->n) {
        const struct event_rec *r = &h->ev[s->next_event++];
        struct spawn_event e = {
            .progress = r->progress,
            .message = r->message,
            .ready = r->ready,
            .failed = r->failed,
            .url = r->ready ? h->url : NULL,
        };
        /* The callback may append to h (h->ev moves), start, stop, unsubscribe. */
        s->cb(s->data, &e);
    }
    history_unref(h);
}

static void user_deliver(struct spawn_user *u)
{
    struct spawn_manager *m = u->m;
    m->delivering++;
    for (struct spawn_subscription *s = u->subs; s != NULL; s = s->next)
        sub_pump(s);
    m->delivering--;
    graveyard_purge(m);
}

/* Adds an event to the current start's history and delivers it. */
static void user_emit(struct spawn_user *u, int progress, const char *message, bool ready,
                      bool failed)
{
    if (u->hist == NULL || u->hist->finished)
        return;
    history_add(u->hist, progress, message, ready, failed);
    user_deliver(u);
}

struct spawn_subscription *spawn_subscribe(struct spawn_manager *m, const char *name,
                                           void (*cb)(void *data, const struct spawn_event *ev),
                                           void *data)
{
    assert(m->magic == MANAGER_MAGIC);
    struct spawn_user *u = user_find(m, name);
    struct spawn_subscription *s = xcalloc(1, sizeof *s);
    s->magic = SUB_MAGIC;
    s->m = m;
    s->cb = cb;
    s->data = data;
    s->all_next = m->all_subs;
    if (m->all_subs != NULL)
        m->all_subs->all_prev = s;
    m->all_subs = s;
    enum spawn_state st = u != NULL ? u->state : SPAWN_STOPPED;
    struct history *h = u != NULL ? u->hist : NULL;
    bool follow = false;
    if (h != NULL) {
        size_t n = h->n;
        if (st == SPAWN_STARTING)
            follow = true;
        else if (st == SPAWN_RUNNING && n > 0 && h->ev[n - 1].ready)
            follow = true;
        else if (st == SPAWN_FAILED && n > 0 && h->ev[n - 1].failed)
            follow = true;
    }
    if (follow) {
        s->hist = h;
        h->refs++;
        if (!h->finished) {
            /* Only an unfinished history gets more events: link to be delivered. */
            s->u = u;
            s->next = u->subs;
            if (u->subs != NULL)
                u->subs->prev = s;
            u->subs = s;
        }
    } else {
        s->hist = history_new(name != NULL ? name : "");
        if (st == SPAWN_RUNNING) {
            char *msg = xasprintf("Server ready at %s", s->hist->url);
            history_add(s->hist, 100, msg, true, false);
            free(msg);
        } else {
            history_add(s->hist, 0,
                        st == SPAWN_STOPPING ? "server is stopping" : "server is not running",
                        false, true);
        }
    }
    /* The replay happens now, before this returns. */
    m->delivering++;
    sub_pump(s);
    m->delivering--;
    graveyard_purge(m);
    return s;
}

void spawn_unsubscribe(struct spawn_subscription *s)
{
    if (s == NULL)
        return;
    assert(s->magic == SUB_MAGIC);
    if (s->dead)
        return;
    s->dead = true;
    struct spawn_manager *m = s->m;
    if (m == NULL) {
        sub_free(s);
        return;
    }
    if (s->all_prev != NULL)
        s->all_prev->all_next = s->all_next;
    else
        m->all_subs = s->all_next;
    if (s->all_next != NULL)
        s->all_next->all_prev = s->all_prev;
    s->all_prev = s->all_next = NULL;
    s->grave_next = m->graveyard;
    m->graveyard = s;
    graveyard_purge(m);
}

/* ---- persistence ---- */

struct persist_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct spawn_user *u;
    struct store_server row;
    int rc;
};

static void persist_run(uv_work_t *req)
{
    struct persist_work *w = req->data;
    w->rc = store_server_put(w->m->store, &w->row);
}

static void work_done(struct spawn_manager *m);
static void user_persist(struct spawn_user *u);
static void activity_flush(struct spawn_manager *m);

static void persist_after(uv_work_t *req, int status)
{
    struct persist_work *w = req->data;
    struct spawn_user *u = w->u;
    if (w->rc == -ESTALE) {
        /* Fenced: the leader adopted this server while this replica looked dead (its
         * heartbeats did not reach the store for a whole lease). The new owner supervises
         * it now; this replica's view no longer reaches the store. */
        log_event(LOG_ERROR, "spawn.ownership_lost", "user", u->name, "state", w->row.state, NULL);
    } else if (w->rc < 0) {
        log_event(LOG_ERROR, "spawn.persist_failed", "user", u->name, "state", w->row.state,
                  "error", strerror(-w->rc), NULL);
        /* The store is away: the newest state is written again once a heartbeat gets
         * through, so nothing the store must know is lost with the database. */
        u->persist_retry = true;
    } else {
        u->persist_retry = false;
    }
    u->persist_inflight = false;
    store_server_clear(&w->row);
    struct spawn_manager *m = w->m;
    free(w);
    if (u->persist_dirty) {
        u->persist_dirty = false;
        user_persist(u);
    }
    work_done(m);
}

/* Writes the user's current state to the servers row (coalesced, in order). */
static void user_persist(struct spawn_user *u)
{
    struct spawn_manager *m = u->m;
    if (u->user_id <= 0)
        return; /* never started here and not restored: no row to keep */
    if (u->remote)
        return; /* another replica writes this row */
    if (u->claiming)
        return; /* the claim writes the row; claim_after persists what happened meanwhile */
    if (u->persist_inflight) {
        u->persist_dirty = true;
        return;
    }
    bool live =
        u->state == SPAWN_STARTING || u->state == SPAWN_RUNNING || u->state == SPAWN_STOPPING;
    struct persist_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    w->u = u;
    w->row.user_id = u->user_id;
    w->row.state = xstrdup(spawn_state_name(u->state));
    w->row.url = xstrdup(live && u->route != NULL ? u->route : "");
    w->row.spawner_state = xstrdup(live && u->spawner_state != NULL ? u->spawner_state : "{}");
    w->row.message = xstrdup(u->message != NULL ? u->message : "");
    /* 0 for a fresh start until it is ready; a reattach keeps the original time. */
    w->row.started_ms = live ? u->started_ms : 0;
    w->row.last_activity_ms = u->activity_ms;
    w->row.owner = xstrdup(m->shared ? m->replica_id : "");
    if (uv_queue_work(m->loop, &w->req, persist_run, persist_after) != 0) {
        store_server_clear(&w->row);
        free(w);
        log_event(LOG_ERROR, "spawn.persist_failed", "user", u->name, "error", "cannot queue work",
                  NULL);
        return;
    }
    u->persist_inflight = true;
    m->pending_work++;
}

struct audit_work {
    uv_work_t req;
    struct spawn_manager *m;
    char *kind, *user, *actor, *detail;
};

static void audit_run(uv_work_t *req)
{
    struct audit_work *w = req->data;
    store_event_add(w->m->store, w->kind, w->user, w->actor, w->detail);
}

static void audit_after(uv_work_t *req, int status)
{
    struct audit_work *w = req->data;
    struct spawn_manager *m = w->m;
    free(w->kind);
    free(w->user);
    free(w->actor);
    free(w->detail);
    free(w);
    work_done(m);
}

/* Adds an audit-trail event (store_event_add) off the loop. */
static void audit(struct spawn_manager *m, const char *kind, const char *user, const char *actor,
                  const char *detail)
{
    struct audit_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    w->kind = xstrdup(kind);
    w->user = xstrdup(user);
    w->actor = xstrdup(actor);
    w->detail = xstrdup(detail != NULL ? detail : "");
    m->pending_work++;
    if (uv_queue_work(m->loop, &w->req, audit_run, audit_after) != 0)
        audit_after(&w->req, 0);
}

/* The first line of a reason, for log lines and the audit trail (the log tail follows
 * after "; last lines"). Caller frees. */
static char *first_line(const char *reason)
{
    if (reason == NULL)
        return xstrdup("");
    size_t n = strcspn(reason, "\n");
    const char *tail = strstr(reason, "; last lines of");
    if (tail != NULL && (size_t)(tail - reason) < n)
        n = (size_t)(tail - reason);
    return xstrndup(reason, n);
}

/* ---- restore bookkeeping ---- */

static void restore_maybe_done(struct spawn_manager *m, int status)
{
    if (m->restore_done == NULL || !m->restore_listed || m->restore_pending > 0)
        return;
    void (*done)(void *, int) = m->restore_done;
    m->restore_done = NULL;
    done(m->restore_data, status);
}

static void restore_resolved(struct spawn_user *u)
{
    if (!u->restoring)
        return;
    u->restoring = false;
    u->m->restore_pending--;
    restore_maybe_done(u->m, 0);
}

/* ---- backend events ---- */

static struct spawn_user *ctx_user(void *ctx)
{
    struct spawn_user *u = ctx;
    assert(u->magic == USER_MAGIC);
    return u;
}

static void on_progress(void *ctx, int percent, const char *message)
{
    struct spawn_user *u = ctx_user(ctx);
    user_emit(u, percent, message, false, false);
}

static void on_placed(void *ctx, const char *route, const char *state_json)
{
    struct spawn_user *u = ctx_user(ctx);
    set_str(&u->route, route);
    set_str(&u->spawner_state, state_json);
    user_persist(u);
}

static void on_ready(void *ctx)
{
    struct spawn_user *u = ctx_user(ctx);
    struct spawn_manager *m = u->m;
    bool restored = u->restoring;
    int64_t now = now_ms();
    if (u->state != SPAWN_STARTING) {
        /* Stopping already: the exit that follows ends it. */
        restore_resolved(u);
        return;
    }
    set_state(u, SPAWN_RUNNING);
    if (!restored || u->started_ms == 0)
        u->started_ms = now;
    set_str(&u->message, "");
    user_persist(u);
    if (restored) {
        log_event(LOG_INFO, "server.reattached", "user", u->name, "route", u->route, NULL);
    } else {
        double secs = (double)(now - u->requested_ms) / 1000.0;
        char text[32];
        snprintf(text, sizeof text, "%.3f", secs);
        log_event(LOG_INFO, "server.ready", "user", u->name, "seconds", text, NULL);
        metric_histogram_observe(m->metrics.duration, secs);
    }
    char *msg = xasprintf("Server ready at /user/%s/", u->name);
    user_emit(u, 100, msg, true, false);
    free(msg);
    restore_resolved(u);
}

static void on_failed(void *ctx, const char *reason)
{
    struct spawn_user *u = ctx_user(ctx);
    struct spawn_manager *m = u->m;
    bool restored = u->restoring;
    u->srv = NULL;
    set_str(&u->route, NULL);
    set_str(&u->spawner_state, NULL);
    char *line = first_line(reason);
    if (restored || u->state == SPAWN_STOPPING) {
        /* A server that did not survive the restart is simply not running. */
        set_state(u, SPAWN_STOPPED);
        set_str(&u->message, "");
        log_event(LOG_INFO, "server.not_reattached", "user", u->name, "reason", line, NULL);
        user_persist(u);
        user_emit(u, 100, "server is not running", false, true);
    } else {
        set_state(u, SPAWN_FAILED);
        set_str(&u->message, reason);
        metric_add(m->metrics.failures, 1);
        log_event(LOG_WARN, "server.failed", "user", u->name, "reason", line, NULL);
        audit(m, "server.failed", u->name, "", line);
        user_persist(u);
        char *msg = xasprintf("Spawn failed: %s", reason);
        user_emit(u, 100, msg, false, true);
        free(msg);
    }
    free(line);
    restore_resolved(u);
}

static void on_exited(void *ctx, bool requested, const char *reason)
{
    struct spawn_user *u = ctx_user(ctx);
    struct spawn_manager *m = u->m;
    u->srv = NULL;
    set_str(&u->route, NULL);
    set_str(&u->spawner_state, NULL);
    u->started_ms = 0;
    if (requested || u->state == SPAWN_STOPPING) {
        set_state(u, SPAWN_STOPPED);
        set_str(&u->message, "");
        log_event(LOG_INFO, "server.stopped", "user", u->name, NULL);
    } else {
        set_state(u, SPAWN_FAILED);
        set_str(&u->message, reason);
        char *line = first_line(reason);
        log_event(LOG_WARN, "server.exited", "user", u->name, "status", line, NULL);
        audit(m, "server.exited", u->name, "", line);
        free(line);
    }
    user_persist(u);
    /* A start that was stopped before it was ready ends its history here. */
    user_emit(u, 100, "Start cancelled: the server was stopped", false, true);
    restore_resolved(u);
}

static const struct spawner_events manager_events = {
    .progress = on_progress,
    .placed = on_placed,
    .ready = on_ready,
    .failed = on_failed,
    .exited = on_exited,
};

/* ---- starting and stopping ---- */

int spawn_start(struct spawn_manager *m, int64_t user_id, const char *name)
{
    return spawn_start_profile(m, user_id, name, NULL);
}

/* Hands the start to the backend (the user is STARTING, its history open). Returns what
 * spawn_start_profile returns for a start under way: 1, or -EIO when the backend could
 * not even begin (the user is FAILED then, and subscribers know why). */
static int backend_start(struct spawn_user *u, const char *profile)
{
    struct spawn_manager *m = u->m;
    char *err = NULL;
    struct spawner_server *srv = profile != NULL
                                     ? m->be->start_profile(m->impl, u->name, profile, u, &err)
                                     : m->be->start(m->impl, u->name, u, &err);
    if (srv == NULL) {
        char *reason = err != NULL ? err : xstrdup("the spawner could not start the server");
        set_state(u, SPAWN_FAILED);
        set_str(&u->message, reason);
        metric_add(m->metrics.failures, 1);
        log_event(LOG_ERROR, "server.failed", "user", u->name, "reason", reason, NULL);
        user_persist(u);
        char *msg = xasprintf("Spawn failed: %s", reason);
        user_emit(u, 100, msg, false, true);
        free(msg);
        free(reason);
        return -EIO;
    }
    u->srv = srv;
    if (u->stop_pending) {
        u->stop_pending = false;
        m->be->stop(m->impl, srv);
    }
    return 1;
}

static void claim_begin(struct spawn_user *u, const char *profile);

int spawn_start_profile(struct spawn_manager *m, int64_t user_id, const char *name,
                        const char *profile)
{
    assert(m->magic == MANAGER_MAGIC);
    if (m->closing)
        return -EIO;
    if (profile != NULL && profile[0] == '\0')
        profile = NULL;
    if (profile != NULL &&
        (m->be->start_profile == NULL ||
         (m->be == &spawn__kube_backend && !spawn__kube_profile_exists(m->cfg, profile))))
        return -EINVAL;
    struct spawn_user *u = user_get(m, name);
    if (user_id > 0)
        u->user_id = user_id;
    switch (u->state) {
    case SPAWN_RUNNING:
        return 0;
    case SPAWN_STARTING:
        return 1;
    case SPAWN_STOPPING:
        return -EALREADY;
    case SPAWN_STOPPED:
    case SPAWN_FAILED:
        break;
    }
    if (u->adopting)
        return 1; /* the leader is taking it over from a dead replica */
    const struct config *cfg = m->cfg;
    if (cfg->spawn.concurrent_limit > 0 && (int64_t)m->n_starting >= cfg->spawn.concurrent_limit)
        return -EBUSY;
    if (cfg->spawn.active_server_limit > 0 &&
        (int64_t)(m->n_starting + m->n_running + m->n_remote_active) >=
            cfg->spawn.active_server_limit)
        return -EDQUOT;

    history_unref(u->hist);
    u->hist = history_new(name);
    u->requested_ms = now_ms();
    u->started_ms = 0;
    u->stop_pending = false;
    set_str(&u->message, "");
    set_str(&u->route, NULL);
    set_str(&u->spawner_state, NULL);
    set_state(u, SPAWN_STARTING);
    log_event(LOG_INFO, "server.start", "user", name, NULL);
    /* Several replicas: the store decides who starts it (claim_after continues), and the
     * claim writes the row. */
    bool claim = m->shared && u->user_id > 0;
    if (!claim)
        user_persist(u);
    user_emit(u, 0, "Server requested", false, false);
    if (u->state != SPAWN_STARTING)
        return 1; /* a subscriber stopped it at once; it is stopping or stopped */
    if (claim) {
        claim_begin(u, profile);
        return 1;
    }
    return backend_start(u, profile);
}

static void request_stop_begin(struct spawn_user *u);

int spawn_stop(struct spawn_manager *m, const char *name)
{
    assert(m->magic == MANAGER_MAGIC);
    struct spawn_user *u = user_find(m, name);
    if (u == NULL)
        return 0;
    switch (u->state) {
    case SPAWN_STOPPED:
    case SPAWN_FAILED:
        return 0;
    case SPAWN_STOPPING:
        return 1;
    case SPAWN_STARTING:
    case SPAWN_RUNNING:
        break;
    }
    if (m->closing)
        return -EIO;
    set_state(u, SPAWN_STOPPING);
    log_event(LOG_INFO, "server.stop", "user", name, NULL);
    if (u->remote) {
        /* Its owner stops it: the request goes through the store. */
        request_stop_begin(u);
        return 1;
    }
    user_persist(u);
    if (u->srv != NULL)
        m->be->stop(m->impl, u->srv);
    else
        u->stop_pending = true;
    return 1;
}

enum spawn_state spawn_state_of(struct spawn_manager *m, const char *name)
{
    struct spawn_user *u = user_find(m, name);
    return u != NULL ? u->state : SPAWN_STOPPED;
}

const char *spawn_route(struct spawn_manager *m, const char *name)
{
    struct spawn_user *u = user_find(m, name);
    if (u == NULL || u->state != SPAWN_RUNNING)
        return NULL;
    return u->route;
}

const char *spawn_last_error(struct spawn_manager *m, const char *name)
{
    struct spawn_user *u = user_find(m, name);
    if (u == NULL || u->message == NULL)
        return "";
    return u->message;
}

/* ---- several replicas ----
 *
 * With a shared store (PostgreSQL) several codehub processes run side by side. Each active
 * servers row names its owner, the replica whose backend supervises the server. The other
 * replicas keep a "remote" record of it: state, route and message as the store last said,
 * refreshed by notifications (spawn_store_changed), by a full re-read every cluster.resync
 * (spawn_resync after a gap) and on demand (spawn_refresh, when a request finds no route).
 * A remote record routes traffic like an owned one; stopping it asks the owner through
 * the store (stop_requested). Starting goes through store_server_claim, so of several
 * replicas asked at once exactly one starts the server and the others follow its
 * progress through the store. Every replica beats every cluster.heartbeat; the leader
 * (store_listener's advisory lock) adopts the servers of replicas whose beat is older
 * than cluster.lease, re-attaching to them or cleaning them up, and runs the culler. */

/* Starts a job of which at most one runs at a time (`*inflight`, cleared by its `after`):
 * `w` is the zeroed work item the caller allocated and `req` its uv_work_t. Returns true
 * when queued; false when libuv refused it, and then `w` has been freed (not what it points
 * to). */
static bool job_start(struct spawn_manager *m, bool *inflight, uv_work_t *req, void *w,
                      uv_work_cb run, uv_after_work_cb after)
{
    req->data = w;
    if (uv_queue_work(m->loop, req, run, after) != 0) {
        free(w);
        return false;
    }
    *inflight = true;
    m->pending_work++;
    return true;
}

static int64_t lease_ms(const struct spawn_manager *m)
{
    return m->cfg->cluster.lease * 1000;
}

static enum spawn_state state_parse(const char *s)
{
    if (s == NULL)
        return SPAWN_STOPPED;
    if (strcmp(s, "starting") == 0)
        return SPAWN_STARTING;
    if (strcmp(s, "running") == 0)
        return SPAWN_RUNNING;
    if (strcmp(s, "stopping") == 0)
        return SPAWN_STOPPING;
    if (strcmp(s, "failed") == 0)
        return SPAWN_FAILED;
    return SPAWN_STOPPED;
}

/* True when `u` is one this replica supervises right now (or is about to). */
static bool user_owned_here(const struct spawn_user *u)
{
    return !u->remote && (state_active(u->state) || u->claiming || u->adopting);
}

/* Makes `u` mirror `row`, a server another replica owns, and tells subscribers what
 * changed. */
static void mirror_row(struct spawn_user *u, const struct store_server *row)
{
    enum spawn_state st = state_parse(row->state);
    if (!u->remote) {
        if (!state_active(st)) {
            /* Nobody supervises it: a plain stopped (or failed) record. */
            if (u->state != st) {
                set_state(u, st);
                set_str(&u->message, st == SPAWN_FAILED ? row->message : "");
            }
            set_str(&u->route, NULL);
            if (u->hist != NULL && !u->hist->finished)
                user_emit(u, 100,
                          st == SPAWN_FAILED ? u->message
                                             : "Start cancelled: the server was stopped",
                          false, true);
            return;
        }
        /* Becoming remote from an inactive local record: counters stay right because the
         * local state is inactive now. */
        u->remote = true;
        u->state = SPAWN_STOPPED;
    }
    enum spawn_state before = u->state;
    set_str(&u->owner, row->owner);
    set_str(&u->route, row->url[0] != '\0' ? row->url : NULL);
    u->started_ms = row->started_ms;
    if (row->last_activity_ms > u->activity_ms) {
        /* Activity the owner saw; not this replica's to write again. */
        u->activity_ms = row->last_activity_ms;
        u->activity_flushed_ms = row->last_activity_ms;
    }
    set_state(u, st);
    if (!state_active(st)) {
        set_str(&u->message, st == SPAWN_FAILED ? row->message : "");
        set_str(&u->route, NULL);
        u->remote = false;
        /* remote records are counted apart; inactive ones not at all: nothing to fix. */
    }
    switch (st) {
    case SPAWN_STARTING:
        if (u->hist == NULL || u->hist->finished) {
            history_unref(u->hist);
            u->hist = history_new(u->name);
            u->requested_ms = now_ms();
            history_add(u->hist, 0, "Server requested", false, false);
        }
        if (row->message[0] != '\0' && (u->message == NULL || strcmp(u->message, row->message)))
            user_emit(u, 50, row->message, false, false);
        else if (before != SPAWN_STARTING)
            user_emit(u, 10, "Starting (on another replica)", false, false);
        set_str(&u->message, row->message);
        break;
    case SPAWN_RUNNING:
        if (u->hist != NULL && !u->hist->finished) {
            char *msg = xasprintf("Server ready at /user/%s/", u->name);
            user_emit(u, 100, msg, true, false);
            free(msg);
        }
        break;
    case SPAWN_FAILED: {
        char *msg = xasprintf("Spawn failed: %s", row->message);
        user_emit(u, 100, msg, false, true);
        free(msg);
        break;
    }
    case SPAWN_STOPPED:
        user_emit(u, 100, "Start cancelled: the server was stopped", false, true);
        break;
    case SPAWN_STOPPING:
        break;
    }
}

/* Applies what the store says of one user's server to the in-memory record. */
static void apply_row(struct spawn_manager *m, const struct store_server *row)
{
    if (row->user_name == NULL || m->closing)
        return;
    struct spawn_user *u = user_get(m, row->user_name);
    u->user_id = row->user_id;
    const char *owner = row->owner != NULL ? row->owner : "";
    if (user_owned_here(u)) {
        /* This replica's own view is the truth, except for one thing another replica may
         * write: a request to stop it. */
        if (strcmp(owner, m->replica_id) == 0 && row->stop_requested &&
            (u->state == SPAWN_STARTING || u->state == SPAWN_RUNNING) && !u->claiming) {
            log_event(LOG_INFO, "server.stop_requested", "user", u->name, NULL);
            spawn_stop(m, u->name);
        }
        return;
    }
    if (strcmp(owner, m->replica_id) == 0 && state_active(state_parse(row->state)))
        return; /* ours but not here (an adoption in flight): the adoption decides */
    mirror_row(u, row);
}

/* A user whose row is gone (the user was deleted). */
static void apply_gone(struct spawn_user *u)
{
    if (user_owned_here(u))
        return;
    struct store_server none = {.user_id = u->user_id,
                                .user_name = u->name,
                                .state = "stopped",
                                .url = "",
                                .spawner_state = "{}",
                                .message = "",
                                .owner = ""};
    mirror_row(u, &none);
}

/* -- reading one row -- */

struct row_work {
    uv_work_t req;
    struct spawn_manager *m;
    int64_t user_id;
    char *name; /* when user_id is not known */
    struct store_server row;
    int rc;
    void (*done)(void *data);
    void *data;
};

static void row_run(uv_work_t *req)
{
    struct row_work *w = req->data;
    if (w->user_id <= 0 && w->name != NULL) {
        struct store_user su = {0};
        w->rc = store_user_get(w->m->store, w->name, &su);
        if (w->rc == 0)
            w->user_id = su.id;
        store_user_clear(&su);
        if (w->rc != 0)
            return;
    }
    w->rc = store_server_get(w->m->store, w->user_id, &w->row);
}

static struct spawn_user *user_by_id(struct spawn_manager *m, int64_t user_id)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext)
            if (u->user_id == user_id)
                return u;
    return NULL;
}

static void row_after(uv_work_t *req, int status)
{
    struct row_work *w = req->data;
    struct spawn_manager *m = w->m;
    if (!m->closing) {
        if (w->rc == 0) {
            apply_row(m, &w->row);
        } else if (w->rc == -ENOENT) {
            struct spawn_user *u =
                w->name != NULL ? user_find(m, w->name) : user_by_id(m, w->user_id);
            if (u != NULL)
                apply_gone(u);
        }
    }
    store_server_clear(&w->row);
    if (w->done != NULL)
        w->done(w->data);
    free(w->name);
    free(w);
    work_done(m);
}

static int row_read(struct spawn_manager *m, int64_t user_id, const char *name,
                    void (*done)(void *data), void *data)
{
    struct row_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    w->user_id = user_id;
    w->name = name != NULL ? xstrdup(name) : NULL;
    w->done = done;
    w->data = data;
    int rc = uv_queue_work(m->loop, &w->req, row_run, row_after);
    if (rc != 0) {
        free(w->name);
        free(w);
        return rc;
    }
    m->pending_work++;
    return 0;
}

void spawn_store_changed(struct spawn_manager *m, int64_t user_id)
{
    assert(m->magic == MANAGER_MAGIC);
    if (!m->shared || m->closing || user_id <= 0)
        return;
    if (row_read(m, user_id, NULL, NULL, NULL) != 0)
        log_event(LOG_WARN, "spawn.refresh_failed", "error", "cannot queue work", NULL);
}

int spawn_refresh(struct spawn_manager *m, const char *name, void (*done)(void *data), void *data)
{
    assert(m->magic == MANAGER_MAGIC);
    if (!m->shared)
        return -ENOTSUP;
    if (m->closing)
        return -ECANCELED;
    struct spawn_user *u = user_find(m, name);
    return row_read(m, u != NULL ? u->user_id : 0, name, done, data);
}

bool spawn_is_shared(const struct spawn_manager *m)
{
    return m->shared;
}

/* -- claiming a start -- */

struct claim_work {
    uv_work_t req;
    struct spawn_user *u;
    struct store_server want;
    struct store_server current;
    int rc;
};

static void claim_run(uv_work_t *req)
{
    struct claim_work *w = req->data;
    w->rc = store_server_claim(w->u->m->store, &w->want, &w->current);
}

static void claim_after(uv_work_t *req, int status)
{
    struct claim_work *w = req->data;
    struct spawn_user *u = w->u;
    struct spawn_manager *m = u->m;
    char *profile = u->claim_profile;
    u->claim_profile = NULL;
    u->claiming = false;
    if (m->closing) {
        /* The claim may have been won: the row says starting with no server behind it.
         * The next leader's sweep finds this replica gone and cleans it up. */
    } else if (w->rc == 0) {
        if (u->state == SPAWN_STOPPING) {
            /* Stopped while claiming: nothing was started. */
            set_state(u, SPAWN_STOPPED);
            u->stop_pending = false;
            user_persist(u);
            user_emit(u, 100, "Start cancelled: the server was stopped", false, true);
        } else if (u->state == SPAWN_STARTING) {
            backend_start(u, profile);
        }
    } else if (w->rc == -EBUSY) {
        /* Another replica holds it: follow its progress through the store. */
        bool stop = u->state == SPAWN_STOPPING;
        log_event(LOG_INFO, "server.start_elsewhere", "user", u->name, "owner",
                  w->current.owner != NULL ? w->current.owner : "", NULL);
        set_state(u, SPAWN_STOPPED);
        u->stop_pending = false;
        apply_row(m, &w->current);
        if (stop)
            spawn_stop(m, u->name);
    } else {
        char *reason =
            xasprintf("the store is unavailable (%s); try again shortly", strerror(-w->rc));
        set_state(u, SPAWN_FAILED);
        set_str(&u->message, reason);
        log_event(LOG_ERROR, "server.failed", "user", u->name, "reason", reason, NULL);
        char *msg = xasprintf("Spawn failed: %s", reason);
        user_emit(u, 100, msg, false, true);
        free(msg);
        free(reason);
    }
    free(profile);
    store_server_clear(&w->want);
    store_server_clear(&w->current);
    free(w);
    work_done(m);
}

static void claim_begin(struct spawn_user *u, const char *profile)
{
    struct spawn_manager *m = u->m;
    if (m->store_ok_since == 0) {
        /* No heartbeat of this replica is in the store (it is away, or was at start):
         * a row claimed now would look like a dead replica's to the leader. */
        const char *reason = "the store is unavailable; try again shortly";
        set_state(u, SPAWN_FAILED);
        set_str(&u->message, reason);
        log_event(LOG_ERROR, "server.failed", "user", u->name, "reason", reason, NULL);
        char *msg = xasprintf("Spawn failed: %s", reason);
        user_emit(u, 100, msg, false, true);
        free(msg);
        return;
    }
    struct claim_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->u = u;
    w->want.user_id = u->user_id;
    w->want.state = xstrdup("starting");
    w->want.url = xstrdup("");
    w->want.spawner_state = xstrdup("{}");
    w->want.message = xstrdup("");
    w->want.last_activity_ms = u->activity_ms;
    w->want.owner = xstrdup(m->replica_id);
    u->claiming = true;
    u->claim_profile = profile != NULL ? xstrdup(profile) : NULL;
    m->pending_work++;
    if (uv_queue_work(m->loop, &w->req, claim_run, claim_after) != 0) {
        w->rc = -EIO;
        claim_after(&w->req, 0);
    }
}

/* -- asking another replica to stop -- */

struct stop_work {
    uv_work_t req;
    struct spawn_manager *m;
    int64_t user_id;
    int rc;
};

static void stop_run(uv_work_t *req)
{
    struct stop_work *w = req->data;
    w->rc = store_server_request_stop(w->m->store, w->user_id);
}

static void stop_after(uv_work_t *req, int status)
{
    struct stop_work *w = req->data;
    struct spawn_manager *m = w->m;
    if (w->rc < 0 && w->rc != -ENOENT)
        log_event(LOG_ERROR, "spawn.stop_request_failed", "error", strerror(-w->rc), NULL);
    /* Whatever happened, the row tells the truth now (-ENOENT: it had stopped already). */
    if (!m->closing && row_read(m, w->user_id, NULL, NULL, NULL) != 0)
        log_event(LOG_WARN, "spawn.refresh_failed", "error", "cannot queue work", NULL);
    free(w);
    work_done(m);
}

static void request_stop_begin(struct spawn_user *u)
{
    struct spawn_manager *m = u->m;
    struct stop_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    w->user_id = u->user_id;
    m->pending_work++;
    if (uv_queue_work(m->loop, &w->req, stop_run, stop_after) != 0) {
        w->rc = -EIO;
        stop_after(&w->req, 0);
    }
}

/* -- the full re-read -- */

void spawn_resync(struct spawn_manager *m);

struct resync_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct store_server *rows;
    size_t n;
    int rc;
};

static void resync_run(uv_work_t *req)
{
    struct resync_work *w = req->data;
    w->rc = store_server_list_active(w->m->store, &w->rows, &w->n);
}

static void resync_after(uv_work_t *req, int status)
{
    struct resync_work *w = req->data;
    struct spawn_manager *m = w->m;
    m->resync_inflight = false;
    if (w->rc == 0 && !m->closing) {
        /* Remote records the store no longer lists as active have stopped. */
        for (size_t i = 0; i < m->nbuckets; i++) {
            for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext) {
                if (!u->remote)
                    continue;
                bool listed = false;
                for (size_t j = 0; j < w->n && !listed; j++)
                    listed = w->rows[j].user_id == u->user_id;
                if (!listed)
                    apply_gone(u);
            }
        }
        for (size_t j = 0; j < w->n; j++)
            apply_row(m, &w->rows[j]);
    } else if (w->rc < 0) {
        log_event(LOG_WARN, "spawn.resync_failed", "error", strerror(-w->rc), NULL);
    }
    store_servers_free(w->rows, w->n);
    free(w);
    if (m->resync_again && !m->closing) {
        m->resync_again = false;
        spawn_resync(m);
    }
    work_done(m);
}

void spawn_resync(struct spawn_manager *m)
{
    assert(m->magic == MANAGER_MAGIC);
    if (!m->shared || m->closing)
        return;
    if (m->resync_inflight) {
        m->resync_again = true;
        return;
    }
    struct resync_work *w = xcalloc(1, sizeof *w);
    w->m = m;
    job_start(m, &m->resync_inflight, &w->req, w, resync_run, resync_after);
}

static void on_resync_timer(uv_timer_t *t)
{
    spawn_resync(t->data);
}

/* -- adoption: the leader takes over the servers of dead replicas -- */

static void restore_row(struct spawn_manager *m, const struct store_server *row);

struct adopt_work {
    uv_work_t req;
    struct spawn_user *u;
    char *from;
    struct store_server row;
    int rc;
};

static void adopt_run(uv_work_t *req)
{
    struct adopt_work *w = req->data;
    struct spawn_manager *m = w->u->m;
    w->rc = store_server_adopt(m->store, w->u->user_id, w->from, m->replica_id, &w->row);
}

static void adopt_after(uv_work_t *req, int status)
{
    struct adopt_work *w = req->data;
    struct spawn_user *u = w->u;
    struct spawn_manager *m = u->m;
    u->adopting = false;
    if (m->closing) {
        /* Adopted or not, the next leader sees this replica gone and adopts again. */
    } else if (w->rc == 0) {
        log_event(LOG_INFO, "server.adopted", "user", u->name, "from", w->from, "state",
                  w->row.state, NULL);
        audit(m, "server.adopted", u->name, "", w->from);
        if (u->remote) {
            set_state(u, SPAWN_STOPPED);
            u->remote = false;
        }
        restore_row(m, &w->row);
        if (w->row.stop_requested && u->state == SPAWN_STARTING)
            spawn_stop(m, u->name);
    } else if (w->rc != -ESTALE && w->rc != -ENOENT) {
        log_event(LOG_ERROR, "spawn.adopt_failed", "user", u->name, "error", strerror(-w->rc),
                  NULL);
    }
    free(w->from);
    store_server_clear(&w->row);
    free(w);
    work_done(m);
}

static void adopt_begin(struct spawn_manager *m, const struct store_server *row)
{
    struct spawn_user *u = user_get(m, row->user_name);
    if (u->adopting || user_owned_here(u))
        return;
    u->user_id = row->user_id;
    struct adopt_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->u = u;
    w->from = xstrdup(row->owner != NULL ? row->owner : "");
    u->adopting = true;
    m->pending_work++;
    if (uv_queue_work(m->loop, &w->req, adopt_run, adopt_after) != 0) {
        w->rc = -EIO;
        adopt_after(&w->req, 0);
    }
}

struct sweep_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct store_replica *replicas;
    size_t n_replicas;
    struct store_server *rows;
    size_t n_rows;
    char **dead; /* replica rows to delete once their servers are adopted */
    size_t n_dead;
    int rc;
};

static void sweep_run(uv_work_t *req)
{
    struct sweep_work *w = req->data;
    w->rc = store_replica_list(w->m->store, &w->replicas, &w->n_replicas);
    if (w->rc == 0)
        w->rc = store_server_list_active(w->m->store, &w->rows, &w->n_rows);
}

/* -1: unknown (no row: gone cleanly, or never beat); else the index in w->replicas. */
static long replica_index(const struct sweep_work *w, const char *id)
{
    for (size_t i = 0; i < w->n_replicas; i++)
        if (strcmp(w->replicas[i].id, id) == 0)
            return (long)i;
    return -1;
}

/* Splits a replica id "HOST-PID-RANDOM" (as hub/cluster.c makes them): the host part's
 * length and the pid. Returns false for ids of another shape. */
static bool replica_id_parse(const char *id, size_t *host_len, long *pid)
{
    const char *last = strrchr(id, '-');
    if (last == NULL || last == id)
        return false;
    const char *p = last - 1;
    while (p > id && *p != '-')
        p--;
    if (*p != '-' || p == id)
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(p + 1, &end, 10);
    if (errno != 0 || end != last || v <= 0)
        return false;
    *host_len = (size_t)(p - id);
    *pid = v;
    return true;
}

/* True when replica `id` ran on this very host and its process is gone — or it had this
 * process's pid, which on the same host means a predecessor (a container restarted in its
 * pod keeps the host name and often pid 1). Such a replica is dead for sure, without
 * waiting for its lease: a restarted hub takes its servers back at once. A pid reused by
 * an unrelated process only makes this answer "not sure", and the lease decides. */
static bool replica_gone_here(const struct spawn_manager *m, const char *id)
{
    size_t mine_len, their_len;
    long mine_pid, their_pid;
    if (!replica_id_parse(m->replica_id, &mine_len, &mine_pid) ||
        !replica_id_parse(id, &their_len, &their_pid))
        return false;
    if (mine_len != their_len || strncmp(m->replica_id, id, mine_len) != 0)
        return false;
    if (their_pid == (long)getpid())
        return true;
    return kill((pid_t)their_pid, 0) != 0 && errno == ESRCH;
}

struct forget_work {
    uv_work_t req;
    struct spawn_manager *m;
    char *id;
};

static void forget_run(uv_work_t *req)
{
    struct forget_work *w = req->data;
    store_replica_delete(w->m->store, w->id);
}

static void forget_after(uv_work_t *req, int status)
{
    struct forget_work *w = req->data;
    struct spawn_manager *m = w->m;
    free(w->id);
    free(w);
    work_done(m);
}

/* Deletes replica `id`'s row (store_replica_delete) on the thread pool. */
static void forget_replica(struct spawn_manager *m, const char *id)
{
    struct forget_work *f = xcalloc(1, sizeof *f);
    f->req.data = f;
    f->m = m;
    f->id = xstrdup(id);
    m->pending_work++;
    if (uv_queue_work(m->loop, &f->req, forget_run, forget_after) != 0)
        forget_after(&f->req, 0);
}

static void sweep_after(uv_work_t *req, int status)
{
    struct sweep_work *w = req->data;
    struct spawn_manager *m = w->m;
    m->sweep_inflight = false;
    int64_t now = now_ms();
    /* A replica counts as dead when its beat is older than the lease, judged only once this
     * replica has itself reached the store for a whole lease: after an outage of the
     * database every beat is old, and nobody is dead for that. */
    bool can_judge_stale = m->store_ok_since > 0 && now - m->store_ok_since >= lease_ms(m);
    if (w->rc == 0 && m->leader && !m->closing) {
        for (size_t i = 0; i < w->n_rows; i++) {
            const struct store_server *row = &w->rows[i];
            const char *owner = row->owner != NULL ? row->owner : "";
            if (strcmp(owner, m->replica_id) == 0 || row->user_name == NULL)
                continue;
            long k = owner[0] != '\0' ? replica_index(w, owner) : -1;
            bool dead = k < 0 || replica_gone_here(m, owner) ||
                        (can_judge_stale && now - w->replicas[k].heartbeat_ms > lease_ms(m));
            if (dead)
                adopt_begin(m, row);
        }
        for (size_t k = 0; k < w->n_replicas; k++) {
            const struct store_replica *r = &w->replicas[k];
            if (strcmp(r->id, m->replica_id) == 0)
                continue;
            bool stale = can_judge_stale && now - r->heartbeat_ms > lease_ms(m);
            if (!stale && !replica_gone_here(m, r->id))
                continue;
            log_event(LOG_WARN, "cluster.replica_dead", "replica", r->id, "address", r->address,
                      NULL);
            /* Its servers are being adopted; an adoption that fails is retried next sweep,
             * when the owner (no row any more) counts as dead at once. */
            forget_replica(m, r->id);
        }
    } else if (w->rc < 0) {
        log_event(LOG_WARN, "cluster.sweep_failed", "error", strerror(-w->rc), NULL);
    }
    store_replicas_free(w->replicas, w->n_replicas);
    store_servers_free(w->rows, w->n_rows);
    free(w);
    work_done(m);
}

static void sweep(struct spawn_manager *m)
{
    if (!m->leader || m->sweep_inflight || m->closing)
        return;
    struct sweep_work *w = xcalloc(1, sizeof *w);
    w->m = m;
    job_start(m, &m->sweep_inflight, &w->req, w, sweep_run, sweep_after);
}

/* -- heartbeat -- */

struct beat_work {
    uv_work_t req;
    struct spawn_manager *m;
    char *address; /* a copy: spawn_manager_set_address() may replace the manager's */
    int rc;
};

static void beat_run(uv_work_t *req)
{
    struct beat_work *w = req->data;
    struct spawn_manager *m = w->m;
    w->rc = store_replica_beat(m->store, m->replica_id, w->address, m->replica_started_ms);
}

static void beat_after(uv_work_t *req, int status)
{
    struct beat_work *w = req->data;
    struct spawn_manager *m = w->m;
    m->beat_inflight = false;
    if (w->rc == 0) {
        if (m->store_ok_since == 0) {
            m->store_ok_since = now_ms();
            log_event(LOG_INFO, "cluster.store_reachable", "replica", m->replica_id, NULL);
            if (!m->closing) {
                /* Writes that failed while the store was away, and what was missed. */
                for (size_t i = 0; i < m->nbuckets; i++)
                    for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext)
                        if (u->persist_retry)
                            user_persist(u);
                spawn_resync(m);
            }
        }
        sweep(m);
    } else if (m->store_ok_since != 0) {
        m->store_ok_since = 0;
        log_event(LOG_WARN, "cluster.store_unreachable", "replica", m->replica_id, "error",
                  strerror(-w->rc), NULL);
    }
    free(w->address);
    free(w);
    work_done(m);
}

static void beat(struct spawn_manager *m)
{
    if (m->beat_inflight || m->closing)
        return;
    struct beat_work *w = xcalloc(1, sizeof *w);
    w->m = m;
    w->address = xstrdup(m->replica_address);
    char *address = w->address;
    if (!job_start(m, &m->beat_inflight, &w->req, w, beat_run, beat_after))
        free(address);
}

static void on_beat_timer(uv_timer_t *t)
{
    beat(t->data);
}

void spawn_set_leader(struct spawn_manager *m, bool leading)
{
    assert(m->magic == MANAGER_MAGIC);
    if (!m->shared || m->leader == leading)
        return;
    m->leader = leading;
    log_event(LOG_INFO, leading ? "cluster.leader" : "cluster.follower", "replica", m->replica_id,
              NULL);
    if (leading)
        beat(m); /* the sweep follows the beat */
}

void spawn_manager_set_address(struct spawn_manager *m, const char *address)
{
    assert(m->magic == MANAGER_MAGIC);
    if (!m->shared)
        return;
    set_str(&m->replica_address, address != NULL ? address : "");
}

bool spawn_is_leader(const struct spawn_manager *m)
{
    return !m->shared || m->leader;
}

int spawn_manager_share(struct spawn_manager *m, const char *replica_id, const char *address)
{
    assert(m->magic == MANAGER_MAGIC);
    if (m->shared)
        return -EALREADY;
    if (replica_id == NULL || replica_id[0] == '\0')
        return -EINVAL;
    m->shared = true;
    m->replica_id = xstrdup(replica_id);
    m->replica_address = xstrdup(address != NULL ? address : "");
    m->replica_started_ms = now_ms();
    uint64_t every = (uint64_t)m->cfg->cluster.heartbeat * 1000;
    uint64_t resync = (uint64_t)m->cfg->cluster.resync * 1000;
    uv_timer_start(&m->beat_timer, on_beat_timer, 0, every);
    uv_timer_start(&m->resync_timer, on_resync_timer, resync, resync);
    return 0;
}

/* ---- activity ---- */

void spawn_note_activity(struct spawn_manager *m, const char *name, int64_t at_ms)
{
    struct spawn_user *u = user_get(m, name);
    if (at_ms > u->activity_ms)
        u->activity_ms = at_ms;
}

int64_t spawn_last_activity(struct spawn_manager *m, const char *name)
{
    struct spawn_user *u = user_find(m, name);
    return u != NULL ? u->activity_ms : 0;
}

struct touch {
    struct spawn_user *u;
    int64_t user_id;
    char *name;
    int64_t ms;
};

struct flush_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct touch *t;
    size_t n;
};

static void flush_run(uv_work_t *req)
{
    struct flush_work *w = req->data;
    for (size_t i = 0; i < w->n; i++) {
        struct touch *t = &w->t[i];
        if (t->user_id <= 0) {
            /* Activity noted for a user this manager has no id for yet. */
            struct store_user su;
            if (store_user_get(w->m->store, t->name, &su) == 0)
                t->user_id = su.id;
            store_user_clear(&su);
        }
        if (t->user_id > 0)
            store_user_touch(w->m->store, t->user_id, t->ms);
    }
}

static void flush_after(uv_work_t *req, int status)
{
    struct flush_work *w = req->data;
    struct spawn_manager *m = w->m;
    for (size_t i = 0; i < w->n; i++) {
        if (w->t[i].u->user_id <= 0 && w->t[i].user_id > 0)
            w->t[i].u->user_id = w->t[i].user_id;
        free(w->t[i].name);
    }
    free(w->t);
    free(w);
    m->flush_inflight = false;
    if (m->flush_again) {
        m->flush_again = false;
        activity_flush(m);
    }
    work_done(m);
}

/* Writes every changed activity time: users.last_activity_ms in one batch, and the
 * servers row of those with a live server (through the ordered per-user write). */
static void activity_flush(struct spawn_manager *m)
{
    if (m->flush_inflight) {
        m->flush_again = true;
        return;
    }
    struct touch *t = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext) {
            if (u->activity_ms <= u->activity_flushed_ms)
                continue;
            u->activity_flushed_ms = u->activity_ms;
            if (n == cap) {
                cap = cap != 0 ? cap * 2 : 16;
                t = xrealloc(t, cap * sizeof *t);
            }
            t[n].u = u;
            t[n].user_id = u->user_id;
            t[n].name = xstrdup(u->name);
            t[n].ms = u->activity_ms;
            n++;
            if (u->state == SPAWN_RUNNING || u->state == SPAWN_STARTING)
                user_persist(u);
        }
    }
    if (n == 0)
        return;
    struct flush_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    w->t = t;
    w->n = n;
    m->flush_inflight = true;
    m->pending_work++;
    if (uv_queue_work(m->loop, &w->req, flush_run, flush_after) != 0)
        flush_after(&w->req, 0);
}

static void on_activity_timer(uv_timer_t *t)
{
    activity_flush(t->data);
}

/* ---- culling ---- */

int spawn_cull_idle(struct spawn_manager *m, int64_t idle_ms, int64_t at_ms)
{
    assert(m->magic == MANAGER_MAGIC);
    if (m->closing)
        return 0;
    int count = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext) {
            if (u->state != SPAWN_RUNNING)
                continue;
            int64_t last = u->activity_ms > u->started_ms ? u->activity_ms : u->started_ms;
            if (at_ms - last <= idle_ms)
                continue;
            char idle[32];
            snprintf(idle, sizeof idle, "%llds", (long long)((at_ms - last) / 1000));
            log_event(LOG_INFO, "server.culled", "user", u->name, "idle", idle, NULL);
            char *detail = xasprintf("idle for %s", idle);
            audit(m, "server.culled", u->name, "culler", detail);
            free(detail);
            metric_add(m->metrics.culled, 1);
            if (spawn_stop(m, u->name) == 1)
                count++;
        }
    }
    return count;
}

/* The culler with replicas: only the leader runs it, over every active server, with the
 * activity every replica has merged into the store (users.last_activity_ms, written in
 * batches) besides what the owner wrote into the servers row. */
struct cull_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct store_server *rows;
    int64_t *user_activity;
    size_t n;
    int rc;
};

static void cull_run(uv_work_t *req)
{
    struct cull_work *w = req->data;
    w->rc = store_server_list_active(w->m->store, &w->rows, &w->n);
    if (w->rc != 0)
        return;
    w->user_activity = xcalloc(w->n + 1, sizeof *w->user_activity);
    for (size_t i = 0; i < w->n; i++) {
        struct store_user su = {0};
        if (store_user_get_by_id(w->m->store, w->rows[i].user_id, &su) == 0)
            w->user_activity[i] = su.last_activity_ms;
        store_user_clear(&su);
    }
}

static void cull_after(uv_work_t *req, int status)
{
    struct cull_work *w = req->data;
    struct spawn_manager *m = w->m;
    m->cull_inflight = false;
    if (w->rc == 0 && m->leader && !m->closing) {
        int64_t now = now_ms();
        int64_t idle_ms = m->cfg->cull.timeout * 1000;
        for (size_t i = 0; i < w->n; i++) {
            const struct store_server *row = &w->rows[i];
            if (row->user_name == NULL || strcmp(row->state, "running") != 0)
                continue;
            apply_row(m, row);
            struct spawn_user *u = user_find(m, row->user_name);
            if (u == NULL || u->state != SPAWN_RUNNING)
                continue;
            if (w->user_activity[i] > u->activity_ms)
                u->activity_ms = w->user_activity[i];
        }
        spawn_cull_idle(m, idle_ms, now);
    } else if (w->rc < 0) {
        log_event(LOG_WARN, "spawn.cull_failed", "error", strerror(-w->rc), NULL);
    }
    store_servers_free(w->rows, w->n);
    free(w->user_activity);
    free(w);
    work_done(m);
}

static void on_cull_timer(uv_timer_t *t)
{
    struct spawn_manager *m = t->data;
    if (!m->shared) {
        spawn_cull_idle(m, m->cfg->cull.timeout * 1000, now_ms());
        return;
    }
    if (!m->leader || m->cull_inflight || m->closing)
        return;
    struct cull_work *w = xcalloc(1, sizeof *w);
    w->m = m;
    job_start(m, &m->cull_inflight, &w->req, w, cull_run, cull_after);
}

/* ---- restore ---- */

struct list_work {
    uv_work_t req;
    struct spawn_manager *m;
    struct store_server *rows;
    size_t n;
    int rc;
    int beat_rc;
};

static void list_run(uv_work_t *req)
{
    struct list_work *w = req->data;
    struct spawn_manager *m = w->m;
    if (m->shared) {
        /* Beat before anything is claimed: a leader that found a row owned by a replica
         * it has never heard of would adopt it as a dead one's. */
        w->beat_rc =
            store_replica_beat(m->store, m->replica_id, m->replica_address, m->replica_started_ms);
    }
    w->rc = store_server_list_active(m->store, &w->rows, &w->n);
}

static void restore_row(struct spawn_manager *m, const struct store_server *row)
{
    if (row->user_name == NULL)
        return;
    struct spawn_user *u = user_get(m, row->user_name);
    if (u->state != SPAWN_STOPPED && u->state != SPAWN_FAILED)
        return; /* started meanwhile: this manager already owns it */
    u->user_id = row->user_id;
    if (row->last_activity_ms > u->activity_ms) {
        u->activity_ms = row->last_activity_ms;
        u->activity_flushed_ms = row->last_activity_ms;
    }
    if (strcmp(row->state, "failed") == 0) {
        u->state = SPAWN_FAILED;
        set_str(&u->message, row->message);
        return;
    }
    bool stopping = strcmp(row->state, "stopping") == 0;
    history_unref(u->hist);
    /* A server being stopped has no start to show: subscribers get "server is stopping",
     * then "server is not running" once it is gone. */
    u->hist = stopping ? NULL : history_new(u->name);
    u->started_ms = row->started_ms;
    set_str(&u->route, row->url);
    set_str(&u->spawner_state, row->spawner_state);
    char *err = NULL;
    struct spawner_server *srv = NULL;
    if (row->spawner_state != NULL && strcmp(row->spawner_state, "{}") != 0)
        srv = m->be->reattach(m->impl, u->name, row->spawner_state, u, &err);
    if (srv == NULL) {
        /* Nothing to find (the hub died before the server existed) or unusable state. */
        log_event(LOG_INFO, "server.not_reattached", "user", u->name, "reason",
                  err != NULL ? err : "no spawner state recorded", NULL);
        free(err);
        set_str(&u->route, NULL);
        set_str(&u->spawner_state, NULL);
        u->started_ms = 0;
        u->state = SPAWN_STOPPED;
        user_persist(u);
        return;
    }
    u->srv = srv;
    if (stopping) {
        /* The hub died while stopping it: finish the job, in the background. It is not
         * counted in restore_pending, because a code-server that ignores SIGTERM only goes
         * with the SIGKILL after spawn.stop_timeout, and the hub listens only once the
         * restore is done: nobody could reach the hub meanwhile. Nothing is lost by not
         * waiting: STOPPING has no route (the proxy never reaches it), a start is refused
         * with -EALREADY until the backend's `exited` makes it STOPPED, and the row stays
         * "stopping" with the process recorded until then, so a hub that dies again
         * resumes the stop the same way. */
        set_state(u, SPAWN_STOPPING);
        log_event(LOG_INFO, "server.stop_resumed", "user", u->name, (const char *)NULL);
        m->be->stop(m->impl, srv);
        return;
    }
    u->restoring = true;
    m->restore_pending++;
    set_state(u, SPAWN_STARTING);
    user_emit(u, 50, "Reconnecting to your running server", false, false);
}

static void list_after(uv_work_t *req, int status)
{
    struct list_work *w = req->data;
    struct spawn_manager *m = w->m;
    int rc = w->rc;
    if (m->shared && w->beat_rc == 0 && m->store_ok_since == 0)
        m->store_ok_since = now_ms();
    if (rc == 0 && !m->closing) {
        /* With replicas, the servers of the previous run belong to a replica id that is
         * gone: they are mirrored (so their routes work at once) and the leader adopts
         * them. Alone, they are re-attached here. */
        for (size_t i = 0; i < w->n; i++) {
            if (m->shared)
                apply_row(m, &w->rows[i]);
            else
                restore_row(m, &w->rows[i]);
        }
    }
    store_servers_free(w->rows, w->n);
    free(w);
    if (rc < 0)
        log_event(LOG_ERROR, "spawn.restore_failed", "error", strerror(-rc), NULL);
    m->restore_listed = true;
    if (m->closing)
        rc = -ECANCELED;
    if (rc < 0) {
        m->restore_pending = 0;
        restore_maybe_done(m, rc);
    } else {
        restore_maybe_done(m, 0);
    }
    work_done(m);
}

int spawn_manager_restore(struct spawn_manager *m, void (*done)(void *data, int status), void *data)
{
    assert(m->magic == MANAGER_MAGIC);
    if (m->closing)
        return -EIO;
    if (m->restore_done != NULL)
        return -EALREADY;
    m->restore_done = done;
    m->restore_data = data;
    m->restore_listed = false;
    struct list_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->m = m;
    int rc = uv_queue_work(m->loop, &w->req, list_run, list_after);
    if (rc != 0) {
        free(w);
        m->restore_done = NULL;
        return rc;
    }
    m->pending_work++;
    return 0;
}

/* ---- creation and closing ---- */

static const struct spawner_backend *const backends[] = {&spawn__local_backend,
                                                         &spawn__kube_backend};

struct spawn_manager *spawn_manager_new(uv_loop_t *loop, const struct config *cfg,
                                        struct store *store, const struct spawn_metrics *metrics,
                                        char **err)
{
    const struct spawner_backend *be = NULL;
    const char *want = cfg->spawn.spawner != NULL ? cfg->spawn.spawner : "local";
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        if (strcmp(backends[i]->name, want) == 0)
            be = backends[i];
    }
    if (be == NULL) {
        *err = xasprintf("spawn.spawner: unknown spawner %s", want);
        return NULL;
    }
    struct spawn_manager *m = xcalloc(1, sizeof *m);
    m->magic = MANAGER_MAGIC;
    m->loop = loop;
    m->cfg = cfg;
    m->store = store;
    if (metrics != NULL)
        m->metrics = *metrics;
    m->be = be;
    m->impl = be->create(loop, cfg, &manager_events, err);
    if (m->impl == NULL) {
        free(m);
        return NULL;
    }
    m->nbuckets = INITIAL_BUCKETS;
    m->buckets = xcalloc(m->nbuckets, sizeof *m->buckets);
    metric_set(m->metrics.starting, 0);
    metric_set(m->metrics.running, 0);
    uv_timer_init(loop, &m->activity_timer);
    uv_timer_init(loop, &m->cull_timer);
    uv_timer_init(loop, &m->beat_timer);
    uv_timer_init(loop, &m->resync_timer);
    m->activity_timer.data = m;
    m->cull_timer.data = m;
    m->beat_timer.data = m;
    m->resync_timer.data = m;
    m->open_handles = 4;
    uv_timer_start(&m->activity_timer, on_activity_timer, ACTIVITY_FLUSH_MS, ACTIVITY_FLUSH_MS);
    if (cfg->cull.timeout > 0) {
        uint64_t every = (uint64_t)(cfg->cull.every > 0 ? cfg->cull.every : 60) * 1000;
        uv_timer_start(&m->cull_timer, on_cull_timer, every, every);
    }
    /* Housekeeping alone does not keep a loop running. */
    uv_unref((uv_handle_t *)&m->activity_timer);
    uv_unref((uv_handle_t *)&m->cull_timer);
    uv_unref((uv_handle_t *)&m->beat_timer);
    uv_unref((uv_handle_t *)&m->resync_timer);
    return m;
}

static void manager_free(struct spawn_manager *m)
{
    /* Subscriptions still held by their owners outlive us: unlink them; the owner's
     * spawn_unsubscribe() then frees them alone. */
    graveyard_purge(m);
    for (struct spawn_subscription *s = m->all_subs; s != NULL; s = s->all_next) {
        sub_unlink(s);
        s->m = NULL;
    }
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct spawn_user *u = m->buckets[i];
        while (u != NULL) {
            struct spawn_user *next = u->hnext;
            history_unref(u->hist);
            free(u->name);
            free(u->route);
            free(u->spawner_state);
            free(u->message);
            free(u->owner);
            free(u->claim_profile);
            u->magic = 0;
            free(u);
            u = next;
        }
    }
    free(m->buckets);
    free(m->replica_id);
    free(m->replica_address);
    void (*done)(void *) = m->close_done;
    void *data = m->close_data;
    m->magic = 0;
    free(m);
    if (done != NULL)
        done(data);
}

static void close_maybe_done(struct spawn_manager *m)
{
    if (!m->closing || m->open_handles > 0 || m->pending_work > 0 || !m->backend_closed)
        return;
    manager_free(m);
}

static void work_done(struct spawn_manager *m)
{
    m->pending_work--;
    close_maybe_done(m);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct spawn_manager *m = h->data;
    m->open_handles--;
    close_maybe_done(m);
}

static void on_backend_closed(void *data)
{
    struct spawn_manager *m = data;
    m->backend_closed = true;
    close_maybe_done(m);
}

void spawn_manager_close(struct spawn_manager *m, void (*done)(void *data), void *data)
{
    assert(m->magic == MANAGER_MAGIC);
    if (m->closing)
        return;
    m->closing = true;
    m->close_done = done;
    m->close_data = data;
    uv_close((uv_handle_t *)&m->activity_timer, on_timer_closed);
    uv_close((uv_handle_t *)&m->cull_timer, on_timer_closed);
    uv_close((uv_handle_t *)&m->beat_timer, on_timer_closed);
    uv_close((uv_handle_t *)&m->resync_timer, on_timer_closed);
    /* No backend event comes after this: servers keep running and keep their rows. */
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct spawn_user *u = m->buckets[i]; u != NULL; u = u->hnext)
            u->srv = NULL;
    }
    m->be->close(m->impl, on_backend_closed, m);
    activity_flush(m);
    if (m->shared && !m->replica_deleted) {
        /* Leaving cleanly: the leader adopts this replica's servers at its next sweep
         * instead of waiting for the lease to run out. Queued after the last writes of
         * the flush above, which still carry this replica's id and are fenced by it. */
        m->replica_deleted = true;
        forget_replica(m, m->replica_id);
    }
    if (m->restore_done != NULL) {
        m->restore_pending = 0;
        m->restore_listed = true;
        restore_maybe_done(m, -ECANCELED);
    }
}

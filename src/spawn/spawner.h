/* Spawning: starting, watching and stopping each user's code-server.
 *
 * struct spawn_manager is the one object the hub talks to. It keeps, per user, the state
 * of their server (stopped, starting, running, stopping, failed), the progress events of
 * the current start (so a page that subscribes late still sees them all), the address
 * the proxy must use, and the time of the last user activity. It persists each state
 * change to the store (on the thread pool, never on the loop), enforces the start
 * limits, runs the idle culler, and after a restart re-attaches to servers that kept
 * running. A backend (struct spawner_backend, see spawn/backend.h) does the actual work:
 * `local` runs code-server processes; `kubernetes` runs pods.
 *
 * All functions are called on the loop thread. */
#ifndef CODEHUB_SPAWN_SPAWNER_H
#define CODEHUB_SPAWN_SPAWNER_H

#include "core/config.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct spawn_manager;

enum spawn_state {
    SPAWN_STOPPED = 0,
    SPAWN_STARTING,
    SPAWN_RUNNING,
    SPAWN_STOPPING,
    SPAWN_FAILED, /* the last start failed; behaves as stopped, keeps the reason */
};

/* "stopped", "starting", … (the strings the store and the API use). Static. */
const char *spawn_state_name(enum spawn_state state);

/* One progress event, as the API streams it (JupyterHub's shape). */
struct spawn_event {
    int progress;        /* 0..100 */
    const char *message; /* human-readable */
    bool ready;          /* the server answers: `url` is where to go */
    bool failed;         /* the start failed: `message` says why (with the log tail) */
    const char *url;     /* "/user/NAME/" when ready, else NULL */
};

/* Metrics the manager keeps up to date; any pointer may be NULL. */
struct spawn_metrics {
    struct metric *running;            /* gauge: servers running */
    struct metric *starting;           /* gauge: servers starting */
    struct metric *failures;           /* counter: failed starts */
    struct metric *culled;             /* counter: servers stopped by the culler */
    struct metric_histogram *duration; /* seconds from start request to ready */
};

/* Returns a manager using `store` and `cfg` (both borrowed, must outlive it), or NULL
 * with *err set (caller frees) when the configured spawner cannot work (e.g. no
 * code-server found). Free with spawn_manager_close(). */
struct spawn_manager *spawn_manager_new(uv_loop_t *loop, const struct config *cfg,
                                        struct store *store, const struct spawn_metrics *metrics,
                                        char **err);

/* Reads the servers the store records as not stopped and re-attaches to those still
 * alive (the local backend checks pid, process start time and the socket); the others
 * are marked stopped. A server whose stop was under way is stopped again in the
 * background: it is `stopping` (no route, starts refused with -EALREADY) until it is
 * gone, and `done` does not wait for that. Calls `done` on the loop thread when finished
 * (with 0 or a negative errno). Returns 0, -EALREADY while a restore runs, -EIO while
 * closing, or a libuv error; `done` is called only after 0. The hub starts proxying only
 * after `done`. */
int spawn_manager_restore(struct spawn_manager *m, void (*done)(void *data, int status),
                          void *data);

/* Stops watching: closes every handle, leaves the servers running (a restarted hub
 * re-attaches them), flushes pending activity to the store, then calls `done`. */
void spawn_manager_close(struct spawn_manager *m, void (*done)(void *data), void *data);

/* Starts NAME's server.
 * Returns 0 when it is already running (API: 201... JupyterHub answers 400 "already
 * running"; the hub decides), 1 when a start is now in progress (API: 202), or
 *   -EBUSY  spawn.concurrent_limit reached (API: 429 with Retry-After),
 *   -EDQUOT spawn.active_server_limit reached (API: 429),
 *   -EALREADY it is stopping (API: 400/409),
 *   -ENOMEM/-EIO on internal failures.
 * The user must exist; `user_id` is their store id. */
int spawn_start(struct spawn_manager *m, int64_t user_id, const char *name);

/* As spawn_start, with a profile the user chose (NULL or "": the default settings; see
 * kube.profiles). Returns what spawn_start returns, or -EINVAL when the profile is unknown
 * or the spawner has no profiles. */
int spawn_start_profile(struct spawn_manager *m, int64_t user_id, const char *name,
                        const char *profile);

/* Stops NAME's server. Returns 0 when it is already stopped, 1 when stopping is in
 * progress (finishes asynchronously: SIGTERM, then SIGKILL after spawn.stop_timeout). */
int spawn_stop(struct spawn_manager *m, const char *name);

/* The state of NAME's server (SPAWN_STOPPED for unknown users). */
enum spawn_state spawn_state_of(struct spawn_manager *m, const char *name);

/* Where the proxy reaches NAME's running server: "unix:/path/to/socket" or
 * "http://IP:PORT". NULL unless running. Borrowed: valid until the next call into the
 * manager or the next loop iteration, copy it to keep it. */
const char *spawn_route(struct spawn_manager *m, const char *name);

/* The last failure message for NAME ("" when none). Borrowed, as above. */
const char *spawn_last_error(struct spawn_manager *m, const char *name);

/* Subscribes to NAME's progress. `cb` is called at once, on the loop thread, with every
 * event of the current (or last) start so far, then with each new one; after a `ready`
 * or `failed` event no more come. Returns a subscription to pass to spawn_unsubscribe(),
 * which must be called (also after the final event) to free it. If NAME has no start in
 * progress and is running, a single ready event is delivered; if stopped, a single
 * event {progress 0, message "server is not running", failed true}. */
struct spawn_subscription *spawn_subscribe(struct spawn_manager *m, const char *name,
                                           void (*cb)(void *data, const struct spawn_event *ev),
                                           void *data);
void spawn_unsubscribe(struct spawn_subscription *sub);

/* Records user-initiated activity for NAME now. Cheap (an in-memory timestamp); the
 * manager writes the newest value per user to the store in batches (every ~30 s and at
 * close), never a write per call. */
void spawn_note_activity(struct spawn_manager *m, const char *name, int64_t now_ms);

/* Last activity of NAME in ms since the epoch, 0 when none known. */
int64_t spawn_last_activity(struct spawn_manager *m, const char *name);

/* Stops every running server idle longer than `idle_ms` (the culler's job, also the
 * admin page's "stop all idle"). Returns how many were asked to stop. */
int spawn_cull_idle(struct spawn_manager *m, int64_t idle_ms, int64_t now_ms);

/* ---- several replicas on one store (PostgreSQL) ----
 * See docs/operations.md ("Replicas") and the comment above the code in manager.c. */

/* Makes this manager one replica among several sharing the store: servers are claimed in
 * the store before they start, other replicas' servers are mirrored (routes included),
 * stops of those go to their owner through the store, and this replica beats every
 * cluster.heartbeat. `replica_id` is unique to this process run; `address` (may be NULL)
 * is shown to operators. Call once, before spawn_manager_restore(). Returns 0, -EALREADY
 * or -EINVAL. */
int spawn_manager_share(struct spawn_manager *m, const char *replica_id, const char *address);
/* Replaces the address shown for this replica (once the listening port is known); the
 * next heartbeat records it. */
void spawn_manager_set_address(struct spawn_manager *m, const char *address);
/* True after spawn_manager_share(). */
bool spawn_is_shared(const struct spawn_manager *m);
/* This replica leads (true) or not: the leader adopts the servers of dead replicas and
 * runs the idle culler. Without sharing, the one process always leads. */
void spawn_set_leader(struct spawn_manager *m, bool leading);
bool spawn_is_leader(const struct spawn_manager *m);
/* The store says user `user_id`'s server row changed (a notification): re-read it. */
void spawn_store_changed(struct spawn_manager *m, int64_t user_id);
/* Re-reads every active server (after notifications may have been missed). */
void spawn_resync(struct spawn_manager *m);
/* Re-reads NAME's server row now, then calls `done(data)` on the loop thread (also when the
 * read failed: spawn_route() tells what is known). Returns 0, -ENOTSUP when not shared
 * (nothing to refresh: this process knows everything), -ECANCELED while closing, or a
 * libuv error; `done` is called only after 0. */
int spawn_refresh(struct spawn_manager *m, const char *name, void (*done)(void *data), void *data);

#endif

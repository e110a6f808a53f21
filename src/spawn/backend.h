/* The interface between the spawn manager (manager.c) and a backend that actually runs
 * servers: `local` (local.c: code-server processes) and `kubernetes` (kube.c: pods).
 *
 * The manager owns everything users see: states, progress history, subscribers, limits,
 * persistence, activity and culling. A backend only knows how to bring one user's server
 * up, notice when it goes away, take it down, and find it again after a restart from the
 * JSON it asked the manager to persist. It never touches the store.
 *
 * Per server the manager passes an opaque `ctx` (its per-user record); the backend hands
 * back a `struct spawner_server *` and reports through the `struct spawner_events` given
 * at creation, always on the loop thread:
 *
 *   start ──progress*──placed──progress*──┬─ ready ──(later) exited
 *                                         └─ failed
 *   reattach ─────────────────────────────┬─ ready ──(later) exited
 *                                         └─ failed
 *   stop (any time before failed/exited) ──── exited(requested = true)
 *
 * - `placed` gives the route and the state to persist as soon as the server exists (for
 *   local: right after the process is spawned), so that a hub that dies during a start can
 *   still find and clean up the process. It may come more than once.
 * - `failed` and `exited` are final: after either returns the backend has forgotten the
 *   server and the `struct spawner_server *` is dangling.
 * - After stop(), the end is always reported as `exited` with requested = true (even
 *   before ready), once the server is really gone: a new start may then reuse its name.
 * - `progress` and `placed` may be called from inside start(); `ready`, `failed` and
 *   `exited` never are called from inside start(), stop() or reattach(), so the manager
 *   never sees a final event while it is still setting up.
 * - Callbacks may call stop() on the same server, and start() for other users.
 *
 * The kubernetes backend (kube.c) fits the same shape: start creates the PVC and pod
 * (`placed` with {"namespace", "pod", "uid"} and the route "http://POD_IP:PORT" once the
 * pod has an IP), its shared watches turn pod events into `progress` and readiness into
 * `ready`, image pull errors into `failed`, pod deletion into `exited`; reattach looks the
 * pod up by the persisted uid; close stops the watches. */
#ifndef CODEHUB_SPAWN_BACKEND_H
#define CODEHUB_SPAWN_BACKEND_H

#include "core/config.h"

#include <stdbool.h>
#include <uv.h>

/* A backend's handle on one user's server. Opaque to the manager. */
struct spawner_server;

struct spawner_events {
    /* A step of the start: `percent` 1..99, a message for the user. */
    void (*progress)(void *ctx, int percent, const char *message);
    /* The server exists: `route` is where the proxy will reach it ("unix:/path",
     * "http://ip:port"), `state_json` what reattach() needs after a restart. Both
     * borrowed for the call. */
    void (*placed)(void *ctx, const char *route, const char *state_json);
    /* The server answers; the route given by `placed` is usable. */
    void (*ready)(void *ctx);
    /* The start (or the reattach) did not succeed; `reason` says why, for users. Nothing
     * of the server is left running. Final. */
    void (*failed)(void *ctx, const char *reason);
    /* A server that was ready, or that was asked to stop, has gone. `requested` tells
     * whether stop() asked for it; `reason` ("exited with status 1" plus the log tail)
     * says what happened when it was not. Final. */
    void (*exited)(void *ctx, bool requested, const char *reason);
};

struct spawner_backend {
    const char *name; /* the spawn.spawner value: "local", "kubernetes" */

    /* Returns the backend's instance for `cfg` (borrowed, outlives it), or NULL with *err
     * set (caller frees) when it cannot work here, e.g. no code-server, system_users
     * without root. `events` is borrowed and outlives the instance. */
    void *(*create)(uv_loop_t *loop, const struct config *cfg, const struct spawner_events *events,
                    char **err);

    /* Begins starting `name`'s server (a valid user name). Returns the server handle, or
     * NULL with *err set (caller frees) when it cannot even begin (e.g. the socket path
     * would be too long); no event follows a NULL return. */
    struct spawner_server *(*start)(void *impl, const char *name, void *ctx, char **err);

    /* As start, with a profile the user chose (NULL or "": the default settings). NULL in
     * backends without profiles (local); the manager then refuses a named profile. An
     * unknown profile is a NULL return with *err set. */
    struct spawner_server *(*start_profile)(void *impl, const char *name, const char *profile,
                                            void *ctx, char **err);

    /* Asks the server to stop (for local: SIGTERM to its process group, SIGKILL after
     * spawn.stop_timeout); works during a start too. `exited` follows. Returns 0, or
     * -EALREADY when a stop is already under way. */
    int (*stop)(void *impl, struct spawner_server *srv);

    /* Finds a server again after a restart, from the `state_json` that `placed` gave:
     * `ready` when it is still there and answers, `failed` otherwise (for local: a dead
     * process or a PID that now belongs to another process, which is never signalled).
     * Returns the handle, or NULL with *err set when `state_json` is unusable (no event
     * follows). */
    struct spawner_server *(*reattach)(void *impl, const char *name, const char *state_json,
                                       void *ctx, char **err);

    /* Stops watching: closes every handle and frees the instance, leaving servers
     * running, then calls `done` (never from inside close()). No event comes after
     * close() is called. */
    void (*close)(void *impl, void (*done)(void *data), void *data);
};

/* The local backend (local.c). */
extern const struct spawner_backend spawn__local_backend;

/* The kubernetes backend (kube.c; manifests in kube_manifest.c, see spawn/kube.h). */
extern const struct spawner_backend spawn__kube_backend;

/* How often the local backend checks each code-server.log against local.log_max_size, in
 * milliseconds (10 s). Tests shorten it before creating a manager. */
extern unsigned spawn__local_log_check_ms;

#endif

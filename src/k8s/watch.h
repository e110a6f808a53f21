/* A list+watch informer on one collection of Kubernetes objects (see docs/k8s.md).
 *
 * It LISTs the collection (in pages), then WATCHes it from the list's resourceVersion, and
 * keeps a cache of every object it knows (namespace/name -> object). The consumer sees the
 * cache change: ADDED, MODIFIED, DELETED per object, and SYNCED after each complete list.
 * Whatever goes wrong, the view stays consistent:
 *  - the watch's history expired (410 Gone, as an HTTP status or an ERROR event): it lists
 *    again and reports the difference, deleting what vanished during the gap;
 *  - other errors, a dropped connection, a line it cannot parse: it watches again from the
 *    last resourceVersion, after an exponential backoff with jitter;
 *  - a stream that delivers nothing (no event, no bookmark) for `silence_ms`: torn down and
 *    started again. A half-dead connection that never says so is the failure this guards.
 *
 * Callbacks come from the loop, never from inside k8s_watch_start or k8s_watch_stop. */
#ifndef CODEHUB_K8S_WATCH_H
#define CODEHUB_K8S_WATCH_H

#include "k8s/client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct k8s_watch;

enum k8s_watch_event {
    K8S_WATCH_ADDED,
    K8S_WATCH_MODIFIED,
    K8S_WATCH_DELETED,
    K8S_WATCH_SYNCED, /* a list was applied: the cache is the cluster's view now */
};

struct k8s_watch_options {
    const char *api;            /* "/api/v1" or "/apis/GROUP/VERSION" */
    const char *resource;       /* "pods", "events", ... */
    const char *namespace;      /* NULL or "": every namespace */
    const char *label_selector; /* NULL: none */
    const char *field_selector; /* NULL: none */
    unsigned page_size;         /* LIST limit per page (default 500) */
    unsigned timeout_s;         /* timeoutSeconds asked of each WATCH (default 120) */
    unsigned silence_ms;     /* a stream silent this long is restarted (default timeout_s+30 s) */
    unsigned backoff_min_ms; /* first retry delay (default 500 ms) */
    unsigned backoff_max_ms; /* cap of the growing delay (default 30 s) */
    size_t max_line;         /* largest watch event accepted (default 16 MiB) */
    /* Keep only each object's metadata (name, namespace, uid, resourceVersion) in the
     * cache, for collections the consumer reads as a stream and never looks up, such as
     * Events: a cluster keeps them for an hour, and whole objects would pile up. The
     * callbacks still get whole objects, except DELETED after a re-list (the metadata kept). */
    bool cache_metadata_only;
};

/* `object` is borrowed for the call (json_incref to keep it); NULL for SYNCED. For DELETED
 * it is the last state known: the server's final object, or the cached one when a re-list
 * found it gone. The callback may call k8s_watch_stop on this watch. */
typedef void (*k8s_watch_cb)(void *data, enum k8s_watch_event ev, json_t *object);

/* Starts watching on `c` (borrowed; it must outlive the watch). Option strings are copied.
 * Returns the watch (stop it with k8s_watch_stop), or NULL when the options are unusable
 * (no api or resource, a resource or namespace with a "/" in it). */
struct k8s_watch *k8s_watch_start(struct k8s_client *c, const struct k8s_watch_options *opt,
                                  k8s_watch_cb cb, void *data);

/* Stops: cancels the request in flight, and no callback comes after this returns. The
 * memory is freed once libuv has closed the timer. Safe inside the watch's callback. */
void k8s_watch_stop(struct k8s_watch *w);

/* The cached object `namespace`/`name` (namespace NULL or "" for cluster-scoped objects),
 * or NULL. Borrowed: valid until control returns to the loop. */
json_t *k8s_watch_get(const struct k8s_watch *w, const char *namespace, const char *name);

/* Objects in the cache. */
size_t k8s_watch_count(const struct k8s_watch *w);

/* The resourceVersion the next watch would start from (NULL before the first list).
 * Borrowed, as above. */
const char *k8s_watch_resource_version(const struct k8s_watch *w);

struct k8s_watch_stats {
    uint64_t lists;     /* LISTs completed (every page counted once per list) */
    uint64_t relists;   /* LISTs started after the first: 410s and failed lists */
    uint64_t watches;   /* WATCH requests started */
    uint64_t restarts;  /* watches started again after an error, a drop or a silence */
    uint64_t silences;  /* streams torn down for silence */
    uint64_t events;    /* ADDED, MODIFIED and DELETED delivered */
    uint64_t bookmarks; /* BOOKMARK events seen */
    uint64_t errors;    /* failed requests, ERROR events, bad lines */
    bool synced;        /* a list has completed */
};

/* Copies the counters into *out. */
void k8s_watch_stats_get(const struct k8s_watch *w, struct k8s_watch_stats *out);

/* "ADDED", "MODIFIED", "DELETED", "SYNCED". */
const char *k8s_watch_event_name(enum k8s_watch_event ev);

#endif

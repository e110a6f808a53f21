/* The hub's part in running several replicas: naming this one, hearing the store's
 * notifications and passing leadership on. The replica logic proper (claims, mirrors,
 * adoption) is in spawn/manager.c; the connection is in store/pg_listen.c. */
#include "hub/hub.h"

#include "core/alloc.h"
#include "core/log.h"
#include "hub/identity_cache.h"
#include "hub/metrics.h"
#include "spawn/spawner.h"
#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "HOST-PID-RANDOM": unique per run (a restarted process is a new replica), and telling
 * an operator where it ran. Host names may hold anything; only [A-Za-z0-9.-] is kept. */
static void make_replica_id(char *out, size_t size)
{
    char host[64] = "host";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c != '\0'; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '-';
        if (!ok)
            *c = '-';
    }
    snprintf(out, size, "%.48s-%ld-%08" PRIx32, host, (long)getpid(), randombytes_random());
}

/* Parses "WORD REST" payloads: returns REST when the payload starts with `word` and a
 * space, else NULL. */
static const char *payload_arg(const char *payload, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(payload, word, n) != 0 || payload[n] != ' ' || payload[n + 1] == '\0')
        return NULL;
    return payload + n + 1;
}

static int64_t parse_id(const char *s)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v <= 0)
        return 0;
    return (int64_t)v;
}

static void on_notify(void *data, const char *payload)
{
    struct hub *hub = data;
    const char *arg;
    metric_add(hub->cluster_notifications, 1);
    if ((arg = payload_arg(payload, "server")) != NULL) {
        int64_t id = parse_id(arg);
        if (id > 0 && hub->spawner != NULL)
            spawn_store_changed(hub->spawner, id);
    } else if ((arg = payload_arg(payload, "user")) != NULL) {
        int64_t id = parse_id(arg);
        if (id > 0)
            hub_identity_cache_forget_user_id(hub->identities, id);
    } else if ((arg = payload_arg(payload, "session")) != NULL ||
               (arg = payload_arg(payload, "token")) != NULL) {
        hub_identity_cache_forget_credential(hub->identities, arg);
    } else {
        log_event(LOG_DEBUG, "cluster.unknown_notification", "payload", payload,
                  (const char *)NULL);
    }
}

static void on_connection(void *data, bool up)
{
    struct hub *hub = data;
    if (!up)
        return;
    if (hub->listener_was_up) {
        /* Notifications sent while the connection was down are lost: forget what they
         * could have changed and re-read it. */
        metric_add(hub->cluster_reconnects, 1);
        hub_identity_cache_clear(hub->identities);
        if (hub->spawner != NULL)
            spawn_resync(hub->spawner);
    }
    hub->listener_was_up = true;
}

static void on_leader(void *data, bool leading)
{
    struct hub *hub = data;
    metric_set(hub->cluster_leader, leading ? 1 : 0);
    if (hub->spawner != NULL)
        spawn_set_leader(hub->spawner, leading);
}

static const struct store_listener_events listener_events = {
    .notify = on_notify,
    .connection = on_connection,
    .leader = on_leader,
};

int hub_cluster_start(struct hub *hub)
{
    const struct config *cfg = hub->cfg;
    if (!store_is_shared(hub->store))
        return 0;
    if (cfg->cluster.lease < 2 * cfg->cluster.heartbeat) {
        log_event(LOG_ERROR, "hub.bad_cluster_config", "error",
                  "cluster.lease must be at least twice cluster.heartbeat", (const char *)NULL);
        return -EINVAL;
    }
    make_replica_id(hub->replica_id, sizeof hub->replica_id);
    hub->cluster_leader = metrics_gauge("codehub_cluster_leader",
                                        "1 while this replica leads (culling, adoption)", NULL);
    hub->cluster_notifications = metrics_counter("codehub_cluster_notifications_total",
                                                 "Store notifications received", NULL);
    hub->cluster_reconnects =
        metrics_counter("codehub_cluster_listener_reconnects_total",
                        "Times the store's notification connection came back after a loss", NULL);
    int rc = spawn_manager_share(hub->spawner, hub->replica_id, cfg->server.bind);
    if (rc == 0)
        rc = store_listener_open(hub->store, hub->loop, &listener_events, hub, &hub->listener);
    if (rc != 0) {
        log_event(LOG_ERROR, "hub.cluster_failed", "error", strerror(-rc), (const char *)NULL);
        return rc;
    }
    log_event(LOG_INFO, "cluster.replica", "replica", hub->replica_id, (const char *)NULL);
    return 0;
}

void hub_cluster_stop(struct hub *hub)
{
    if (hub->listener == NULL)
        return;
    store_listener_close(hub->listener, NULL, NULL);
    hub->listener = NULL;
    if (hub->spawner != NULL)
        spawn_set_leader(hub->spawner, false);
}

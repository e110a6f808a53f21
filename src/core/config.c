/* Configuration: one declarative table of keys drives defaults, the YAML reader, the
 * environment and command-line overrides, validation, the dump and the docs test.
 *
 * Every value, wherever it comes from, goes through the same text parser (set_text)
 * so that "90s" means the same thing in the file, in CODEHUB_HTTP_BODY_TIMEOUT and on the
 * command line. Even the defaults are written as text in the table and parsed at
 * config_init, so the table is the single source of truth that docs/config.md mirrors.
 *
 * The YAML file is read with libfyaml's event parser rather than its document API: in
 * 0.7.x only events carry a start mark for every node (mappings and sequences included),
 * and we need a line and column for every error. Walking events also lets us report
 * duplicate keys ourselves, with the section.key they belong to, instead of letting the
 * document builder stop at the first one. */
#include "core/utf8.h"
#include "core/config.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum config_type {
    CONFIG_STRING,
    CONFIG_BOOL,
    CONFIG_INTEGER,
    CONFIG_DURATION, /* seconds */
    CONFIG_SIZE,     /* bytes */
    CONFIG_ENUM,     /* a char * holding one of `choices` */
    CONFIG_LIST,     /* struct config_list */
    CONFIG_JSON,     /* a char * holding compact JSON text (object or array) */
};

/* Extra syntax check for a string value or for each item of a list. Returns 0, or -EINVAL
 * with a message (no location, no trailing newline) appended to `msg`. */
typedef int (*config_check_cb)(const char *value, struct buf *msg);

struct config_key {
    const char *section;
    const char *name;
    enum config_type type;
    size_t offset;              /* into struct config */
    const char *def;            /* default in the same text form as an environment value */
    int64_t min, max;           /* integer, duration and size only */
    const char *const *choices; /* enum only, NULL-terminated */
    config_check_cb check;      /* string and list only; may be NULL */
    const char *doc;
};

static int check_bind(const char *value, struct buf *msg);
static int check_public_url(const char *value, struct buf *msg);
static int check_nonempty(const char *value, struct buf *msg);
static int check_proxy(const char *value, struct buf *msg);
static int check_username(const char *value, struct buf *msg);
static int check_store_url(const char *value, struct buf *msg);

static int check_env_entry(const char *value, struct buf *msg);
static int check_k8s_name(const char *value, struct buf *msg);
static int check_subdomain_parent(const char *value, struct buf *msg);
static int check_label_value(const char *value, struct buf *msg);
static int check_abs_path(const char *value, struct buf *msg);
static int check_quantity(const char *value, struct buf *msg);
static int check_quantity_nonempty(const char *value, struct buf *msg);
static int check_name_template(const char *value, struct buf *msg);
static int check_access_mode(const char *value, struct buf *msg);
static int check_json_string_map(const char *value, struct buf *msg);
static int check_json_label_map(const char *value, struct buf *msg);
static int check_json_volumes(const char *value, struct buf *msg);
static int check_json_mounts(const char *value, struct buf *msg);
static int check_json_objects(const char *value, struct buf *msg);
static int check_json_profiles(const char *value, struct buf *msg);

static const char *const spawners[] = {"local", "kubernetes", NULL};
static const char *const pull_policies[] = {"IfNotPresent", "Always", "Never", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

#define KIB ((int64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define MINUTE ((int64_t)60)
#define HOUR (MINUTE * 60)
#define DAY (HOUR * 24)

#define OFF(field) offsetof(struct config, field)

/* One row per key, grouped by section; sections appear in the dump in this order.
 * Later sections (spawn, local, proxy, cull) add their rows here and to docs/config.md. */
static const struct config_key config_keys[] = {
    {"server", "bind", CONFIG_STRING, OFF(server.bind), "127.0.0.1:8000", 0, 0, NULL, check_bind,
     "address and port to listen on: IPV4:PORT, [IPV6]:PORT or HOSTNAME:PORT (port 0: any free "
     "port)"},
    {"server", "public_url", CONFIG_STRING, OFF(server.public_url), "", 0, 0, NULL,
     check_public_url,
     "http(s)://host[:port] that browsers use to reach the hub; derived from bind when empty"},
    {"server", "data_dir", CONFIG_STRING, OFF(server.data_dir), "./data", 0, 0, NULL,
     check_nonempty, "directory for the SQLite store and the users' homes"},
    {"server", "trusted_proxies", CONFIG_LIST, OFF(server.trusted_proxies), "", 0, 0, NULL,
     check_proxy,
     "IP addresses or CIDRs of reverse proxies whose X-Forwarded-* headers are believed"},
    {"server", "shutdown_grace", CONFIG_DURATION, OFF(server.shutdown_grace), "10s", 0, HOUR, NULL,
     NULL, "time to finish in-flight requests after SIGTERM"},

    {"log", "level", CONFIG_ENUM, OFF(log.level), "info", 0, 0, log_levels, NULL,
     "lowest level written: debug, info, warn or error"},
    {"log", "format", CONFIG_ENUM, OFF(log.format), "text", 0, 0, log_formats, NULL,
     "text (key=value) or json (one object per line)"},
    {"log", "requests", CONFIG_BOOL, OFF(log.requests), "true", 0, 0, NULL, NULL,
     "write one line per HTTP request"},

    {"http", "max_head_size", CONFIG_SIZE, OFF(http.max_head_size), "32K", KIB, MIB, NULL, NULL,
     "largest request head (request line and headers) accepted"},
    {"http", "max_headers", CONFIG_INTEGER, OFF(http.max_headers), "100", 1, 1000, NULL, NULL,
     "most header fields accepted in one request"},
    {"http", "max_url_length", CONFIG_SIZE, OFF(http.max_url_length), "8K", 64, MIB, NULL, NULL,
     "longest request target accepted; at most max_head_size"},
    {"http", "max_body_size", CONFIG_SIZE, OFF(http.max_body_size), "1M", KIB, GIB, NULL, NULL,
     "largest body the hub itself reads (login form, API); proxied bodies are streamed"},
    {"http", "head_timeout", CONFIG_DURATION, OFF(http.head_timeout), "10s", 1, HOUR, NULL, NULL,
     "time allowed to receive a complete request head"},
    {"http", "body_timeout", CONFIG_DURATION, OFF(http.body_timeout), "30s", 1, HOUR, NULL, NULL,
     "time a request or response body may make no progress"},
    {"http", "idle_timeout", CONFIG_DURATION, OFF(http.idle_timeout), "1m", 1, DAY, NULL, NULL,
     "time a keep-alive connection may sit idle between requests"},
    {"http", "max_connections", CONFIG_INTEGER, OFF(http.max_connections), "10000", 1, 1000000,
     NULL, NULL, "concurrent client connections; further ones wait in the listen backlog"},

    {"store", "url", CONFIG_STRING, OFF(store.url), "", 0, 0, NULL, check_store_url,
     "empty (SQLite in data_dir), sqlite:PATH, or postgres://USER@HOST:PORT/DB?PARAMS"},
    {"store", "password_file", CONFIG_STRING, OFF(store.password_file), "", 0, 0, NULL, NULL,
     "file whose first line is the PostgreSQL password; empty: PGPASSWORD or PGPASSFILE"},
    {"store", "pool_size", CONFIG_INTEGER, OFF(store.pool_size), "8", 1, 256, NULL, NULL,
     "PostgreSQL connections each replica keeps for requests"},

    {"cluster", "heartbeat", CONFIG_DURATION, OFF(cluster.heartbeat), "2s", 1, MINUTE, NULL, NULL,
     "how often a replica records in the store that it is alive (PostgreSQL only)"},
    {"cluster", "lease", CONFIG_DURATION, OFF(cluster.lease), "10s", 2, HOUR, NULL, NULL,
     "a replica silent this long is presumed dead and the leader adopts its servers"},
    {"cluster", "resync", CONFIG_DURATION, OFF(cluster.resync), "30s", 1, HOUR, NULL, NULL,
     "how often a replica re-reads every active server (notifications cover the rest)"},

    {"auth", "open_signup", CONFIG_BOOL, OFF(auth.open_signup), "true", 0, 0, NULL, NULL,
     "anyone may claim an unknown user name by logging in with a new password"},
    {"auth", "allowed_users", CONFIG_LIST, OFF(auth.allowed_users), "", 0, 0, NULL, check_username,
     "user names that may sign up when open_signup is off"},
    {"auth", "admin_users", CONFIG_LIST, OFF(auth.admin_users), "", 0, 0, NULL, check_username,
     "user names that are admins"},
    {"auth", "min_password_length", CONFIG_INTEGER, OFF(auth.min_password_length), "8", 1, 1024,
     NULL, NULL, "shortest password accepted when one is set"},
    {"auth", "session_max_age", CONFIG_DURATION, OFF(auth.session_max_age), "14d", MINUTE,
     365 * DAY, NULL, NULL, "lifetime of a login session"},
    {"auth", "throttle_free_attempts", CONFIG_INTEGER, OFF(auth.throttle_free_attempts), "5", 0,
     1000, NULL, NULL, "failed logins per name and address before delays begin"},
    {"auth", "throttle_max_delay", CONFIG_DURATION, OFF(auth.throttle_max_delay), "5m", 0, DAY,
     NULL, NULL, "cap of the delay that doubles with each further failed login"},
    {"auth", "secret_file", CONFIG_STRING, OFF(auth.secret_file), "", 0, 0, NULL, NULL,
     "file whose text (32 to 4096 characters) the hub secret is derived from; empty: the store "
     "keeps one"},

    {"spawn", "spawner", CONFIG_ENUM, OFF(spawn.spawner), "local", 0, 0, spawners, NULL,
     "how servers run: local (one code-server process per user on this machine) or kubernetes "
     "(one pod and one volume claim per user)"},
    {"spawn", "start_timeout", CONFIG_DURATION, OFF(spawn.start_timeout), "120s", 1, HOUR, NULL,
     NULL, "time a starting server has to answer its health check before the start fails"},
    {"spawn", "stop_timeout", CONFIG_DURATION, OFF(spawn.stop_timeout), "10s", 0, HOUR, NULL, NULL,
     "time between asking a server to stop (SIGTERM) and forcing it (SIGKILL)"},
    {"spawn", "concurrent_limit", CONFIG_INTEGER, OFF(spawn.concurrent_limit), "20", 0, 100000,
     NULL, NULL, "servers starting at the same time (0: unlimited); more get 429"},
    {"spawn", "active_server_limit", CONFIG_INTEGER, OFF(spawn.active_server_limit), "0", 0,
     1000000, NULL, NULL, "servers running or starting at once (0: unlimited); more get 429"},

    {"local", "code_server", CONFIG_STRING, OFF(local.code_server), "", 0, 0, NULL, NULL,
     "code-server launcher; empty: .deps/code-server/bin/code-server, then code-server on PATH"},
    {"local", "args", CONFIG_LIST, OFF(local.args), "", 0, 0, NULL, NULL,
     "extra arguments given to every code-server"},
    {"local", "env", CONFIG_LIST, OFF(local.env), "", 0, 0, NULL, check_env_entry,
     "extra NAME=value environment entries for every code-server"},
    {"local", "system_users", CONFIG_BOOL, OFF(local.system_users), "false", 0, 0, NULL, NULL,
     "when codehub runs as root, run each server as a system user of the same name"},
    {"local", "log_max_size", CONFIG_SIZE, OFF(local.log_max_size), "4M", 64 * KIB, GIB, NULL, NULL,
     "bytes of code-server.log kept per user; beyond it the log moves to code-server.log.1"},
    {"local", "init_ssh_key", CONFIG_BOOL, OFF(local.init_ssh_key), "true", 0, 0, NULL, NULL,
     "the first start of a home creates an SSH key pair when ssh-keygen exists"},
    {"local", "init_venv", CONFIG_BOOL, OFF(local.init_venv), "true", 0, 0, NULL, NULL,
     "the first start of a home creates a Python venv at ~/.venv when python3 -m venv works"},

    {"proxy", "admin_access", CONFIG_BOOL, OFF(proxy.admin_access), "false", 0, 0, NULL, NULL,
     "admins may open other users' workspaces"},
    {"proxy", "connect_timeout", CONFIG_DURATION, OFF(proxy.connect_timeout), "10s", 1, HOUR, NULL,
     NULL, "time to connect to a workspace server"},
    {"proxy", "response_timeout", CONFIG_DURATION, OFF(proxy.response_timeout), "5m", 1, DAY, NULL,
     NULL, "time a workspace server has to start its response"},
    {"proxy", "websocket_timeout", CONFIG_DURATION, OFF(proxy.websocket_timeout), "1h", 1, 7 * DAY,
     NULL, NULL, "time a WebSocket may carry nothing in either direction before it is closed"},
    {"proxy", "upstream_keepalive", CONFIG_INTEGER, OFF(proxy.upstream_keepalive), "64", 0, 1024,
     NULL, NULL, "idle connections kept open to each workspace server for reuse"},
    {"proxy", "upstream_max_conns", CONFIG_INTEGER, OFF(proxy.upstream_max_conns), "256", 0, 65536,
     NULL, NULL,
     "HTTP connections open to one workspace server at once; more requests wait (0: no cap)"},
    {"proxy", "user_subdomains", CONFIG_STRING, OFF(proxy.user_subdomains), "", 0, 0, NULL,
     check_subdomain_parent,
     "a domain: each user's workspace on its own origin NAME.DOMAIN instead of the hub's "
     "/user/NAME/ (empty: paths)"},

    {"cull", "timeout", CONFIG_DURATION, OFF(cull.timeout), "1h", 0, 365 * DAY, NULL, NULL,
     "stop servers with no user activity for this long (0: never)"},
    {"cull", "every", CONFIG_DURATION, OFF(cull.every), "1m", 1, DAY, NULL, NULL,
     "how often the culler looks for idle servers"},
    {"kube", "kubeconfig", CONFIG_STRING, OFF(kube.kubeconfig), "", 0, 0, NULL, NULL,
     "kubeconfig file to reach the cluster; empty: the in-cluster service account"},
    {"kube", "context", CONFIG_STRING, OFF(kube.context), "", 0, 0, NULL, NULL,
     "kubeconfig context to use; empty: its current-context"},
    {"kube", "namespace", CONFIG_STRING, OFF(kube.namespace), "", 0, 0, NULL, check_k8s_name,
     "namespace of the pods and claims; empty: the context's or service account's"},
    {"kube", "hub_name", CONFIG_STRING, OFF(kube.hub_name), "codehub", 0, 0, NULL,
     check_label_value, "value of the codehub.io/hub label that marks this hub's pods"},
    {"kube", "image", CONFIG_STRING, OFF(kube.image), "codehub/workspace:latest", 0, 0, NULL,
     check_nonempty, "workspace container image"},
    {"kube", "image_pull_policy", CONFIG_ENUM, OFF(kube.image_pull_policy), "IfNotPresent", 0, 0,
     pull_policies, NULL, "IfNotPresent, Always or Never"},
    {"kube", "uid", CONFIG_INTEGER, OFF(kube.uid), "-1", -1, 2147483647, NULL, NULL,
     "user id the container runs as (runAsUser); -1: the image's own"},
    {"kube", "gid", CONFIG_INTEGER, OFF(kube.gid), "-1", -1, 2147483647, NULL, NULL,
     "group id the container runs as (runAsGroup); -1: the image's own"},
    {"kube", "fs_gid", CONFIG_INTEGER, OFF(kube.fs_gid), "-1", -1, 2147483647, NULL, NULL,
     "group that owns the mounted volumes (fsGroup); -1: none set"},
    {"kube", "port", CONFIG_INTEGER, OFF(kube.port), "8080", 1, 65535, NULL, NULL,
     "port code-server listens on inside the pod"},
    {"kube", "health_path", CONFIG_STRING, OFF(kube.health_path), "/healthz", 0, 0, NULL,
     check_abs_path, "path the hub (and the readiness probe) GETs to know the server answers"},
    {"kube", "command", CONFIG_LIST, OFF(kube.command), "", 0, 0, NULL, NULL,
     "container command; empty: the image's entrypoint"},
    {"kube", "args", CONFIG_LIST, OFF(kube.args), "", 0, 0, NULL, NULL,
     "container arguments; empty: the image's cmd"},
    {"kube", "env", CONFIG_LIST, OFF(kube.env), "", 0, 0, NULL, check_env_entry,
     "extra NAME=value environment entries for the workspace container"},
    {"kube", "cpu_guarantee", CONFIG_STRING, OFF(kube.cpu_guarantee), "", 0, 0, NULL,
     check_quantity, "CPU request (a Kubernetes quantity: 500m, 2); empty: none"},
    {"kube", "cpu_limit", CONFIG_STRING, OFF(kube.cpu_limit), "", 0, 0, NULL, check_quantity,
     "CPU limit; empty: none"},
    {"kube", "mem_guarantee", CONFIG_STRING, OFF(kube.mem_guarantee), "", 0, 0, NULL,
     check_quantity, "memory request (a Kubernetes quantity: 512Mi, 2Gi); empty: none"},
    {"kube", "mem_limit", CONFIG_STRING, OFF(kube.mem_limit), "", 0, 0, NULL, check_quantity,
     "memory limit; empty: none"},
    {"kube", "service_account", CONFIG_STRING, OFF(kube.service_account), "", 0, 0, NULL,
     check_k8s_name, "service account of the workspace pods; empty: the namespace's default"},
    {"kube", "automount_service_account_token", CONFIG_BOOL,
     OFF(kube.automount_service_account_token), "false", 0, 0, NULL, NULL,
     "mount the service account's API token into the workspace"},
    {"kube", "volumes", CONFIG_JSON, OFF(kube.volumes), "[]", 0, 0, NULL, check_json_volumes,
     "extra pod volumes: a list of Kubernetes Volume objects (YAML or JSON)"},
    {"kube", "volume_mounts", CONFIG_JSON, OFF(kube.volume_mounts), "[]", 0, 0, NULL,
     check_json_mounts, "extra mounts of the workspace container: a list of VolumeMount objects"},
    {"kube", "home_mount_path", CONFIG_STRING, OFF(kube.home_mount_path), "/home/coder", 0, 0, NULL,
     check_abs_path, "where the user's volume claim is mounted in the container"},
    {"kube", "pod_name", CONFIG_STRING, OFF(kube.pod_name), "codehub-{user}", 0, 0, NULL,
     check_name_template, "pod name template; {user} is the user name made DNS-safe"},
    {"kube", "pvc_name", CONFIG_STRING, OFF(kube.pvc_name), "claim-{user}", 0, 0, NULL,
     check_name_template, "volume claim name template; {user} as for pod_name"},
    {"kube", "storage_capacity", CONFIG_STRING, OFF(kube.storage_capacity), "10Gi", 0, 0, NULL,
     check_quantity_nonempty, "size requested for each user's volume claim"},
    {"kube", "storage_class", CONFIG_STRING, OFF(kube.storage_class), "", 0, 0, NULL, NULL,
     "storage class of the claims; empty: the cluster's default class"},
    {"kube", "storage_access_modes", CONFIG_LIST, OFF(kube.storage_access_modes), "ReadWriteOnce",
     0, 0, NULL, check_access_mode, "access modes of the claims"},
    {"kube", "node_selector", CONFIG_JSON, OFF(kube.node_selector), "{}", 0, 0, NULL,
     check_json_label_map, "node labels the workspace pods require (a mapping)"},
    {"kube", "tolerations", CONFIG_JSON, OFF(kube.tolerations), "[]", 0, 0, NULL,
     check_json_objects, "tolerations of the workspace pods: a list of Toleration objects"},
    {"kube", "labels", CONFIG_JSON, OFF(kube.labels), "{}", 0, 0, NULL, check_json_label_map,
     "extra labels of the pods and claims (a mapping)"},
    {"kube", "annotations", CONFIG_JSON, OFF(kube.annotations), "{}", 0, 0, NULL,
     check_json_string_map, "extra annotations of the pods and claims (a mapping)"},
    {"kube", "profiles", CONFIG_JSON, OFF(kube.profiles), "{}", 0, 0, NULL, check_json_profiles,
     "named overrides a user may choose when starting (see docs/config.md)"},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* CODEHUB_* variables that are not keys: CONFIG is the config file path main reads;
 * K8S_SERVICEACCOUNT_DIR is read by the in-cluster Kubernetes config (docs/k8s.md); the
 * others are set by the test harness (CMake/ctest and the integration tests). */
static const char *const env_ignored[] = {"CONFIG",
                                          "BIN",
                                          "SOURCE_DIR",
                                          "SANITIZED",
                                          "TEST_STORES",
                                          "TEST_PG_DIR",
                                          "K8S_SERVICEACCOUNT_DIR",
                                          NULL};

#define ENV_PREFIX "CODEHUB_"
#define MAX_NAME 128           /* longer than any "section.key" or environment name we build */
#define MAX_FILE (1024 * 1024) /* a config file is a few kilobytes; refuse to slurp a disk */

/* ---- small helpers ---- */

static void *field(struct config *cfg, const struct config_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *cfield(const struct config *cfg, const struct config_key *k)
{
    return (const char *)cfg + k->offset;
}

static void dotted_name(const struct config_key *k, char *out, size_t size)
{
    snprintf(out, size, "%s.%s", k->section, k->name);
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static void env_name(const struct config_key *k, char *out, size_t size)
{
    snprintf(out, size, ENV_PREFIX "%s_%s", k->section, k->name);
    for (char *p = out; *p; p++)
        *p = upper(*p);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static void list_clear(struct config_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void list_push(struct config_list *l, const char *s, size_t len)
{
    l->items = xrealloc(l->items, (l->n + 1) * sizeof(*l->items));
    l->items[l->n++] = xstrndup(s, len);
}

/* Levenshtein distance, for "did you mean" hints; names are short, so two rows suffice. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= MAX_NAME || lb >= MAX_NAME)
        return (size_t)-1;
    size_t prev[MAX_NAME + 1], cur[MAX_NAME + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            cur[j] = best;
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

#define SUGGEST_MAX_DISTANCE 2

/* The table's own copy of a section name, or NULL for an unknown section. */
static const char *section_find(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(config_keys[i].section, section) == 0)
            return config_keys[i].section;
    }
    return NULL;
}

static const char *section_suggest(const char *section)
{
    const char *best = NULL;
    size_t best_d = SUGGEST_MAX_DISTANCE + 1;
    for (size_t i = 0; i < NKEYS; i++) {
        size_t d = edit_distance(section, config_keys[i].section);
        if (d < best_d) {
            best_d = d;
            best = config_keys[i].section;
        }
    }
    return best;
}

static const struct config_key *key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    }
    return NULL;
}

/* Closest key in the same section within the distance limit; failing that, a key of that
 * exact name in another section (so "server.level" suggests "log.level"). */
static const struct config_key *key_suggest(const char *section, const char *name)
{
    const struct config_key *best = NULL;
    size_t best_d = SUGGEST_MAX_DISTANCE + 1;
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(config_keys[i].section, section) != 0)
            continue;
        size_t d = edit_distance(name, config_keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &config_keys[i];
        }
    }
    for (size_t i = 0; best == NULL && i < NKEYS; i++) {
        if (strcmp(config_keys[i].name, name) == 0)
            best = &config_keys[i];
    }
    return best;
}

static void append_unknown_key(struct buf *out, const char *section, const char *name)
{
    buf_appendf(out, "unknown key '%s.%s'", section, name);
    const struct config_key *s = key_suggest(section, name);
    if (s)
        buf_appendf(out, " (did you mean '%s.%s'?)", s->section, s->name);
}

static void append_unknown_section(struct buf *out, const char *section)
{
    buf_appendf(out, "unknown section '%s'", section);
    const char *s = section_suggest(section);
    if (s)
        buf_appendf(out, " (did you mean '%s'?)", s);
}

/* Appends the list of sections ("server, log, http, store, auth"). */
static void append_sections(struct buf *out)
{
    const char *last = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (last && strcmp(last, config_keys[i].section) == 0)
            continue;
        buf_appendf(out, "%s%s", last ? ", " : "", config_keys[i].section);
        last = config_keys[i].section;
    }
}

/* Appends `line` and a newline to `out`, escaping control characters: values and key names
 * are quoted in messages, and one holding a newline must not split an error in two. */
static void emit_line(struct buf *out, const char *line)
{
    buf_append_escaped(out, line, strlen(line));
    buf_append_char(out, '\n');
}

static void emit_linef(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit_linef(struct buf *out, const char *fmt, ...)
{
    struct buf line = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&line, fmt, ap);
    va_end(ap);
    emit_line(out, line.data ? line.data : "");
    buf_free(&line);
}

/* ---- number formats ---- */

/* Parses unsigned decimal digits; 0 or -EINVAL (no digits) or -ERANGE (overflow). */
static int parse_digits(const char *s, size_t len, int64_t *out)
{
    if (len == 0)
        return -EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return -EINVAL;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "NUMBER[SUFFIX]" where SUFFIX is one of `suffixes` with the matching multiplier. */
static int parse_scaled(const char *s, const char *suffixes, const int64_t *mult, int64_t *out)
{
    size_t len = strlen(s);
    int64_t m = 1;
    if (len > 0 && !is_digit(s[len - 1])) {
        const char *p = strchr(suffixes, s[len - 1]);
        if (p == NULL)
            return -EINVAL;
        m = mult[p - suffixes];
        len--;
    }
    int64_t v;
    int r = parse_digits(s, len, &v);
    if (r < 0)
        return r;
    if (v > INT64_MAX / m)
        return -ERANGE;
    *out = v * m;
    return 0;
}

static const char duration_suffixes[] = "smhd";
static const int64_t duration_mult[] = {1, MINUTE, HOUR, DAY};
static const char size_suffixes[] = "kKmMgG";
static const int64_t size_mult[] = {KIB, KIB, MIB, MIB, GIB, GIB};

/* Writes a value in the largest unit that represents it exactly ("14d", "90s", "32K"). */
static void append_duration(struct buf *out, int64_t v)
{
    if (v != 0 && v % DAY == 0)
        buf_appendf(out, "%lldd", (long long)(v / DAY));
    else if (v != 0 && v % HOUR == 0)
        buf_appendf(out, "%lldh", (long long)(v / HOUR));
    else if (v != 0 && v % MINUTE == 0)
        buf_appendf(out, "%lldm", (long long)(v / MINUTE));
    else
        buf_appendf(out, "%llds", (long long)v);
}

static void append_size(struct buf *out, int64_t v)
{
    if (v != 0 && v % GIB == 0)
        buf_appendf(out, "%lldG", (long long)(v / GIB));
    else if (v != 0 && v % MIB == 0)
        buf_appendf(out, "%lldM", (long long)(v / MIB));
    else if (v != 0 && v % KIB == 0)
        buf_appendf(out, "%lldK", (long long)(v / KIB));
    else
        buf_appendf(out, "%lld", (long long)v);
}

static void append_number(struct buf *out, const struct config_key *k, int64_t v)
{
    if (k->type == CONFIG_DURATION)
        append_duration(out, v);
    else if (k->type == CONFIG_SIZE)
        append_size(out, v);
    else
        buf_appendf(out, "%lld", (long long)v);
}

static int check_range(const struct config_key *k, int64_t v, struct buf *msg)
{
    if (v >= k->min && v <= k->max)
        return 0;
    buf_append_str(msg, "must be between ");
    append_number(msg, k, k->min);
    buf_append_str(msg, " and ");
    append_number(msg, k, k->max);
    buf_append_str(msg, ", got ");
    append_number(msg, k, v);
    return -EINVAL;
}

/* ---- text checks ---- */

/* Rejects control characters and malformed UTF-8: config_load_file checks the file is UTF-8, but
 * environment values and flags are raw bytes, and config_dump must be able to write every
 * value back as a YAML string that reads the same. */
static int check_text(const char *s, struct buf *msg)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            buf_append_str(msg, "control characters are not allowed");
            return -EINVAL;
        }
    }
    size_t len = strlen(s);
    if (utf8_invalid_at(s, len) < len) {
        buf_append_str(msg, "not valid UTF-8");
        return -EINVAL;
    }
    return 0;
}

/* An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
 * Something made only of digits and dots must instead be a valid IPv4 address, so that
 * "300.1.1.1" is not taken for a name. */
static bool host_name_valid(const char *h, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    bool numeric = true;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && !(c == '-' && label > 0))
            return false;
        if (!is_digit(c))
            numeric = false;
        if (++label > 63)
            return false;
    }
    if (label == 0 || h[len - 1] == '-')
        return false;
    if (numeric) {
        char tmp[INET_ADDRSTRLEN];
        struct in_addr a4;
        if (len >= sizeof(tmp))
            return false;
        memcpy(tmp, h, len);
        tmp[len] = '\0';
        return inet_pton(AF_INET, tmp, &a4) == 1;
    }
    return true;
}

static bool ipv6_valid(const char *s, size_t len)
{
    char tmp[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET6, tmp, &a6) == 1;
}

/* "[v6]" or a host name / IPv4 literal, in s[0..len). */
static int check_host(const char *s, size_t len, struct buf *msg)
{
    if (len > 0 && s[0] == '[') {
        if (len < 2 || s[len - 1] != ']' || !ipv6_valid(s + 1, len - 2)) {
            buf_appendf(msg, "invalid IPv6 address '%.*s'", (int)len, s);
            return -EINVAL;
        }
        return 0;
    }
    if (memchr(s, ':', len)) {
        buf_appendf(msg, "IPv6 addresses must be in brackets, as in [::1]");
        return -EINVAL;
    }
    if (!host_name_valid(s, len)) {
        buf_appendf(msg, "invalid host '%.*s' (expected an IPv4 address, [IPv6] or a host name)",
                    (int)len, s);
        return -EINVAL;
    }
    return 0;
}

static int parse_port(const char *s, size_t len, int *out)
{
    int64_t v;
    if (len > 5 || parse_digits(s, len, &v) < 0 || v > 65535)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* Shared by config_parse_bind and the bind check, which wants a reason. */
static int bind_split(const char *bind, char **host_out, int *port_out, struct buf *msg)
{
    const char *colon;
    const char *host = bind;
    size_t host_len;
    struct buf scratch = BUF_INIT;
    struct buf *m = msg ? msg : &scratch;
    int r = -EINVAL;

    if (bind[0] == '[') {
        const char *close = strchr(bind, ']');
        if (close == NULL || close[1] != ':') {
            buf_append_str(m, "expected [IPV6]:PORT");
            goto out;
        }
        colon = close + 1;
        host = bind + 1;
        host_len = (size_t)(close - host);
        if (!ipv6_valid(host, host_len)) {
            buf_appendf(m, "invalid IPv6 address '%.*s'", (int)host_len, host);
            goto out;
        }
    } else {
        colon = strrchr(bind, ':');
        if (colon == NULL) {
            buf_append_str(m, "expected ADDR:PORT, as in 127.0.0.1:8000");
            goto out;
        }
        host_len = (size_t)(colon - bind);
        if (host_len == 0) {
            buf_append_str(m, "missing host (use 0.0.0.0:PORT to listen on every IPv4 address)");
            goto out;
        }
        if (check_host(bind, host_len, m) < 0)
            goto out;
    }
    int port;
    if (parse_port(colon + 1, strlen(colon + 1), &port) < 0) {
        buf_appendf(m, "invalid port '%s' (expected 0 to 65535)", colon + 1);
        goto out;
    }
    if (host_out)
        *host_out = xstrndup(host, host_len);
    if (port_out)
        *port_out = port;
    r = 0;
out:
    buf_free(&scratch);
    return r;
}

static int check_bind(const char *value, struct buf *msg)
{
    return bind_split(value, NULL, NULL, msg);
}

/* http(s)://HOST[:PORT][/] with nothing else: cookies, redirects and the WebSocket Origin
 * check are all built from this, and a path prefix is not supported. */
static int check_public_url(const char *value, struct buf *msg)
{
    const char *p;
    if (value[0] == '\0')
        return 0;
    if (strncmp(value, "http://", 7) == 0) {
        p = value + 7;
    } else if (strncmp(value, "https://", 8) == 0) {
        p = value + 8;
    } else {
        buf_append_str(msg, "must start with http:// or https://");
        return -EINVAL;
    }
    if (strpbrk(value, "?#")) {
        buf_append_str(msg, "must not have a query or fragment");
        return -EINVAL;
    }
    size_t alen = strcspn(p, "/");
    if (memchr(p, '@', alen)) {
        buf_append_str(msg, "must not contain user info (user@)");
        return -EINVAL;
    }
    if (p[alen] != '\0' && strcmp(p + alen, "/") != 0) {
        buf_append_str(msg, "must not have a path (serving under a path prefix is not supported)");
        return -EINVAL;
    }
    if (p[0] != '[' && ipv6_valid(p, alen)) {
        buf_append_str(msg, "IPv6 addresses must be in brackets, as in [::1]");
        return -EINVAL;
    }
    /* Split the authority at the port's colon: the first colon after any "]". */
    const char *close = memchr(p, ']', alen);
    const char *from = close ? close : p;
    const char *colon = memchr(from, ':', alen - (size_t)(from - p));
    size_t hlen = colon ? (size_t)(colon - p) : alen;
    if (hlen == 0) {
        buf_append_str(msg, "missing host");
        return -EINVAL;
    }
    if (check_host(p, hlen, msg) < 0)
        return -EINVAL;
    if (colon) {
        int port;
        size_t plen = alen - hlen - 1;
        if (parse_port(colon + 1, plen, &port) < 0 || port == 0) {
            buf_appendf(msg, "invalid port '%.*s' (expected 1 to 65535)", (int)plen, colon + 1);
            return -EINVAL;
        }
    }
    return 0;
}

/* The parent domain of per-user origins: a host name (not an address), lowercase, with room
 * for a 32-character user name label in front of it. */
static int check_subdomain_parent(const char *value, struct buf *msg)
{
    size_t len = strlen(value);
    if (len == 0)
        return 0;
    if (len > 253 - 33 || !host_name_valid(value, len)) {
        buf_appendf(msg, "expected a domain name of at most %d characters, as in ws.example.com",
                    253 - 33);
        return -EINVAL;
    }
    for (const char *p = value; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            buf_append_str(msg, "must be lowercase");
            return -EINVAL;
        }
    }
    struct in_addr a4;
    if (inet_pton(AF_INET, value, &a4) == 1) {
        buf_append_str(msg, "must be a domain name, not an IP address");
        return -EINVAL;
    }
    /* Browsers read a host whose last label is a number ("a.1", "a.0x7f") as an IPv4
     * address (WHATWG URL), so NAME.DOMAIN would not be a name there. */
    const char *last = strrchr(value, '.');
    last = last ? last + 1 : value;
    bool numeric = true;
    bool hex = (last[0] == '0' && (last[1] == 'x' || last[1] == 'X'));
    for (const char *p = hex ? last + 2 : last; *p; p++)
        if (!(is_digit(*p) || (hex && ((*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))))
            numeric = false;
    if (numeric) {
        buf_append_str(msg, "its last label must not be a number (browsers would read "
                            "NAME.DOMAIN as an IPv4 address)");
        return -EINVAL;
    }
    return 0;
}

static int check_env_entry(const char *value, struct buf *msg)
{
    const char *eq = strchr(value, '=');
    bool ok = eq != NULL && eq != value;
    for (const char *p = value; ok && p < eq; p++)
        if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (p > value && *p >= '0' && *p <= '9')))
            ok = false;
    if (!ok) {
        buf_appendf(msg, "'%s' is not NAME=value", value);
        return -EINVAL;
    }
    return 0;
}

static int check_nonempty(const char *value, struct buf *msg)
{
    if (value[0] != '\0')
        return 0;
    buf_append_str(msg, "must not be empty");
    return -EINVAL;
}

static int check_proxy(const char *value, struct buf *msg)
{
    const char *slash = strchr(value, '/');
    size_t alen = slash ? (size_t)(slash - value) : strlen(value);
    char addr[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    int bits = 0;

    if (alen > 0 && alen < sizeof(addr)) {
        memcpy(addr, value, alen);
        addr[alen] = '\0';
        if (inet_pton(AF_INET, addr, bin) == 1)
            bits = 32;
        else if (inet_pton(AF_INET6, addr, bin) == 1)
            bits = 128;
    }
    if (bits == 0) {
        buf_appendf(msg,
                    "invalid address '%s' (expected an IPv4 or IPv6 address, optionally with "
                    "/PREFIX, such as 10.0.0.0/8 or fd00::/8)",
                    value);
        return -EINVAL;
    }
    if (slash) {
        int64_t prefix;
        if (strlen(slash + 1) > 3 || parse_digits(slash + 1, strlen(slash + 1), &prefix) < 0 ||
            prefix > bits) {
            buf_appendf(msg, "invalid prefix length in '%s' (expected /0 to /%d)", value, bits);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_username(const char *value, struct buf *msg)
{
    size_t len = strlen(value);
    bool ok = len >= 1 && len <= 32;
    for (size_t i = 0; ok && i < len; i++) {
        char c = value[i];
        bool alnum = is_digit(c) || (c >= 'a' && c <= 'z');
        ok = alnum || (i > 0 && (c == '.' || c == '_' || c == '-'));
    }
    if (ok)
        return 0;
    buf_appendf(msg,
                "invalid user name '%s' (1 to 32 characters: lowercase letters, digits, '.', '_' "
                "and '-', starting with a letter or digit)",
                value);
    return -EINVAL;
}

static int check_store_url(const char *value, struct buf *msg)
{
    if (value[0] == '\0' || strncmp(value, "sqlite:", 7) == 0 ||
        strncmp(value, "postgres://", 11) == 0 || strncmp(value, "postgresql://", 13) == 0)
        return 0;
    buf_append_str(msg, "expected empty (SQLite in data_dir), sqlite:PATH, or postgres://...");
    return -EINVAL;
}

/* ---- Kubernetes values ---- */

static bool is_lower_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* A DNS-1123 label (namespaces, service accounts), or empty for "not set". */
static int check_k8s_name(const char *value, struct buf *msg)
{
    size_t len = strlen(value);
    bool ok = len <= 63;
    for (size_t i = 0; ok && i < len; i++)
        ok = is_lower_alnum(value[i]) || (value[i] == '-' && i > 0 && i + 1 < len);
    if (ok)
        return 0;
    buf_appendf(msg,
                "'%s' is not a valid Kubernetes name (up to 63 lowercase letters, digits and "
                "inner '-')",
                value);
    return -EINVAL;
}

static bool label_value_valid(const char *v)
{
    size_t len = strlen(v);
    if (len > 63)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        bool inner = c == '-' || c == '_' || c == '.';
        if (!is_alnum(c) && !(inner && i > 0 && i + 1 < len))
            return false;
    }
    return true;
}

/* [PREFIX/]NAME: PREFIX a DNS subdomain, NAME as a label value but not empty. */
static bool label_key_valid(const char *k)
{
    const char *slash = strchr(k, '/');
    const char *name = slash ? slash + 1 : k;
    if (slash) {
        size_t plen = (size_t)(slash - k);
        if (plen == 0 || plen > 253 || !host_name_valid(k, plen))
            return false;
    }
    return name[0] != '\0' && label_value_valid(name);
}

static int check_label_value(const char *value, struct buf *msg)
{
    if (value[0] != '\0' && label_value_valid(value))
        return 0;
    buf_appendf(msg,
                "'%s' is not a valid label value (1 to 63 letters, digits and inner '-', '_', "
                "'.')",
                value);
    return -EINVAL;
}

static int check_abs_path(const char *value, struct buf *msg)
{
    if (value[0] == '/')
        return 0;
    buf_appendf(msg, "'%s' is not an absolute path", value);
    return -EINVAL;
}

/* A Kubernetes resource quantity: a decimal number with an optional suffix (m, k, M, G, T,
 * P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent. Empty means "not set". */
static int check_quantity(const char *value, struct buf *msg)
{
    static const char *const suffixes[] = {"",   "m",  "k",  "M",  "G",  "T",  "P", "E",
                                           "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", NULL};
    const char *p = value;
    if (*p == '\0')
        return 0;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        p++;
        size_t frac = strspn(p, "0123456789");
        digits += frac;
        p += frac;
    }
    bool ok = digits > 0;
    if (ok && (*p == 'e' || *p == 'E') && is_digit(p[1])) {
        p++;
        p += strspn(p, "0123456789");
        ok = *p == '\0';
    } else if (ok) {
        ok = false;
        for (const char *const *sfx = suffixes; *sfx && !ok; sfx++)
            ok = strcmp(p, *sfx) == 0;
    }
    if (ok)
        return 0;
    buf_appendf(msg, "'%s' is not a Kubernetes quantity (such as 500m, 2, 512Mi, 10Gi)", value);
    return -EINVAL;
}

static int check_quantity_nonempty(const char *value, struct buf *msg)
{
    if (check_nonempty(value, msg) < 0)
        return -EINVAL;
    return check_quantity(value, msg);
}

/* A name template: lowercase letters, digits and '-' around exactly one {user}, starting
 * and ending with a letter or digit (or with {user}, which the spawner makes safe). */
static int check_name_template(const char *value, struct buf *msg)
{
    const char *u = strstr(value, "{user}");
    if (u == NULL || strstr(u + 1, "{user}") != NULL) {
        buf_appendf(msg, "'%s' must contain {user} exactly once", value);
        return -EINVAL;
    }
    size_t pre = (size_t)(u - value);
    const char *post = u + 6;
    size_t postlen = strlen(post);
    bool ok = pre + postlen <= 40;
    for (size_t i = 0; ok && i < pre; i++)
        ok = is_lower_alnum(value[i]) || (value[i] == '-' && i > 0);
    for (size_t i = 0; ok && i < postlen; i++)
        ok = is_lower_alnum(post[i]) || (post[i] == '-' && i + 1 < postlen);
    if (ok)
        return 0;
    buf_appendf(msg,
                "'%s': around {user} only lowercase letters, digits and inner '-' are allowed, "
                "40 characters at most",
                value);
    return -EINVAL;
}

static int check_access_mode(const char *value, struct buf *msg)
{
    static const char *const modes[] = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany",
                                        "ReadWriteOncePod", NULL};
    for (const char *const *m = modes; *m; m++) {
        if (strcmp(*m, value) == 0)
            return 0;
    }
    buf_appendf(msg,
                "expected one of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod, "
                "got '%s'",
                value);
    return -EINVAL;
}

/* Parses JSON text already canonicalised by set_text; NULL with a message otherwise. */
static json_t *json_parse_checked(const char *value, struct buf *msg)
{
    json_error_t je;
    json_t *j = json_loads(value, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (j == NULL)
        buf_appendf(msg, "invalid JSON: %s", je.text);
    return j;
}

/* The object checks below write the path of the offending element ("[2].name") in front
 * of the message, since all of a value shares one position in the file. */
static int string_map_check(json_t *j, const char *where, bool labels, struct buf *msg)
{
    const char *key;
    json_t *v;
    if (!json_is_object(j)) {
        buf_appendf(msg, "%sexpected a mapping of names to strings", where);
        return -EINVAL;
    }
    json_object_foreach(j, key, v)
    {
        if (!json_is_string(v)) {
            buf_appendf(msg, "%s%s: expected a string value (quote numbers and booleans)", where,
                        key);
            return -EINVAL;
        }
        if (labels && !label_key_valid(key)) {
            buf_appendf(msg, "%s%s: not a valid label key", where, key);
            return -EINVAL;
        }
        if (labels && !label_value_valid(json_string_value(v))) {
            buf_appendf(msg, "%s%s: '%s' is not a valid label value", where, key,
                        json_string_value(v));
            return -EINVAL;
        }
        if (!labels && key[0] == '\0') {
            buf_appendf(msg, "%sempty key", where);
            return -EINVAL;
        }
    }
    return 0;
}

static int objects_check(json_t *j, const char *where, const char *what, struct buf *msg)
{
    size_t i;
    json_t *v;
    if (!json_is_array(j)) {
        buf_appendf(msg, "%sexpected a list of %s", where, what);
        return -EINVAL;
    }
    json_array_foreach(j, i, v)
    {
        if (!json_is_object(v)) {
            buf_appendf(msg, "%s[%zu]: expected a mapping (a %s)", where, i, what);
            return -EINVAL;
        }
    }
    return 0;
}

/* Volumes: objects with a DNS-label name, unique, and not "home" (the user's claim). */
static int volumes_check(json_t *j, const char *where, struct buf *msg)
{
    size_t i;
    json_t *v;
    if (objects_check(j, where, "Volume", msg) < 0)
        return -EINVAL;
    json_array_foreach(j, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        struct buf ignored = BUF_INIT;
        int bad = name == NULL || check_k8s_name(name, &ignored) < 0 || name[0] == '\0';
        buf_free(&ignored);
        if (bad) {
            buf_appendf(msg, "%s[%zu].name: expected a Kubernetes name", where, i);
            return -EINVAL;
        }
        if (strcmp(name, "home") == 0) {
            buf_appendf(msg, "%s[%zu].name: 'home' is the user's volume; choose another name",
                        where, i);
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++) {
            const char *other = json_string_value(json_object_get(json_array_get(j, k), "name"));
            if (other != NULL && strcmp(other, name) == 0) {
                buf_appendf(msg, "%s[%zu].name: '%s' is used twice", where, i, name);
                return -EINVAL;
            }
        }
    }
    return 0;
}

static int mounts_check(json_t *j, const char *where, struct buf *msg)
{
    size_t i;
    json_t *v;
    if (objects_check(j, where, "VolumeMount", msg) < 0)
        return -EINVAL;
    json_array_foreach(j, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *path = json_string_value(json_object_get(v, "mountPath"));
        if (name == NULL || name[0] == '\0') {
            buf_appendf(msg, "%s[%zu].name: expected the name of a volume", where, i);
            return -EINVAL;
        }
        if (path == NULL || path[0] != '/') {
            buf_appendf(msg, "%s[%zu].mountPath: expected an absolute path", where, i);
            return -EINVAL;
        }
    }
    return 0;
}

static int json_check_with(const char *value, struct buf *msg,
                           int (*fn)(json_t *j, const char *where, struct buf *msg))
{
    json_t *j = json_parse_checked(value, msg);
    if (j == NULL)
        return -EINVAL;
    int r = fn(j, "", msg);
    json_decref(j);
    return r;
}

static int string_map_plain(json_t *j, const char *where, struct buf *msg)
{
    return string_map_check(j, where, false, msg);
}

static int string_map_labels(json_t *j, const char *where, struct buf *msg)
{
    return string_map_check(j, where, true, msg);
}

static int tolerations_check(json_t *j, const char *where, struct buf *msg)
{
    return objects_check(j, where, "Toleration", msg);
}

static int check_json_string_map(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, string_map_plain);
}

static int check_json_label_map(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, string_map_labels);
}

static int check_json_volumes(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, volumes_check);
}

static int check_json_mounts(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, mounts_check);
}

static int check_json_objects(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, tolerations_check);
}

/* What a profile may set: the kube keys below, with the same meaning, plus a display name
 * and a description for the page. */
enum profile_kind { PK_STRING, PK_QUANTITY, PK_INT, PK_BOOL, PK_STRINGS, PK_ENV, PK_JSON };

struct profile_key {
    const char *name;
    enum profile_kind kind;
    int (*json_fn)(json_t *j, const char *where, struct buf *msg); /* PK_JSON */
};

static const struct profile_key profile_keys[] = {
    {"display_name", PK_STRING, NULL},
    {"description", PK_STRING, NULL},
    {"image", PK_STRING, NULL},
    {"image_pull_policy", PK_STRING, NULL},
    {"uid", PK_INT, NULL},
    {"gid", PK_INT, NULL},
    {"fs_gid", PK_INT, NULL},
    {"command", PK_STRINGS, NULL},
    {"args", PK_STRINGS, NULL},
    {"env", PK_ENV, NULL},
    {"cpu_guarantee", PK_QUANTITY, NULL},
    {"cpu_limit", PK_QUANTITY, NULL},
    {"mem_guarantee", PK_QUANTITY, NULL},
    {"mem_limit", PK_QUANTITY, NULL},
    {"service_account", PK_STRING, NULL},
    {"automount_service_account_token", PK_BOOL, NULL},
    {"volumes", PK_JSON, volumes_check},
    {"volume_mounts", PK_JSON, mounts_check},
    {"node_selector", PK_JSON, string_map_labels},
    {"tolerations", PK_JSON, tolerations_check},
    {"labels", PK_JSON, string_map_labels},
    {"annotations", PK_JSON, string_map_plain},
};

static int profile_value_check(const struct profile_key *pk, json_t *v, const char *where,
                               struct buf *msg)
{
    size_t i;
    json_t *item;
    switch (pk->kind) {
    case PK_STRING:
    case PK_QUANTITY:
        if (!json_is_string(v)) {
            buf_appendf(msg, "%sexpected a string", where);
            return -EINVAL;
        }
        if (pk->kind == PK_QUANTITY && check_quantity(json_string_value(v), msg) < 0)
            return -EINVAL;
        if (strcmp(pk->name, "image_pull_policy") == 0) {
            bool known = false;
            for (const char *const *c = pull_policies; *c; c++)
                known = known || strcmp(*c, json_string_value(v)) == 0;
            if (!known) {
                buf_appendf(msg, "%sexpected IfNotPresent, Always or Never", where);
                return -EINVAL;
            }
        }
        return 0;
    case PK_INT:
        if (!json_is_integer(v) || json_integer_value(v) < -1 ||
            json_integer_value(v) > 2147483647) {
            buf_appendf(msg, "%sexpected an integer from -1 to 2147483647", where);
            return -EINVAL;
        }
        return 0;
    case PK_BOOL:
        if (!json_is_boolean(v)) {
            buf_appendf(msg, "%sexpected true or false", where);
            return -EINVAL;
        }
        return 0;
    case PK_STRINGS:
    case PK_ENV:
        if (!json_is_array(v)) {
            buf_appendf(msg, "%sexpected a list of strings", where);
            return -EINVAL;
        }
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item)) {
                buf_appendf(msg, "%s[%zu]: expected a string", where, i);
                return -EINVAL;
            }
            if (pk->kind == PK_ENV && check_env_entry(json_string_value(item), msg) < 0)
                return -EINVAL;
        }
        return 0;
    case PK_JSON:
        return pk->json_fn(v, where, msg);
    }
    return 0;
}

static int profiles_check(json_t *j, const char *where, struct buf *msg)
{
    const char *pname;
    json_t *p;
    if (!json_is_object(j)) {
        buf_append_str(msg, "expected a mapping of profile names to their settings");
        return -EINVAL;
    }
    json_object_foreach(j, pname, p)
    {
        struct buf ignored = BUF_INIT;
        int bad = pname[0] == '\0' || check_k8s_name(pname, &ignored) < 0;
        buf_free(&ignored);
        if (bad) {
            buf_appendf(msg,
                        "%s: a profile name is 1 to 63 lowercase letters, digits and inner '-'",
                        pname);
            return -EINVAL;
        }
        if (!json_is_object(p)) {
            buf_appendf(msg, "%s: expected a mapping of settings", pname);
            return -EINVAL;
        }
        const char *key;
        json_t *v;
        json_object_foreach(p, key, v)
        {
            const struct profile_key *pk = NULL;
            for (size_t i = 0; i < sizeof profile_keys / sizeof profile_keys[0]; i++) {
                if (strcmp(profile_keys[i].name, key) == 0)
                    pk = &profile_keys[i];
            }
            if (pk == NULL) {
                buf_appendf(msg,
                            "%s.%s: unknown profile setting (expected display_name, "
                            "description or a kube key such as image, cpu_limit, "
                            "node_selector)",
                            pname, key);
                return -EINVAL;
            }
            char *at = xasprintf("%s.%s: ", pname, key);
            int r = profile_value_check(pk, v, at, msg);
            free(at);
            if (r < 0)
                return -EINVAL;
        }
    }
    return 0;
}

static int check_json_profiles(const char *value, struct buf *msg)
{
    return json_check_with(value, msg, profiles_check);
}

/* ---- setting values ---- */

static const char *type_desc(const struct config_key *k)
{
    switch (k->type) {
    case CONFIG_STRING:
        return "a string";
    case CONFIG_BOOL:
        return "a boolean";
    case CONFIG_INTEGER:
        return "an integer";
    case CONFIG_DURATION:
        return "a duration";
    case CONFIG_SIZE:
        return "a size";
    case CONFIG_ENUM:
        return "a string";
    case CONFIG_LIST:
        return "a list of strings";
    case CONFIG_JSON:
        return "a mapping or list";
    }
    return "a value";
}

static void append_choices(struct buf *msg, const struct config_key *k, const char *got)
{
    buf_append_str(msg, "expected one of ");
    for (const char *const *c = k->choices; *c; c++)
        buf_appendf(msg, "%s%s", c == k->choices ? "" : ", ", *c);
    buf_appendf(msg, ", got '%s'", got);
}

/* Accepted spellings, case-insensitively: YAML 1.1's common words, and nothing else, so
 * that "1", "y" or "enabled" are reported instead of silently meaning something. */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Validates one list item (already trimmed) and appends it to `l`. */
static int list_item_add(const struct config_key *k, struct config_list *l, const char *s,
                         size_t len, struct buf *msg)
{
    char *item = xstrndup(s, len);
    int r = -EINVAL;
    if (len == 0) {
        buf_append_str(msg, "empty list item");
        goto out;
    }
    if (check_text(item, msg) < 0)
        goto out;
    if (k->check && k->check(item, msg) < 0)
        goto out;
    list_push(l, s, len);
    r = 0;
out:
    free(item);
    return r;
}

static void list_replace(struct config_list *dst, struct config_list *src)
{
    list_clear(dst);
    *dst = *src;
    src->items = NULL;
    src->n = 0;
}

/* Parses `text` as the value of `k` and stores it in `cfg`, replacing (and freeing) the old
 * value. Lists are comma-separated with blanks around items ignored. On error the old value
 * stays and a message without location is appended to `msg`. Returns 0 or -EINVAL. */
static int set_text(struct config *cfg, const struct config_key *k, const char *text,
                    struct buf *msg)
{
    void *f = field(cfg, k);
    int64_t v;
    int r;

    switch (k->type) {
    case CONFIG_STRING:
        if (check_text(text, msg) < 0 || (k->check && k->check(text, msg) < 0))
            return -EINVAL;
        free(*(char **)f);
        *(char **)f = xstrdup(text);
        return 0;
    case CONFIG_ENUM:
        for (const char *const *c = k->choices; *c; c++) {
            if (strcmp(*c, text) == 0) {
                free(*(char **)f);
                *(char **)f = xstrdup(text);
                return 0;
            }
        }
        append_choices(msg, k, text);
        return -EINVAL;
    case CONFIG_BOOL:
        if (parse_bool(text, (bool *)f) == 0)
            return 0;
        buf_appendf(msg, "expected true/false, yes/no or on/off, got '%s'", text);
        return -EINVAL;
    case CONFIG_INTEGER:
        r = parse_digits(text[0] == '-' ? text + 1 : text, strlen(text) - (text[0] == '-'), &v);
        if (r == 0 && text[0] == '-')
            v = -v;
        break;
    case CONFIG_DURATION:
        r = parse_scaled(text, duration_suffixes, duration_mult, &v);
        break;
    case CONFIG_SIZE:
        r = parse_scaled(text, size_suffixes, size_mult, &v);
        break;
    case CONFIG_JSON: {
        /* Blank means the default (an empty list or mapping). Otherwise JSON text, stored
         * compact so that the dump writes it back on one line as a YAML flow value. */
        const char *src = text[strspn(text, " \t\r\n")] == '\0' ? k->def : text;
        json_error_t je;
        json_t *j = json_loads(src, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
        if (j == NULL) {
            buf_appendf(msg, "invalid JSON at column %d: %s", je.column, je.text);
            return -EINVAL;
        }
        char *canon = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        if (canon == NULL || check_text(canon, msg) < 0 || (k->check && k->check(canon, msg) < 0)) {
            free(canon);
            return -EINVAL;
        }
        free(*(char **)f);
        *(char **)f = xstrdup(canon);
        free(canon);
        return 0;
    }
    case CONFIG_LIST: {
        struct config_list l = {NULL, 0};
        const char *p = text;
        /* An empty (or all-blank) value is the empty list; otherwise every item counts. */
        if (p[strspn(p, " \t")] == '\0') {
            list_replace(f, &l);
            return 0;
        }
        for (;;) {
            size_t n = strcspn(p, ",");
            const char *s = p, *e = p + n;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (list_item_add(k, &l, s, (size_t)(e - s), msg) < 0) {
                list_clear(&l);
                return -EINVAL;
            }
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
        list_replace(f, &l);
        return 0;
    }
    default:
        return -EINVAL;
    }

    /* Integer, duration and size land here. */
    if (r == -ERANGE) {
        buf_appendf(msg, "'%s' is too large", text);
        return -EINVAL;
    }
    if (r < 0) {
        if (k->type == CONFIG_DURATION)
            buf_appendf(msg,
                        "expected a duration in seconds, optionally with a suffix s, m, h or d "
                        "(90, 90s, 5m, 1h, 14d), got '%s'",
                        text);
        else if (k->type == CONFIG_SIZE)
            buf_appendf(msg,
                        "expected a size in bytes, optionally with a suffix K, M or G "
                        "(KiB, MiB, GiB; 65536, 64K, 1M), got '%s'",
                        text);
        else
            buf_appendf(msg, "expected an integer, got '%s'", text);
        return -EINVAL;
    }
    if (check_range(k, v, msg) < 0)
        return -EINVAL;
    *(int64_t *)f = v;
    return 0;
}

/* ---- init / free ---- */

void config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NKEYS; i++) {
        struct buf msg = BUF_INIT;
        int r = set_text(cfg, &config_keys[i], config_keys[i].def, &msg);
        /* A default that does not parse is a bug in the table above, caught by any test. */
        if (r < 0) {
            fprintf(stderr, "codehub: bad default for %s.%s: %s\n", config_keys[i].section,
                    config_keys[i].name, msg.data ? msg.data : "");
            abort();
        }
        buf_free(&msg);
    }
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        if (k->type == CONFIG_STRING || k->type == CONFIG_ENUM || k->type == CONFIG_JSON) {
            char **s = field(cfg, k);
            free(*s);
            *s = NULL;
        } else if (k->type == CONFIG_LIST) {
            list_clear(field(cfg, k));
        }
    }
}

/* ---- YAML file ---- */

struct loader {
    struct fy_parser *fyp;
    struct config *cfg;
    const char *path;
    struct buf *errors;
    int nerrors;
    bool broken; /* the parser failed: no more events */
    /* Where each error line starts in `errors` and the line it is about, so that errors
     * caused by a syntax error can be withdrawn (see drop_errors_from). */
    size_t *err_offset;
    int *err_line;
};

struct pos {
    int line, column; /* 1-based; 0 when unknown */
};

static struct pos event_pos(struct fy_event *e, struct pos fallback)
{
    const struct fy_mark *m = fy_event_start_mark(e);
    if (m == NULL)
        return fallback;
    struct pos p = {m->line + 1, m->column + 1};
    /* libfyaml marks a quoted scalar after its opening quote and an alias after its '*';
     * point at the value as written instead. Both sit on the same line as the mark. */
    enum fy_scalar_style style =
        e->type == FYET_SCALAR ? fy_token_scalar_style(e->scalar.value) : FYSS_PLAIN;
    if ((e->type == FYET_ALIAS || style == FYSS_SINGLE_QUOTED || style == FYSS_DOUBLE_QUOTED) &&
        p.column > 1)
        p.column--;
    return p;
}

static void load_error(struct loader *ld, struct pos at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void load_error(struct loader *ld, struct pos at, const char *key, const char *fmt, ...)
{
    va_list ap;
    struct buf line = BUF_INIT;
    ld->err_offset = xrealloc(ld->err_offset, (size_t)(ld->nerrors + 1) * sizeof(size_t));
    ld->err_line = xrealloc(ld->err_line, (size_t)(ld->nerrors + 1) * sizeof(int));
    ld->err_offset[ld->nerrors] = ld->errors->len;
    ld->err_line[ld->nerrors] = at.line;
    if (at.line > 0)
        buf_appendf(&line, "%s:%d:%d: ", ld->path, at.line, at.column);
    else
        buf_appendf(&line, "%s: ", ld->path);
    if (key)
        buf_appendf(&line, "%s: ", key);
    va_start(ap, fmt);
    buf_vappendf(&line, fmt, ap);
    va_end(ap);
    emit_line(ld->errors, line.data);
    buf_free(&line);
    ld->nerrors++;
}

/* libfyaml hands out the events before a syntax error, and on the line of the error those
 * are often fragments ("bind: a: b" first yields the value "a"). Errors found from such
 * fragments would only distract from the real one, so errors on or after `line` go. Our
 * errors come in document order, so they are a suffix of the ones we wrote. */
static void drop_errors_from(struct loader *ld, int line)
{
    int keep = ld->nerrors;
    while (keep > 0 && ld->err_line[keep - 1] >= line)
        keep--;
    if (keep == ld->nerrors)
        return;
    ld->errors->len = ld->err_offset[keep];
    ld->errors->data[ld->errors->len] = '\0';
    ld->nerrors = keep;
}

/* The next event, or NULL once the parser has failed (its diagnostics are collected and
 * reported at the end). The caller frees the event with fy_parser_event_free. */
static struct fy_event *next_event(struct loader *ld)
{
    if (ld->broken)
        return NULL;
    struct fy_event *e = fy_parser_parse(ld->fyp);
    if (e == NULL)
        ld->broken = true;
    return e;
}

static void event_free(struct loader *ld, struct fy_event *e)
{
    fy_parser_event_free(ld->fyp, e);
}

/* Consumes the rest of a node whose first event was `e` (a mapping or sequence start). */
static void skip_node(struct loader *ld, struct fy_event *first)
{
    if (first->type != FYET_MAPPING_START && first->type != FYET_SEQUENCE_START)
        return;
    int depth = 1;
    while (depth > 0) {
        struct fy_event *e = next_event(ld);
        if (e == NULL)
            return;
        if (e->type == FYET_MAPPING_START || e->type == FYET_SEQUENCE_START)
            depth++;
        else if (e->type == FYET_MAPPING_END || e->type == FYET_SEQUENCE_END)
            depth--;
        event_free(ld, e);
    }
}

static const char *node_kind(struct fy_event *e)
{
    switch (e->type) {
    case FYET_MAPPING_START:
        return "a mapping";
    case FYET_SEQUENCE_START:
        return "a sequence";
    case FYET_ALIAS:
        return "an alias";
    default:
        return "a scalar";
    }
}

/* The text of a scalar event (NULL for an empty value, as in "key:"). */
static const char *scalar_text(struct fy_event *e, size_t *len)
{
    *len = 0;
    if (e->scalar.value == NULL)
        return NULL;
    return fy_token_get_text(e->scalar.value, len);
}

/* YAML's null: nothing at all, or a plain ~ / null. A quoted "null" is a string. */
static bool scalar_is_null(struct fy_event *e)
{
    size_t len;
    const char *t = scalar_text(e, &len);
    if (t == NULL || len == 0)
        return fy_token_scalar_style(e->scalar.value) == FYSS_PLAIN;
    if (fy_token_scalar_style(e->scalar.value) != FYSS_PLAIN)
        return false;
    return (len == 1 && t[0] == '~') ||
           (len == 4 &&
            (memcmp(t, "null", 4) == 0 || memcmp(t, "Null", 4) == 0 || memcmp(t, "NULL", 4) == 0));
}

/* Copies a scalar's text to a C string; NULL (with an error) when it holds a NUL byte. */
static char *scalar_dup(struct loader *ld, struct fy_event *e, struct pos at, const char *key)
{
    size_t len;
    const char *t = scalar_text(e, &len);
    if (t == NULL)
        return xstrdup("");
    if (memchr(t, '\0', len)) {
        load_error(ld, at, key, "NUL characters are not allowed");
        return NULL;
    }
    return xstrndup(t, len);
}

static void load_list(struct loader *ld, const struct config_key *k, const char *key,
                      struct pos fallback)
{
    struct config_list l = {NULL, 0};
    bool ok = true;
    for (;;) {
        struct fy_event *e = next_event(ld);
        if (e == NULL) {
            ok = false;
            break;
        }
        if (e->type == FYET_SEQUENCE_END) {
            event_free(ld, e);
            break;
        }
        struct pos at = event_pos(e, fallback);
        if (e->type != FYET_SCALAR || scalar_is_null(e)) {
            load_error(ld, at, key, "list items must be strings, got %s",
                       e->type == FYET_SCALAR ? "an empty value" : node_kind(e));
            ok = false;
            skip_node(ld, e);
        } else {
            char *text = scalar_dup(ld, e, at, key);
            struct buf msg = BUF_INIT;
            if (text == NULL) {
                ok = false;
            } else if (list_item_add(k, &l, text, strlen(text), &msg) < 0) {
                load_error(ld, at, key, "%s", msg.data);
                ok = false;
            }
            free(text);
            buf_free(&msg);
        }
        event_free(ld, e);
    }
    if (ok)
        list_replace(field(ld->cfg, k), &l);
    list_clear(&l);
}

#define JSON_MAX_DEPTH 32

/* YAML 1.2 core-schema reading of a plain scalar: null, booleans, integers and floats
 * become JSON values of those types, anything else (and every quoted scalar) a string, so
 * that `tolerationSeconds: 300` is a number and `value: "300"` a string. */
static json_t *scalar_to_json(struct loader *ld, struct fy_event *e, struct pos at, const char *key)
{
    if (scalar_is_null(e))
        return json_null();
    char *text = scalar_dup(ld, e, at, key);
    if (text == NULL)
        return NULL;
    json_t *j = NULL;
    if (fy_token_scalar_style(e->scalar.value) == FYSS_PLAIN) {
        bool b;
        const char *digits = text[0] == '-' || text[0] == '+' ? text + 1 : text;
        int64_t v;
        if ((strcmp(text, "true") == 0 || strcmp(text, "false") == 0 || strcmp(text, "True") == 0 ||
             strcmp(text, "False") == 0 || strcmp(text, "TRUE") == 0 ||
             strcmp(text, "FALSE") == 0) &&
            parse_bool(text, &b) == 0) {
            j = json_boolean(b);
        } else if (parse_digits(digits, strlen(digits), &v) == 0) {
            j = json_integer(text[0] == '-' ? -v : v);
        } else {
            char *end = NULL;
            double d = strtod(text, &end);
            bool numeric = end != text && *end == '\0' && strspn(digits, "0123456789") > 0 &&
                           strpbrk(text, "xXnN") == NULL;
            j = numeric ? json_real(d) : NULL;
        }
    }
    if (j == NULL)
        j = json_string(text);
    if (j == NULL)
        load_error(ld, at, key, "not valid UTF-8");
    free(text);
    return j;
}

/* Converts the node that starts with `e` (already read) into JSON, consuming the rest of
 * its events. Returns NULL after reporting an error (the node is consumed anyway). */
static json_t *node_to_json(struct loader *ld, struct fy_event *e, const char *key, int depth,
                            struct pos fallback)
{
    struct pos at = event_pos(e, fallback);
    if (e->type == FYET_ALIAS) {
        load_error(ld, at, key, "YAML aliases are not supported");
        return NULL;
    }
    if (e->type == FYET_SCALAR)
        return scalar_to_json(ld, e, at, key);
    if (depth >= JSON_MAX_DEPTH) {
        load_error(ld, at, key, "nested more than %d levels deep", JSON_MAX_DEPTH);
        skip_node(ld, e);
        return NULL;
    }
    bool mapping = e->type == FYET_MAPPING_START;
    json_t *out = mapping ? json_object() : json_array();
    bool ok = true;
    for (;;) {
        struct fy_event *c = next_event(ld);
        if (c == NULL) {
            ok = false;
            break;
        }
        if (c->type == FYET_MAPPING_END || c->type == FYET_SEQUENCE_END) {
            event_free(ld, c);
            break;
        }
        if (!mapping) {
            json_t *item = node_to_json(ld, c, key, depth + 1, at);
            if (item == NULL)
                ok = false;
            else
                json_array_append_new(out, item);
            event_free(ld, c);
            continue;
        }
        struct pos kat = event_pos(c, at);
        char *name = NULL;
        if (c->type != FYET_SCALAR || scalar_is_null(c)) {
            load_error(ld, kat, key, "mapping keys must be strings, got %s",
                       c->type == FYET_SCALAR ? "an empty value" : node_kind(c));
            skip_node(ld, c);
            ok = false;
        } else {
            name = scalar_dup(ld, c, kat, key);
            if (name == NULL)
                ok = false;
        }
        event_free(ld, c);
        struct fy_event *v = next_event(ld);
        if (v == NULL) {
            free(name);
            ok = false;
            break;
        }
        json_t *val = node_to_json(ld, v, key, depth + 1, kat);
        event_free(ld, v);
        if (name != NULL && json_object_get(out, name) != NULL) {
            load_error(ld, kat, key, "duplicate key '%s'", name);
            ok = false;
        } else if (name != NULL && val != NULL) {
            json_object_set_new(out, name, val);
            val = NULL;
        } else {
            ok = false;
        }
        json_decref(val);
        free(name);
    }
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* A mapping or list value of a JSON key, or a scalar holding JSON text (as in the
 * environment). Errors point at the value; its inner path is in the message. */
static void load_json_value(struct loader *ld, const struct config_key *k, struct fy_event *e,
                            const char *key, struct pos at)
{
    struct buf msg = BUF_INIT;
    if (e->type == FYET_SCALAR) {
        if (scalar_is_null(e)) {
            set_text(ld->cfg, k, "", &msg);
        } else {
            char *text = scalar_dup(ld, e, at, key);
            if (text != NULL && set_text(ld->cfg, k, text, &msg) < 0)
                load_error(ld, at, key, "%s", msg.data);
            free(text);
        }
        buf_free(&msg);
        return;
    }
    json_t *j = node_to_json(ld, e, key, 0, at);
    if (j != NULL) {
        char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text == NULL || set_text(ld->cfg, k, text, &msg) < 0)
            load_error(ld, at, key, "%s", msg.data ? msg.data : "cannot encode as JSON");
        free(text);
        json_decref(j);
    }
    buf_free(&msg);
}

/* Applies the value node starting at `e` to key `k`; `key_at` locates the key itself. */
static void load_value(struct loader *ld, const struct config_key *k, struct fy_event *e,
                       struct pos key_at)
{
    char key[MAX_NAME];
    dotted_name(k, key, sizeof(key));
    struct pos at = event_pos(e, key_at);
    /* A block scalar (| or >) is marked at the start of its first content line, column 1;
     * the key is a better place to point at. */
    if (e->type == FYET_SCALAR && (fy_token_scalar_style(e->scalar.value) == FYSS_LITERAL ||
                                   fy_token_scalar_style(e->scalar.value) == FYSS_FOLDED))
        at = key_at;

    if (e->type == FYET_ALIAS) {
        load_error(ld, at, key, "YAML aliases are not supported");
        return;
    }
    if (k->type == CONFIG_JSON) {
        load_json_value(ld, k, e, key, at);
        return;
    }
    if (e->type == FYET_SEQUENCE_START && k->type == CONFIG_LIST) {
        load_list(ld, k, key, at);
        return;
    }
    if (e->type != FYET_SCALAR) {
        load_error(ld, at, key, "expected %s, got %s", type_desc(k), node_kind(e));
        skip_node(ld, e);
        return;
    }
    if (scalar_is_null(e)) {
        if (k->type == CONFIG_STRING) {
            char **s = field(ld->cfg, k);
            free(*s);
            *s = xstrdup("");
        } else if (k->type == CONFIG_LIST) {
            list_clear(field(ld->cfg, k));
        } else {
            /* An empty value points at the key: there is nothing else to point at. */
            load_error(ld, key_at, key, "missing value (expected %s)", type_desc(k));
        }
        return;
    }
    if (k->type == CONFIG_LIST) {
        load_error(ld, at, key,
                   "expected a list of strings (a YAML sequence such as [a, b]), "
                   "got a scalar");
        return;
    }
    char *text = scalar_dup(ld, e, at, key);
    if (text == NULL)
        return;
    struct buf msg = BUF_INIT;
    if (set_text(ld->cfg, k, text, &msg) < 0)
        load_error(ld, at, key, "%s", msg.data);
    buf_free(&msg);
    free(text);
}

/* The value of a key we will not use: skip it whole. */
static void skip_value(struct loader *ld)
{
    struct fy_event *v = next_event(ld);
    if (v) {
        skip_node(ld, v);
        event_free(ld, v);
    }
}

/* Reads a mapping key. Returns its text (caller frees) with its position, NULL at the
 * mapping's end or on a parser failure (`*done`), or NULL after reporting a key that is
 * not a plain scalar (its value is then skipped too). */
static char *load_key(struct loader *ld, struct pos *at, bool *done, const char *section)
{
    struct fy_event *e = next_event(ld);
    char *text = NULL;
    *done = false;
    if (e == NULL || e->type == FYET_MAPPING_END) {
        *done = true;
        goto out;
    }
    *at = event_pos(e, (struct pos){0, 0});
    if (e->type != FYET_SCALAR || scalar_is_null(e)) {
        load_error(ld, *at, section, "keys must be plain names, got %s",
                   e->type == FYET_SCALAR ? "an empty key" : node_kind(e));
        skip_node(ld, e);
        skip_value(ld);
        goto out;
    }
    text = scalar_dup(ld, e, *at, section);
    if (text == NULL)
        skip_value(ld);
out:
    if (e)
        event_free(ld, e);
    return text;
}

static void load_section(struct loader *ld, const char *section)
{
    int first_line[NKEYS] = {0};
    for (;;) {
        struct pos at;
        bool done;
        char *name = load_key(ld, &at, &done, section);
        if (done)
            return;
        if (name == NULL)
            continue;
        const struct config_key *k = key_find(section, name);
        char dotted[MAX_NAME];
        snprintf(dotted, sizeof(dotted), "%s.%s", section, name);
        if (k == NULL) {
            struct buf msg = BUF_INIT;
            append_unknown_key(&msg, section, name);
            load_error(ld, at, dotted, "%s", msg.data);
            buf_free(&msg);
            skip_value(ld);
        } else if (first_line[k - config_keys] > 0) {
            load_error(ld, at, dotted, "duplicate key (first set on line %d)",
                       first_line[k - config_keys]);
            skip_value(ld);
        } else {
            first_line[k - config_keys] = at.line > 0 ? at.line : 1;
            struct fy_event *v = next_event(ld);
            if (v) {
                load_value(ld, k, v, at);
                event_free(ld, v);
            }
        }
        free(name);
    }
}

static void load_root_mapping(struct loader *ld)
{
    /* Sections seen so far, by first line, to report duplicates. */
    const char *seen[NKEYS];
    int seen_line[NKEYS];
    size_t nseen = 0;

    for (;;) {
        struct pos at;
        bool done;
        char *name = load_key(ld, &at, &done, NULL);
        if (done)
            return;
        if (name == NULL)
            continue;
        int dup_line = 0;
        for (size_t i = 0; i < nseen; i++) {
            if (strcmp(seen[i], name) == 0)
                dup_line = seen_line[i];
        }
        if (!section_find(name)) {
            struct buf msg = BUF_INIT;
            append_unknown_section(&msg, name);
            load_error(ld, at, NULL, "%s", msg.data);
            buf_free(&msg);
            skip_value(ld);
        } else if (dup_line > 0) {
            load_error(ld, at, name, "duplicate section (first on line %d)", dup_line);
            skip_value(ld);
        } else {
            /* The table's own string outlives the loop, unlike `name`. */
            seen[nseen] = section_find(name);
            seen_line[nseen++] = at.line > 0 ? at.line : 1;
            struct fy_event *v = next_event(ld);
            if (v == NULL) {
                free(name);
                return;
            }
            if (v->type == FYET_MAPPING_START) {
                load_section(ld, name);
            } else if (!(v->type == FYET_SCALAR && scalar_is_null(v))) {
                /* "auth:" with every key commented out is fine; anything else is not. */
                load_error(ld, event_pos(v, at), name,
                           "a section must be a mapping of keys, got %s", node_kind(v));
                skip_node(ld, v);
            }
            event_free(ld, v);
        }
        free(name);
    }
}

static void load_document(struct loader *ld)
{
    struct fy_event *e = next_event(ld);
    if (e == NULL)
        return;
    if (e->type == FYET_MAPPING_START) {
        load_root_mapping(ld);
    } else if (!(e->type == FYET_SCALAR && scalar_is_null(e))) {
        load_error(ld, event_pos(e, (struct pos){1, 1}), NULL,
                   "the top level must be a mapping of sections (server:, log:, ...), got %s",
                   node_kind(e));
        skip_node(ld, e);
    }
    event_free(ld, e);
}

static void load_stream(struct loader *ld)
{
    struct fy_event *e = next_event(ld);
    if (e == NULL)
        return;
    event_free(ld, e); /* stream start */
    e = next_event(ld);
    if (e == NULL || e->type == FYET_STREAM_END)
        goto out;      /* empty, or only comments: all defaults */
    event_free(ld, e); /* document start */
    load_document(ld);
    e = next_event(ld); /* document end */
    if (e == NULL)
        return;
    event_free(ld, e);
    e = next_event(ld);
    if (e && e->type == FYET_DOCUMENT_START)
        load_error(ld, event_pos(e, (struct pos){0, 0}), NULL, "only one YAML document is allowed");
out:
    if (e)
        event_free(ld, e);
}

static void diag_discard(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* Errors are collected (fy_diag_set_collect_errors) and reported by us; whatever else
     * libfyaml wants to say must not reach stderr. */
}

static int read_file(const char *path, char **data_out, size_t *len_out, struct buf *errors)
{
    struct buf b = BUF_INIT;
    int r = -ENOENT;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        emit_linef(errors, "%s: cannot read config file: %s", path, strerror(errno));
        return -ENOENT;
    }
    for (;;) {
        char chunk[8192];
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        buf_append(&b, chunk, n);
        if (b.len > MAX_FILE) {
            emit_linef(errors, "%s: config file is larger than %d bytes", path, MAX_FILE);
            r = -EINVAL;
            goto fail;
        }
        if (n < sizeof(chunk))
            break;
    }
    if (ferror(f)) {
        emit_linef(errors, "%s: cannot read config file: %s", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    *len_out = b.len;
    *data_out = buf_steal(&b);
    return 0;
fail:
    fclose(f);
    buf_free(&b);
    return r;
}

int config_load_file(struct config *cfg, const char *path, struct buf *errors)
{
    struct buf scratch = BUF_INIT;
    struct loader ld = {.cfg = cfg, .path = path, .errors = errors ? errors : &scratch};
    struct fy_diag *diag = NULL;
    char *data = NULL;
    size_t len = 0;
    int r = read_file(path, &data, &len, ld.errors);
    if (r < 0)
        goto out;
    size_t bad = utf8_invalid_at(data, len);
    if (bad < len) {
        emit_linef(ld.errors, "%s:%d: not valid UTF-8 (byte %zu)", path, utf8_line_of(data, bad),
                   bad + 1);
        r = -EINVAL;
        goto out;
    }

    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_discard;
    dcfg.level = FYET_ERROR;
    dcfg.colorize = false;
    diag = fy_diag_create(&dcfg);
    if (diag == NULL) {
        emit_linef(ld.errors, "%s: cannot create the YAML parser", path);
        r = -ENOMEM;
        goto out;
    }
    fy_diag_set_collect_errors(diag, true);

    struct fy_parse_cfg pcfg = {
        .flags = FYPCF_QUIET | FYPCF_JSON_NONE,
        .diag = diag,
    };
    ld.fyp = fy_parser_create(&pcfg);
    if (ld.fyp == NULL || fy_parser_set_string(ld.fyp, data, len) != 0) {
        emit_linef(ld.errors, "%s: cannot create the YAML parser", path);
        r = -ENOMEM;
        goto out;
    }
    load_stream(&ld);

    if (ld.broken) {
        /* libfyaml's own positions are already 1-based. */
        void *iter = NULL;
        bool any = false;
        for (;;) {
            struct fy_diag_error *de = fy_diag_errors_iterate(diag, &iter);
            if (de == NULL)
                break;
            if (de->type < FYET_ERROR)
                continue;
            if (!any && de->line > 0)
                drop_errors_from(&ld, de->line);
            load_error(&ld, (struct pos){de->line > 0 ? de->line : 0, de->column}, NULL, "%s",
                       de->msg ? de->msg : "YAML syntax error");
            any = true;
        }
        if (!any)
            load_error(&ld, (struct pos){0, 0}, NULL, "YAML syntax error");
    }
    r = ld.nerrors > 0 ? -EINVAL : 0;
out:
    if (ld.fyp)
        fy_parser_destroy(ld.fyp);
    if (diag)
        fy_diag_destroy(diag);
    free(data);
    free(ld.err_offset);
    free(ld.err_line);
    buf_free(&scratch);
    return r;
}

/* ---- environment and command line ---- */

static void emit_env_unknown(struct buf *errors, const char *name)
{
    struct buf line = BUF_INIT;
    struct buf *out = &line;
    const char *rest = name + strlen(ENV_PREFIX);
    const struct config_key *in_section = NULL;
    for (size_t i = 0; i < NKEYS && in_section == NULL; i++) {
        size_t sl = strlen(config_keys[i].section);
        bool match = strlen(rest) > sl && rest[sl] == '_';
        for (size_t j = 0; match && j < sl; j++)
            match = rest[j] == upper(config_keys[i].section[j]);
        if (match)
            in_section = &config_keys[i];
    }
    const char *best = NULL;
    char best_name[MAX_NAME];
    size_t best_d = SUGGEST_MAX_DISTANCE + 1;
    for (size_t i = 0; i < NKEYS; i++) {
        char cand[MAX_NAME];
        env_name(&config_keys[i], cand, sizeof(cand));
        size_t d = edit_distance(name, cand);
        if (d < best_d) {
            best_d = d;
            memcpy(best_name, cand, sizeof(cand));
            best = best_name;
        }
    }
    buf_appendf(out, "environment %s: ", name);
    if (in_section) {
        buf_appendf(out, "unknown key");
    } else {
        buf_append_str(out, "unknown variable (expected CODEHUB_<SECTION>_<KEY> with a section "
                            "among ");
        append_sections(out);
        buf_append_char(out, ')');
    }
    if (best)
        buf_appendf(out, " (did you mean %s?)", best);
    emit_line(errors, line.data);
    buf_free(&line);
}

int config_apply_env(struct config *cfg, char *const *envp, struct buf *errors)
{
    struct buf scratch = BUF_INIT;
    struct buf *out = errors ? errors : &scratch;
    int nerrors = 0;

    for (size_t i = 0; envp && envp[i]; i++) {
        const char *entry = envp[i];
        const char *eq = strchr(entry, '=');
        if (strncmp(entry, ENV_PREFIX, strlen(ENV_PREFIX)) != 0 || eq == NULL)
            continue;
        size_t nlen = (size_t)(eq - entry);
        if (nlen >= MAX_NAME) {
            emit_linef(out, "environment %.*s: unknown variable", (int)nlen, entry);
            nerrors++;
            continue;
        }
        char name[MAX_NAME];
        memcpy(name, entry, nlen);
        name[nlen] = '\0';

        bool ignored = false;
        for (const char *const *ig = env_ignored; *ig; ig++)
            ignored = ignored || strcmp(name + strlen(ENV_PREFIX), *ig) == 0;
        if (ignored)
            continue;

        const struct config_key *k = NULL;
        for (size_t j = 0; j < NKEYS && k == NULL; j++) {
            char cand[MAX_NAME];
            env_name(&config_keys[j], cand, sizeof(cand));
            if (strcmp(cand, name) == 0)
                k = &config_keys[j];
        }
        if (k == NULL) {
            emit_env_unknown(out, name);
            nerrors++;
            continue;
        }
        struct buf msg = BUF_INIT;
        if (set_text(cfg, k, eq + 1, &msg) < 0) {
            emit_linef(out, "environment %s: %s", name, msg.data);
            nerrors++;
        }
        buf_free(&msg);
    }
    buf_free(&scratch);
    return nerrors > 0 ? -EINVAL : 0;
}

int config_set(struct config *cfg, const char *key, const char *value, const char *origin,
               struct buf *errors)
{
    struct buf scratch = BUF_INIT;
    struct buf *out = errors ? errors : &scratch;
    const struct config_key *k = NULL;
    int r = -EINVAL;
    const char *dot = strchr(key, '.');
    if (origin == NULL)
        origin = key;

    for (size_t i = 0; dot && i < NKEYS && k == NULL; i++) {
        const struct config_key *c = &config_keys[i];
        if (strlen(c->section) == (size_t)(dot - key) &&
            strncmp(c->section, key, (size_t)(dot - key)) == 0 && strcmp(c->name, dot + 1) == 0)
            k = c;
    }
    if (k == NULL) {
        struct buf line = BUF_INIT;
        buf_appendf(&line, "%s: ", origin);
        if (dot) {
            char *section = xstrndup(key, (size_t)(dot - key));
            if (section_find(section))
                append_unknown_key(&line, section, dot + 1);
            else
                append_unknown_section(&line, section);
            free(section);
        } else {
            buf_appendf(&line, "unknown key '%s' (keys are written section.key)", key);
        }
        emit_line(out, line.data);
        buf_free(&line);
        goto out;
    }
    struct buf msg = BUF_INIT;
    r = set_text(cfg, k, value, &msg);
    if (r < 0)
        emit_linef(out, "%s: %s: %s", origin, key, msg.data);
    buf_free(&msg);
out:
    buf_free(&scratch);
    return r;
}

/* ---- finish ---- */

/* Re-checks a value already in `cfg`: defaults and values stored by code bypass the text
 * parser, so config_finish does not trust them. */
static int validate_current(const struct config *cfg, const struct config_key *k, struct buf *msg)
{
    const void *f = cfield(cfg, k);
    switch (k->type) {
    case CONFIG_STRING: {
        const char *s = *(char *const *)f ? *(char *const *)f : "";
        if (check_text(s, msg) < 0)
            return -EINVAL;
        return k->check ? k->check(s, msg) : 0;
    }
    case CONFIG_ENUM: {
        const char *s = *(char *const *)f ? *(char *const *)f : "";
        for (const char *const *c = k->choices; *c; c++) {
            if (strcmp(*c, s) == 0)
                return 0;
        }
        append_choices(msg, k, s);
        return -EINVAL;
    }
    case CONFIG_LIST: {
        const struct config_list *l = f;
        for (size_t i = 0; i < l->n; i++) {
            if (check_text(l->items[i], msg) < 0 || (k->check && k->check(l->items[i], msg) < 0))
                return -EINVAL;
        }
        return 0;
    }
    case CONFIG_JSON: {
        const char *s = *(char *const *)f;
        if (s == NULL) {
            buf_append_str(msg, "not set");
            return -EINVAL;
        }
        json_t *j = json_parse_checked(s, msg);
        if (j == NULL)
            return -EINVAL;
        json_decref(j);
        return k->check ? k->check(s, msg) : 0;
    }
    case CONFIG_INTEGER:
    case CONFIG_DURATION:
    case CONFIG_SIZE:
        return check_range(k, *(const int64_t *)f, msg);
    case CONFIG_BOOL:
        return 0;
    }
    return 0;
}

static bool ipv6_unspecified(const char *host)
{
    struct in6_addr a6;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}

/* With per-user origins on, the hub's own host must not itself look like NAME.DOMAIN, or
 * every request to the hub would be taken for user NAME's workspace. */
static int check_subdomains_vs_hub(const struct config *cfg, struct buf *out)
{
    const char *domain = cfg->proxy.user_subdomains;
    const char *url = cfg->server.public_url;
    if (domain == NULL || domain[0] == '\0' || url == NULL || url[0] == '\0')
        return 0;
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t hlen = host[0] == '[' ? 0 : strcspn(host, ":/");
    size_t dlen = strlen(domain);
    if (hlen <= dlen + 1 || host[hlen - dlen - 1] != '.' ||
        strncasecmp(host + hlen - dlen, domain, dlen) != 0 ||
        memchr(host, '.', hlen - dlen - 1) != NULL)
        return 0;
    struct buf line = BUF_INIT;
    buf_appendf(&line,
                "proxy.user_subdomains: the hub's own host '%.*s' (server.public_url) would be "
                "taken for user '%.*s''s workspace; use the hub's host itself as the domain, or "
                "a domain that is not its parent",
                (int)hlen, host, (int)(hlen - dlen - 1), host);
    emit_line(out, line.data);
    buf_free(&line);
    return -EINVAL;
}

int config_finish(struct config *cfg, struct buf *errors)
{
    struct buf scratch = BUF_INIT;
    struct buf *out = errors ? errors : &scratch;
    int nerrors = 0;

    for (size_t i = 0; i < NKEYS; i++) {
        struct buf msg = BUF_INIT;
        if (validate_current(cfg, &config_keys[i], &msg) < 0) {
            emit_linef(out, "%s.%s: %s", config_keys[i].section, config_keys[i].name, msg.data);
            nerrors++;
        }
        buf_free(&msg);
    }
    if (cfg->http.max_url_length > cfg->http.max_head_size) {
        struct buf line = BUF_INIT;
        buf_append_str(&line, "http.max_url_length: must not exceed http.max_head_size (");
        append_size(&line, cfg->http.max_head_size);
        buf_append_str(&line, "), got ");
        append_size(&line, cfg->http.max_url_length);
        emit_line(out, line.data);
        buf_free(&line);
        nerrors++;
    }
    if (nerrors > 0)
        goto out;

    /* A NULL public_url (set by code) counts as empty, like in validate_current. */
    size_t ulen = cfg->server.public_url ? strlen(cfg->server.public_url) : 0;
    if (ulen > 0 && cfg->server.public_url[ulen - 1] == '/') {
        cfg->server.public_url[ulen - 1] = '\0';
    } else if (ulen == 0) {
        char *host = NULL;
        int port = 0;
        if (config_parse_bind(cfg->server.bind, &host, &port) == 0 && port != 0) {
            /* A wildcard bind is reachable on loopback; a browser cannot open 0.0.0.0. */
            const char *h = host;
            bool v6 = strchr(host, ':') != NULL;
            if (strcmp(host, "0.0.0.0") == 0)
                h = "127.0.0.1";
            else if (v6 && ipv6_unspecified(host))
                h = "::1";
            free(cfg->server.public_url);
            cfg->server.public_url = xasprintf(v6 ? "http://[%s]:%d" : "http://%s:%d", h, port);
        }
        /* With port 0 the port is known only after listening: public_url stays "" and the
         * server derives it then. */
        free(host);
    }
    if (check_subdomains_vs_hub(cfg, out) < 0)
        nerrors++;
out:
    buf_free(&scratch);
    return nerrors > 0 ? -EINVAL : 0;
}

/* ---- dump, iteration, bind ---- */

static void append_quoted(struct buf *out, const char *s)
{
    buf_append_char(out, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_appendf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            buf_appendf(out, "\\x%02x", *p);
        else
            buf_append_char(out, (char)*p);
    }
    buf_append_char(out, '"');
}

void config_dump(const struct config *cfg, struct buf *out)
{
    const char *section = NULL;
    buf_append_str(out, "# codehub configuration in force (defaults, file, environment, flags)\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct config_key *k = &config_keys[i];
        const void *f = cfield(cfg, k);
        if (section == NULL || strcmp(section, k->section) != 0) {
            section = k->section;
            buf_appendf(out, "%s:\n", section);
        }
        buf_appendf(out, "  # %s\n  %s: ", k->doc, k->name);
        switch (k->type) {
        case CONFIG_STRING:
        case CONFIG_ENUM:
            append_quoted(out, *(char *const *)f);
            break;
        case CONFIG_JSON:
            /* JSON is YAML's flow style: it reads back as the same mapping or list. */
            buf_append_str(out, *(char *const *)f ? *(char *const *)f : "null");
            break;
        case CONFIG_BOOL:
            buf_append_str(out, *(const bool *)f ? "true" : "false");
            break;
        case CONFIG_INTEGER:
        case CONFIG_DURATION:
        case CONFIG_SIZE:
            append_number(out, k, *(const int64_t *)f);
            break;
        case CONFIG_LIST: {
            const struct config_list *l = f;
            buf_append_char(out, '[');
            for (size_t j = 0; j < l->n; j++) {
                if (j > 0)
                    buf_append_str(out, ", ");
                append_quoted(out, l->items[j]);
            }
            buf_append_char(out, ']');
            break;
        }
        }
        buf_append_char(out, '\n');
    }
}

void config_each_key(void (*cb)(const char *key, const char *doc, void *data), void *data)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char name[MAX_NAME];
        dotted_name(&config_keys[i], name, sizeof(name));
        cb(name, config_keys[i].doc, data);
    }
}

int config_parse_bind(const char *bind, char **host_out, int *port_out)
{
    if (host_out)
        *host_out = NULL;
    if (bind == NULL)
        return -EINVAL;
    return bind_split(bind, host_out, port_out, NULL);
}

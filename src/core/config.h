/* Configuration: built-in defaults, then one YAML file, then CODEHUB_<SECTION>_<KEY>
 * environment variables, then command-line flags. Every key is described once, in the
 * table in config.c, which drives parsing, environment overrides and validation;
 * docs/config.md lists the same keys (a unit test keeps the two in step).
 *
 * Errors are appended to a `struct buf` as lines of the form
 *   FILE:LINE:COLUMN: section.key: what is wrong
 *   environment CODEHUB_SECTION_KEY: what is wrong
 * and every error in a file is reported, not only the first. */
#ifndef CODEHUB_CORE_CONFIG_H
#define CODEHUB_CORE_CONFIG_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config_list {
    char **items; /* each owned by the list */
    size_t n;
};

struct config {
    struct {
        char *bind;       /* "ADDR:PORT", default "127.0.0.1:8000"; "[::1]:8000" for IPv6 */
        char *public_url; /* "http(s)://host[:port]" the browser uses; derived from bind when "" */
        char *data_dir;   /* default "./data" */
        struct config_list trusted_proxies; /* IPs or CIDRs whose X-Forwarded-* are believed */
        int64_t shutdown_grace; /* seconds to finish in-flight requests on SIGTERM, default 10 */
    } server;
    struct {
        char *level;   /* debug | info | warn | error, default info */
        char *format;  /* text | json, default text */
        bool requests; /* a line per request, default true */
    } log;
    struct {
        int64_t max_head_size;   /* bytes, default 32768 */
        int64_t max_headers;     /* header fields, default 100 */
        int64_t max_url_length;  /* bytes, default 8192 */
        int64_t max_body_size;   /* bytes of a body the hub itself reads, default 1 MiB */
        int64_t head_timeout;    /* seconds to receive a request head, default 10 */
        int64_t body_timeout;    /* seconds without body progress, default 30 */
        int64_t idle_timeout;    /* seconds a keep-alive connection may sit idle, default 60 */
        int64_t max_connections; /* concurrent client connections, default 10000 */
    } http;
    struct {
        char *url;           /* "" (SQLite in data_dir), "sqlite:PATH", "postgres://…" */
        char *password_file; /* PostgreSQL password, first line; "" = libpq's own sources */
        int64_t pool_size;   /* PostgreSQL connections for requests, default 8 */
    } store;
    /* Several replicas on one PostgreSQL store (spawn/manager.c, docs/operations.md). */
    struct {
        int64_t heartbeat; /* seconds between a replica's proofs of life, default 2 */
        int64_t lease;     /* seconds of silence after which a replica is presumed dead, 10 */
        int64_t resync;    /* seconds between full re-reads of the active servers, 30 */
    } cluster;
    struct {
        bool open_signup;                 /* anyone may claim an unknown name, default true */
        struct config_list allowed_users; /* names that may sign up when open_signup is off */
        struct config_list admin_users;   /* names that are admins */
        int64_t min_password_length;      /* default 8 */
        int64_t session_max_age;          /* seconds, default 14 days */
        int64_t throttle_free_attempts;   /* failures before delays begin, default 5 */
        int64_t throttle_max_delay;       /* seconds, cap of the growing delay, default 300 */
        char *secret_file;                /* hub secret source; "" = the store */
    } auth;
    struct {
        char *spawner;               /* local (kubernetes later) */
        int64_t start_timeout;       /* seconds until a starting server must answer, 120 */
        int64_t stop_timeout;        /* seconds between SIGTERM and SIGKILL, 10 */
        int64_t concurrent_limit;    /* servers starting at once, 0 = unlimited; default 20 */
        int64_t active_server_limit; /* servers running or starting, 0 = unlimited */
    } spawn;
    struct {
        char *code_server;       /* launcher path; "" = .deps/code-server, then PATH */
        struct config_list args; /* extra code-server arguments */
        struct config_list env;  /* extra NAME=value environment entries */
        bool system_users;       /* as root: run each server as a matching system user */
        int64_t log_max_size;    /* bytes of code-server.log kept, default 4 MiB */
        bool init_ssh_key;       /* first start creates ~/.ssh/id_ed25519 */
        bool init_venv;          /* first start creates ~/.venv */
    } local;
    struct {
        bool admin_access;          /* admins may open other users' workspaces */
        int64_t connect_timeout;    /* seconds to connect to a workspace, default 10 */
        int64_t response_timeout;   /* seconds to the upstream's response head, default 300 */
        int64_t websocket_timeout;  /* seconds a WebSocket may be silent both ways, default 1h */
        int64_t upstream_keepalive; /* idle upstream connections kept per workspace, 64 */
        int64_t upstream_max_conns; /* HTTP connections open per workspace at once, 256 */
        char *user_subdomains;      /* DOMAIN: NAME's workspace at NAME.DOMAIN; "" = paths */
    } proxy;
    struct {
        int64_t timeout; /* seconds without user activity before a server stops, 0 = never */
        int64_t every;   /* seconds between culler runs */
    } cull;
    /* The kubernetes spawner (spawn/kube.c). Values marked JSON hold compact JSON text (an
     * object or an array) that the YAML reader converted from a mapping or sequence; the
     * spawner parses it again with jansson. */
    struct {
        char *kubeconfig;           /* path; "" = in-cluster service account */
        char *context;              /* kubeconfig context; "" = its current-context */
        char *namespace;            /* "" = the context's / service account's namespace */
        char *hub_name;             /* value of the codehub.io/hub label, "codehub" */
        char *image;                /* workspace image */
        char *image_pull_policy;    /* IfNotPresent | Always | Never */
        int64_t uid, gid, fs_gid;   /* -1 = the image's own */
        int64_t port;               /* code-server's port in the pod, 8080 */
        char *health_path;          /* GET path that must answer before the server is ready */
        struct config_list command; /* empty: the image's entrypoint */
        struct config_list args;    /* empty: the image's cmd */
        struct config_list env;     /* NAME=value */
        char *cpu_guarantee, *cpu_limit, *mem_guarantee, *mem_limit; /* quantities, "" = none */
        char *service_account;                                       /* "" = none named */
        bool automount_service_account_token;                        /* default false */
        char *volumes;                           /* JSON array of Volume objects */
        char *volume_mounts;                     /* JSON array of VolumeMount objects */
        char *home_mount_path;                   /* "/home/coder" */
        char *pod_name;                          /* template, "codehub-{user}" */
        char *pvc_name;                          /* template, "claim-{user}" */
        char *storage_capacity;                  /* "10Gi" */
        char *storage_class;                     /* "" = the cluster's default class */
        struct config_list storage_access_modes; /* [ReadWriteOnce] */
        char *node_selector;                     /* JSON object of strings */
        char *tolerations;                       /* JSON array of Toleration objects */
        char *labels;                            /* JSON object of strings, extra pod labels */
        char *annotations;                       /* JSON object of strings */
        char *profiles;                          /* JSON object: name -> overrides */
    } kube;
};

/* Fills `cfg` with the built-in defaults (strings allocated; config_free releases). */
void config_init(struct config *cfg);
void config_free(struct config *cfg);

/* Reads a YAML file over `cfg`. Returns 0, -ENOENT when the file cannot be opened (an
 * error line says so), or -EINVAL with error lines appended to `errors`. Keys the file
 * does not name keep their current values. */
int config_load_file(struct config *cfg, const char *path, struct buf *errors);

/* Applies CODEHUB_<SECTION>_<KEY> variables from `envp` (NULL-terminated, as environ).
 * Lists are comma-separated. Unknown CODEHUB_* variables that look like keys are errors,
 * except the ones the program itself reads (CODEHUB_CONFIG). Returns 0 or -EINVAL. */
int config_apply_env(struct config *cfg, char *const *envp, struct buf *errors);

/* Sets one key from its text form, as given on the command line ("server.bind").
 * `origin` names where the value came from in error lines ("--bind"). 0 or -EINVAL. */
int config_set(struct config *cfg, const char *key, const char *value, const char *origin,
               struct buf *errors);

/* Cross-key checks and derived values (public_url from bind); call once after all
 * sources are applied. 0 or -EINVAL. */
int config_finish(struct config *cfg, struct buf *errors);

/* Writes the effective configuration as YAML (for `codehub check-config --print`). */
void config_dump(const struct config *cfg, struct buf *out);

/* Calls `cb` with every key's dotted name ("server.bind") and its one-line doc; used by
 * the docs test. */
void config_each_key(void (*cb)(const char *key, const char *doc, void *data), void *data);

/* Splits "ADDR:PORT" / "[V6]:PORT" into a host (caller frees) and a port. 0 or -EINVAL. */
int config_parse_bind(const char *bind, char **host_out, int *port_out);

#endif

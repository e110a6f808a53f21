/* The REST API: routing and handlers (see api.h; docs/api.md is the reference).
 *
 * Each handler runs on a worker thread, talks to the store synchronously and answers
 * through the hub's response helpers. The order of checks is the same everywhere, so that
 * a caller learns nothing it may not know: path (404), method (405), credentials (401),
 * CSRF for state changes (403), rights (403, or 404 where the answer would reveal whether
 * a user exists), then the body (415, 400) and the store (404, 409, 503). */
#include "api/api.h"

#include "api/model.h"
#include "hub/identity_cache.h"
#include "auth/password.h"
#include "auth/token.h"
#include "auth/username.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "hub/metrics.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef CODEHUB_VERSION
#error "CODEHUB_VERSION must be defined by the build (CMakeLists.txt defines it)"
#endif

#define API_PREFIX "/hub/api"
#define API_PAGINATION_TYPE "application/jupyterhub-pagination+json"
#define API_PAGE_DEFAULT 200
#define API_PAGE_MAX 1000
/* Query numbers longer than this are refused: 15 digits stay exact in a JavaScript number
 * and can never overflow an addition of two of them. */
#define API_QUERY_DIGITS_MAX 15
#define API_CREATE_MAX 1000 /* names in one POST /hub/api/users */
#define API_NOTE_MAX_CHARS 1000
#define API_TOKEN_MAX_SECONDS (10LL * 365 * 24 * 3600)
#define API_MAX_SEGMENTS 8
#define API_MAX_PARAMS 2
#define API_QUOTE_MAX 72 /* bytes of client text quoted back in an error message */

struct api_ctx {
    struct hub_call *call;
    struct store *st;
    const char *param[API_MAX_PARAMS]; /* the path's "*" segments, in order */
    const char *actor;                 /* the caller's name, for events */
};

typedef void (*api_fn)(struct api_ctx *ctx);

struct api_route {
    const char *pattern; /* segments after "/hub/api/", '/'-separated; "*" is one segment */
    bool public;         /* answered without credentials */
    api_fn get;          /* also answers HEAD (the server drops the body) */
    api_fn post;
    api_fn patch;
    api_fn del;
};

/* ---- small helpers -------------------------------------------------------------------- */

static void quote(const char *in, char out[API_QUOTE_MAX])
{
    api_text_sanitize(in, out, API_QUOTE_MAX);
}

/* Answers a store failure: an unreachable database is worth retrying (503 with
 * Retry-After), anything else is our bug (500, logged). */
static void store_failed(struct api_ctx *ctx, int rc, const char *op)
{
    if (rc == -EIO) {
        /* hub_respond_error() adds Retry-After to every 503. */
        hub_respond_error(ctx->call, 503, "store unavailable");
        return;
    }
    char code[16];
    snprintf(code, sizeof code, "%d", rc);
    log_event(LOG_ERROR, "api.store_error", "op", op, "rc", code, NULL);
    hub_respond_error(ctx->call, 500, "internal error");
}

/* Logs a security event and records it in the store's audit trail. The action has already
 * happened, so failing to record it is logged but does not fail the request. */
static void audit(struct api_ctx *ctx, const char *kind, const char *user, const char *detail)
{
    log_event(LOG_INFO, kind, "user", user, "actor", ctx->actor, "detail", detail, NULL);
    int rc = store_event_add(ctx->st, kind, user, ctx->actor, detail);
    if (rc != 0)
        log_event(LOG_WARN, "api.event_not_stored", "event", kind, "user", user, NULL);
    /* Rights or credentials changed: identities cached for the proxy must not outlive
     * them. A deleted user's server stops too. */
    bool created = strcmp(kind, "user.add") == 0 || strcmp(kind, "user.signup") == 0;
    if ((strncmp(kind, "user.", 5) == 0 && !created) || strcmp(kind, "token.revoke") == 0)
        hub_identity_cache_forget_user(ctx->call->hub->identities, user);
    if (strcmp(kind, "user.delete") == 0)
        snprintf(ctx->call->stop_server_after, sizeof ctx->call->stop_server_after, "%s", user);
}

static bool is_self(const struct api_ctx *ctx, const char *name)
{
    return strcmp(ctx->call->id.name, name) == 0;
}

/* Admins may act on anyone; others only on themselves. */
static bool may_access(const struct api_ctx *ctx, const char *name)
{
    return ctx->call->id.admin || is_self(ctx, name);
}

static bool require_admin(struct api_ctx *ctx)
{
    if (ctx->call->id.admin)
        return true;
    if (ctx->call->id.via == HUB_AUTH_TOKEN && ctx->call->id.user_admin)
        hub_respond_error(ctx->call, 403,
                          "this action requires admin rights; this token's scope is \"user\"");
    else
        hub_respond_error(ctx->call, 403, "this action requires admin rights");
    return false;
}

/* One answer for "no such user" and "not yours to see", so that the API cannot be used to
 * find out which names exist. */
static void user_not_found(struct api_ctx *ctx, const char *name)
{
    char q[API_QUOTE_MAX];
    quote(name, q);
    hub_respond_error(ctx->call, 404, "user %s not found", q);
}

static bool config_admin(const struct api_ctx *ctx, const char *name)
{
    const struct config_list *l = &ctx->call->hub->cfg->auth.admin_users;
    for (size_t i = 0; i < l->n; i++) {
        if (l->items[i] != NULL && strcmp(l->items[i], name) == 0)
            return true;
    }
    return false;
}

/* Loads user `name` into *u. Returns true, or false after answering 404 (also for a name
 * that cannot exist) or a store failure. */
static bool load_user(struct api_ctx *ctx, const char *name, struct store_user *u)
{
    memset(u, 0, sizeof *u);
    if (auth_username_check(name, NULL) != 0) {
        user_not_found(ctx, name);
        return false;
    }
    int rc = store_user_get(ctx->st, name, u);
    if (rc == -ENOENT) {
        user_not_found(ctx, name);
        return false;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "user_get");
        return false;
    }
    return true;
}

/* Answers `status` with the user model of `u`, its server row included. */
static void respond_user(struct api_ctx *ctx, int status, const struct store_user *u)
{
    struct store_server srv;
    int rc = store_server_get(ctx->st, u->id, &srv);
    if (rc == 0) {
        hub_respond_json(ctx->call, status, api_model_user(u, &srv));
        store_server_clear(&srv);
    } else if (rc == -ENOENT) {
        hub_respond_json(ctx->call, status, api_model_user(u, NULL));
    } else {
        store_failed(ctx, rc, "server_get");
    }
}

/* Re-reads user `name` after a change and answers with its model. */
static void respond_user_by_name(struct api_ctx *ctx, int status, const char *name)
{
    struct store_user u;
    int rc = store_user_get(ctx->st, name, &u);
    if (rc == -ENOENT)
        user_not_found(ctx, name);
    else if (rc != 0)
        store_failed(ctx, rc, "user_get");
    else
        respond_user(ctx, status, &u);
    store_user_clear(&u);
}

/* True for "application/json", any case, with or without parameters. */
static bool content_type_json(const char *ct)
{
    static const char json[] = "application/json";
    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, json, sizeof json - 1) != 0)
        return false;
    char next = ct[sizeof json - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* Reads the request body as a JSON object. Returns 1 with *out set (caller decrefs), 0 when
 * there is no body and none is required (*out NULL), or -1 after answering 415 or 400. */
static int read_body(struct api_ctx *ctx, bool required, json_t **out)
{
    const struct http_request *req = &ctx->call->ex->req;
    *out = NULL;
    if (req->body.len == 0) {
        if (!required)
            return 0;
        hub_respond_error(ctx->call, 400, "this request needs a JSON object as its body");
        return -1;
    }
    if (!content_type_json(http_request_header(req, "Content-Type"))) {
        hub_respond_error(ctx->call, 415, "the request body must be application/json");
        return -1;
    }
    char err[256];
    json_t *body = api_body_parse(req->body.data, req->body.len, err, sizeof err);
    if (body == NULL) {
        hub_respond_error(ctx->call, 400, "%s", err);
        return -1;
    }
    *out = body;
    return 1;
}

/* Answers 400 and returns false when `obj` has a key not in `allowed` (NULL-terminated):
 * a misspelt field must not be silently ignored. */
static bool only_keys(struct api_ctx *ctx, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        (void)value;
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (!known) {
            char q[API_QUOTE_MAX];
            quote(key, q);
            hub_respond_error(ctx->call, 400, "unknown field \"%s\"", q);
            return false;
        }
    }
    return true;
}

/* Reads the optional boolean `key` of `obj` into *out (left alone when absent). Returns
 * false after answering 400 when it is present but not a boolean. */
static bool opt_bool(struct api_ctx *ctx, json_t *obj, const char *key, bool *out)
{
    json_t *v = obj != NULL ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return true;
    if (!json_is_boolean(v)) {
        hub_respond_error(ctx->call, 400, "\"%s\" must be true or false", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/* Finds `key` in the raw query string (the last occurrence wins, as in JupyterHub).
 * Returns 1 with *out set, 0 when absent, or -EINVAL when the value is not a plain
 * decimal number of at most API_QUERY_DIGITS_MAX digits (signs and escapes included). */
static int query_number(const char *query, const char *key, uint64_t *out)
{
    size_t key_len = strlen(key);
    int found = 0;
    const char *p = query;
    while (p != NULL && *p != '\0') {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t name_len = eq != NULL ? (size_t)(eq - p) : len;
        if (name_len == key_len && memcmp(p, key, key_len) == 0) {
            const char *v = eq != NULL ? eq + 1 : p + len;
            size_t v_len = (size_t)(p + len - v);
            if (v_len == 0 || v_len > API_QUERY_DIGITS_MAX)
                return -EINVAL;
            uint64_t n = 0;
            for (size_t i = 0; i < v_len; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -EINVAL;
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            *out = n;
            found = 1;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return found;
}

/* Parses a token id from the path: a positive decimal number without leading zeros, so
 * that one token has one URL. */
static bool parse_token_id(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 18 || s[0] == '0')
        return false;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        n = n * 10 + (s[i] - '0');
    }
    *out = n;
    return true;
}

/* ---- GET /hub/api, /hub/api/info, /hub/api/user ---------------------------------------- */

static void root_get(struct api_ctx *ctx)
{
    json_t *body = json_object();
    api_json_set(body, "version", json_string(CODEHUB_VERSION));
    hub_respond_json(ctx->call, 200, body);
}

static void info_get(struct api_ctx *ctx)
{
    json_t *auth = json_object();
    api_json_set(auth, "class", json_string("firstuse"));
    api_json_set(auth, "open_signup", json_boolean(ctx->call->hub->cfg->auth.open_signup));
    json_t *spawner = json_object();
    api_json_set(spawner, "class", json_string("local"));
    json_t *body = json_object();
    api_json_set(body, "version", json_string(CODEHUB_VERSION));
    api_json_set(body, "authenticator", auth);
    api_json_set(body, "spawner", spawner);
    hub_respond_json(ctx->call, 200, body);
}

/* Whoami: the caller's model, plus what this request may do and how it authenticated. */
static void whoami_get(struct api_ctx *ctx)
{
    const struct hub_identity *id = &ctx->call->id;
    struct store_user u;
    struct store_server srv;
    bool have_srv = false;
    int rc = store_user_get_by_id(ctx->st, id->user_id, &u);
    if (rc == -ENOENT) {
        /* Deleted since hub_identify() looked: the credentials are dead now. */
        hub_respond_error(ctx->call, 401, "authentication required");
        goto done;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "user_get_by_id");
        goto done;
    }
    rc = store_server_get(ctx->st, u.id, &srv);
    if (rc != 0 && rc != -ENOENT) {
        store_failed(ctx, rc, "server_get");
        goto done;
    }
    have_srv = rc == 0;
    json_t *body = api_model_user(&u, have_srv ? &srv : NULL);
    json_t *scopes = json_array();
    api_json_append(scopes, json_string(id->admin ? "admin" : "user"));
    api_json_set(body, "scopes", scopes);
    api_json_set(body, "auth", json_string(id->via == HUB_AUTH_TOKEN ? "token" : "session"));
    if (id->via == HUB_AUTH_TOKEN) {
        char tid[24];
        snprintf(tid, sizeof tid, "%lld", (long long)id->token_id);
        api_json_set(body, "token_id", json_string(tid));
    }
    hub_respond_json(ctx->call, 200, body);
done:
    if (have_srv)
        store_server_clear(&srv);
    store_user_clear(&u);
}

/* ---- /hub/api/users ------------------------------------------------------------------- */

static bool accepts_pagination(const struct http_request *req)
{
    const char *accept = http_request_header(req, "Accept");
    return accept != NULL && strcasestr(accept, API_PAGINATION_TYPE) != NULL;
}

static void users_get(struct api_ctx *ctx)
{
    const struct http_request *req = &ctx->call->ex->req;
    struct store_user *users = NULL;
    struct store_server *servers = NULL;
    size_t n_users = 0, n_servers = 0, total = 0;
    uint64_t offset = 0, limit = API_PAGE_DEFAULT;

    if (!require_admin(ctx))
        return;
    if (query_number(req->query, "offset", &offset) < 0) {
        hub_respond_error(ctx->call, 400, "offset must be a non-negative integer");
        return;
    }
    if (query_number(req->query, "limit", &limit) < 0) {
        hub_respond_error(ctx->call, 400, "limit must be a non-negative integer");
        return;
    }
    /* As JupyterHub: clamp the page size instead of refusing it. */
    if (limit > API_PAGE_MAX)
        limit = API_PAGE_MAX;
    if (limit < 1)
        limit = 1;

    int rc = store_user_list(ctx->st, (size_t)offset, (size_t)limit, &users, &n_users, &total);
    if (rc != 0) {
        store_failed(ctx, rc, "user_list");
        goto done;
    }
    /* One query for every server that is not stopped, rather than one per user. */
    rc = store_server_list_active(ctx->st, &servers, &n_servers);
    if (rc != 0) {
        store_failed(ctx, rc, "server_list_active");
        goto done;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n_users; i++) {
        const struct store_server *srv = NULL;
        for (size_t j = 0; j < n_servers && srv == NULL; j++) {
            if (servers[j].user_id == users[i].id)
                srv = &servers[j];
        }
        api_json_append(items, api_model_user(&users[i], srv));
    }
    if (accepts_pagination(req))
        hub_respond_json(ctx->call, 200,
                         api_model_page(items, offset, limit, total, API_PREFIX "/users"));
    else
        hub_respond_json(ctx->call, 200, items);
done:
    store_users_free(users, n_users);
    store_servers_free(servers, n_servers);
}

/* Creates one user; returns 0, -EEXIST, or another store error. Counts and audits it. */
static int create_user(struct api_ctx *ctx, const char *name, bool admin, struct store_user *out)
{
    bool is_admin = admin || config_admin(ctx, name);
    int rc = store_user_create(ctx->st, name, NULL, is_admin, out);
    if (rc != 0)
        return rc;
    metric_add(ctx->call->hub->metrics.users, 1);
    audit(ctx, "user.add", name, is_admin ? "admin" : NULL);
    return 0;
}

/* POST /hub/api/users {"usernames": [...], "admin": bool}: creates those that do not
 * exist yet and answers with them (JupyterHub skips existing ones too). */
static void users_post(struct api_ctx *ctx)
{
    static const char *const keys[] = {"usernames", "admin", NULL};
    json_t *body = NULL;
    json_t *created = NULL;
    bool admin = false;
    size_t existing = 0;

    if (!require_admin(ctx))
        return;
    if (read_body(ctx, true, &body) < 0)
        return;
    if (!only_keys(ctx, body, keys) || !opt_bool(ctx, body, "admin", &admin))
        goto done;
    json_t *names = json_object_get(body, "usernames");
    if (!json_is_array(names) || json_array_size(names) == 0) {
        hub_respond_error(ctx->call, 400, "\"usernames\" must be a non-empty list of names");
        goto done;
    }
    if (json_array_size(names) > API_CREATE_MAX) {
        hub_respond_error(ctx->call, 400, "at most %d users can be created at once",
                          API_CREATE_MAX);
        goto done;
    }
    /* Check every name before creating any, so a bad list changes nothing. */
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *why = "must be a string";
        if (!json_is_string(v) || auth_username_check(json_string_value(v), &why) != 0) {
            char q[API_QUOTE_MAX];
            quote(json_is_string(v) ? json_string_value(v) : "", q);
            hub_respond_error(ctx->call, 400, "invalid username \"%s\": %s", q, why);
            goto done;
        }
    }
    created = json_array();
    json_array_foreach(names, i, v)
    {
        const char *name = json_string_value(v);
        bool repeated = false;
        for (size_t j = 0; j < i && !repeated; j++)
            repeated = strcmp(json_string_value(json_array_get(names, j)), name) == 0;
        if (repeated)
            continue;
        struct store_user u;
        int rc = create_user(ctx, name, admin, &u);
        if (rc == -EEXIST) {
            existing++;
            continue;
        }
        if (rc != 0) {
            store_failed(ctx, rc, "user_create");
            goto done;
        }
        api_json_append(created, api_model_user(&u, NULL));
        store_user_clear(&u);
    }
    if (json_array_size(created) == 0) {
        hub_respond_error(ctx->call, 409, "all of the %zu users already exist", existing);
        goto done;
    }
    hub_respond_json(ctx->call, 201, created);
    created = NULL;
done:
    json_decref(created);
    json_decref(body);
}

/* ---- /hub/api/users/NAME -------------------------------------------------------------- */

static void user_get(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;
    if (!may_access(ctx, name)) {
        user_not_found(ctx, name);
        return;
    }
    if (load_user(ctx, name, &u))
        respond_user(ctx, 200, &u);
    store_user_clear(&u);
}

static void user_post(struct api_ctx *ctx)
{
    static const char *const keys[] = {"admin", NULL};
    const char *name = ctx->param[0];
    json_t *body = NULL;
    struct store_user u = {0};
    bool admin = false;
    const char *why = NULL;

    if (!require_admin(ctx))
        return;
    if (auth_username_check(name, &why) != 0) {
        char q[API_QUOTE_MAX];
        quote(name, q);
        hub_respond_error(ctx->call, 400, "invalid username \"%s\": %s", q, why);
        return;
    }
    if (read_body(ctx, false, &body) < 0)
        return;
    if (body != NULL && (!only_keys(ctx, body, keys) || !opt_bool(ctx, body, "admin", &admin)))
        goto done;
    int rc = create_user(ctx, name, admin, &u);
    if (rc == -EEXIST) {
        hub_respond_error(ctx->call, 409, "user %s already exists", name);
        goto done;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "user_create");
        goto done;
    }
    hub_respond_json(ctx->call, 201, api_model_user(&u, NULL));
done:
    store_user_clear(&u);
    json_decref(body);
}

/* Checks a new password against the policy and hashes it into `hash`. Returns true, or
 * false after answering 400 (policy) or 503 (no memory for Argon2 right now). */
static bool hash_new_password(struct api_ctx *ctx, const char *password,
                              char hash[AUTH_PASSWORD_HASH_MAX])
{
    const struct config *cfg = ctx->call->hub->cfg;
    size_t min_len = cfg->auth.min_password_length > 0 ? (size_t)cfg->auth.min_password_length : 0;
    const char *why = NULL;
    if (auth_password_check_policy(password, min_len, &why) != 0) {
        if (api_text_chars(password) < min_len)
            hub_respond_error(ctx->call, 400, "the password must be at least %zu characters long",
                              min_len);
        else
            hub_respond_error(ctx->call, 400, "the password %s", why);
        return false;
    }
    /* Argon2id takes tens of megabytes per hash: bound how many run at once. */
    uv_sem_wait(&ctx->call->hub->hash_slots);
    int rc = auth_password_hash(password, hash);
    uv_sem_post(&ctx->call->hub->hash_slots);
    if (rc != 0) {
        log_event(LOG_ERROR, "api.password_hash_failed", NULL);
        hub_respond_error(ctx->call, 503, "could not hash the password now; try again");
        return false;
    }
    return true;
}

/* PATCH /hub/api/users/NAME {"admin": bool, "password": string|null}. Everything is checked
 * before anything changes. */
static void user_patch(struct api_ctx *ctx)
{
    static const char *const keys[] = {"admin", "password", "name", NULL};
    const char *name = ctx->param[0];
    json_t *body = NULL;
    struct store_user u = {0};
    char hash[AUTH_PASSWORD_HASH_MAX] = "";
    int rc;

    if (!require_admin(ctx))
        return;
    if (!load_user(ctx, name, &u))
        goto done;
    if (read_body(ctx, true, &body) < 0 || !only_keys(ctx, body, keys))
        goto done;
    /* A client may send the model back whole: the same name is no rename. */
    json_t *new_name = json_object_get(body, "name");
    if (new_name != NULL &&
        !(json_is_string(new_name) && strcmp(json_string_value(new_name), u.name) == 0)) {
        hub_respond_error(ctx->call, 400, "renaming users is not supported");
        goto done;
    }
    bool admin = u.admin;
    if (!opt_bool(ctx, body, "admin", &admin))
        goto done;
    json_t *password = json_object_get(body, "password");
    if (password != NULL && !json_is_null(password) && !json_is_string(password)) {
        hub_respond_error(ctx->call, 400, "\"password\" must be a string or null");
        goto done;
    }
    if (u.admin && !admin) {
        /* Demoting oneself can leave a hub without any admin, and the admin page refuses
         * it too. */
        if (u.id == ctx->call->id.user_id) {
            hub_respond_error(ctx->call, 400, "you cannot remove your own admin rights");
            goto done;
        }
        /* The configuration would make them an admin again at the next start. */
        if (config_admin(ctx, u.name)) {
            hub_respond_error(ctx->call, 409,
                              "%s is an admin through auth.admin_users in the configuration",
                              u.name);
            goto done;
        }
    }
    if (json_is_string(password) && !hash_new_password(ctx, json_string_value(password), hash))
        goto done;

    if (admin != u.admin) {
        rc = store_user_set_admin(ctx->st, u.name, admin);
        if (rc != 0) {
            if (rc == -ENOENT)
                user_not_found(ctx, u.name);
            else
                store_failed(ctx, rc, "user_set_admin");
            goto done;
        }
        audit(ctx, "user.admin", u.name, admin ? "true" : "false");
    }
    if (password != NULL) {
        /* Either way the old password stops working, so the sessions it opened end too. A
         * NULL hash lets the user's next login choose a new password. */
        bool clear = json_is_null(password);
        rc = store_user_set_password(ctx->st, u.name, clear ? NULL : hash, true);
        if (rc != 0) {
            if (rc == -ENOENT)
                user_not_found(ctx, u.name);
            else
                store_failed(ctx, rc, "user_set_password");
            goto done;
        }
        audit(ctx, "user.password_reset", u.name, clear ? "cleared" : "set");
    }
    respond_user_by_name(ctx, 200, u.name);
done:
    explicit_bzero(hash, sizeof hash);
    store_user_clear(&u);
    json_decref(body);
}

static void user_delete(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;

    if (!require_admin(ctx))
        return;
    if (!load_user(ctx, name, &u))
        goto done;
    if (u.id == ctx->call->id.user_id) {
        hub_respond_error(ctx->call, 400, "you cannot delete your own account");
        goto done;
    }
    int rc = store_user_delete(ctx->st, u.name);
    if (rc == -ENOENT) {
        user_not_found(ctx, name);
        goto done;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "user_delete");
        goto done;
    }
    metric_add(ctx->call->hub->metrics.users, -1);
    audit(ctx, "user.delete", u.name, NULL);
    hub_respond_json(ctx->call, 204, NULL);
done:
    store_user_clear(&u);
}

/* ---- /hub/api/users/NAME/tokens ------------------------------------------------------- */

static void tokens_get(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;
    struct store_token *tokens = NULL;
    size_t n = 0;

    if (!may_access(ctx, name)) {
        user_not_found(ctx, name);
        return;
    }
    if (!load_user(ctx, name, &u))
        goto done;
    int rc = store_token_list(ctx->st, u.id, &tokens, &n);
    if (rc != 0) {
        store_failed(ctx, rc, "token_list");
        goto done;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        api_json_append(list, api_model_token(&tokens[i], u.name));
    json_t *body = json_object();
    api_json_set(body, "api_tokens", list);
    hub_respond_json(ctx->call, 200, body);
done:
    store_tokens_free(tokens, n);
    store_user_clear(&u);
}

/* Reads the token request's fields. Returns true, or false after answering 400. */
static bool token_request(struct api_ctx *ctx, json_t *body, const char **note, int64_t *expires_in,
                          enum store_token_scope *scope)
{
    static const char *const keys[] = {"note", "expires_in", "scopes", NULL};
    *note = "";
    *expires_in = 0;
    *scope = STORE_SCOPE_USER;
    if (body == NULL)
        return true;
    if (!only_keys(ctx, body, keys))
        return false;

    json_t *v = json_object_get(body, "note");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            hub_respond_error(ctx->call, 400, "\"note\" must be a string");
            return false;
        }
        if (api_text_chars(json_string_value(v)) > API_NOTE_MAX_CHARS) {
            hub_respond_error(ctx->call, 400, "\"note\" must be at most %d characters",
                              API_NOTE_MAX_CHARS);
            return false;
        }
        *note = json_string_value(v);
    }

    v = json_object_get(body, "expires_in");
    if (v != NULL && !json_is_null(v)) {
        json_int_t secs = json_is_integer(v) ? json_integer_value(v) : 0;
        if (secs <= 0 || secs > API_TOKEN_MAX_SECONDS) {
            hub_respond_error(ctx->call, 400,
                              "\"expires_in\" must be a whole number of seconds from 1 to %lld "
                              "(10 years), or null for a token that never expires",
                              API_TOKEN_MAX_SECONDS);
            return false;
        }
        *expires_in = (int64_t)secs;
    }

    v = json_object_get(body, "scopes");
    if (v != NULL && !json_is_null(v)) {
        bool ok = json_is_array(v) && json_array_size(v) > 0;
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s)
        {
            const char *text = json_is_string(s) ? json_string_value(s) : "";
            if (strcmp(text, "admin") == 0)
                *scope = STORE_SCOPE_ADMIN;
            else if (strcmp(text, "user") != 0)
                ok = false;
        }
        if (!ok) {
            hub_respond_error(ctx->call, 400, "\"scopes\" must be [\"user\"] or [\"admin\"]");
            return false;
        }
    }
    return true;
}

static void tokens_post(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;
    struct store_token t = {0};
    json_t *body = NULL;
    char *secret = NULL;
    const char *note;
    int64_t expires_in;
    enum store_token_scope scope;

    if (!may_access(ctx, name)) {
        user_not_found(ctx, name);
        return;
    }
    if (!load_user(ctx, name, &u))
        goto done;
    if (read_body(ctx, false, &body) < 0 || !token_request(ctx, body, &note, &expires_in, &scope))
        goto done;
    if (scope == STORE_SCOPE_ADMIN) {
        if (!u.admin) {
            hub_respond_error(ctx->call, 403,
                              "%s is not an admin, so cannot have an admin-scoped token", u.name);
            goto done;
        }
        /* A token can only hand out what its holder may do right now: a user-scoped token
         * of an admin cannot mint itself an admin-scoped one. */
        if (!ctx->call->id.admin) {
            hub_respond_error(ctx->call, 403,
                              "creating an admin-scoped token requires admin rights; this "
                              "token's scope is \"user\"");
            goto done;
        }
    }

    secret = auth_token_new(AUTH_TOKEN_PREFIX_API);
    char hash[AUTH_TOKEN_HASH_HEX];
    char prefix[AUTH_TOKEN_DISPLAY_MAX];
    auth_token_hash(secret, hash);
    auth_token_display_prefix(secret, prefix);
    int64_t expires_ms = expires_in > 0 ? hub_now_ms() + expires_in * 1000 : 0;
    int rc = store_token_create(ctx->st, hash, prefix, u.id, scope, note, expires_ms, &t);
    if (rc == -ENOENT) {
        user_not_found(ctx, name);
        goto done;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "token_create");
        goto done;
    }
    char detail[64];
    snprintf(detail, sizeof detail, "id=%lld scope=%s", (long long)t.id,
             scope == STORE_SCOPE_ADMIN ? "admin" : "user");
    audit(ctx, "token.create", u.name, detail);
    json_t *model = api_model_token(&t, u.name);
    /* The only time the secret leaves the hub; the store keeps its hash. */
    api_json_set(model, "token", json_string(secret));
    hub_respond_json(ctx->call, 201, model);
done:
    if (secret != NULL) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
    store_token_clear(&t);
    store_user_clear(&u);
    json_decref(body);
}

/* ---- /hub/api/users/NAME/tokens/ID ---------------------------------------------------- */

static void token_not_found(struct api_ctx *ctx)
{
    hub_respond_error(ctx->call, 404, "token not found");
}

static void token_get(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;
    struct store_token *tokens = NULL;
    size_t n = 0;
    int64_t id;

    if (!may_access(ctx, name)) {
        user_not_found(ctx, name);
        return;
    }
    if (!load_user(ctx, name, &u))
        goto done;
    if (!parse_token_id(ctx->param[1], &id)) {
        token_not_found(ctx);
        goto done;
    }
    int rc = store_token_list(ctx->st, u.id, &tokens, &n);
    if (rc != 0) {
        store_failed(ctx, rc, "token_list");
        goto done;
    }
    const struct store_token *found = NULL;
    for (size_t i = 0; i < n && found == NULL; i++) {
        if (tokens[i].id == id)
            found = &tokens[i];
    }
    if (found == NULL)
        token_not_found(ctx);
    else
        hub_respond_json(ctx->call, 200, api_model_token(found, u.name));
done:
    store_tokens_free(tokens, n);
    store_user_clear(&u);
}

static void token_delete(struct api_ctx *ctx)
{
    const char *name = ctx->param[0];
    struct store_user u;
    int64_t id;

    if (!may_access(ctx, name)) {
        user_not_found(ctx, name);
        return;
    }
    if (!load_user(ctx, name, &u))
        goto done;
    if (!parse_token_id(ctx->param[1], &id)) {
        token_not_found(ctx);
        goto done;
    }
    int rc = store_token_delete(ctx->st, u.id, id);
    if (rc == -ENOENT) {
        token_not_found(ctx);
        goto done;
    }
    if (rc != 0) {
        store_failed(ctx, rc, "token_delete");
        goto done;
    }
    char detail[32];
    snprintf(detail, sizeof detail, "id=%lld", (long long)id);
    audit(ctx, "token.revoke", u.name, detail);
    hub_respond_json(ctx->call, 204, NULL);
done:
    store_user_clear(&u);
}

/* ---- routing -------------------------------------------------------------------------- */

static const struct api_route routes[] = {
    {"", true, root_get, NULL, NULL, NULL},
    {"info", false, info_get, NULL, NULL, NULL},
    {"user", false, whoami_get, NULL, NULL, NULL},
    {"users", false, users_get, users_post, NULL, NULL},
    {"users/*", false, user_get, user_post, user_patch, user_delete},
    {"users/*/tokens", false, tokens_get, tokens_post, NULL, NULL},
    {"users/*/tokens/*", false, token_get, NULL, NULL, token_delete},
};

/* Splits the part of `path` after "/hub/api" into segments, in place in `copy` (caller
 * frees). One trailing slash is ignored. Returns false for a path that is not under
 * /hub/api or has too many segments. */
static bool split_path(const char *path, char **copy, char *segs[API_MAX_SEGMENTS], size_t *n)
{
    size_t plen = strlen(API_PREFIX);
    *copy = NULL;
    *n = 0;
    if (path == NULL || strncmp(path, API_PREFIX, plen) != 0)
        return false;
    if (path[plen] != '\0' && path[plen] != '/')
        return false;
    *copy = xstrdup(path + plen);
    char *s = *copy;
    if (*s == '/')
        s++;
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '/')
        s[len - 1] = '\0';
    if (*s == '\0')
        return true;
    for (;;) {
        if (*n == API_MAX_SEGMENTS)
            return false;
        segs[(*n)++] = s;
        char *slash = strchr(s, '/');
        if (slash == NULL)
            return true;
        *slash = '\0';
        s = slash + 1;
    }
}

/* Matches the segments against a route's pattern, collecting "*" segments (never empty)
 * into `params`. */
static bool route_match(const char *pattern, char *const *segs, size_t n,
                        const char *params[API_MAX_PARAMS])
{
    const char *found[API_MAX_PARAMS] = {NULL};
    size_t i = 0, np = 0;
    const char *p = pattern;
    if (*p == '\0')
        return n == 0;
    for (;;) {
        size_t len = strcspn(p, "/");
        if (i == n)
            return false;
        if (len == 1 && p[0] == '*') {
            if (np == API_MAX_PARAMS || segs[i][0] == '\0')
                return false;
            found[np++] = segs[i];
        } else if (strlen(segs[i]) != len || memcmp(segs[i], p, len) != 0) {
            return false;
        }
        i++;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    if (i != n)
        return false;
    memcpy(params, found, sizeof found);
    return true;
}

static void respond_not_allowed(struct hub_call *call, const struct api_route *r)
{
    struct buf allow = BUF_INIT;
    if (r->get != NULL)
        buf_append_str(&allow, "GET, HEAD");
    if (r->post != NULL)
        buf_appendf(&allow, "%sPOST", allow.len ? ", " : "");
    if (r->patch != NULL)
        buf_appendf(&allow, "%sPATCH", allow.len ? ", " : "");
    if (r->del != NULL)
        buf_appendf(&allow, "%sDELETE", allow.len ? ", " : "");
    http_response_header(&call->ex->res, "Allow", allow.data != NULL ? allow.data : "");
    hub_respond_error(call, 405, "method %s not allowed here", call->ex->req.method_name);
    buf_free(&allow);
}

void api_handle(struct hub_call *call)
{
    struct api_ctx ctx = {.call = call, .st = call->hub->store, .actor = call->id.name};
    char *copy = NULL;
    char *segs[API_MAX_SEGMENTS];
    size_t n = 0;
    const struct api_route *route = NULL;

    if (split_path(call->path, &copy, segs, &n)) {
        for (size_t i = 0; i < sizeof routes / sizeof routes[0] && route == NULL; i++) {
            if (route_match(routes[i].pattern, segs, n, ctx.param))
                route = &routes[i];
        }
    }
    if (route == NULL) {
        hub_respond_error(call, 404, "not found");
        goto done;
    }

    const char *m = call->ex->req.method_name != NULL ? call->ex->req.method_name : "";
    api_fn fn = NULL;
    bool changes_state = true;
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0) {
        fn = route->get;
        changes_state = false;
    } else if (strcmp(m, "POST") == 0) {
        fn = route->post;
    } else if (strcmp(m, "PATCH") == 0) {
        fn = route->patch;
    } else if (strcmp(m, "DELETE") == 0) {
        fn = route->del;
    }
    if (fn == NULL) {
        respond_not_allowed(call, route);
        goto done;
    }
    if (!route->public && call->id.via == HUB_AUTH_NONE) {
        hub_respond_error(call, 401, "authentication required");
        goto done;
    }
    if (changes_state && !hub_csrf_ok(call, NULL)) {
        hub_respond_error(call, 403, "XSRF token missing or invalid");
        goto done;
    }
    fn(&ctx);
done:
    free(copy);
}

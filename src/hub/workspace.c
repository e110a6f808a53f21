/* /user/NAME/...: the access rule and the hand-over to the proxy.
 *
 * Runs on the loop thread from the server's head hook, before any body byte is read, so
 * that a refused request never streams its body anywhere. The caller's credential is
 * hashed and looked up in the identity cache; on a miss the store is asked on the thread
 * pool and the decision continues on the loop. */
#include "hub/hub.h"

#include "auth/username.h"
#include "core/alloc.h"
#include "core/cidr.h"
#include "core/log.h"
#include "http/proxy.h"
#include "http/url.h"
#include "hub/identity_cache.h"
#include "hub/subdomain.h"
#include "spawn/spawner.h"
#include "web/pages.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct pending_identity {
    uv_work_t work;
    struct hub *hub;
    struct http_exchange *ex;
    struct hub_identity id;
    char hash[72];
    bool is_token;
    int rc;
};

/* A request that found no route, waiting for the store's word (several replicas). */
struct pending_route {
    struct hub *hub;
    struct http_exchange *ex;
    struct hub_identity id;
};

static bool accepts_html(const struct http_request *req)
{
    const char *accept = http_request_header(req, "Accept");
    return req->method == HTTP_GET && accept != NULL && strstr(accept, "text/html") != NULL;
}

static void finish_with(struct hub *hub, struct http_exchange *ex, int status, const char *msg)
{
    hub_security_headers(hub, &ex->res);
    http_response_header(&ex->res, "Cache-Control", "no-store");
    if (accepts_html(&ex->req)) {
        web_respond_error_page(ex, status, msg);
    } else {
        http_response_set(&ex->res, status, "text/plain; charset=utf-8", msg, strlen(msg));
        buf_append_char(&ex->res.body, '\n');
    }
    if (status == 503)
        http_response_header(&ex->res, "Retry-After", "5");
    http_exchange_finish(ex);
}

static void redirect(struct hub *hub, struct http_exchange *ex, const char *prefix,
                     const char *next_path)
{
    struct buf loc = BUF_INIT, next = BUF_INIT;
    buf_append_str(&next, next_path);
    if (ex->req.query != NULL) {
        buf_append_char(&next, '?');
        buf_append_str(&next, ex->req.query);
    }
    buf_append_str(&loc, prefix);
    http_urlencode(&loc, next.data);
    hub_security_headers(hub, &ex->res);
    http_response_header(&ex->res, "Cache-Control", "no-store");
    http_response_header(&ex->res, "Location", loc.data);
    ex->res.status = 302;
    buf_free(&loc);
    buf_free(&next);
    http_exchange_finish(ex);
}

/* The user named by a normalised /user/NAME[/...] path, copied into name[40]. */
static bool workspace_user(const char *path, char name[40])
{
    const char *p = path + strlen("/user/");
    const char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *why;
    if (len == 0 || len >= 40)
        return false;
    memcpy(name, p, len);
    name[len] = '\0';
    return auth_username_check(name, &why) == 0;
}

/* X-Forwarded-* are believed only from configured proxies. */
static void forwarded_values(struct hub *hub, const struct http_request *req, struct buf *xff,
                             const char **proto, const char **host)
{
    bool trusted = cidr_match_any(hub->trusted_proxies, hub->n_trusted_proxies, req->remote_addr);
    const char *their_xff = trusted ? http_request_header(req, "X-Forwarded-For") : NULL;
    if (their_xff != NULL && their_xff[0] != '\0')
        buf_appendf(xff, "%s, %s", their_xff, req->remote_addr);
    else
        buf_append_str(xff, req->remote_addr);
    const char *their_proto = trusted ? http_request_header(req, "X-Forwarded-Proto") : NULL;
    *proto = their_proto != NULL && (strcmp(their_proto, "https") == 0) ? "https" : "http";
    if (their_proto == NULL && hub->secure && trusted)
        *proto = "https";
    const char *their_host = trusted ? http_request_header(req, "X-Forwarded-Host") : NULL;
    *host = their_host != NULL ? their_host : http_request_header(req, "Host");
    if (*host == NULL && hub->public_origin != NULL) {
        /* HTTP/1.0 may come without a Host: the upstream gets the public one (never a
         * made-up name), as Host and as X-Forwarded-Host. */
        const char *sep = strstr(hub->public_origin, "://");
        *host = sep != NULL ? sep + 3 : NULL;
    }
}

static bool is_codehub_cookie(const char *name, size_t len, void *data)
{
    static const char *const prefixes[] = {"codehub-", "__Host-codehub-", "__Secure-codehub-"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (len >= n && strncasecmp(name, prefixes[i], n) == 0)
            return true;
    }
    return false;
}

static void note_activity(void *data)
{
    struct hub_user_ref *ref = data;
    if (ref->hub->spawner != NULL)
        spawn_note_activity(ref->hub->spawner, ref->name, hub_now_ms());
}

static void decide_route(struct hub *hub, struct http_exchange *ex, const struct hub_identity *id,
                         bool refreshed);

static void route_refreshed(void *data)
{
    struct pending_route *p = data;
    decide_route(p->hub, p->ex, &p->id, true);
    free(p);
}

static void decide(struct hub *hub, struct http_exchange *ex, const struct hub_identity *id)
{
    decide_route(hub, ex, id, false);
}

/* `refreshed`: the store was asked for the route already (no second look-up). The
 * workspace is named by the path (/user/NAME/...) or, with per-user origins, by the Host
 * (NAME.DOMAIN), which then forwards the path as it is. */
static void decide_route(struct hub *hub, struct http_exchange *ex, const struct hub_identity *id,
                         bool refreshed)
{
    struct http_request *req = &ex->req;
    char name[40];
    bool own_origin = hub_subdomain_of(hub, req, name);
    if (own_origin ? name[0] == '\0' : !workspace_user(req->path, name)) {
        finish_with(hub, ex, 404, "There is no such workspace.");
        return;
    }
    if (id->via == HUB_AUTH_NONE) {
        if (!accepts_html(req))
            finish_with(hub, ex, 401, "Sign in first.");
        else if (own_origin)
            hub_subdomain_begin(hub, ex, name); /* the hub says who this is */
        else
            redirect(hub, ex, "/hub/login?next=", req->path);
        return;
    }
    bool own = strcmp(id->name, name) == 0;
    if (!own && !(id->admin && hub->cfg->proxy.admin_access)) {
        log_event(LOG_WARN, "proxy.denied", "user", id->name, "workspace", name, "addr",
                  req->remote_addr, (const char *)NULL);
        finish_with(hub, ex, 403, "This workspace belongs to someone else.");
        return;
    }
    if (req->upgrade) {
        /* A page on another site must not open a WebSocket into this workspace with
         * the user's cookie (cross-site WebSocket hijacking). */
        const char *origin = http_request_header(req, "Origin");
        struct buf mine = BUF_INIT;
        if (own_origin)
            hub_subdomain_origin(hub, name, &mine);
        else
            buf_append_str(&mine, hub->public_origin);
        bool same = origin != NULL && strcasecmp(origin, mine.data) == 0;
        buf_free(&mine);
        if (!same) {
            log_event(LOG_WARN, "proxy.bad_origin", "user", id->name, "origin", origin, "addr",
                      req->remote_addr, (const char *)NULL);
            finish_with(hub, ex, 403, "WebSocket from a foreign origin refused.");
            return;
        }
    }
    const char *route = hub->spawner ? spawn_route(hub->spawner, name) : NULL;
    if (route == NULL && !refreshed && hub->spawner != NULL && spawn_is_shared(hub->spawner)) {
        /* Another replica may have started it a moment ago, before its notification
         * arrived: ask the store before sending the user to start it again. */
        struct pending_route *p = xcalloc(1, sizeof *p);
        p->hub = hub;
        p->ex = ex;
        p->id = *id;
        if (spawn_refresh(hub->spawner, name, route_refreshed, p) == 0)
            return;
        free(p);
    }
    if (route == NULL) {
        if (accepts_html(req)) {
            /* The hub's start page, which comes back through /user/NAME/... when ready. */
            struct buf prefix = BUF_INIT, back = BUF_INIT;
            if (own_origin)
                buf_append_str(&prefix, hub->public_origin);
            buf_appendf(&prefix, "/hub/spawn-pending/%s?next=", name);
            if (own_origin)
                buf_appendf(&back, "/user/%s", name);
            buf_append_str(&back, req->path);
            redirect(hub, ex, prefix.data, back.data);
            buf_free(&prefix);
            buf_free(&back);
        } else {
            finish_with(hub, ex, 503, "The server of this workspace is not running.");
        }
        return;
    }
    char strip[64];
    snprintf(strip, sizeof strip, "/user/%s", name);
    struct buf xff = BUF_INIT;
    const char *proto, *host;
    forwarded_values(hub, req, &xff, &proto, &host);
    struct hub_user_ref *ref = hub_user_ref(hub, name);
    struct proxy_target target = {
        .upstream = route,
        .strip_prefix = own_origin ? NULL : strip,
        .forwarded_for = xff.data,
        .forwarded_proto = proto,
        .forwarded_host = host,
        .drop_cookie = is_codehub_cookie,
        .cookie_data = NULL,
        .on_activity = own ? note_activity : NULL,
        .activity_data = ref,
    };
    ex->log_user = arena_strdup(&ex->arena, id->name);
    proxy_forward(hub->proxy, ex, &target);
    buf_free(&xff);
}

static void identify_work(uv_work_t *work)
{
    struct pending_identity *p = work->data;
    p->rc = hub_identify_hash(p->hub, p->hash, p->is_token, &p->id);
}

static void identify_done(uv_work_t *work, int status)
{
    struct pending_identity *p = work->data;
    struct hub *hub = p->hub;
    struct http_exchange *ex = p->ex;
    if (status == 0 && p->rc != 0 &&
        hub_identity_cache_get_stale(hub->identities, p->hash, hub_now_ms(), &p->id)) {
        /* The store is away, but this credential was good a moment ago: keep already
         * running workspaces reachable through the outage. */
        decide(hub, ex, &p->id);
    } else if (status != 0 || p->rc != 0) {
        finish_with(hub, ex, 503, "The hub cannot reach its store right now.");
    } else {
        decide(hub, ex, &p->id);
    }
    free(p);
}

/* Decides with the identity of credential `hash` (from the cache, else from the store on
 * the thread pool); "" for none. */
static void identify_then_decide(struct hub *hub, struct http_exchange *ex, const char *hash,
                                 bool is_token)
{
    struct hub_identity id;
    if (hash[0] == '\0') {
        memset(&id, 0, sizeof id);
        decide(hub, ex, &id);
        return;
    }
    if (hub_identity_cache_get(hub->identities, hash, hub_now_ms(), &id)) {
        decide(hub, ex, &id);
        return;
    }
    struct pending_identity *p = xcalloc(1, sizeof *p);
    p->work.data = p;
    p->hub = hub;
    p->ex = ex;
    snprintf(p->hash, sizeof p->hash, "%s", hash);
    p->is_token = is_token;
    if (uv_queue_work(hub->loop, &p->work, identify_work, identify_done) != 0) {
        free(p);
        finish_with(hub, ex, 503, "The hub is busy.");
    }
}

/* A request to NAME.DOMAIN: everything there is NAME's workspace, but the handoff. */
static int own_origin_head(struct hub *hub, struct http_exchange *ex, const char *name)
{
    struct http_request *req = &ex->req;
    if (name[0] == '\0') {
        finish_with(hub, ex, 404, "There is no such workspace.");
        return HTTP_HEAD_DEFER;
    }
    char *norm = NULL;
    if (http_path_normalize(req->path, &norm) != 0) {
        finish_with(hub, ex, 400, "This path is malformed.");
        return HTTP_HEAD_DEFER;
    }
    req->path = arena_strdup(&ex->arena, norm);
    free(norm);
    if (strcmp(req->path, "/_codehub/handoff") == 0) {
        hub_subdomain_redeem(hub, ex, name);
        return HTTP_HEAD_DEFER;
    }
    /* A bearer token as anywhere else; otherwise this origin's own cookie, never the hub's
     * session cookie (one tossed in under a broader Domain must not count). */
    char hash[72];
    bool is_token;
    hub_credential_hash(hub, req, hash, &is_token);
    if (!is_token) {
        char session[HUB_SUBDOMAIN_HASH_HEX + 1];
        hash[0] = '\0';
        if (hub_subdomain_cookie_session(hub, req, name, session))
            snprintf(hash, sizeof hash, "%s", session);
    }
    identify_then_decide(hub, ex, hash, is_token);
    return HTTP_HEAD_DEFER;
}

int hub_workspace_head(struct http_exchange *ex, void *data)
{
    struct hub *hub = data;
    struct http_request *req = &ex->req;
    char *norm = NULL;
    char name[40];

    if (hub_subdomain_of(hub, req, name))
        return own_origin_head(hub, ex, name);

    /* Cheap test first: only paths that can normalise to /user/... need the work. */
    if (strncmp(req->path, "/user", 5) != 0 && strchr(req->path, '%') == NULL &&
        strstr(req->path, "/.") == NULL && strstr(req->path, "//") == NULL)
        return HTTP_HEAD_BUFFER;
    if (http_path_normalize(req->path, &norm) != 0)
        return HTTP_HEAD_BUFFER; /* the normal route answers 400 */
    bool workspace = strncmp(norm, "/user/", 6) == 0 || strcmp(norm, "/user") == 0;
    if (!workspace) {
        free(norm);
        return HTTP_HEAD_BUFFER;
    }
    req->path = arena_strdup(&ex->arena, norm);
    free(norm);
    if (!workspace_user(req->path, name)) {
        finish_with(hub, ex, 404, "There is no such workspace.");
        return HTTP_HEAD_DEFER;
    }
    /* /user/ann → /user/ann/: code-server's relative links need the slash. */
    if (strlen(req->path) == 6 + strlen(name)) {
        struct buf loc = BUF_INIT;
        buf_appendf(&loc, "%s/", req->path);
        if (req->query != NULL)
            buf_appendf(&loc, "?%s", req->query);
        hub_security_headers(hub, &ex->res);
        http_response_header(&ex->res, "Location", loc.data);
        ex->res.status = 302;
        buf_free(&loc);
        http_exchange_finish(ex);
        return HTTP_HEAD_DEFER;
    }

    if (hub->ws_domain != NULL) {
        /* Per-user origins: no workspace page is ever served on the hub's origin. */
        hub_subdomain_send_away(hub, ex, name);
        return HTTP_HEAD_DEFER;
    }
    char hash[72];
    bool is_token;
    hub_credential_hash(hub, req, hash, &is_token);
    identify_then_decide(hub, ex, hash, is_token);
    return HTTP_HEAD_DEFER;
}

static size_t name_bucket(const char *name, size_t nbuckets)
{
    /* FNV-1a: names are short, and the table only needs an even spread. */
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h & (nbuckets - 1));
}

/* Doubles the table when it averages more than two names a bucket: a look-up runs on
 * every proxied request. */
static void user_refs_grow(struct hub *hub)
{
    size_t n = hub->n_user_buckets ? hub->n_user_buckets * 2 : 64;
    struct hub_user_ref **table = xcalloc(n, sizeof *table);
    for (size_t i = 0; i < hub->n_user_buckets; i++) {
        struct hub_user_ref *ref = hub->user_refs[i];
        while (ref != NULL) {
            struct hub_user_ref *next = ref->next;
            size_t b = name_bucket(ref->name, n);
            ref->next = table[b];
            table[b] = ref;
            ref = next;
        }
    }
    free(hub->user_refs);
    hub->user_refs = table;
    hub->n_user_buckets = n;
}

struct hub_user_ref *hub_user_ref(struct hub *hub, const char *name)
{
    if (hub->n_user_buckets > 0) {
        for (struct hub_user_ref *ref = hub->user_refs[name_bucket(name, hub->n_user_buckets)];
             ref != NULL; ref = ref->next)
            if (strcmp(ref->name, name) == 0)
                return ref;
    }
    if (hub->n_user_refs >= hub->n_user_buckets * 2)
        user_refs_grow(hub);
    struct hub_user_ref *ref = xcalloc(1, sizeof *ref);
    ref->hub = hub;
    snprintf(ref->name, sizeof ref->name, "%s", name);
    size_t b = name_bucket(name, hub->n_user_buckets);
    ref->next = hub->user_refs[b];
    hub->user_refs[b] = ref;
    hub->n_user_refs++;
    return ref;
}

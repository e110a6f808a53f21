/* Per-user origins: the handoff from the hub to NAME.DOMAIN and the workspace cookie.
 * The flow and why it is shaped so: subdomain.h. */
#include "hub/subdomain.h"

#include "auth/username.h"
#include "core/alloc.h"
#include "core/log.h"
#include "http/cookie.h"
#include "http/form.h"
#include "http/url.h"
#include "web/pages.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HANDOFF_TTL_MS (30 * 1000)
/* The state cookie lives as long as a sign-in on the hub may reasonably take. */
#define STATE_MAX_AGE_S 600
#define MAC_HEX 64
#define NONCE_BYTES 16
#define NONCE_HEX (2 * NONCE_BYTES)
#define STATE_BYTES 32
/* How many hex digits of H(state) name the state cookie of one sign-in attempt. */
#define STATE_ID_HEX 16
/* "__Host-codehub-ws-state" "-" ID NUL, with room to spare. */
#define STATE_COOKIE_MAX 64
#define HANDOFF_PATH "/_codehub/handoff"

/* MAC contexts: a code can never pass for a cookie, nor either for a nonce's row key. */
static const char ctx_cookie[] = "codehub workspace cookie v1";
static const char ctx_code[] = "codehub handoff code v1";
static const char ctx_nonce[] = "codehub handoff nonce v1";
static const char ctx_key[] = "codehub per-user origin key v1";

/* keyed BLAKE2b-256 of context NUL data, in hex. */
static void mac_hex(const struct hub *hub, const char *context, const char *data, size_t len,
                    char out[MAC_HEX + 1])
{
    unsigned char digest[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, hub->ws_key, sizeof hub->ws_key, sizeof digest);
    crypto_generichash_update(&st, (const unsigned char *)context, strlen(context) + 1);
    crypto_generichash_update(&st, (const unsigned char *)data, len);
    crypto_generichash_final(&st, digest, sizeof digest);
    sodium_bin2hex(out, MAC_HEX + 1, digest, sizeof digest);
}

/* unkeyed BLAKE2b-256 in hex: what the state parameter carries for the state cookie. */
static void plain_hash_hex(const char *s, char out[MAC_HEX + 1])
{
    unsigned char digest[32];
    crypto_generichash(digest, sizeof digest, (const unsigned char *)s, strlen(s), NULL, 0);
    sodium_bin2hex(out, MAC_HEX + 1, digest, sizeof digest);
}

/* The state cookie of one sign-in attempt: its name carries the start of H(state), so that
 * two attempts at once (two tabs opening the same workspace) keep a cookie each instead of
 * one overwriting the other. `state_hash` is MAC_HEX lowercase hex digits. */
static void state_cookie_name(const struct hub *hub, const char *state_hash,
                              char out[STATE_COOKIE_MAX])
{
    snprintf(out, STATE_COOKIE_MAX, "%s-%.*s", hub->ws_state_cookie, STATE_ID_HEX, state_hash);
}

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool parse_ms(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 15)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Splits s at '.' into exactly n fields (pointers into s and lengths). */
static bool split_dots(const char *s, size_t n, const char **f, size_t *flen)
{
    size_t i = 0;
    const char *p = s;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (i == n)
            return false;
        f[i] = p;
        flen[i] = len;
        i++;
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    return i == n;
}

static bool field_is(const char *f, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(f, want, len) == 0;
}

/* Checks that text[0..signed_len) followed by ".MAC" is signed under `context`. */
static bool mac_ok(const struct hub *hub, const char *context, const char *text, size_t signed_len,
                   const char *mac, size_t mac_len)
{
    char want[MAC_HEX + 1];
    if (mac_len != MAC_HEX)
        return false;
    mac_hex(hub, context, text, signed_len, want);
    return sodium_memcmp(want, mac, MAC_HEX) == 0;
}

bool hub_subdomain_name_ok(const char *name)
{
    size_t len = strlen(name);
    const char *why;
    if (len == 0 || len > 63 || name[len - 1] == '-' || auth_username_check(name, &why) != 0)
        return false;
    for (const char *p = name; *p; p++)
        if (*p == '.' || *p == '_')
            return false;
    return true;
}

void hub_subdomain_setup(struct hub *hub)
{
    const char *domain = hub->cfg->proxy.user_subdomains;
    if (domain == NULL || domain[0] == '\0')
        return;
    hub->ws_domain = domain;
    hub->ws_cookie = hub->secure ? "__Host-codehub-ws" : "codehub-ws";
    hub->ws_state_cookie = hub->secure ? "__Host-codehub-ws-state" : "codehub-ws-state";
    /* The hub's port, if its public URL names one, is the workspaces' port too. */
    const char *auth = strstr(hub->public_origin, "://");
    auth = auth ? auth + 3 : hub->public_origin;
    const char *close = strchr(auth, ']');
    const char *colon = strchr(close ? close : auth, ':');
    hub->ws_origin_tail = xasprintf(".%s%s", domain, colon ? colon : "");
    crypto_generichash(hub->ws_key, sizeof hub->ws_key, (const unsigned char *)ctx_key,
                       sizeof ctx_key - 1, hub->secret, sizeof hub->secret);
    log_event(LOG_INFO, "hub.user_subdomains", "domain", domain, "example", hub->ws_origin_tail,
              (const char *)NULL);
}

void hub_subdomain_cleanup(struct hub *hub)
{
    free(hub->ws_origin_tail);
    hub->ws_origin_tail = NULL;
    sodium_memzero(hub->ws_key, sizeof hub->ws_key);
}

bool hub_subdomain_of(const struct hub *hub, const struct http_request *req, char name[40])
{
    name[0] = '\0';
    if (hub->ws_domain == NULL)
        return false;
    const char *host = http_request_header(req, "Host");
    if (host == NULL)
        return false;
    size_t hlen = strcspn(host, ":"); /* a bracketed IPv6 host is never NAME.DOMAIN */
    const char *dot = memchr(host, '.', hlen);
    if (dot == NULL)
        return false;
    size_t dlen = strlen(hub->ws_domain);
    size_t rest = hlen - (size_t)(dot + 1 - host);
    if (rest != dlen || strncasecmp(dot + 1, hub->ws_domain, dlen) != 0)
        return false;
    size_t nlen = (size_t)(dot - host);
    if (nlen == 0 || nlen >= 40)
        return true; /* NAME.DOMAIN, but no user's */
    for (size_t i = 0; i < nlen; i++) {
        char c = host[i];
        name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    name[nlen] = '\0';
    if (!hub_subdomain_name_ok(name))
        name[0] = '\0';
    return true;
}

void hub_subdomain_origin(const struct hub *hub, const char *name, struct buf *out)
{
    buf_appendf(out, "%s://%s%s", hub->secure ? "https" : "http", name, hub->ws_origin_tail);
}

bool hub_subdomain_cookie_session(const struct hub *hub, const struct http_request *req,
                                  const char *name, char hash[HUB_SUBDOMAIN_HASH_HEX + 1])
{
    const char *header = http_request_header(req, "Cookie");
    if (header == NULL)
        return false;
    size_t len = strlen(header);
    int count = http_cookie_count(header, len, hub->ws_cookie);
    for (int i = 0; i < count; i++) {
        char *value = NULL;
        if (http_cookie_get_nth(header, len, hub->ws_cookie, i, &value) != 0)
            break;
        const char *f[4];
        size_t fl[4];
        int64_t exp;
        bool good = split_dots(value, 4, f, fl) && field_is(f[0], fl[0], name) &&
                    parse_ms(f[1], fl[1], &exp) && exp > hub_now_ms() &&
                    fl[2] == HUB_SUBDOMAIN_HASH_HEX && is_lower_hex(f[2], fl[2]) &&
                    mac_ok(hub, ctx_cookie, value, (size_t)(f[3] - 1 - value), f[3], fl[3]);
        if (good) {
            memcpy(hash, f[2], HUB_SUBDOMAIN_HASH_HEX);
            hash[HUB_SUBDOMAIN_HASH_HEX] = '\0';
        }
        sodium_memzero(value, strlen(value));
        free(value);
        if (good)
            return true;
    }
    return false;
}

static void finish_redirect(struct hub *hub, struct http_exchange *ex, const char *location)
{
    hub_security_headers(hub, &ex->res);
    http_response_header(&ex->res, "Cache-Control", "no-store");
    http_response_header(&ex->res, "Location", location);
    ex->res.status = 302;
    http_exchange_finish(ex);
}

static void finish_error(struct hub *hub, struct http_exchange *ex, int status, const char *msg)
{
    hub_security_headers(hub, &ex->res);
    http_response_header(&ex->res, "Cache-Control", "no-store");
    web_respond_error_page(ex, status, msg);
    http_exchange_finish(ex);
}

static void add_cookie(struct http_exchange *ex, const char *name, const char *value,
                       int64_t max_age, bool secure)
{
    struct http_cookie_attrs attrs = {
        .path = "/",
        .max_age = max_age,
        .http_only = true,
        .secure = secure,
        .same_site = "Lax",
        .domain = NULL,
    };
    char *set = http_cookie_format(name, value, &attrs);
    if (set != NULL)
        http_response_header(&ex->res, "Set-Cookie", set);
    free(set);
}

/* The path and query a request asked for, as a local redirect target. */
static void wanted(const struct http_request *req, struct buf *out)
{
    buf_append_str(out, req->path);
    if (req->query != NULL) {
        buf_append_char(out, '?');
        buf_append_str(out, req->query);
    }
}

void hub_subdomain_begin(struct hub *hub, struct http_exchange *ex, const char *name)
{
    unsigned char raw[STATE_BYTES];
    char state[2 * STATE_BYTES + 1], state_hash[MAC_HEX + 1], cookie[STATE_COOKIE_MAX];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(state, sizeof state, raw, sizeof raw);
    plain_hash_hex(state, state_hash);
    state_cookie_name(hub, state_hash, cookie);
    add_cookie(ex, cookie, state, STATE_MAX_AGE_S, hub->secure);
    sodium_memzero(state, sizeof state);

    struct buf loc = BUF_INIT, next = BUF_INIT;
    wanted(&ex->req, &next);
    buf_appendf(&loc, "%s/hub/handoff?workspace=%s&state=%s&next=", hub->public_origin, name,
                state_hash);
    http_urlencode(&loc, web_next_is_safe(next.data) ? next.data : "/");
    finish_redirect(hub, ex, loc.data);
    buf_free(&loc);
    buf_free(&next);
}

/* The nonce's row in the sessions table: keyed, so no cookie hashes to it (a session's key
 * is the unkeyed hash of its cookie), and nothing but this code path can name it. */
static void nonce_row_key(const struct hub *hub, const char *nonce, size_t len,
                          char out[MAC_HEX + 1])
{
    mac_hex(hub, ctx_nonce, nonce, len, out);
}

void hub_subdomain_issue(struct hub_call *call)
{
    struct hub *hub = call->hub;
    const struct http_request *req = &call->ex->req;
    const char *q = req->query ? req->query : "";
    char *workspace = http_form_get(q, strlen(q), "workspace");
    char *state = http_form_get(q, strlen(q), "state");
    char *next = http_form_get(q, strlen(q), "next");
    struct buf code = BUF_INIT, loc = BUF_INIT;

    if (hub->ws_domain == NULL) {
        web_respond_error_page(call->ex, 404, "There is nothing at this address.");
        goto out;
    }
    if (call->id.via != HUB_AUTH_SESSION) {
        web_respond_error_page(call->ex, 403, "Open workspaces from a signed-in browser.");
        goto out;
    }
    if (workspace == NULL || !hub_subdomain_name_ok(workspace) || state == NULL ||
        strlen(state) != MAC_HEX || !is_lower_hex(state, MAC_HEX)) {
        web_respond_error_page(call->ex, 400, "This workspace link is incomplete.");
        goto out;
    }
    bool own = strcmp(call->id.name, workspace) == 0;
    if (!own && !(call->id.admin && hub->cfg->proxy.admin_access)) {
        log_event(LOG_WARN, "proxy.denied", "user", call->id.name, "workspace", workspace, "addr",
                  req->remote_addr, (const char *)NULL);
        web_respond_error_page(call->ex, 403, "This workspace belongs to someone else.");
        goto out;
    }
    unsigned char raw[NONCE_BYTES];
    char nonce[NONCE_HEX + 1], row[MAC_HEX + 1];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(nonce, sizeof nonce, raw, sizeof raw);
    nonce_row_key(hub, nonce, NONCE_HEX, row);
    int64_t exp = hub_now_ms() + HANDOFF_TTL_MS;
    int rc = store_session_create(hub->store, row, call->id.user_id, exp, req->remote_addr);
    if (rc != 0) {
        web_respond_error_page(call->ex, 503, "The hub cannot reach its store right now.");
        goto out;
    }
    buf_appendf(&code, "%s.%" PRId64 ".%s.%s.%s", workspace, exp, call->id.session_hash, state,
                nonce);
    char mac[MAC_HEX + 1];
    mac_hex(hub, ctx_code, code.data, code.len, mac);
    buf_appendf(&code, ".%s", mac);

    hub_subdomain_origin(hub, workspace, &loc);
    buf_appendf(&loc, "%s?code=%s&next=", HANDOFF_PATH, code.data);
    http_urlencode(&loc, next != NULL && web_next_is_safe(next) ? next : "/");
    hub_respond_redirect(call, 302, loc.data);
out:
    free(workspace);
    free(state);
    free(next);
    buf_free(&code);
    buf_free(&loc);
}

/* ---- redeeming ---- */

struct redeem {
    uv_work_t work;
    struct hub *hub;
    struct http_exchange *ex;
    char row[MAC_HEX + 1];
    char session_hash[HUB_SUBDOMAIN_HASH_HEX + 1];
    char state_cookie[STATE_COOKIE_MAX];
    char name[40];
    char *next;
    int rc;
};

static void redeem_work(uv_work_t *work)
{
    struct redeem *r = work->data;
    /* Single use, across replicas: only the delete that removes the row wins. */
    r->rc = store_session_delete(r->hub->store, r->row);
}

static void redeem_done(uv_work_t *work, int status)
{
    struct redeem *r = work->data;
    struct hub *hub = r->hub;
    struct http_exchange *ex = r->ex;
    if (status != 0 || (r->rc != 0 && r->rc != -ENOENT)) {
        finish_error(hub, ex, 503, "The hub cannot reach its store right now.");
    } else if (r->rc == -ENOENT) {
        log_event(LOG_WARN, "handoff.reused", "workspace", r->name, "addr", ex->req.remote_addr,
                  (const char *)NULL);
        finish_error(hub, ex, 400,
                     "This sign-in link was already used. Open the workspace from the hub.");
    } else {
        struct buf value = BUF_INIT;
        int64_t exp = hub_now_ms() + hub->cfg->auth.session_max_age * 1000;
        buf_appendf(&value, "%s.%" PRId64 ".%s", r->name, exp, r->session_hash);
        char mac[MAC_HEX + 1];
        mac_hex(hub, ctx_cookie, value.data, value.len, mac);
        buf_appendf(&value, ".%s", mac);
        add_cookie(ex, hub->ws_cookie, value.data, -1, hub->secure);
        add_cookie(ex, r->state_cookie, "", 0, hub->secure);
        sodium_memzero(value.data, value.len);
        buf_free(&value);
        finish_redirect(hub, ex, r->next);
    }
    free(r->next);
    free(r);
}

/* Checks a handoff code for workspace `name` against the state cookie it names. Returns
 * NULL when it is good (row, session_hash and the state cookie's name filled), else what
 * to tell the user. */
static const char *check_code(struct hub *hub, const struct http_request *req, const char *name,
                              const char *code, char row[MAC_HEX + 1],
                              char session_hash[HUB_SUBDOMAIN_HASH_HEX + 1],
                              char state_cookie[STATE_COOKIE_MAX])
{
    static const char bad[] = "This sign-in link is not valid. Open the workspace from the hub.";
    const char *f[6];
    size_t fl[6];
    int64_t exp;
    if (!split_dots(code, 6, f, fl) ||
        !mac_ok(hub, ctx_code, code, (size_t)(f[5] - 1 - code), f[5], fl[5]))
        return bad;
    /* Signed by us: the fields are as we wrote them. */
    if (!field_is(f[0], fl[0], name) || !parse_ms(f[1], fl[1], &exp) ||
        fl[2] != HUB_SUBDOMAIN_HASH_HEX || fl[3] != MAC_HEX || fl[4] != NONCE_HEX)
        return bad;
    if (exp <= hub_now_ms())
        return "This sign-in link has expired. Open the workspace from the hub.";
    const char *header = http_request_header(req, "Cookie");
    char *state = NULL;
    state_cookie_name(hub, f[3], state_cookie);
    if (header == NULL || http_cookie_get(header, strlen(header), state_cookie, &state) != 0)
        return "This browser did not ask for this sign-in link (no sign-in state: are cookies "
               "blocked?). Open the workspace from the hub.";
    char state_hash[MAC_HEX + 1];
    plain_hash_hex(state, state_hash);
    sodium_memzero(state, strlen(state));
    free(state);
    if (sodium_memcmp(state_hash, f[3], MAC_HEX) != 0)
        return "This browser did not ask for this sign-in link. Open the workspace from the "
               "hub.";
    nonce_row_key(hub, f[4], fl[4], row);
    memcpy(session_hash, f[2], HUB_SUBDOMAIN_HASH_HEX);
    session_hash[HUB_SUBDOMAIN_HASH_HEX] = '\0';
    return NULL;
}

void hub_subdomain_redeem(struct hub *hub, struct http_exchange *ex, const char *name)
{
    const struct http_request *req = &ex->req;
    if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
        finish_error(hub, ex, 405, "Use GET here.");
        return;
    }
    const char *q = req->query ? req->query : "";
    char *code = http_form_get(q, strlen(q), "code");
    char *next = http_form_get(q, strlen(q), "next");
    struct redeem *r = xcalloc(1, sizeof *r);
    const char *why =
        code ? check_code(hub, req, name, code, r->row, r->session_hash, r->state_cookie)
             : "This sign-in link is incomplete. Open the workspace from the hub.";
    free(code);
    if (why != NULL) {
        log_event(LOG_WARN, "handoff.refused", "workspace", name, "why", why, "addr",
                  req->remote_addr, (const char *)NULL);
        finish_error(hub, ex, 400, why);
        free(next);
        free(r);
        return;
    }
    r->work.data = r;
    r->hub = hub;
    r->ex = ex;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->next = next != NULL && web_next_is_safe(next) ? next : xstrdup("/");
    if (r->next != next)
        free(next);
    if (uv_queue_work(hub->loop, &r->work, redeem_work, redeem_done) != 0) {
        free(r->next);
        free(r);
        finish_error(hub, ex, 503, "The hub is busy.");
    }
}

void hub_subdomain_send_away(struct hub *hub, struct http_exchange *ex, const char *name)
{
    const struct http_request *req = &ex->req;
    struct buf loc = BUF_INIT;
    hub_subdomain_origin(hub, name, &loc);
    const char *rest = req->path + strlen("/user/") + strlen(name);
    buf_append_str(&loc, rest[0] == '/' ? rest : "/");
    if (req->query != NULL)
        buf_appendf(&loc, "?%s", req->query);
    if (req->method == HTTP_GET || req->method == HTTP_HEAD) {
        finish_redirect(hub, ex, loc.data);
    } else {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "Workspaces are served on their own origins: send this to %s", loc.data);
        hub_security_headers(hub, &ex->res);
        http_response_set(&ex->res, 421, "text/plain; charset=utf-8", msg.data, msg.len);
        buf_append_char(&ex->res.body, '\n');
        http_exchange_finish(ex);
        buf_free(&msg);
    }
    buf_free(&loc);
}

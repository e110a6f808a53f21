#include "web/pages.h"

#include "auth/password.h"
#include "auth/throttle.h"
#include "auth/token.h"
#include "auth/username.h"
#include "core/alloc.h"
#include "core/log.h"
#include "http/cookie.h"
#include "http/form.h"
#include "http/url.h"
#include "hub/identity_cache.h"
#include "hub/metrics.h"
#include "hub/subdomain.h"
#include "spawn/kube.h"
#include "web/template.h"

#include <ctype.h>
#include <sodium.h>
#include <strings.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XSRF_COOKIE_MAX_AGE 3600

bool web_next_is_safe(const char *next)
{
    if (next == NULL || next[0] != '/' || next[1] == '/' || next[1] == '\\')
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)next; *p; p++, n++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\' || n > 2048)
            return false;
    return true;
}

/* --- rendering ------------------------------------------------------------------------ */

static void nav_link(struct buf *out, const char *href, const char *label, const char *current)
{
    buf_appendf(out, "<a href=\"%s\"%s>%s</a>", href,
                current != NULL && strcmp(current, href) == 0 ? " aria-current=\"page\"" : "",
                label);
}

/* The navigation bar; `current` is the path of the page shown (for aria-current). */
static void render_nav(struct buf *out, const struct hub_identity *id, const char *xsrf,
                       const char *current)
{
    if (id->via == HUB_AUTH_NONE)
        return;
    buf_append_str(out, "<nav class=\"nav\" aria-label=\"Main\">");
    nav_link(out, "/hub/home", "Home", current);
    if (id->admin)
        nav_link(out, "/hub/admin", "Admin", current);
    nav_link(out, "/hub/token", "Tokens", current);
    nav_link(out, "/hub/password", "Password", current);
    buf_append_str(out, "<form class=\"nav-logout\" method=\"post\" action=\"/hub/logout\">"
                        "<input type=\"hidden\" name=\"_xsrf\" value=\"");
    buf_append_html(out, xsrf);
    buf_append_str(out, "\"><span class=\"nav-user\">");
    buf_append_html(out, id->name);
    buf_append_str(out, "</span><button type=\"submit\" class=\"btn btn-link\">Log out</button>"
                        "</form></nav>");
}

/* Renders templates/BODY.html inside the layout into ex->res. `scripts` is a
 * NULL-terminated list of script names under /hub/static/, or NULL. */
static void render_page(struct http_exchange *ex, const struct hub_identity *id, const char *xsrf,
                        int status, const char *title, const char *body_name,
                        const char *const *vars, const char *const *scripts)
{
    struct buf body = BUF_INIT, nav = BUF_INIT, js = BUF_INIT, page = BUF_INIT;
    if (web_template_render_named(&body, body_name, vars) != 0) {
        log_event(LOG_ERROR, "web.template_failed", "template", body_name, (const char *)NULL);
        status = 500;
        buf_reset(&body);
        buf_append_str(&body, "<h1>Internal error</h1>");
    }
    render_nav(&nav, id, xsrf ? xsrf : "", ex->req.path);
    buf_append_str(&js, "<script src=\"/hub/static/codehub.js\" defer></script>");
    for (size_t i = 0; scripts != NULL && scripts[i] != NULL; i++)
        buf_appendf(&js, "<script src=\"/hub/static/%s\" defer></script>", scripts[i]);
    const char *layout_vars[] = {
        "title",   title,
        "xsrf",    xsrf ? xsrf : "",
        "user",    id->via != HUB_AUTH_NONE ? id->name : "",
        "base",    "",
        "nav",     nav.data ? nav.data : "",
        "body",    body.data ? body.data : "",
        "scripts", js.data,
        NULL,
    };
    web_template_render_named(&page, "page", layout_vars);
    ex->res.status = status;
    buf_reset(&ex->res.body);
    buf_append(&ex->res.body, page.data ? page.data : "", page.len);
    http_response_header(&ex->res, "Content-Type", "text/html; charset=utf-8");
    buf_free(&body);
    buf_free(&nav);
    buf_free(&js);
    buf_free(&page);
}

void web_respond_error_page(struct http_exchange *ex, int status, const char *message)
{
    static const struct hub_identity nobody;
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *vars[] = {"status",  code,    "reason", http_status_reason(status),
                          "message", message, NULL};
    render_page(ex, &nobody, NULL, status, http_status_reason(status), "error", vars, NULL);
}

static void error_page(struct hub_call *call, int status, const char *message)
{
    char xsrf[AUTH_CSRF_LEN];
    char code[8];
    hub_csrf_token(call->hub, &call->id, xsrf);
    snprintf(code, sizeof code, "%d", status);
    const char *vars[] = {"status",  code,    "reason", http_status_reason(status),
                          "message", message, NULL};
    render_page(call->ex, &call->id, xsrf, status, http_status_reason(status), "error", vars, NULL);
}

static char *query_param(const struct http_request *req, const char *name)
{
    if (req->query == NULL)
        return NULL;
    return http_form_get(req->query, strlen(req->query), name);
}

static char *form_field(const struct http_request *req, const char *name)
{
    return http_form_get(req->body.data ? req->body.data : "", req->body.len, name);
}

static bool is_form_post(struct hub_call *call)
{
    const char *ct = http_request_header(&call->ex->req, "Content-Type");
    return ct != NULL && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;
}

/* Sends the browser to the login page, remembering where it wanted to go. */
static void redirect_to_login(struct hub_call *call)
{
    struct buf loc = BUF_INIT;
    buf_append_str(&loc, "/hub/login?next=");
    struct buf next = BUF_INIT;
    buf_append_str(&next, call->ex->req.path);
    if (call->ex->req.query != NULL) {
        buf_append_char(&next, '?');
        buf_append_str(&next, call->ex->req.query);
    }
    http_urlencode(&loc, next.data);
    hub_respond_redirect(call, 302, loc.data);
    buf_free(&loc);
    buf_free(&next);
}

/* Appends <p class="CLASS" role="ROLE">TEXT</p> with TEXT escaped; nothing for NULL. */
static void message_box(struct buf *out, const char *cls, const char *role, const char *text)
{
    if (text == NULL)
        return;
    buf_appendf(out, "<p class=\"%s\" role=\"%s\">", cls, role);
    buf_append_html(out, text);
    buf_append_str(out, "</p>");
}

/* --- login ---------------------------------------------------------------------------- */

static bool list_has(const struct config_list *list, const char *name)
{
    for (size_t i = 0; i < list->n; i++)
        if (strcmp(list->items[i], name) == 0)
            return true;
    return false;
}

static void render_login(struct hub_call *call, int status, const char *error, const char *next,
                         const char *name)
{
    struct hub *hub = call->hub;
    char *xsrf = auth_token_new("");
    struct http_cookie_attrs attrs = {.path = "/",
                                      .max_age = XSRF_COOKIE_MAX_AGE,
                                      .http_only = true,
                                      .secure = hub->secure,
                                      .same_site = "Lax"};
    char *cookie = http_cookie_format(hub->xsrf_cookie, xsrf, &attrs);
    if (cookie != NULL)
        http_response_header(&call->ex->res, "Set-Cookie", cookie);
    free(cookie);

    struct buf err = BUF_INIT;
    message_box(&err, "error", "alert", error);
    const char *hint = "";
    if (hub->cfg->auth.open_signup)
        hint = "<p class=\"hint\">First time here? Choose your password: your first login "
               "sets it.</p>";
    else if (hub->cfg->auth.allowed_users.n > 0 || hub->cfg->auth.admin_users.n > 0)
        hint = "<p class=\"hint\">If your name is on the list of allowed users, your first "
               "login sets your password.</p>";
    const char *vars[] = {"xsrf",        xsrf,
                          "next",        next ? next : "",
                          "username",    name ? name : "",
                          "error",       err.data ? err.data : "",
                          "signup_hint", hint,
                          NULL};
    static const struct hub_identity nobody;
    render_page(call->ex, &nobody, NULL, status, "Sign in", "login", vars, NULL);
    if (status == 429)
        http_response_headerf(&call->ex->res, "Retry-After", "%s", "60");
    buf_free(&err);
    free(xsrf);
}

static void login_get(struct hub_call *call)
{
    char *next = query_param(&call->ex->req, "next");
    if (next != NULL && !web_next_is_safe(next)) {
        free(next);
        next = NULL;
    }
    if (call->id.via == HUB_AUTH_SESSION) {
        hub_respond_redirect(call, 302, next ? next : "/hub/home");
        free(next);
        return;
    }
    render_login(call, 200, NULL, next, NULL);
    free(next);
}

static int hash_password(struct hub *hub, const char *password, char out[AUTH_PASSWORD_HASH_MAX])
{
    uv_sem_wait(&hub->hash_slots);
    int rc = auth_password_hash(password, out);
    uv_sem_post(&hub->hash_slots);
    return rc;
}

static bool verify_password(struct hub *hub, const char *hash, const char *password)
{
    uv_sem_wait(&hub->hash_slots);
    bool ok = auth_password_verify(hash, password);
    uv_sem_post(&hub->hash_slots);
    return ok;
}

static void burn_password(struct hub *hub, const char *password)
{
    uv_sem_wait(&hub->hash_slots);
    auth_password_burn(password);
    uv_sem_post(&hub->hash_slots);
}

enum login_outcome { LOGIN_OK, LOGIN_BAD, LOGIN_POLICY, LOGIN_STORE };

/* Checks a password or, for a name without one, sets it (first use). Worker thread. */
static enum login_outcome login_check(struct hub_call *call, const char *name, const char *password,
                                      const char **why, struct store_user *user)
{
    struct hub *hub = call->hub;
    const struct config *cfg = hub->cfg;
    char hash[AUTH_PASSWORD_HASH_MAX];
    int rc = store_user_get(hub->store, name, user);
    if (rc == 0 && user->password_hash != NULL) {
        if (!verify_password(hub, user->password_hash, password))
            return LOGIN_BAD;
        if (auth_password_needs_rehash(user->password_hash) &&
            hash_password(hub, password, hash) == 0)
            store_user_set_password(hub->store, name, hash, false);
        return LOGIN_OK;
    }
    if (rc != 0 && rc != -ENOENT)
        return LOGIN_STORE;
    bool exists = rc == 0;
    if (!exists && !cfg->auth.open_signup && !list_has(&cfg->auth.allowed_users, name) &&
        !list_has(&cfg->auth.admin_users, name)) {
        burn_password(hub, password);
        return LOGIN_BAD;
    }
    if (auth_password_check_policy(password, (size_t)cfg->auth.min_password_length, why) != 0)
        return LOGIN_POLICY;
    if (hash_password(hub, password, hash) != 0)
        return LOGIN_STORE;
    if (exists) {
        rc = store_user_claim_password(hub->store, name, hash);
    } else {
        rc =
            store_user_create(hub->store, name, hash, list_has(&cfg->auth.admin_users, name), NULL);
        if (rc == 0) {
            metric_add(hub->metrics.users, 1);
            store_event_add(hub->store, "user.signup", name, name, "first-use sign-up");
            log_event(LOG_INFO, "user.signup", "user", name, "addr", call->ex->req.remote_addr,
                      (const char *)NULL);
        }
    }
    store_user_clear(user);
    if (rc == -EEXIST) {
        /* Someone set this name's password between our read and our write: treat the
         * attempt as a normal login against the password that won. */
        if (store_user_get(hub->store, name, user) != 0 || user->password_hash == NULL)
            return LOGIN_STORE;
        return verify_password(hub, user->password_hash, password) ? LOGIN_OK : LOGIN_BAD;
    }
    if (rc != 0)
        return LOGIN_STORE;
    return store_user_get(hub->store, name, user) == 0 ? LOGIN_OK : LOGIN_STORE;
}

/* Creates a session for `user` and sets its cookie. Returns 0, or the store's negative
 * errno (no cookie set then: the caller says the store is unreachable). */
static int start_session(struct hub_call *call, const struct store_user *user)
{
    struct hub *hub = call->hub;
    char *token = auth_token_new("");
    char hash[AUTH_TOKEN_HASH_HEX];
    auth_token_hash(token, hash);
    int64_t now = hub_now_ms();
    int rc = store_session_create(hub->store, hash, user->id,
                                  now + hub->cfg->auth.session_max_age * 1000,
                                  call->ex->req.remote_addr);
    if (rc == 0) {
        hub_set_session_cookie(call, token);
        metric_add(hub->metrics.sessions, 1);
    } else {
        log_event(LOG_ERROR, "store.error", "op", "session_create", "user", user->name, "error",
                  strerror(-rc), (const char *)NULL);
    }
    sodium_memzero(token, strlen(token));
    free(token);
    return rc;
}

static void login_post(struct hub_call *call)
{
    struct hub *hub = call->hub;
    struct http_request *req = &call->ex->req;
    char *name = form_field(req, "username");
    char *password = form_field(req, "password");
    char *xsrf = form_field(req, "_xsrf");
    char *next = form_field(req, "next");
    char *cookie_xsrf = NULL;
    const char *cookies = http_request_header(req, "Cookie");
    struct store_user user = {0};
    const char *why = NULL;
    char key_user[64], key_addr[80];

    if (next != NULL && !web_next_is_safe(next)) {
        free(next);
        next = NULL;
    }
    if (cookies != NULL)
        http_cookie_get(cookies, strlen(cookies), hub->xsrf_cookie, &cookie_xsrf);
    if (xsrf == NULL || cookie_xsrf == NULL || !auth_secure_equal(xsrf, cookie_xsrf)) {
        metric_add(hub->metrics.csrf_failures, 1);
        log_event(LOG_WARN, "csrf.fail", "path", "/hub/login", "addr", req->remote_addr,
                  (const char *)NULL);
        render_login(call, 403, "Your sign-in form expired. Please try again.", next, NULL);
        goto out;
    }
    if (name == NULL || password == NULL || password[0] == '\0') {
        render_login(call, 400, "Enter a username and a password.", next, name);
        goto out;
    }
    /* People type "Ann " on phones: names are stored lowercase and trimmed. */
    size_t len = strlen(name);
    while (len > 0 && isspace((unsigned char)name[len - 1]))
        name[--len] = '\0';
    size_t start = 0;
    while (name[start] != '\0' && isspace((unsigned char)name[start]))
        start++;
    memmove(name, name + start, len - start + 1);
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (auth_username_check(name, &why) != 0) {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "Usernames %s.", why);
        render_login(call, 400, msg.data, next, name);
        buf_free(&msg);
        goto out;
    }

    snprintf(key_user, sizeof key_user, "user:%s", name);
    snprintf(key_addr, sizeof key_addr, "addr:%s", req->remote_addr);
    int64_t now = hub_now_ms();
    int64_t wait_user = auth_throttle_check(hub->throttle, key_user, now);
    int64_t wait_addr = auth_throttle_check(hub->throttle, key_addr, now);
    int64_t wait = wait_user > wait_addr ? wait_user : wait_addr;
    if (wait > 0) {
        char secs[32], msg[128];
        snprintf(secs, sizeof secs, "%lld", (long long)((wait + 999) / 1000));
        snprintf(msg, sizeof msg, "Too many failed attempts. Try again in %s seconds.", secs);
        metric_add(hub->metrics.logins_throttled, 1);
        log_event(LOG_WARN, "login.throttled", "user", name, "addr", req->remote_addr, "wait_s",
                  secs, (const char *)NULL);
        render_login(call, 429, msg, next, name);
        goto out;
    }

    switch (login_check(call, name, password, &why, &user)) {
    case LOGIN_OK:
        auth_throttle_succeed(hub->throttle, key_user);
        auth_throttle_succeed(hub->throttle, key_addr);
        metric_add(hub->metrics.logins_ok, 1);
        log_event(LOG_INFO, "login.ok", "user", name, "addr", req->remote_addr, (const char *)NULL);
        if (start_session(call, &user) != 0) {
            /* Without a session the redirect would land on the login form again, silently. */
            render_login(call, 503, "The hub cannot reach its store right now. Try again shortly.",
                         next, name);
            http_response_header(&call->ex->res, "Retry-After", "1");
            break;
        }
        store_event_add(hub->store, "login.ok", name, name, req->remote_addr);
        hub_respond_redirect(call, 303, next ? next : "/hub/home");
        call->ex->log_user = NULL;
        break;
    case LOGIN_BAD:
        auth_throttle_fail(hub->throttle, key_user, now);
        auth_throttle_fail(hub->throttle, key_addr, now);
        metric_add(hub->metrics.logins_failed, 1);
        log_event(LOG_WARN, "login.failed", "user", name, "addr", req->remote_addr,
                  (const char *)NULL);
        render_login(call, 403, "Invalid username or password.", next, name);
        break;
    case LOGIN_POLICY: {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "Choose a password: it %s.", why);
        render_login(call, 400, msg.data, next, name);
        buf_free(&msg);
        break;
    }
    case LOGIN_STORE:
        render_login(call, 503, "The hub cannot reach its store right now. Try again shortly.",
                     next, name);
        http_response_header(&call->ex->res, "Retry-After", "1");
        break;
    }
out:
    if (password != NULL) {
        sodium_memzero(password, strlen(password));
        free(password);
    }
    store_user_clear(&user);
    free(name);
    free(xsrf);
    free(next);
    free(cookie_xsrf);
}

/* --- logout and password ------------------------------------------------------------------ */

static void logout(struct hub_call *call)
{
    struct hub *hub = call->hub;
    struct http_request *req = &call->ex->req;
    if (call->id.via != HUB_AUTH_SESSION) {
        hub_set_session_cookie(call, NULL);
        hub_respond_redirect(call, 303, "/hub/login");
        return;
    }
    char xsrf[AUTH_CSRF_LEN];
    hub_csrf_token(hub, &call->id, xsrf);
    if (req->method == HTTP_GET) {
        const char *vars[] = {"xsrf", xsrf, NULL};
        render_page(call->ex, &call->id, xsrf, 200, "Log out", "logout", vars, NULL);
        return;
    }
    char *field = is_form_post(call) ? form_field(req, "_xsrf") : NULL;
    bool ok = hub_csrf_ok(call, field);
    free(field);
    if (!ok) {
        error_page(call, 403, "This request did not carry a valid XSRF token.");
        return;
    }
    store_session_delete(hub->store, call->id.session_hash);
    hub_identity_cache_forget_user(hub->identities, call->id.name);
    metric_add(hub->metrics.sessions, -1);
    log_event(LOG_INFO, "logout", "user", call->id.name, "addr", req->remote_addr,
              (const char *)NULL);
    hub_set_session_cookie(call, NULL);
    hub_respond_redirect(call, 303, "/hub/login");
}

static void render_password(struct hub_call *call, int status, const char *error,
                            const char *notice)
{
    char xsrf[AUTH_CSRF_LEN];
    hub_csrf_token(call->hub, &call->id, xsrf);
    struct buf err = BUF_INIT, note = BUF_INIT;
    message_box(&err, "error", "alert", error);
    message_box(&note, "notice", "status", notice);
    const char *vars[] = {"xsrf",   xsrf,
                          "user",   call->id.name,
                          "error",  err.data ? err.data : "",
                          "notice", note.data ? note.data : "",
                          NULL};
    render_page(call->ex, &call->id, xsrf, status, "Change password", "password", vars, NULL);
    buf_free(&err);
    buf_free(&note);
}

static void password_post(struct hub_call *call)
{
    struct hub *hub = call->hub;
    struct http_request *req = &call->ex->req;
    char *xsrf = form_field(req, "_xsrf");
    char *current = form_field(req, "current_password");
    char *fresh = form_field(req, "new_password");
    char *confirm = form_field(req, "confirm_password");
    struct store_user user = {0};
    const char *why = NULL;
    char hash[AUTH_PASSWORD_HASH_MAX];

    if (!hub_csrf_ok(call, xsrf)) {
        render_password(call, 403, "Your form expired. Please try again.", NULL);
        goto out;
    }
    if (current == NULL || fresh == NULL || confirm == NULL) {
        render_password(call, 400, "Fill in all three fields.", NULL);
        goto out;
    }
    int rc = store_user_get(hub->store, call->id.name, &user);
    if (rc != 0) {
        render_password(call, 503, "The hub cannot reach its store right now.", NULL);
        goto out;
    }
    if (user.password_hash == NULL || !verify_password(hub, user.password_hash, current)) {
        log_event(LOG_WARN, "password.change_failed", "user", call->id.name, "addr",
                  req->remote_addr, (const char *)NULL);
        render_password(call, 403, "Your current password is not right.", NULL);
        goto out;
    }
    if (strcmp(fresh, confirm) != 0) {
        render_password(call, 400, "The new password and its confirmation differ.", NULL);
        goto out;
    }
    if (auth_password_check_policy(fresh, (size_t)hub->cfg->auth.min_password_length, &why) != 0) {
        struct buf msg = BUF_INIT;
        buf_appendf(&msg, "The new password %s.", why);
        render_password(call, 400, msg.data, NULL);
        buf_free(&msg);
        goto out;
    }
    if (hash_password(hub, fresh, hash) != 0 ||
        store_user_set_password(hub->store, call->id.name, hash, true) != 0) {
        render_password(call, 503, "The hub cannot reach its store right now.", NULL);
        goto out;
    }
    /* Every other session of this user ended with the change; this browser gets a fresh
     * one so that it stays signed in. */
    hub_identity_cache_forget_user(hub->identities, call->id.name);
    if (start_session(call, &user) != 0) {
        render_password(call, 503,
                        "Your password was changed, but the hub cannot reach its store to keep "
                        "you signed in: log in again shortly.",
                        NULL);
        goto out;
    }
    store_event_add(hub->store, "user.password", call->id.name, call->id.name, "changed");
    log_event(LOG_INFO, "user.password", "user", call->id.name, "addr", req->remote_addr,
              (const char *)NULL);
    hub_respond_redirect(call, 303, "/hub/password?changed=1");
out:
    if (current != NULL) {
        sodium_memzero(current, strlen(current));
        free(current);
    }
    if (fresh != NULL) {
        sodium_memzero(fresh, strlen(fresh));
        free(fresh);
    }
    if (confirm != NULL) {
        sodium_memzero(confirm, strlen(confirm));
        free(confirm);
    }
    free(xsrf);
    store_user_clear(&user);
}

/* --- signed-in pages --------------------------------------------------------------------- */

static void home(struct hub_call *call)
{
    char xsrf[AUTH_CSRF_LEN];
    char last[32] = "never";
    hub_csrf_token(call->hub, &call->id, xsrf);
    struct store_server srv = {0};
    struct store_user user = {0};
    const char *status = "stopped";
    int rc = store_server_get(call->hub->store, call->id.user_id, &srv);
    if (rc == 0)
        status = srv.state;
    if (store_user_get_by_id(call->hub->store, call->id.user_id, &user) == 0 &&
        user.last_activity_ms > 0)
        hub_iso8601(user.last_activity_ms, last);
    /* The kubernetes spawner's profiles (kube.profiles), as a choice next to Start. */
    struct buf profiles = BUF_INIT;
    const struct config *cfg = call->hub->cfg;
    json_t *list =
        strcmp(cfg->spawn.spawner, "kubernetes") == 0 ? spawn__kube_profiles_list(cfg) : NULL;
    if (json_array_size(list) > 0) {
        buf_append_str(&profiles, "<label class=\"profile\">Profile <select id=\"profile\">"
                                  "<option value=\"\">default</option>");
        size_t i;
        json_t *p;
        json_array_foreach(list, i, p)
        {
            buf_append_str(&profiles, "<option value=\"");
            buf_append_html(&profiles, json_string_value(json_object_get(p, "name")));
            buf_append_str(&profiles, "\" title=\"");
            buf_append_html(&profiles, json_string_value(json_object_get(p, "description")));
            buf_append_str(&profiles, "\">");
            buf_append_html(&profiles, json_string_value(json_object_get(p, "display_name")));
            buf_append_str(&profiles, "</option>");
        }
        buf_append_str(&profiles, "</select></label>");
    }
    json_decref(list);
    const char *vars[] = {"user",
                          call->id.name,
                          "status",
                          status,
                          "last_activity",
                          last,
                          "notice",
                          "",
                          "xsrf",
                          xsrf,
                          "profiles",
                          profiles.data != NULL ? profiles.data : "",
                          NULL};
    static const char *const scripts[] = {"home.js", NULL};
    render_page(call->ex, &call->id, xsrf, 200, "Home", "home", vars, scripts);
    buf_free(&profiles);
    store_server_clear(&srv);
    store_user_clear(&user);
}

static void simple_page(struct hub_call *call, const char *title, const char *name,
                        const char *script)
{
    char xsrf[AUTH_CSRF_LEN];
    hub_csrf_token(call->hub, &call->id, xsrf);
    const char *vars[] = {
        "user", call->id.name, "xsrf", xsrf, "admin", call->id.admin ? "true" : "false", NULL};
    const char *scripts[] = {script, NULL};
    render_page(call->ex, &call->id, xsrf, 200, title, name, vars, scripts);
}

/* /hub/spawn-pending/NAME: the progress page; opening it starts the server (on the loop,
 * after this worker step), as JupyterHub's spawn page does. */
static void spawn_pending(struct hub_call *call)
{
    const char *name = call->path + strlen("/hub/spawn-pending/");
    const char *why;
    struct store_user user = {0};
    struct store_server srv = {0};
    char *next = NULL;
    char fallback[64];
    if (auth_username_check(name, &why) != 0) {
        error_page(call, 404, "There is no such server.");
        return;
    }
    bool self = strcmp(call->id.name, name) == 0;
    if (!self && !call->id.admin) {
        error_page(call, 404, "There is no such server.");
        return;
    }
    int rc = store_user_get(call->hub->store, name, &user);
    if (rc != 0) {
        error_page(call, rc == -ENOENT ? 404 : 503,
                   rc == -ENOENT ? "There is no such server." : "The store is unavailable.");
        goto out;
    }
    snprintf(fallback, sizeof fallback, "/user/%s/", name);
    next = query_param(&call->ex->req, "next");
    if (next == NULL || !web_next_is_safe(next)) {
        free(next);
        next = xstrdup(fallback);
    }
    if (store_server_get(call->hub->store, user.id, &srv) == 0 &&
        strcmp(srv.state, "running") == 0) {
        hub_respond_redirect(call, 302, next);
        goto out;
    }
    snprintf(call->target, sizeof call->target, "%s", name);
    call->target_id = user.id;
    call->start_server_after = true;
    char xsrf[AUTH_CSRF_LEN];
    hub_csrf_token(call->hub, &call->id, xsrf);
    const char *vars[] = {"user", name, "next", next, NULL};
    static const char *const scripts[] = {"spawn.js", NULL};
    render_page(call->ex, &call->id, xsrf, 200, "Starting", "spawn_pending", vars, scripts);
out:
    free(next);
    store_user_clear(&user);
    store_server_clear(&srv);
}

void web_handle(struct hub_call *call)
{
    const char *path = call->path;
    int method = call->ex->req.method;
    bool get = method == HTTP_GET || method == HTTP_HEAD;

    if (strcmp(path, "/hub/login") == 0) {
        if (get)
            login_get(call);
        else if (method == HTTP_POST)
            login_post(call);
        else
            error_page(call, 405, "Use GET or POST here.");
        return;
    }
    if (strcmp(path, "/hub/logout") == 0) {
        if (get || method == HTTP_POST)
            logout(call);
        else
            error_page(call, 405, "Use GET or POST here.");
        return;
    }

    if (strcmp(path, "/hub/handoff") == 0) {
        /* Per-user origins: a workspace origin asks who this browser is (hub/subdomain.h). */
        if (!get)
            error_page(call, 405, "Use GET here.");
        else if (call->id.via == HUB_AUTH_NONE && call->hub->ws_domain != NULL)
            redirect_to_login(call);
        else
            hub_subdomain_issue(call);
        return;
    }

    bool pending = strncmp(path, "/hub/spawn-pending/", 19) == 0;
    bool known = pending || strcmp(path, "/hub/home") == 0 || strcmp(path, "/hub/admin") == 0 ||
                 strcmp(path, "/hub/token") == 0 || strcmp(path, "/hub/password") == 0;
    if (!known) {
        error_page(call, 404, "There is nothing at this address.");
        return;
    }
    if (call->id.via == HUB_AUTH_NONE) {
        if (get)
            redirect_to_login(call);
        else
            error_page(call, 401, "Sign in first.");
        return;
    }
    if (strcmp(path, "/hub/password") == 0) {
        if (method == HTTP_POST) {
            password_post(call);
        } else if (get) {
            char *changed = query_param(&call->ex->req, "changed");
            render_password(call, 200, NULL, changed ? "Your password was changed." : NULL);
            free(changed);
        } else {
            error_page(call, 405, "Use GET or POST here.");
        }
        return;
    }
    if (!get) {
        error_page(call, 405, "Use GET here.");
        return;
    }
    if (pending)
        spawn_pending(call);
    else if (strcmp(path, "/hub/home") == 0)
        home(call);
    else if (strcmp(path, "/hub/token") == 0)
        simple_page(call, "API tokens", "token", "token.js");
    else if (!call->id.admin)
        error_page(call, 403, "This page is for admins.");
    else
        simple_page(call, "Admin", "admin", "admin.js");
}

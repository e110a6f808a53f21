/* JSON models of the REST API (see model.h). */
#include "api/model.h"

#include "core/alloc.h"
#include "hub/hub.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* jansson only returns NULL from its constructors when memory runs out. Everything else in
 * codehub aborts on out-of-memory (core/alloc.h), so the models do the same rather than
 * send a half-built object. */
static json_t *must(json_t *j)
{
    if (j == NULL) {
        fprintf(stderr, "codehub: out of memory building JSON\n");
        abort();
    }
    return j;
}

void api_json_set(json_t *obj, const char *key, json_t *value)
{
    if (json_object_set_new(obj, key, must(value)) != 0) {
        fprintf(stderr, "codehub: out of memory building JSON\n");
        abort();
    }
}

void api_json_append(json_t *arr, json_t *value)
{
    if (json_array_append_new(arr, must(value)) != 0) {
        fprintf(stderr, "codehub: out of memory building JSON\n");
        abort();
    }
}

json_t *api_model_time(int64_t ms)
{
    if (ms <= 0)
        return must(json_null());
    char iso[32];
    hub_iso8601(ms, iso);
    return must(json_string(iso));
}

json_t *api_model_text(const char *s)
{
    if (s == NULL)
        s = "";
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    /* Not valid UTF-8. Keep what can be shown rather than drop the field. */
    size_t len = strlen(s);
    char *copy = xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        copy[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    copy[len] = '\0';
    j = must(json_string(copy));
    free(copy);
    return j;
}

static json_t *one_string_list(const char *s)
{
    json_t *arr = must(json_array());
    api_json_append(arr, json_string(s));
    return arr;
}

json_t *api_model_user(const struct store_user *user, const struct store_server *server)
{
    const char *name = user->name != NULL ? user->name : "";
    json_t *u = must(json_object());
    api_json_set(u, "kind", json_string("user"));
    api_json_set(u, "name", api_model_text(name));
    api_json_set(u, "admin", json_boolean(user->admin));
    api_json_set(u, "roles", one_string_list(user->admin ? "admin" : "user"));
    api_json_set(u, "groups", json_array());
    api_json_set(u, "created", api_model_time(user->created_ms));
    api_json_set(u, "last_activity", api_model_time(user->last_activity_ms));

    const char *state = server != NULL && server->state != NULL ? server->state : "stopped";
    if (strcmp(state, "running") == 0) {
        /* Names are [a-z0-9._-], so the URL needs no escaping. */
        char *url = xasprintf("/user/%s/", name);
        api_json_set(u, "server", api_model_text(url));
        free(url);
    } else {
        api_json_set(u, "server", json_null());
    }
    if (strcmp(state, "starting") == 0)
        api_json_set(u, "pending", json_string("spawn"));
    else if (strcmp(state, "stopping") == 0)
        api_json_set(u, "pending", json_string("stop"));
    else
        api_json_set(u, "pending", json_null());
    api_json_set(u, "servers", json_object());
    return u;
}

json_t *api_model_token(const struct store_token *token, const char *user_name)
{
    if (user_name == NULL)
        user_name = token->user_name;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)token->id);
    json_t *t = must(json_object());
    api_json_set(t, "kind", json_string("api_token"));
    api_json_set(t, "id", json_string(id));
    api_json_set(t, "user", api_model_text(user_name));
    api_json_set(t, "prefix", api_model_text(token->prefix));
    api_json_set(t, "note", api_model_text(token->note));
    api_json_set(t, "scopes",
                 one_string_list(token->scope == STORE_SCOPE_ADMIN ? "admin" : "user"));
    api_json_set(t, "created", api_model_time(token->created_ms));
    api_json_set(t, "expires_at", api_model_time(token->expires_ms));
    api_json_set(t, "last_activity", api_model_time(token->last_used_ms));
    return t;
}

json_t *api_model_page(json_t *items, uint64_t offset, uint64_t limit, uint64_t total,
                       const char *path)
{
    json_t *page = must(json_object());
    api_json_set(page, "offset", json_integer((json_int_t)offset));
    api_json_set(page, "limit", json_integer((json_int_t)limit));
    api_json_set(page, "total", json_integer((json_int_t)total));
    uint64_t next_offset = offset + limit;
    if (next_offset < total) {
        char *url = xasprintf("%s?offset=%llu&limit=%llu", path, (unsigned long long)next_offset,
                              (unsigned long long)limit);
        json_t *next = must(json_object());
        api_json_set(next, "offset", json_integer((json_int_t)next_offset));
        api_json_set(next, "limit", json_integer((json_int_t)limit));
        api_json_set(next, "url", api_model_text(url));
        free(url);
        api_json_set(page, "next", next);
    } else {
        api_json_set(page, "next", json_null());
    }
    json_t *out = must(json_object());
    api_json_set(out, "items", items);
    api_json_set(out, "_pagination", page);
    return out;
}

void api_text_sanitize(const char *in, char *out, size_t size)
{
    if (in == NULL)
        in = "";
    size_t len = strlen(in);
    bool cut = len > size - 1;
    size_t n = cut ? size - 4 : len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (cut) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

json_t *api_body_parse(const char *data, size_t len, char *err, size_t err_size)
{
    json_error_t jerr;
    /* No JSON_DISABLE_EOF_CHECK (trailing bytes are an error) and no JSON_ALLOW_NUL (a
     * "\u0000" would silently cut C strings such as names and passwords). */
    json_t *j = json_loadb(data != NULL ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        /* jansson quotes the offending token, which is the client's raw bytes. */
        char what[sizeof jerr.text];
        api_text_sanitize(jerr.text, what, sizeof what);
        snprintf(err, err_size, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 what);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        snprintf(err, err_size, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

size_t api_text_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if ((*p & 0xc0) != 0x80)
            n++;
    }
    return n;
}

/* libFuzzer driver: JSON request bodies of the REST API and the hub's start/cull
 * endpoints, through the pure functions they are read with.
 *
 * The endpoint validators themselves (users_post, user_patch, token_request in api.c,
 * start_server and cull_now in hub/servers.c) are static and need a live hub call, so the
 * driver runs the same steps through the public pure functions they are built from:
 *   - api_body_parse (every /hub/api body): it must agree with jansson's own strict
 *     reading, report errors as printable, terminated text, never hand out a string with a
 *     NUL in it, and what it accepts must survive a dump and a second parse;
 *   - the fields the endpoints read: "usernames"/"name" through auth_username_check (the
 *     names then become Kubernetes names through spawn__kube_user_label, which must stay
 *     DNS-1123 labels and tell different users apart), "password" through
 *     auth_password_check_policy, "note" through api_text_chars and api_text_sanitize,
 *     every string through api_model_text, "profile" through spawn__kube_profile_exists and
 *     spawn__kube_pod_manifest (with a configuration that has profiles);
 *   - the raw bytes too, since error messages quote them: api_text_sanitize and
 *     api_model_text must cope with anything, invalid UTF-8 included.
 * Each of these is checked against an independent statement of its rule written here. */
#include "fuzz_check.h"
#include "api/model.h"
#include "auth/password.h"
#include "auth/username.h"
#include "core/buf.h"
#include "core/config.h"
#include "spawn/kube.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_NAMES 16

/* ---- independent rules ------------------------------------------------------------- */

/* Decodes one UTF-8 sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
 * Returns its length and sets *cp, or 0 when s[0..n) does not start with one. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = s[0] < 0x80             ? 1
                 : (s[0] & 0xe0) == 0xc0 ? 2
                 : (s[0] & 0xf0) == 0xe0 ? 3
                 : (s[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t v = len == 1 ? s[0] : s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Code points in s[0..n), or -1 when it is not valid UTF-8. */
static long utf8_count(const uint8_t *s, size_t n)
{
    long count = 0;
    uint32_t cp;
    for (size_t i = 0; i < n; count++) {
        size_t l = utf8_decode(s + i, n - i, &cp);
        if (l == 0)
            return -1;
        i += l;
    }
    return count;
}

static bool username_rule(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok)
            return false;
    }
    return true;
}

/* Valid UTF-8, min_len..: code points, <= 1024 bytes, no C0, DEL or C1 control. */
static bool password_rule(const char *s, size_t min_len)
{
    size_t n = strlen(s);
    size_t count = 0;
    uint32_t cp;
    if (n > AUTH_PASSWORD_MAX_BYTES)
        return false;
    for (size_t i = 0; i < n; count++) {
        size_t l = utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (l == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return false;
        i += l;
    }
    return count >= min_len;
}

/* RFC 1123 label: 1..63 of [a-z0-9-], alphanumeric at both ends. */
static bool dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    }
    return true;
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

/* ---- the functions under test ------------------------------------------------------ */

/* api_text_sanitize at several sizes: printable, fits, cut with "..." exactly when needed,
 * and keeps every printable byte it does not cut. */
static void check_sanitize(const char *in)
{
    static const size_t sizes[] = {4, 5, 17, 80};
    size_t len = strlen(in);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char out[80];
        size_t sz = sizes[k];
        memset(out, 'Z', sizeof out);
        api_text_sanitize(in, out, sz);
        check(memchr(out, '\0', sz) != NULL);
        size_t olen = strlen(out);
        check(printable(out));
        bool cut = len > sz - 1;
        check(olen == (cut ? sz - 1 : len));
        size_t kept = cut ? sz - 4 : len;
        for (size_t i = 0; i < kept; i++) {
            unsigned char c = (unsigned char)in[i];
            check(out[i] == ((c >= 0x20 && c < 0x7f) ? (char)c : '?'));
        }
        check(!cut || memcmp(out + kept, "...", 3) == 0);
    }
}

/* api_model_text: a JSON string, the text itself when it is UTF-8, else printable. */
static void check_model_text(const char *s)
{
    json_t *j = api_model_text(s);
    check(json_is_string(j));
    size_t n = strlen(s);
    if (utf8_count((const uint8_t *)s, n) >= 0)
        check(strcmp(json_string_value(j), s) == 0);
    else
        check(printable(json_string_value(j)) && json_string_length(j) == n);
    json_decref(j);
}

static void check_string(const char *s, size_t len)
{
    /* No NUL gets through (it would cut names and passwords short), and jansson's
     * strings are UTF-8, so the character count is the code point count. */
    check(strlen(s) == len);
    long cps = utf8_count((const uint8_t *)s, len);
    check(cps >= 0 && api_text_chars(s) == (size_t)cps);
    check_sanitize(s);
    check_model_text(s);
}

/* Every string and key anywhere in the value. */
static void walk(json_t *v, int depth)
{
    check(depth < 4096);
    if (json_is_string(v)) {
        check_string(json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        const char *key;
        json_t *item;
        json_object_foreach(v, key, item)
        {
            check_string(key, strlen(key));
            walk(item, depth + 1);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) walk(item, depth + 1);
    }
}

static void check_username(const char *name)
{
    const char *why = NULL;
    int rc = auth_username_check(name, &why);
    check(rc == 0 || rc == -EINVAL);
    check((rc == 0) == username_rule(name));
    check(rc == 0 || (why != NULL && why[0] != '\0'));
}

/* The names of a users POST: each checked; the valid ones' Kubernetes labels are labels
 * and never shared by two different users. */
static void check_names(json_t *names)
{
    char *label[MAX_NAMES];
    const char *name[MAX_NAMES];
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        if (!json_is_string(v))
            continue;
        check_username(json_string_value(v));
        if (n < MAX_NAMES && auth_username_check(json_string_value(v), NULL) == 0) {
            name[n] = json_string_value(v);
            label[n] = spawn__kube_user_label(name[n]);
            check(dns_label(label[n]));
            n++;
        }
    }
    for (i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            check((strcmp(name[i], name[j]) == 0) == (strcmp(label[i], label[j]) == 0));
    }
    for (i = 0; i < n; i++)
        free(label[i]);
}

static const struct config *profiles_config(void)
{
    static struct config cfg;
    static bool ready;
    if (!ready) {
        struct buf errors = BUF_INIT;
        config_init(&cfg);
        check(config_set(&cfg, "kube.profiles",
                         "{\"gpu\":{\"display_name\":\"GPU\",\"image\":\"ws-cuda:1\","
                         "\"cpu_limit\":\"8\",\"env\":[\"CUDA=1\"],"
                         "\"node_selector\":{\"gpu\":\"yes\"}},"
                         "\"small\":{\"mem_limit\":\"512Mi\"},\"x-1\":{}}",
                         "fuzz", &errors) == 0);
        check(config_finish(&cfg, &errors) == 0);
        buf_free(&errors);
        ready = true;
    }
    return &cfg;
}

/* POST /hub/api/users/NAME/server {"profile": "..."}: known profiles build a pod, unknown
 * ones are refused with a message, and nothing in between. */
static void check_profile(const char *profile)
{
    const struct config *cfg = profiles_config();
    bool known = profile[0] == '\0' || strcmp(profile, "gpu") == 0 ||
                 strcmp(profile, "small") == 0 || strcmp(profile, "x-1") == 0;
    check(spawn__kube_profile_exists(cfg, profile) == known);
    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(cfg, "alice", profile, &err);
    check((pod != NULL) == known && (pod != NULL) == (err == NULL));
    json_decref(pod);
    free(err);
}

static void check_fields(json_t *body)
{
    json_t *v = json_object_get(body, "usernames");
    if (json_is_array(v))
        check_names(v);
    v = json_object_get(body, "name");
    if (json_is_string(v))
        check_username(json_string_value(v));
    v = json_object_get(body, "password");
    if (json_is_string(v)) {
        for (size_t min = 0; min <= 9; min += 8) {
            const char *why = NULL;
            int rc = auth_password_check_policy(json_string_value(v), min, &why);
            check((rc == 0) == password_rule(json_string_value(v), min));
            check(rc == 0 || (rc == -EINVAL && why != NULL && why[0] != '\0'));
        }
    }
    v = json_object_get(body, "profile");
    if (json_is_string(v))
        check_profile(json_string_value(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t err_sizes[3] = {256, 48, 2};
    const char *text = (const char *)data;
    if (sodium_init() < 0)
        abort();

    /* The raw bytes, as an error message would quote them. */
    char *raw = strndup(text, size);
    check_sanitize(raw);
    check_model_text(raw);
    {
        const char *why = NULL;
        int rc = auth_password_check_policy(raw, 8, &why);
        check((rc == 0) == password_rule(raw, 8));
    }
    free(raw);

    char err[256];
    size_t esz = err_sizes[size % 3];
    memset(err, 'Z', sizeof err);
    json_t *body = api_body_parse(text, size, err, esz);

    /* The same reading as jansson's strict one, objects only. */
    json_error_t jerr;
    json_t *ref = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    check((body != NULL) == json_is_object(ref));
    if (body == NULL) {
        check(memchr(err, '\0', esz) != NULL);
        check(printable(err));
        /* The message says which of the two went wrong, cut to the buffer. */
        const char *want =
            ref != NULL ? "the request body must be a JSON object" : "invalid JSON at line ";
        size_t cmp = strlen(want) < esz - 1 ? strlen(want) : esz - 1;
        check(strncmp(err, want, cmp) == 0);
        json_decref(ref);
        return 0;
    }
    check(json_equal(body, ref));
    json_decref(ref);

    walk(body, 0);
    check_fields(body);

    /* What was accepted reads back the same after a dump. */
    char *dump = json_dumps(body, JSON_COMPACT);
    check(dump != NULL);
    json_t *again = api_body_parse(dump, strlen(dump), err, sizeof err);
    check(again != NULL && json_equal(body, again));
    json_decref(again);
    free(dump);
    json_decref(body);
    return 0;
}

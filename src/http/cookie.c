/* Cookie header parsing, stripping and Set-Cookie formatting (see cookie.h). */
#include "http/cookie.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "http/url.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E */
static bool is_cookie_octet(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\';
}

/* One ';'-separated pair, trimmed. */
struct pair {
    const char *start; /* the whole pair */
    size_t len;
    const char *name; /* NULL when the pair has no '=' */
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A control byte (other than HT) never belongs in a cookie-string, and a NUL would cut
 * the C strings made from it short. */
static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

/* Finds the next non-empty pair at or after *pos, skipping pairs with control bytes.
 * Returns false at the end. */
static bool next_pair(const char *h, size_t len, size_t *pos, struct pair *p)
{
    while (*pos < len) {
        size_t start = *pos;
        const char *semi = memchr(h + start, ';', len - start);
        size_t end = semi ? (size_t)(semi - h) : len;
        *pos = semi ? end + 1 : len;
        const char *s = h + start;
        size_t n = end - start;
        trim(&s, &n);
        if (n == 0 || has_control(s, n))
            continue;
        p->start = s;
        p->len = n;
        const char *eq = memchr(s, '=', n);
        if (eq == NULL) {
            p->name = NULL;
            p->name_len = 0;
            p->value = NULL;
            p->value_len = 0;
            return true;
        }
        p->name = s;
        p->name_len = (size_t)(eq - s);
        trim(&p->name, &p->name_len);
        p->value = eq + 1;
        p->value_len = (size_t)(s + n - p->value);
        trim(&p->value, &p->value_len);
        return true;
    }
    return false;
}

static bool pair_named(const struct pair *p, const char *name, size_t name_len)
{
    return p->name != NULL && p->name_len == name_len && memcmp(p->name, name, name_len) == 0;
}

int http_cookie_get(const char *header, size_t len, const char *name, char **value_out)
{
    return http_cookie_get_nth(header, len, name, 0, value_out);
}

int http_cookie_get_nth(const char *header, size_t len, const char *name, int n_th,
                        char **value_out)
{
    *value_out = NULL;
    size_t name_len = strlen(name);
    size_t pos = 0;
    struct pair p;
    int seen = 0;
    while (next_pair(header, len, &pos, &p)) {
        if (!pair_named(&p, name, name_len) || seen++ < n_th)
            continue;
        const char *v = p.value;
        size_t n = p.value_len;
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v++;
            n -= 2;
        }
        *value_out = xstrndup(v, n);
        return 0;
    }
    return -ENOENT;
}

int http_cookie_count(const char *header, size_t len, const char *name)
{
    size_t name_len = strlen(name);
    size_t pos = 0;
    struct pair p;
    int count = 0;
    while (next_pair(header, len, &pos, &p)) {
        if (pair_named(&p, name, name_len))
            count++;
    }
    return count;
}

/* How many layers of quoting or percent-encoding are peeled off a name. No parser we
 * know decodes a cookie name more than once; a name still wrapped after this many layers
 * is dropped rather than trusted. The bound also keeps "%252525..." from costing
 * quadratic time. */
#define MAX_NAME_LAYERS 4

/* Asks `drop` about one candidate name and the spellings other parsers might decode it
 * to: without surrounding quotes, and percent-decoded. */
static bool drop_name(const char *name, size_t n, http_cookie_drop_cb drop, void *data, int depth)
{
    trim(&name, &n);
    if (drop(name, n, data))
        return true;
    bool quoted = n >= 2 && name[0] == '"' && name[n - 1] == '"';
    bool encoded = memchr(name, '%', n) != NULL;
    if ((quoted || encoded) && depth >= MAX_NAME_LAYERS)
        return true;
    if (quoted && drop_name(name + 1, n - 2, drop, data, depth + 1))
        return true;
    if (encoded) {
        char *decoded = http_urldecode(name, n, false);
        bool hit = false;
        /* A name that does not decode is passed on as it is; no parser reads it as ours. */
        if (decoded != NULL)
            hit = drop_name(decoded, strlen(decoded), drop, data, depth + 1);
        free(decoded);
        if (hit)
            return true;
    }
    return false;
}

/* The name a parser would read from `s`: up to the first '=', or all of it. */
static bool drop_part(const char *s, size_t n, http_cookie_drop_cb drop, void *data)
{
    const char *eq = memchr(s, '=', n);
    return drop_name(s, eq ? (size_t)(eq - s) : n, drop, data, 0);
}

static bool drop_pair(const struct pair *p, http_cookie_drop_cb drop, void *data)
{
    if (drop_part(p->start, p->len, drop, data))
        return true;
    if (memchr(p->start, ',', p->len) == NULL)
        return false;
    size_t i = 0;
    while (i < p->len) {
        const char *comma = memchr(p->start + i, ',', p->len - i);
        size_t end = comma ? (size_t)(comma - p->start) : p->len;
        if (drop_part(p->start + i, end - i, drop, data))
            return true;
        i = end + 1;
    }
    return false;
}

char *http_cookie_strip(const char *header, size_t len, http_cookie_drop_cb drop, void *data)
{
    struct buf out = BUF_INIT;
    size_t pos = 0;
    struct pair p;
    while (next_pair(header, len, &pos, &p)) {
        if (drop_pair(&p, drop, data))
            continue;
        if (out.len > 0)
            buf_append(&out, "; ", 2);
        buf_append(&out, p.start, p.len);
    }
    if (out.len == 0) {
        buf_free(&out);
        return NULL;
    }
    return buf_steal(&out);
}

/* av-octet: any CHAR except CTLs or ';'. */
static bool attr_value_ok(const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c < 0x20 || *c >= 0x7f || *c == ';')
            return false;
    }
    return true;
}

static bool domain_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '.';
        if (!ok)
            return false;
    }
    return true;
}

char *http_cookie_format(const char *name, const char *value, const struct http_cookie_attrs *a)
{
    static const struct http_cookie_attrs session = {NULL, -1, false, false, NULL, NULL};
    if (a == NULL)
        a = &session;
    if (name == NULL || value == NULL || *name == '\0')
        return NULL;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (!is_tchar(*c))
            return NULL;
    }
    for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
        if (!is_cookie_octet(*c))
            return NULL;
    }
    if (a->path != NULL && !attr_value_ok(a->path))
        return NULL;
    if (a->domain != NULL && !domain_ok(a->domain))
        return NULL;
    if (a->same_site != NULL && strcmp(a->same_site, "Lax") != 0 &&
        strcmp(a->same_site, "Strict") != 0 && strcmp(a->same_site, "None") != 0)
        return NULL;
    /* Browsers drop these silently; failing here makes the mistake visible. */
    if (a->same_site != NULL && strcmp(a->same_site, "None") == 0 && !a->secure)
        return NULL;
    if (strncasecmp(name, "__Secure-", 9) == 0 && !a->secure)
        return NULL;
    if (strncasecmp(name, "__Host-", 7) == 0 &&
        (!a->secure || a->domain != NULL || a->path == NULL || strcmp(a->path, "/") != 0))
        return NULL;

    struct buf b = BUF_INIT;
    buf_appendf(&b, "%s=%s", name, value);
    if (a->path != NULL)
        buf_appendf(&b, "; Path=%s", a->path);
    if (a->domain != NULL)
        buf_appendf(&b, "; Domain=%s", a->domain);
    if (a->max_age == 0)
        buf_append_str(&b, "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    else if (a->max_age > 0)
        buf_appendf(&b, "; Max-Age=%" PRId64, a->max_age);
    if (a->secure)
        buf_append_str(&b, "; Secure");
    if (a->http_only)
        buf_append_str(&b, "; HttpOnly");
    if (a->same_site != NULL)
        buf_appendf(&b, "; SameSite=%s", a->same_site);
    return buf_steal(&b);
}

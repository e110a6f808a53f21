/* Request-target splitting, path normalisation and percent-encoding (see url.h for the
 * exact rules and docs/http.md for why each one exists). */
#include "http/url.h"

#include "core/alloc.h"
#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char hex_digits[] = "0123456789ABCDEF";

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

int http_target_split(const char *target, size_t len, char **path_out, char **query_out)
{
    *path_out = NULL;
    *query_out = NULL;
    if (len == 0 || target[0] != '/')
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)target[i];
        /* A fragment never belongs in a request; the rest cannot reach us through the
         * strict request-line check, but this function may see other input. */
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return -EINVAL;
    }
    const char *q = memchr(target, '?', len);
    size_t path_len = q ? (size_t)(q - target) : len;
    *path_out = xstrndup(target, path_len);
    if (q)
        *query_out = xstrndup(q + 1, len - path_len - 1);
    return 0;
}

/* Returns 1 when the decoded segment s[0..n) is ".", 2 when it is "..", else 0. */
static int dot_segment(const char *s, size_t n)
{
    if (n == 1 && s[0] == '.')
        return 1;
    if (n == 2 && s[0] == '.' && s[1] == '.')
        return 2;
    return 0;
}

/* A dot segment with a path parameter (".;x", "..;x") is read as a dot segment by some
 * servers (Tomcat and friends strip the parameter), so it is refused rather than kept. */
static bool dot_segment_with_param(const char *s, size_t n)
{
    return (n >= 2 && s[0] == '.' && s[1] == ';') ||
           (n >= 3 && s[0] == '.' && s[1] == '.' && s[2] == ';');
}

int http_path_normalize(const char *raw_path, char **out)
{
    *out = NULL;
    size_t n = strlen(raw_path);
    if (n == 0 || raw_path[0] != '/')
        return -EINVAL;
    /* Output never outgrows the input by more than the '/' written after the last segment
     * (escapes are copied at their own length or shrink to one byte). */
    char *o = xmalloc(n + 2);
    size_t olen = 0;
    o[olen++] = '/';
    bool ends_in_name = false;
    size_t i = 0;
    while (i < n) {
        i++; /* the '/' that starts this segment */
        size_t seg = olen;
        while (i < n && raw_path[i] != '/') {
            unsigned char c = (unsigned char)raw_path[i];
            if (c == '%') {
                int hi = i + 1 < n ? hex_value((unsigned char)raw_path[i + 1]) : -1;
                int lo = i + 2 < n ? hex_value((unsigned char)raw_path[i + 2]) : -1;
                if (hi < 0 || lo < 0)
                    goto fail;
                unsigned char v = (unsigned char)(hi * 16 + lo);
                if (v == '/' || v == '\\' || v < 0x20 || v == 0x7f)
                    goto fail;
                if (is_unreserved(v)) {
                    o[olen++] = (char)v;
                } else {
                    o[olen++] = '%';
                    o[olen++] = hex_digits[hi];
                    o[olen++] = hex_digits[lo];
                }
                i += 3;
                continue;
            }
            if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '?' || c == '#')
                goto fail;
            o[olen++] = (char)c;
            i++;
        }
        size_t seg_len = olen - seg;
        if (seg_len == 0) {
            ends_in_name = false;
            continue;
        }
        if (dot_segment_with_param(o + seg, seg_len))
            goto fail;
        int dots = dot_segment(o + seg, seg_len);
        if (dots == 0) {
            o[olen++] = '/';
            ends_in_name = true;
            continue;
        }
        olen = seg;
        /* ".." drops the previous segment: o[seg - 1] is the '/' that ends it. */
        if (dots == 2 && seg > 1) {
            size_t j = seg - 2;
            while (o[j] != '/')
                j--;
            olen = j + 1;
        }
        ends_in_name = false;
    }
    if (ends_in_name)
        olen--; /* the path did not end in '/': drop the separator written after its name */
    o[olen] = '\0';
    *out = o;
    return 0;
fail:
    free(o);
    return -EINVAL;
}

void http_urlencode(struct buf *out, const char *s)
{
    buf_reserve(out, strlen(s));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (is_unreserved(*p)) {
            buf_append_char(out, (char)*p);
        } else {
            char esc[3] = {'%', hex_digits[*p >> 4], hex_digits[*p & 15]};
            buf_append(out, esc, sizeof(esc));
        }
    }
}

char *http_urldecode(const char *s, size_t len, bool plus_is_space)
{
    char *o = xmalloc(len + 1);
    size_t olen = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 1 < len ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                goto fail;
            o[olen++] = (char)(hi * 16 + lo);
            i += 3;
            continue;
        }
        if (c == '\0')
            goto fail;
        o[olen++] = (plus_is_space && c == '+') ? ' ' : (char)c;
        i++;
    }
    o[olen] = '\0';
    return o;
fail:
    free(o);
    return NULL;
}

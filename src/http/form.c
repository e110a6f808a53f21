/* Form bodies and query strings (see form.h). */
#include "http/form.h"

#include "core/alloc.h"
#include "http/url.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One field of a form: the raw bytes of its name and value. */
struct field {
    const char *name;
    size_t name_len;
    const char *value; /* NULL when there was no '=' */
    size_t value_len;
};

/* Finds the next non-empty field at or after *pos. Returns false at the end. */
static bool next_field(const char *body, size_t len, size_t *pos, struct field *f)
{
    while (*pos < len) {
        size_t start = *pos;
        const char *amp = memchr(body + start, '&', len - start);
        size_t end = amp ? (size_t)(amp - body) : len;
        *pos = amp ? end + 1 : len;
        if (end == start)
            continue;
        const char *eq = memchr(body + start, '=', end - start);
        f->name = body + start;
        if (eq) {
            f->name_len = (size_t)(eq - f->name);
            f->value = eq + 1;
            f->value_len = (size_t)(body + end - f->value);
        } else {
            f->name_len = end - start;
            f->value = NULL;
            f->value_len = 0;
        }
        return true;
    }
    return false;
}

static char *decode(const char *s, size_t n)
{
    return http_urldecode(s, n, true);
}

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

/* Decodes s[0..n) on the fly (the rules of http_urldecode with '+' as space) and compares
 * it with `want`. Returns 1 when equal, 0 when not, -1 when s is malformed. Allocates
 * nothing, so that looking one field up does not copy every other field. */
static int decoded_equals(const char *s, size_t n, const char *want)
{
    bool equal = true;
    size_t w = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 1 < n ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (unsigned char)(hi * 16 + lo);
            i += 3;
        } else {
            if (c == '\0')
                return -1;
            if (c == '+')
                c = ' ';
            i++;
        }
        /* want[w] is NUL at its end and c is never NUL, so this also stops at the end. */
        if (equal && (unsigned char)want[w] == c)
            w++;
        else
            equal = false;
    }
    return equal && want[w] == '\0';
}

char *http_form_get(const char *body, size_t len, const char *name)
{
    size_t pos = 0;
    struct field f;
    const struct field *match = NULL;
    struct field found;
    /* Every field is checked, not only up to the match: a body is either well-formed or
     * not, whatever name is asked for, so that http_form_get and http_form_parse agree. */
    while (next_field(body, len, &pos, &f)) {
        int rc = decoded_equals(f.name, f.name_len, name);
        if (rc < 0)
            return NULL;
        if (f.value != NULL && decoded_equals(f.value, f.value_len, "") < 0)
            return NULL;
        if (rc == 1 && match == NULL) {
            found = f;
            match = &found;
        }
    }
    if (match == NULL)
        return NULL;
    return match->value ? decode(match->value, match->value_len) : xstrdup("");
}

int http_form_parse(const char *body, size_t len, struct http_form *out)
{
    memset(out, 0, sizeof(*out));
    size_t pos = 0;
    struct field f;
    size_t cap = 0;
    int rc = 0;
    while (next_field(body, len, &pos, &f)) {
        if (out->count == HTTP_FORM_MAX_FIELDS) {
            rc = -E2BIG;
            goto fail;
        }
        char *n = decode(f.name, f.name_len);
        char *v = f.value ? decode(f.value, f.value_len) : xstrdup("");
        if (n == NULL || v == NULL) {
            free(n);
            free(v);
            rc = -EINVAL;
            goto fail;
        }
        if (out->count == cap) {
            cap = cap ? cap * 2 : 8;
            out->names = xrealloc(out->names, cap * sizeof(*out->names));
            out->values = xrealloc(out->values, cap * sizeof(*out->values));
        }
        out->names[out->count] = n;
        out->values[out->count] = v;
        out->count++;
    }
    return 0;
fail:
    http_form_free(out);
    return rc;
}

void http_form_free(struct http_form *form)
{
    for (size_t i = 0; i < form->count; i++) {
        free(form->names[i]);
        free(form->values[i]);
    }
    free(form->names);
    free(form->values);
    memset(form, 0, sizeof(*form));
}

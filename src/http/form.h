/* application/x-www-form-urlencoded: login and admin form bodies, and query strings.
 *
 * Fields are separated by '&'; each is name[=value] with '+' meaning a space and %XX
 * escapes decoded. Empty fields ("a=1&&b=2") are skipped, a field without '=' has the
 * value "". A body is malformed when any escape in it is invalid or decodes to NUL. */
#ifndef CODEHUB_HTTP_FORM_H
#define CODEHUB_HTTP_FORM_H

#include <stddef.h>

/* At most this many fields are parsed; a form with more is refused. */
#define HTTP_FORM_MAX_FIELDS 256

struct http_form {
    size_t count;
    char **names;  /* decoded, NUL-terminated */
    char **values; /* decoded, NUL-terminated; "" for a field without '=' */
};

/* Returns the decoded value of the first field named `name` (compared after decoding),
 * which the caller frees, or NULL when there is no such field or the body is malformed. */
char *http_form_get(const char *body, size_t len, const char *name);

/* Parses every field of body[0..len) into *out, in order, duplicates kept. Returns 0, or
 * -EINVAL when the body is malformed, or -E2BIG with more than HTTP_FORM_MAX_FIELDS fields;
 * on error *out is left empty. Free the result with http_form_free(). */
int http_form_parse(const char *body, size_t len, struct http_form *out);

/* Frees what http_form_parse() stored in `form` and empties it; safe on an empty form. */
void http_form_free(struct http_form *form);

#endif

/* Cookies (RFC 6265): reading the Cookie request header, removing codehub's own cookies
 * before a request is forwarded to a workspace, and writing Set-Cookie values.
 *
 * A Cookie header is read as pairs separated by ';', each trimmed of SP and HT; a pair is
 * name=value split at the first '=' (name and value trimmed again), and a value wrapped in
 * DQUOTEs is returned without them. Names compare case-sensitively. Values are opaque:
 * nothing is percent-decoded. A pair holding a control byte other than HT (a NUL, CR, LF,
 * DEL...) is not a cookie: it is never found and http_cookie_strip() drops it. */
#ifndef CODEHUB_HTTP_COOKIE_H
#define CODEHUB_HTTP_COOKIE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Finds the first cookie named `name` in the Cookie header value header[0..len).
 * Returns 0 with *value_out set (caller frees), or -ENOENT (*value_out = NULL). A pair
 * without '=' has no name and is never found. Use http_cookie_count() to notice a cookie
 * sent twice (for example one tossed in by another site under a different Path). */
int http_cookie_get(const char *header, size_t len, const char *name, char **value_out);

/* Like http_cookie_get(), for the n_th (0-based) cookie named `name`: a browser sends
 * every cookie that matches, so one name may come several times. */
int http_cookie_get_nth(const char *header, size_t len, const char *name, int n_th,
                        char **value_out);

/* Returns how many cookies in header[0..len) are named `name` (0 when none). */
int http_cookie_count(const char *header, size_t len, const char *name);

/* Selects cookies to drop by name. `name` is NOT NUL-terminated: use name_len. */
typedef bool (*http_cookie_drop_cb)(const char *name, size_t name_len, void *data);

/* Returns a new Cookie header value (caller frees) holding the pairs of header[0..len)
 * that `drop` does not select, each trimmed and joined with "; ", or NULL when none
 * remain. Empty pairs vanish. A pair is dropped when `drop` selects any name another
 * parser might read from it, so that a cookie cannot be smuggled past the filter:
 *   - its name as read above, or the whole pair when it has no '=';
 *   - the same with surrounding DQUOTEs removed ("\"sid\"=x");
 *   - the percent-decoded name, when it holds a '%' ("s%69d=x");
 *   - each of the above for every ','-separated part of the pair, because RFC 2965-era
 *     parsers also split on ',' ("a=1, sid=x").
 * `drop` may be called several times per pair. */
char *http_cookie_strip(const char *header, size_t len, http_cookie_drop_cb drop, void *data);

struct http_cookie_attrs {
    const char *path; /* NULL: no Path attribute */
    int64_t max_age;  /* <0: session cookie; 0: delete */
    bool http_only;
    bool secure;
    const char *same_site; /* "Lax", "Strict", "None" or NULL */
    const char *domain;    /* NULL = host-only */
};

/* Returns a Set-Cookie header value (caller frees), e.g.
 * "sid=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax", or NULL when the input
 * is invalid: a name that is not a token, a value outside cookie-octets (no space, DQUOTE,
 * ',', ';', '\\' or control byte), a Path or Domain with ';' or a control byte (Domain:
 * letters, digits, '-' and '.' only), an unknown SameSite, SameSite=None without Secure,
 * a "__Secure-" name without Secure or a "__Host-" name without Secure, Path=/ and no
 * Domain. With max_age == 0 it writes "Max-Age=0" and an Expires date in 1970 so that
 * every browser deletes the cookie. `a` may be NULL for a plain session cookie. */
char *http_cookie_format(const char *name, const char *value, const struct http_cookie_attrs *a);

#endif

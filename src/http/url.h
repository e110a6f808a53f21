/* Request targets, paths and percent-encoding.
 *
 * The proxy decides who may reach /user/NAME/... from the path, so the path it checks
 * must be the path every later hop sees. http_path_normalize() produces one canonical
 * spelling and refuses everything that different servers decode differently (an encoded
 * slash, a backslash, a NUL), so that a prefix check on its output cannot be walked
 * around with "..", "%2e%2e", "//" or "%2F". */
#ifndef CODEHUB_HTTP_URL_H
#define CODEHUB_HTTP_URL_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

/* Splits an origin-form request-target ("/path?query") into its raw parts.
 * Only origin-form is accepted: absolute-form ("http://host/x"), authority-form
 * ("host:443") and asterisk-form ("*") give -EINVAL; codehub is an origin server, and an
 * authority in the target could disagree with the Host header. A target holding a '#', a
 * NUL, a control byte, a space or a non-ASCII byte is -EINVAL as well.
 * Returns 0 with *path_out the raw path (still percent-encoded, never empty) and
 * *query_out the raw query without its '?' ("" for a bare '?', NULL when there is no
 * '?'); the caller frees both. On error both are set to NULL. */
int http_target_split(const char *target, size_t len, char **path_out, char **query_out);

/* Turns a raw path into its canonical form, or refuses it. The rules, in order:
 *  - The path must start with '/'. Every byte must be printable ASCII (0x21..0x7e);
 *    '\\', '?' and '#' are refused too.
 *  - Each %-escape must be '%' and two hex digits. An escape of an unreserved character
 *    (ALPHA DIGIT - . _ ~) is decoded; an escape of '/' (%2F), '\\' (%5C), NUL or any
 *    other control byte (%00-%1F, %7F) is refused; every other escape is kept, its hex
 *    upper-cased ("%3a" -> "%3A"). Nothing is decoded twice: "%252e" stays "%252E".
 *  - Empty segments collapse ("//a" -> "/a"). After decoding, a "." segment is dropped
 *    and a ".." segment drops the segment before it, never going above the root
 *    ("/a/%2e%2E/../b" -> "/b", "/../x" -> "/x"). A segment "." or ".." followed by
 *    ';' (a path parameter, which some servers strip) is refused.
 *  - A trailing '/' is kept, and a path ending in a "." or ".." segment ends in '/'.
 * The result starts with '/', contains no "//", no "." or ".." segment, no '\\', no
 * control byte and no encoded '/', so "starts with /user/ann/ or equals /user/ann" is a
 * sound test on it. Returns 0 with *out set (caller frees), or -EINVAL (*out = NULL). */
int http_path_normalize(const char *raw_path, char **out);

/* Appends `s` to `out` with every byte but the unreserved characters (ALPHA DIGIT
 * - . _ ~) written as %XX (upper-case hex), e.g. for a `next=` query value. */
void http_urlencode(struct buf *out, const char *s);

/* Decodes %XX escapes in s[0..len) (and '+' as a space when plus_is_space). Returns a new
 * NUL-terminated string the caller frees, or NULL when an escape is invalid or the result
 * would hold a NUL (an encoded %00 or a raw NUL in the input). */
char *http_urldecode(const char *s, size_t len, bool plus_is_space);

#endif

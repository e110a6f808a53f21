/* libFuzzer driver: request-target split, path normalisation, percent-encoding.
 * Checks the promises the proxy's access rule stands on: a normalised path starts with
 * '/', has no "//", "/./" or "/../", no dot segment at its end, no backslash, no control
 * byte, no encoded slash, and normalising it again changes nothing. */
#include "core/buf.h"
#include "http/url.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static void check_normalized(const char *raw)
{
    char *out = NULL;
    int rc = http_path_normalize(raw, &out);
    if (rc != 0) {
        check(rc == -EINVAL && out == NULL);
        return;
    }
    check(out[0] == '/');
    check(strstr(out, "//") == NULL);
    check(strstr(out, "/./") == NULL);
    check(strstr(out, "/../") == NULL);
    check(!ends_with(out, "/.") && !ends_with(out, "/.."));
    check(strchr(out, '\\') == NULL);
    check(strcasestr(out, "%2f") == NULL && strcasestr(out, "%5c") == NULL);
    check(strstr(out, "%00") == NULL);
    check(strlen(out) <= strlen(raw) + 1);
    for (const unsigned char *c = (const unsigned char *)out; *c; c++)
        check(*c > 0x20 && *c < 0x7f);
    char *again = NULL;
    check(http_path_normalize(out, &again) == 0);
    check(strcmp(again, out) == 0);
    free(again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char *path = NULL, *query = NULL;
    if (http_target_split(s, size, &path, &query) == 0) {
        check(path[0] == '/');
        check(strchr(path, '?') == NULL && strchr(path, '#') == NULL);
        check(strlen(path) + (query ? strlen(query) + 1 : 0) == size);
        check_normalized(path);
    } else {
        check(path == NULL && query == NULL);
    }
    free(path);
    free(query);

    /* The raw input as a path too (it may hold bytes the split refuses). */
    char *raw = strndup(s, size);
    check_normalized(raw);

    /* Encoding then decoding gives the input back. */
    struct buf b = BUF_INIT;
    http_urlencode(&b, raw);
    for (size_t i = 0; i < b.len; i++)
        check(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%",
                     b.data[i]) != NULL);
    char *back = http_urldecode(b.data ? b.data : "", b.len, false);
    check(back != NULL && strcmp(back, raw) == 0);
    free(back);
    buf_free(&b);

    char *dec = http_urldecode(s, size, size % 2 == 0);
    if (dec != NULL)
        check(strlen(dec) <= size);
    free(dec);
    free(raw);
    return 0;
}

/* libFuzzer driver: Cookie header reading and stripping, Set-Cookie formatting.
 * The property that matters: after http_cookie_strip, no cookie the filter selects can be
 * read back out of the result, and stripping again changes nothing. */
#include "http/cookie.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static bool drop_ours(const char *name, size_t len, void *data)
{
    (void)data;
    return (len == 15 && memcmp(name, "codehub-session", 15) == 0) ||
           (len == 12 && memcmp(name, "codehub-xsrf", 12) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *h = (const char *)data;

    char *v = NULL;
    int rc = http_cookie_get(h, size, "codehub-session", &v);
    int count = http_cookie_count(h, size, "codehub-session");
    check((rc == 0) == (count > 0));
    check(rc == 0 || (rc == -ENOENT && v == NULL));
    free(v);

    char *s = http_cookie_strip(h, size, drop_ours, NULL);
    if (s != NULL) {
        size_t n = strlen(s);
        check(n > 0 && n <= size + size / 2 + 2);
        check(http_cookie_count(s, n, "codehub-session") == 0);
        check(http_cookie_count(s, n, "codehub-xsrf") == 0);
        char *again = http_cookie_strip(s, n, drop_ours, NULL);
        check(again != NULL && strcmp(again, s) == 0);
        free(again);
        /* A comma-splitting reader finds nothing of ours either. */
        for (char *c = s; (c = strstr(c, "codehub-session")) != NULL; c++) {
            const char *after = c + 15;
            while (*after == ' ' || *after == '\t')
                after++;
            const char *before = c;
            while (before > s && (before[-1] == ' ' || before[-1] == '\t'))
                before--;
            bool at_start = before == s || before[-1] == ',' || before[-1] == ';';
            check(!(at_start && (*after == '=' || *after == '\0' || *after == ';')));
        }
    }
    free(s);

    /* Formatting: split the input into name and value at the first NUL-free ':'. */
    if (size < 512) {
        char *copy = strndup(h, size);
        char *colon = strchr(copy, ':');
        if (colon != NULL) {
            *colon = '\0';
            struct http_cookie_attrs a = {"/",           (int64_t)(size % 3) - 1,        true,
                                          size % 2 == 0, size % 2 == 0 ? "None" : "Lax", NULL};
            char *set = http_cookie_format(copy, colon + 1, &a);
            if (set != NULL) {
                check(strpbrk(set, "\r\n") == NULL);
                const char *semi = strchr(set, ';');
                check(semi != NULL);
                char *back = NULL;
                check(http_cookie_get(set, (size_t)(semi - set), copy, &back) == 0);
                check(strcmp(back, colon + 1) == 0 || (colon[1] == '\0' && back[0] == '\0'));
                free(back);
            }
            free(set);
        }
        free(copy);
    }
    return 0;
}

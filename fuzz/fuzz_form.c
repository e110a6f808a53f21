/* libFuzzer driver: x-www-form-urlencoded parsing. http_form_get and http_form_parse
 * must agree: same fields, first one wins, malformed means malformed for both. */
#include "http/form.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct http_form f;
    int rc = http_form_parse(body, size, &f);
    if (rc == 0) {
        check(f.count <= HTTP_FORM_MAX_FIELDS);
        for (size_t i = 0; i < f.count && i < 16; i++) {
            char *v = http_form_get(body, size, f.names[i]);
            check(v != NULL);
            size_t first = 0;
            while (strcmp(f.names[first], f.names[i]) != 0)
                first++;
            check(strcmp(v, f.values[first]) == 0);
            free(v);
        }
        /* A name that is not among the fields is not found. */
        const char *absent = "\x01not-a-field";
        bool present = false;
        for (size_t i = 0; i < f.count; i++)
            present = present || strcmp(f.names[i], absent) == 0;
        char *none = http_form_get(body, size, absent);
        check(present == (none != NULL));
        free(none);
    } else {
        check(rc == -EINVAL || rc == -E2BIG);
        check(f.count == 0 && f.names == NULL && f.values == NULL);
        if (rc == -EINVAL) {
            char *v = http_form_get(body, size, "a");
            check(v == NULL);
        }
    }
    http_form_free(&f);
    return 0;
}

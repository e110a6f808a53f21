#include "auth/username.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

static const char msg_rule[] = "must be 1 to 32 characters: lowercase letters, digits, '.', '_' "
                               "or '-', starting with a letter or digit";
static const char msg_lower[] = "must be lowercase";

/* Character classes by hand rather than <ctype.h>: isalnum() depends on the locale, and
 * a name valid under one locale must be valid under every other. */
static bool is_lower_or_digit(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_punct_allowed(char c)
{
    return c == '.' || c == '_' || c == '-';
}

int auth_username_check(const char *name, const char **why)
{
    const char *reason = msg_rule;
    bool has_upper = false;
    size_t i;

    if (name == NULL || name[0] == '\0')
        goto fail;
    for (i = 0; name[i] != '\0'; i++) {
        char c = name[i];
        if (i >= AUTH_USERNAME_MAX)
            goto fail;
        if (is_upper(c)) {
            has_upper = true;
            continue;
        }
        if (is_lower_or_digit(c))
            continue;
        if (i > 0 && is_punct_allowed(c))
            continue;
        goto fail;
    }
    if (has_upper) {
        /* Everything else about the name is right: say exactly what to change. */
        reason = msg_lower;
        goto fail;
    }
    return 0;

fail:
    if (why != NULL)
        *why = reason;
    return -EINVAL;
}

/* `codehub token create NAME`: issues an API token offline. The token is printed once, on
 * stdout and alone, so that a script can capture it; the store keeps only its hash. */
#include "cli/cli.h"

#include "auth/token.h"
#include "auth/username.h"
#include "core/alloc.h"
#include "store/store.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Longest accepted --expires-in: a hundred years. Longer is "never", which is what
 * leaving the option out means. */
#define EXPIRES_IN_MAX ((int64_t)100 * 365 * 24 * 3600)
/* Longest accepted --note, in bytes: it is shown in token lists. */
#define NOTE_MAX 256

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses a positive decimal number of seconds. Returns 0 or -EINVAL. */
static int parse_seconds(const char *s, int64_t *out)
{
    int64_t v = 0;
    if (s[0] == '\0')
        return -EINVAL;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (*p - '0');
        if (v > EXPIRES_IN_MAX)
            return -EINVAL;
    }
    if (v <= 0)
        return -EINVAL;
    *out = v;
    return 0;
}

/* A note is shown to people: printable text only. */
static bool note_valid(const char *note)
{
    if (strlen(note) > NOTE_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)note; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static bool name_in(const struct config_list *list, const char *name)
{
    for (size_t i = 0; i < list->n; i++) {
        if (strcmp(list->items[i], name) == 0)
            return true;
    }
    return false;
}

static int token_create_run(const struct cli_args *args)
{
    const char *name = args->args[0];
    const char *scope_arg = cli_args_value(args, "scope");
    const char *expires_arg = cli_args_value(args, "expires-in");
    const char *note = cli_args_value(args, "note");
    enum store_token_scope scope = STORE_SCOPE_USER;
    int64_t expires_in = 0;
    const char *why = NULL;

    if (scope_arg != NULL && strcmp(scope_arg, "admin") == 0)
        scope = STORE_SCOPE_ADMIN;
    else if (scope_arg != NULL && strcmp(scope_arg, "user") != 0)
        return cli_usage_error(args->cmd, "--scope must be admin or user, not '%s'", scope_arg);
    if (expires_arg != NULL && parse_seconds(expires_arg, &expires_in) < 0)
        return cli_usage_error(args->cmd,
                               "--expires-in must be a whole number of seconds from 1 to %lld",
                               (long long)EXPIRES_IN_MAX);
    if (note != NULL && !note_valid(note))
        return cli_usage_error(args->cmd,
                               "--note must be at most %d bytes of text without control "
                               "characters",
                               NOTE_MAX);
    if (auth_username_check(name, &why) < 0)
        return cli_fail("invalid user name '%s': %s", name, why);

    struct config cfg;
    struct store *st = NULL;
    struct store_user u = {0};
    struct store_token stored = {0};
    char *token = NULL;
    int code = CLI_EXIT_FAIL;
    config_init(&cfg);
    if (cli_config_load(args, true, &cfg) < 0)
        goto done;
    st = cli_store_open(&cfg);
    if (st == NULL)
        goto done;
    int rc = store_user_get(st, name, &u);
    if (rc == -ENOENT) {
        cli_fail("no such user: %s", name);
        goto done;
    }
    if (rc < 0) {
        cli_fail("cannot read user %s: %s", name, strerror(-rc));
        goto done;
    }
    /* The admins named in the configuration are admins too, as they are in the server. */
    if (scope == STORE_SCOPE_ADMIN && !u.admin && !name_in(&cfg.auth.admin_users, name)) {
        cli_fail("user %s is not an admin: an admin-scoped token needs an admin account "
                 "(use --scope user)",
                 name);
        goto done;
    }

    token = auth_token_new(AUTH_TOKEN_PREFIX_API);
    char hash[AUTH_TOKEN_HASH_HEX];
    char prefix[AUTH_TOKEN_DISPLAY_MAX];
    auth_token_hash(token, hash);
    auth_token_display_prefix(token, prefix);
    int64_t expires_ms = expires_in > 0 ? now_ms() + expires_in * 1000 : 0;
    rc = store_token_create(st, hash, prefix, u.id, scope, note != NULL ? note : "", expires_ms,
                            &stored);
    if (rc < 0) {
        cli_fail("cannot store the token: %s", strerror(-rc));
        goto done;
    }

    printf("%s\n", token);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        /* Nobody saw the token: a stored one would only be a secret nobody can revoke by
         * sight. Take it back. */
        store_token_delete(st, u.id, stored.id);
        cli_fail("cannot write the token to standard output; it was not kept");
        goto done;
    }
    char *detail =
        xasprintf("scope=%s prefix=%s expires_in=%lld",
                  scope == STORE_SCOPE_ADMIN ? "admin" : "user", prefix, (long long)expires_in);
    rc = store_event_add(st, "token.create", name, "cli", detail);
    free(detail);
    if (rc < 0)
        fprintf(stderr, "codehub: warning: cannot record the event: %s\n", strerror(-rc));
    code = CLI_EXIT_OK;
done:
    if (token != NULL) {
        sodium_memzero(token, strlen(token));
        free(token);
    }
    store_token_clear(&stored);
    store_user_clear(&u);
    store_close(st);
    config_free(&cfg);
    return code;
}

static const struct cli_option token_create_options[] = {
    {"scope", "admin|user", "what the token may do (default: user)"},
    {"expires-in", "SECONDS", "lifetime in seconds (default: never expires)"},
    {"note", "TEXT", "what the token is for, shown in token lists"},
    CLI_OPTION_CONFIG,
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

static const struct cli_command token_create = {
    .name = "create",
    .path = "token create",
    .synopsis = "NAME",
    .min_args = 1,
    .max_args = 1,
    .summary = "Create an API token for user NAME and print it (only it) on standard output.",
    .details = "Use it as 'Authorization: Bearer TOKEN'. The token is shown once: the store keeps\n"
               "only its hash. An admin-scoped token may act as admin and needs an admin user.\n",
    .options = token_create_options,
    .run = token_create_run,
};

static const struct cli_command *const token_subcommands[] = {&token_create, NULL};

const struct cli_command cli_token_command = {
    .name = "token",
    .path = "token",
    .summary = "Manage API tokens offline, in the store the server uses.",
    .subcommands = token_subcommands,
};

/* `codehub user add|list|del|passwd`: account management offline, against the same store
 * the server uses (SQLite in WAL mode lets both work on it at once). */
#include "cli/cli.h"

#include "auth/password.h"
#include "auth/username.h"
#include "core/alloc.h"
#include "spawn/kube.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Users fetched per store_user_list() call. */
#define LIST_PAGE 200

/* What every user command does first: check the name, load the configuration, open the
 * store. Returns 0 with *st open, or the exit code to return. */
static int user_begin(const struct cli_args *args, struct config *cfg, struct store **st)
{
    const char *why = NULL;
    *st = NULL;
    if (args->nargs > 0 && auth_username_check(args->args[0], &why) < 0)
        return cli_fail("invalid user name '%s': %s", args->args[0], why);
    if (cli_config_load(args, true, cfg) < 0)
        return CLI_EXIT_FAIL;
    *st = cli_store_open(cfg);
    return *st != NULL ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* Looks the user up; prints why and returns the exit code when that fails, else 0. */
static int user_get(struct store *st, const char *name, struct store_user *u)
{
    int rc = store_user_get(st, name, u);
    if (rc == -ENOENT)
        return cli_fail("no such user: %s", name);
    if (rc < 0)
        return cli_fail("cannot read user %s: %s", name, strerror(-rc));
    return CLI_EXIT_OK;
}

/* Reads, checks and hashes a new password from stdin. Returns 0 or the exit code. */
static int password_from_stdin(const char *name, const struct config *cfg,
                               char hash[AUTH_PASSWORD_HASH_MAX])
{
    char pw[AUTH_PASSWORD_MAX_BYTES + 2];
    const char *why = NULL;
    int code = CLI_EXIT_OK;

    if (cli_password_read(name, pw, sizeof pw) < 0)
        return CLI_EXIT_FAIL;
    if (auth_password_check_policy(pw, (size_t)cfg->auth.min_password_length, &why) < 0) {
        code = cli_fail("the password %s (passwords need at least %lld characters)", why,
                        (long long)cfg->auth.min_password_length);
        goto done;
    }
    int rc = auth_password_hash(pw, hash);
    if (rc < 0)
        code = cli_fail("cannot hash the password: %s", strerror(-rc));
done:
    sodium_memzero(pw, sizeof pw);
    return code;
}

/* Flushes stdout; a command whose output was lost (a full disk, a closed pipe) fails. */
static int stdout_finish(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return cli_fail("cannot write to standard output");
    return CLI_EXIT_OK;
}

/* ---- user add ---- */

static int user_add_run(const struct cli_args *args)
{
    const char *name = args->args[0];
    bool admin = cli_args_flag(args, "admin");
    bool with_password = cli_args_flag(args, "password-stdin");
    char hash[AUTH_PASSWORD_HASH_MAX] = "";
    struct config cfg;
    struct store *st = NULL;
    struct store_user u = {0};
    config_init(&cfg);
    int code = user_begin(args, &cfg, &st);
    if (code != CLI_EXIT_OK)
        goto done;

    /* Asked before the password, so that nobody types one for a name that is taken. */
    int rc = store_user_get(st, name, &u);
    if (rc == 0) {
        code = cli_fail("user %s already exists", name);
        goto done;
    }
    if (rc != -ENOENT) {
        code = cli_fail("cannot read user %s: %s", name, strerror(-rc));
        goto done;
    }
    if (with_password) {
        code = password_from_stdin(name, &cfg, hash);
        if (code != CLI_EXIT_OK)
            goto done;
    }
    rc = store_user_create(st, name, with_password ? hash : NULL, admin, NULL);
    if (rc == -EEXIST) {
        code = cli_fail("user %s already exists", name);
        goto done;
    }
    if (rc < 0) {
        code = cli_fail("cannot add user %s: %s", name, strerror(-rc));
        goto done;
    }
    char *detail =
        xasprintf("admin=%s password=%s", admin ? "yes" : "no", with_password ? "set" : "unset");
    rc = store_event_add(st, "user.add", name, "cli", detail);
    free(detail);
    if (rc < 0)
        fprintf(stderr, "codehub: warning: cannot record the event: %s\n", strerror(-rc));

    printf("added user %s%s\n", name, admin ? " (admin)" : "");
    if (!with_password)
        printf("%s has no password yet: their first login sets it\n", name);
    code = stdout_finish();
done:
    sodium_memzero(hash, sizeof hash);
    store_user_clear(&u);
    store_close(st);
    config_free(&cfg);
    return code;
}

/* ---- user list ---- */

/* ISO 8601 in UTC: "2026-11-30T12:00:00Z", or with milliseconds "…:00.123Z". */
static void iso8601(int64_t ms, bool with_ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char base[24];
    gmtime_r(&secs, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out, 32, "%s.%03dZ", base, (int)(ms % 1000));
    else
        snprintf(out, 32, "%sZ", base);
}

/* Fetches every user, page by page. Returns 0 or a negative errno; the caller frees
 * *out with store_users_free(*out, *n_out). */
static int users_fetch_all(struct store *st, struct store_user **out, size_t *n_out)
{
    struct store_user *all = NULL;
    size_t n = 0;
    int rc = 0;
    for (;;) {
        struct store_user *page = NULL;
        size_t got = 0, total = 0;
        rc = store_user_list(st, n, LIST_PAGE, &page, &got, &total);
        if (rc < 0)
            break;
        if (got > 0) {
            all = xrealloc(all, (n + got) * sizeof *all);
            memcpy(all + n, page, got * sizeof *page);
            n += got;
        }
        /* The strings now belong to `all`: free only the array. */
        free(page);
        if (got < LIST_PAGE || n >= total)
            break;
    }
    if (rc < 0) {
        store_users_free(all, n);
        all = NULL;
        n = 0;
    }
    *out = all;
    *n_out = n;
    return rc;
}

static int list_json(const struct store_user *users, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char created[32], active[32];
        iso8601(users[i].created_ms, true, created);
        iso8601(users[i].last_activity_ms, true, active);
        json_array_append_new(
            arr, json_pack("{s:s, s:b, s:s, s:o, s:b}", "name", users[i].name, "admin",
                           users[i].admin, "created", created, "last_activity",
                           users[i].last_activity_ms > 0 ? json_string(active) : json_null(),
                           "has_password",
                           users[i].password_hash != NULL && users[i].password_hash[0] != '\0'));
    }
    int rc = json_dumpf(arr, stdout, JSON_INDENT(2));
    json_decref(arr);
    if (rc != 0)
        return cli_fail("cannot write to standard output");
    putchar('\n');
    return CLI_EXIT_OK;
}

static void list_table(const struct store_user *users, size_t n)
{
    int wname = (int)strlen("NAME");
    for (size_t i = 0; i < n; i++) {
        int len = (int)strlen(users[i].name);
        if (len > wname)
            wname = len;
    }
    printf("%-*s  %-5s  %-20s  %-20s  %s\n", wname, "NAME", "ADMIN", "CREATED", "LAST ACTIVITY",
           "PASSWORD");
    for (size_t i = 0; i < n; i++) {
        char created[32], active[32];
        iso8601(users[i].created_ms, false, created);
        if (users[i].last_activity_ms > 0)
            iso8601(users[i].last_activity_ms, false, active);
        else
            snprintf(active, sizeof active, "never");
        bool has_pw = users[i].password_hash != NULL && users[i].password_hash[0] != '\0';
        printf("%-*s  %-5s  %-20s  %-20s  %s\n", wname, users[i].name,
               users[i].admin ? "yes" : "no", created, active, has_pw ? "set" : "not set");
    }
}

static int user_list_run(const struct cli_args *args)
{
    struct config cfg;
    struct store *st = NULL;
    struct store_user *users = NULL;
    size_t n = 0;
    config_init(&cfg);
    int code = user_begin(args, &cfg, &st);
    if (code != CLI_EXIT_OK)
        goto done;
    int rc = users_fetch_all(st, &users, &n);
    if (rc < 0) {
        code = cli_fail("cannot list users: %s", strerror(-rc));
        goto done;
    }
    if (cli_args_flag(args, "json")) {
        code = list_json(users, n);
    } else {
        list_table(users, n);
    }
    if (code == CLI_EXIT_OK)
        code = stdout_finish();
done:
    store_users_free(users, n);
    store_close(st);
    config_free(&cfg);
    return code;
}

/* ---- user del ---- */

static int user_del_run(const struct cli_args *args)
{
    const char *name = args->args[0];
    bool purge = cli_args_flag(args, "purge-data");
    struct config cfg;
    struct store *st = NULL;
    struct store_user u = {0};
    char *home = NULL;
    config_init(&cfg);
    int code = user_begin(args, &cfg, &st);
    if (code != CLI_EXIT_OK)
        goto done;
    code = user_get(st, name, &u);
    if (code != CLI_EXIT_OK)
        goto done;
    home = cli_user_home_path(cfg.server.data_dir, name);

    /* Refuse before deleting anything, so that a refusal leaves everything as it was. */
    if (purge) {
        int rc = cli_purge_check(cfg.server.data_dir, name);
        if (rc < 0 && rc != -ENOENT) {
            code = cli_fail("nothing was deleted");
            goto done;
        }
    }
    int rc = store_user_delete(st, name);
    if (rc == -ENOENT) {
        code = cli_fail("no such user: %s", name);
        goto done;
    }
    if (rc < 0) {
        code = cli_fail("cannot delete user %s: %s", name, strerror(-rc));
        goto done;
    }
    rc = store_event_add(st, "user.del", name, "cli", purge ? "purge-data" : "");
    if (rc < 0)
        fprintf(stderr, "codehub: warning: cannot record the event: %s\n", strerror(-rc));

    if (purge && strcmp(cfg.spawn.spawner, "kubernetes") == 0) {
        /* The home is the user's volume claim in the cluster. */
        char *err = NULL;
        rc = spawn_kube_purge(&cfg, name, &err);
        if (rc < 0 && rc != -ENOENT) {
            code = cli_fail("deleted user %s, but could not remove their volume claim: %s", name,
                            err != NULL ? err : strerror(-rc));
            free(err);
            goto done;
        }
        free(err);
        char *claim = spawn__kube_name(cfg.kube.pvc_name, name);
        if (rc == 0)
            printf("deleted user %s and their volume claim %s\n", name, claim);
        else
            printf("deleted user %s (there was no volume claim %s)\n", name, claim);
        free(claim);
    } else if (purge) {
        enum cli_purge_result result;
        rc = cli_purge_user_home(cfg.server.data_dir, name, &result);
        if (rc < 0) {
            code = cli_fail("deleted user %s, but could not remove all of %s", name, home);
            goto done;
        }
        if (result == CLI_PURGE_REMOVED)
            printf("deleted user %s and removed their data in %s\n", name, home);
        else
            printf("deleted user %s (there was no data in %s)\n", name, home);
    } else {
        struct stat sb;
        if (lstat(home, &sb) == 0)
            printf("deleted user %s; their data was kept in %s (--purge-data removes it)\n", name,
                   home);
        else
            printf("deleted user %s (there was no data in %s)\n", name, home);
    }
    code = stdout_finish();
done:
    free(home);
    store_user_clear(&u);
    store_close(st);
    config_free(&cfg);
    return code;
}

/* ---- user passwd ---- */

static int user_passwd_run(const struct cli_args *args)
{
    const char *name = args->args[0];
    char hash[AUTH_PASSWORD_HASH_MAX] = "";
    struct config cfg;
    struct store *st = NULL;
    struct store_user u = {0};
    int code;

    /* Only from stdin: a password on the command line is visible to every local user. */
    if (!cli_args_flag(args, "password-stdin"))
        return cli_usage_error(args->cmd, "the new password is read from standard input: "
                                          "pass --password-stdin");
    config_init(&cfg);
    code = user_begin(args, &cfg, &st);
    if (code != CLI_EXIT_OK)
        goto done;
    code = user_get(st, name, &u);
    if (code != CLI_EXIT_OK)
        goto done;
    code = password_from_stdin(name, &cfg, hash);
    if (code != CLI_EXIT_OK)
        goto done;
    int rc = store_user_set_password(st, name, hash, true);
    if (rc == -ENOENT) {
        code = cli_fail("no such user: %s", name);
        goto done;
    }
    if (rc < 0) {
        code = cli_fail("cannot set the password of %s: %s", name, strerror(-rc));
        goto done;
    }
    rc = store_event_add(st, "user.passwd", name, "cli", "");
    if (rc < 0)
        fprintf(stderr, "codehub: warning: cannot record the event: %s\n", strerror(-rc));
    printf("changed the password of %s and ended their sessions\n", name);
    code = stdout_finish();
done:
    sodium_memzero(hash, sizeof hash);
    store_user_clear(&u);
    store_close(st);
    config_free(&cfg);
    return code;
}

/* ---- the table ---- */

static const struct cli_option user_add_options[] = {
    {"admin", NULL, "make the user an admin"},
    {"password-stdin", NULL, "read the password from the first line of standard input"},
    CLI_OPTION_CONFIG,
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

static const struct cli_command user_add = {
    .name = "add",
    .path = "user add",
    .synopsis = "NAME",
    .min_args = 1,
    .max_args = 1,
    .summary = "Add an account.",
    .details = "NAME: 1 to 32 characters, lowercase letters, digits, '.', '_' or '-', starting\n"
               "with a letter or digit. Without --password-stdin the account has no password\n"
               "and the user's first login sets it.\n",
    .options = user_add_options,
    .run = user_add_run,
};

static const struct cli_option user_list_options[] = {
    {"json", NULL, "print a JSON array instead of a table"},
    CLI_OPTION_CONFIG,
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

static const struct cli_command user_list = {
    .name = "list",
    .path = "user list",
    .summary = "List the accounts: name, admin, created, last activity, password set.",
    .details = "Times are ISO 8601 in UTC.\n",
    .options = user_list_options,
    .run = user_list_run,
};

static const struct cli_option user_del_options[] = {
    {"purge-data", NULL, "also remove the user's files (DATA_DIR/users/NAME)"},
    CLI_OPTION_CONFIG,
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

static const struct cli_command user_del = {
    .name = "del",
    .path = "user del",
    .synopsis = "NAME",
    .min_args = 1,
    .max_args = 1,
    .summary = "Delete an account with its sessions, API tokens and server record.",
    .details = "The user's files are kept unless --purge-data is given. Purging never follows\n"
               "a symbolic link out of the data directory and refuses a home that is one.\n",
    .options = user_del_options,
    .run = user_del_run,
};

static const struct cli_option user_passwd_options[] = {
    {"password-stdin", NULL, "read the new password from the first line of standard input"},
    CLI_OPTION_CONFIG,
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

static const struct cli_command user_passwd = {
    .name = "passwd",
    .path = "user passwd",
    .synopsis = "NAME --password-stdin",
    .min_args = 1,
    .max_args = 1,
    .summary = "Set an account's password and end the user's sessions.",
    .details = "The password is read from standard input (never from the command line);\n"
               "--password-stdin is required.\n",
    .options = user_passwd_options,
    .run = user_passwd_run,
};

static const struct cli_command *const user_subcommands[] = {
    &user_add, &user_list, &user_del, &user_passwd, NULL,
};

const struct cli_command cli_user_command = {
    .name = "user",
    .path = "user",
    .summary = "Manage accounts offline, in the store the server uses.",
    .subcommands = user_subcommands,
};

/* Finding and loading the configuration for a command, exactly as the server does, so
 * that `codehub user add` run beside `codehub serve` acts on the same store. */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/log.h"
#include "store/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The file used when neither --config nor $CODEHUB_CONFIG names one. */
#define DEFAULT_CONFIG_FILE "codehub.yaml"

/* Which file to read, or NULL for built-in defaults only. Borrowed string. */
static const char *config_path(const struct cli_args *args)
{
    const char *path = cli_args_value(args, "config");
    if (path != NULL)
        return path;
    path = getenv("CODEHUB_CONFIG");
    if (path != NULL && path[0] != '\0')
        return path;
    /* Only when it exists: a missing ./codehub.yaml means "use the defaults", but one that
     * exists and cannot be read is an error that config_load_file reports. */
    if (access(DEFAULT_CONFIG_FILE, F_OK) == 0)
        return DEFAULT_CONFIG_FILE;
    return NULL;
}

static void configure_log(const struct config *cfg, bool offline)
{
    enum log_level level = LOG_INFO;
    enum log_format format = LOG_FORMAT_TEXT;
    /* Both were validated by config_finish; the defaults above are only a fallback. */
    (void)log_level_parse(cfg->log.level, &level);
    (void)log_format_parse(cfg->log.format, &format);
    if (offline && level != LOG_DEBUG && level < LOG_WARN)
        level = LOG_WARN;
    log_configure(level, format);
}

int cli_config_load(const struct cli_args *args, bool offline, struct config *cfg)
{
    struct buf errors = BUF_INIT;
    int failed = 0;
    const char *path = config_path(args);
    const char *bind = cli_args_value(args, "bind");
    const char *data_dir = cli_args_value(args, "data-dir");

    /* Every source is applied even after one failed, so that one run reports every
     * mistake, not only the first. */
    if (path != NULL && config_load_file(cfg, path, &errors) < 0)
        failed = 1;
    if (config_apply_env(cfg, environ, &errors) < 0)
        failed = 1;
    if (bind != NULL && config_set(cfg, "server.bind", bind, "--bind", &errors) < 0)
        failed = 1;
    if (data_dir != NULL && config_set(cfg, "server.data_dir", data_dir, "--data-dir", &errors) < 0)
        failed = 1;
    /* Cross-key checks on a configuration that already failed would only add noise. */
    if (!failed && config_finish(cfg, &errors) < 0)
        failed = 1;

    if (failed) {
        fputs(errors.data != NULL ? errors.data : "codehub: invalid configuration\n", stderr);
        buf_free(&errors);
        return -EINVAL;
    }
    buf_free(&errors);
    configure_log(cfg, offline);
    return 0;
}

struct store *cli_store_open(const struct config *cfg)
{
    char *err = NULL;
    struct store *st =
        store_open_password(cfg->store.url, cfg->server.data_dir, cfg->store.password_file, &err);
    if (st == NULL) {
        cli_fail("cannot open the store: %s", err != NULL ? err : "unknown error");
        free(err);
    }
    return st;
}

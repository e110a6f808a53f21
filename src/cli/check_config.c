/* `codehub check-config FILE`: validates a configuration file as the server would read it
 * (defaults, then FILE, then the CODEHUB_* environment), without touching the store. */
#include "cli/cli.h"

#include "core/buf.h"

#include <stdio.h>
#include <unistd.h>

static int check_config_run(const struct cli_args *args)
{
    const char *path = args->args[0];
    struct buf errors = BUF_INIT;
    struct buf dump = BUF_INIT;
    struct config cfg;
    int failed = 0;
    int code = CLI_EXIT_FAIL;

    config_init(&cfg);
    /* Like cli_config_load(), every source is applied so that every error is reported. */
    if (config_load_file(&cfg, path, &errors) < 0)
        failed = 1;
    if (config_apply_env(&cfg, environ, &errors) < 0)
        failed = 1;
    if (!failed && config_finish(&cfg, &errors) < 0)
        failed = 1;
    if (failed) {
        fputs(errors.data != NULL ? errors.data : "invalid configuration\n", stderr);
        goto done;
    }
    if (cli_args_flag(args, "print")) {
        /* The dump alone on stdout, so that it can be saved and used as a file. */
        config_dump(&cfg, &dump);
        fputs(dump.data != NULL ? dump.data : "", stdout);
        fprintf(stderr, "%s: ok\n", path);
    } else {
        printf("%s: ok\n", path);
    }
    code = CLI_EXIT_OK;
    if (fflush(stdout) != 0 || ferror(stdout))
        code = cli_fail("cannot write to standard output");
done:
    buf_free(&dump);
    buf_free(&errors);
    config_free(&cfg);
    return code;
}

static const struct cli_option check_config_options[] = {
    {"print", NULL, "print the effective configuration (defaults, file, environment) as YAML"},
    {NULL, NULL, NULL},
};

const struct cli_command cli_check_config_command = {
    .name = "check-config",
    .path = "check-config",
    .synopsis = "FILE",
    .min_args = 1,
    .max_args = 1,
    .summary = "Validate a configuration file: exit 0 when it is valid, 1 with its errors.",
    .details = "Errors name FILE:LINE:COLUMN and the key. CODEHUB_<SECTION>_<KEY> variables are\n"
               "applied over the file, as the server would apply them.\n",
    .options = check_config_options,
    .run = check_config_run,
};

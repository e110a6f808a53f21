/* `codehub serve`: loads the configuration and hands over to the hub. */
#include "cli/cli.h"

#include "hub/hub.h"

static int serve_run(const struct cli_args *args)
{
    struct config cfg;
    int code = CLI_EXIT_FAIL;
    config_init(&cfg);
    if (cli_config_load(args, false, &cfg) == 0)
        code = hub_serve(&cfg);
    config_free(&cfg);
    return code;
}

static const struct cli_option serve_options[] = {
    CLI_OPTION_CONFIG,
    {"bind", "ADDR:PORT", "address to listen on (overrides server.bind)"},
    CLI_OPTION_DATA_DIR,
    {NULL, NULL, NULL},
};

const struct cli_command cli_serve_command = {
    .name = "serve",
    .path = "serve",
    .summary = "Run the hub: web UI, REST API, proxy and spawner.",
    .details = "Configuration: defaults, then the file (--config, else $CODEHUB_CONFIG, else\n"
               "./codehub.yaml when present), then CODEHUB_<SECTION>_<KEY> variables, then\n"
               "these options. Stops gracefully on SIGTERM or SIGINT.\n",
    .options = serve_options,
    .run = serve_run,
};

/* codehub's entry point: the list of commands. Each command lives in src/cli/. */
#include "cli/cli.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const struct cli_command *const root_subcommands[] = {
    &cli_serve_command,        &cli_user_command,    &cli_token_command,
    &cli_check_config_command, &cli_version_command, NULL,
};

static const struct cli_command root = {
    .name = "codehub",
    .path = "",
    .summary = "codehub: everyone's VS Code in the browser, on the team's own machines.",
    .details = "Exit status: 0 success, 1 failure (a message on stderr), 2 usage error.\n",
    .subcommands = root_subcommands,
};

int main(int argc, char **argv)
{
    /* Random tokens, password hashing and constant-time compares all rely on it. */
    if (sodium_init() < 0) {
        fputs("codehub: cannot initialise libsodium\n", stderr);
        return CLI_EXIT_FAIL;
    }
    /* `codehub --version` as people type it, besides the `version` command. */
    if (argc == 2 && strcmp(argv[1], "--version") == 0)
        return cli_command_run(&cli_version_command, 0, argv + 2);
    return cli_command_run(&root, argc - 1, argv + 1);
}

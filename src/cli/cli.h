/* The command line: `codehub serve`, `user …`, `token create`, `check-config`, `version`.
 *
 * Every command is a row of declarative data (struct cli_command): its words, positional
 * arguments, options and help text. One dispatcher (dispatch.c) walks the tree, parses the
 * options, prints help and usage errors, and calls the command's run function, so that all
 * commands spell options, help and errors the same way.
 *
 * Exit codes, for every command: 0 success, 1 failure (a message on stderr), 2 usage error
 * (a message and the command's usage on stderr). docs/cli.md describes the commands. */
#ifndef CODEHUB_CLI_CLI_H
#define CODEHUB_CLI_CLI_H

#include "core/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct store;

enum cli_exit { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* Most options and positional arguments a command may declare. */
#define CLI_MAX_OPTIONS 8
#define CLI_MAX_ARGS 4

/* One long option, given as --NAME, --NAME VALUE or --NAME=VALUE. */
struct cli_option {
    const char *name;    /* without the dashes: "data-dir" */
    const char *metavar; /* the value's placeholder in help ("DIR"); NULL for a flag */
    const char *help;    /* one short line */
};

/* The options the offline commands share with `serve`, so that they find the same
 * configuration and store as the server does. */
#define CLI_OPTION_CONFIG                                                                          \
    {                                                                                              \
        "config", "FILE", "configuration file (default: $CODEHUB_CONFIG, else ./codehub.yaml)"     \
    }
#define CLI_OPTION_DATA_DIR                                                                        \
    {                                                                                              \
        "data-dir", "DIR", "data directory (overrides server.data_dir)"                            \
    }

struct cli_args;

/* A command (a leaf, with `run`) or a group of commands (with `subcommands`). */
struct cli_command {
    const char *name;     /* the word on the command line: "add" */
    const char *path;     /* every word after "codehub": "user add" ("" for the root) */
    const char *synopsis; /* the positional arguments in usage lines ("NAME"), or NULL */
    size_t min_args, max_args;
    const char *summary;              /* one line: shown in command lists and under the usage */
    const char *details;              /* further lines for --help (each ending in '\n'), or NULL */
    const struct cli_option *options; /* ends with an entry whose name is NULL; may be NULL */
    /* Leaf commands: runs the command and returns its exit code (enum cli_exit). */
    int (*run)(const struct cli_args *args);
    const struct cli_command *const *subcommands; /* groups: NULL-terminated */
};

/* The parsed command line of a leaf command. Strings are borrowed from argv. */
struct cli_args {
    const struct cli_command *cmd;
    const char *values[CLI_MAX_OPTIONS]; /* like cmd->options: NULL = not given, "" = flag given */
    const char *args[CLI_MAX_ARGS];      /* positional arguments */
    size_t nargs;
};

/* The commands, each defined in its own file. */
extern const struct cli_command cli_serve_command;        /* serve.c */
extern const struct cli_command cli_user_command;         /* user.c (a group) */
extern const struct cli_command cli_token_command;        /* token.c (a group) */
extern const struct cli_command cli_check_config_command; /* check_config.c */
extern const struct cli_command cli_version_command;      /* version.c */

/* ---- dispatch.c ---- */

/* Runs the command line `argv[0..argc)` (the words after `cmd`'s own word) against `cmd`:
 * for a group, the first word picks the subcommand (or is `help [COMMAND…]`, -h or
 * --help); for a leaf, the words are its options and arguments. Prints help to stdout and
 * usage errors to stderr. Returns the process exit code (enum cli_exit). */
int cli_command_run(const struct cli_command *cmd, int argc, char **argv);

/* Writes `cmd`'s help (usage line, summary, details, options or subcommands) to `out`. */
void cli_command_help(const struct cli_command *cmd, FILE *out);

/* Reports a usage error of `cmd`: "codehub PATH: MESSAGE" and the command's help on
 * stderr. Returns CLI_EXIT_USAGE so that callers can `return cli_usage_error(…)`. */
int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "codehub: MESSAGE" on stderr. Returns CLI_EXIT_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The value of option `name` (borrowed from argv), "" for a flag that was given, or NULL
 * when it was not given or the command has no such option. */
const char *cli_args_value(const struct cli_args *args, const char *name);
/* True when option `name` was given. */
bool cli_args_flag(const struct cli_args *args, const char *name);

/* ---- config_load.c ---- */

/* Builds the configuration the server would use: built-in defaults, then the file
 * (--config, else $CODEHUB_CONFIG, else ./codehub.yaml when it exists), then
 * CODEHUB_<SECTION>_<KEY> variables, then the --bind and --data-dir options when the
 * command has them, then config_finish(). Configures logging from log.level/log.format;
 * when `offline` (user and token commands) only warnings and errors are logged unless
 * log.level is debug, so that a command's output is not buried in info lines.
 * `cfg` holds the defaults (config_init); the caller calls config_free(cfg) whatever this
 * returns.
 * Returns 0, or -EINVAL after printing every error to stderr. */
int cli_config_load(const struct cli_args *args, bool offline, struct config *cfg);

/* Opens the store `cfg` names (store_open with store.url and server.data_dir). Returns the
 * store, which the caller closes with store_close(), or NULL after printing why. */
struct store *cli_store_open(const struct config *cfg);

/* ---- password_input.c ---- */

/* Reads one line from standard input into `out` (at least AUTH_PASSWORD_MAX_BYTES + 2
 * bytes), without the line end ("\n" or "\r\n"), reading nothing after that line. When
 * stdin is a terminal, prompts for `who`'s password on stderr with echo turned off.
 * Returns 0, or -EINVAL after printing why (nothing to read, an empty line, a NUL byte,
 * a line longer than AUTH_PASSWORD_MAX_BYTES, a read error). `out` is wiped on failure;
 * the caller wipes it (sodium_memzero) after use. */
int cli_password_read(const char *who, char *out, size_t size);

/* ---- purge.c ---- */

enum cli_purge_result {
    CLI_PURGE_REMOVED = 0, /* the directory and everything in it are gone */
    CLI_PURGE_MISSING,     /* there was nothing to remove */
};

/* Checks that <data_dir>/users/NAME can be purged safely: that neither `users` nor NAME is a
 * symbolic link and that NAME, when present, is a directory. Touches nothing. Returns 0,
 * -ENOENT when there is nothing to remove, or another negative errno after printing why. */
int cli_purge_check(const char *data_dir, const char *name);

/* Removes <data_dir>/users/NAME and everything under it without ever following a symbolic
 * link (links are removed, not their targets) or descending into another file system.
 * Directories are opened relative to their parent's descriptor (openat/unlinkat), so a
 * link swapped in while the removal runs is removed, not followed. `name` must be a valid
 * user name. Stores the outcome in *result. Returns 0, or a negative errno after printing
 * the first path that could not be removed (it still removes what it can). */
int cli_purge_user_home(const char *data_dir, const char *name, enum cli_purge_result *result);

/* Returns "<data_dir>/users/<name>" for messages; caller frees. */
char *cli_user_home_path(const char *data_dir, const char *name);

#endif

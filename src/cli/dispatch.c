/* The command tree walker: picks the command, parses its options, prints help and usage
 * errors. Options are long only (plus -h), may come before or after the positional
 * arguments, and "--" ends them, so a script can pass any argument through unparsed. */
#include "cli/cli.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The value stored for a flag that was given; any non-NULL pointer would do. */
static const char flag_given[] = "";

static size_t options_count(const struct cli_command *cmd)
{
    size_t n = 0;
    while (cmd->options != NULL && cmd->options[n].name != NULL)
        n++;
    /* struct cli_args has room for CLI_MAX_OPTIONS values; a longer table is a bug. */
    assert(n <= CLI_MAX_OPTIONS);
    return n < CLI_MAX_OPTIONS ? n : CLI_MAX_OPTIONS;
}

static const char *usage_path(const struct cli_command *cmd)
{
    return cmd->path[0] != '\0' ? " " : "";
}

static void print_usage_line(const struct cli_command *cmd, FILE *out)
{
    fprintf(out, "Usage: codehub%s%s", usage_path(cmd), cmd->path);
    if (cmd->subcommands != NULL) {
        fputs(" COMMAND [ARGS...]\n", out);
        return;
    }
    if (cmd->synopsis != NULL)
        fprintf(out, " %s", cmd->synopsis);
    fputs(" [OPTIONS]\n", out);
}

/* Prints rows of "  LABEL   TEXT" with the texts lined up. */
static void print_rows(FILE *out, const char *const *labels, const char *const *texts, size_t n)
{
    size_t width = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(labels[i]);
        if (len > width)
            width = len;
    }
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-*s  %s\n", (int)width, labels[i], texts[i]);
}

void cli_command_help(const struct cli_command *cmd, FILE *out)
{
    /* One more row than the table holds: -h/--help or `help`. */
    enum { MAX_ROWS = 16 };
    char label_bufs[MAX_ROWS][64];
    const char *labels[MAX_ROWS];
    const char *texts[MAX_ROWS];
    size_t n = 0;

    print_usage_line(cmd, out);
    fprintf(out, "\n%s\n", cmd->summary);
    if (cmd->details != NULL)
        fprintf(out, "\n%s", cmd->details);

    if (cmd->subcommands != NULL) {
        for (size_t i = 0; cmd->subcommands[i] != NULL && n < MAX_ROWS - 1; i++) {
            const struct cli_command *sub = cmd->subcommands[i];
            snprintf(label_bufs[n], sizeof label_bufs[n], "%s%s%s", sub->name,
                     sub->synopsis != NULL ? " " : "", sub->synopsis != NULL ? sub->synopsis : "");
            labels[n] = label_bufs[n];
            texts[n] = sub->summary;
            n++;
        }
        labels[n] = "help [COMMAND]";
        texts[n] = "Show a command's help.";
        n++;
        fputs("\nCommands:\n", out);
        print_rows(out, labels, texts, n);
        fprintf(out, "\nRun 'codehub%s%s COMMAND --help' for a command's options.\n",
                usage_path(cmd), cmd->path);
        return;
    }

    for (size_t i = 0; i < options_count(cmd) && n < MAX_ROWS - 1; i++) {
        const struct cli_option *o = &cmd->options[i];
        snprintf(label_bufs[n], sizeof label_bufs[n], "--%s%s%s", o->name,
                 o->metavar != NULL ? " " : "", o->metavar != NULL ? o->metavar : "");
        labels[n] = label_bufs[n];
        texts[n] = o->help;
        n++;
    }
    labels[n] = "-h, --help";
    texts[n] = "show this help and exit";
    n++;
    fputs("\nOptions:\n", out);
    print_rows(out, labels, texts, n);
}

int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "codehub%s%s: ", usage_path(cmd), cmd->path);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    cli_command_help(cmd, stderr);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    fputs("codehub: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_FAIL;
}

static int option_find(const struct cli_command *cmd, const char *name, size_t name_len)
{
    size_t n = options_count(cmd);
    for (size_t i = 0; i < n; i++) {
        if (strlen(cmd->options[i].name) == name_len &&
            memcmp(cmd->options[i].name, name, name_len) == 0)
            return (int)i;
    }
    return -1;
}

const char *cli_args_value(const struct cli_args *args, const char *name)
{
    int i = option_find(args->cmd, name, strlen(name));
    return i < 0 ? NULL : args->values[i];
}

bool cli_args_flag(const struct cli_args *args, const char *name)
{
    return cli_args_value(args, name) != NULL;
}

static bool is_help(const char *word)
{
    return strcmp(word, "-h") == 0 || strcmp(word, "--help") == 0;
}

/* Parses a leaf command's words into *out. Returns 0 to run the command, 1 when help was
 * asked for, or -1 after reporting a usage error. */
static int leaf_parse(const struct cli_command *cmd, int argc, char **argv, struct cli_args *out)
{
    bool options_done = false;
    memset(out, 0, sizeof *out);
    out->cmd = cmd;

    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        if (options_done || w[0] != '-' || w[1] == '\0') {
            if (out->nargs >= cmd->max_args || out->nargs >= CLI_MAX_ARGS) {
                cli_usage_error(cmd, "unexpected argument '%s'", w);
                return -1;
            }
            out->args[out->nargs++] = w;
            continue;
        }
        if (strcmp(w, "--") == 0) {
            options_done = true;
            continue;
        }
        if (is_help(w))
            return 1;
        if (w[1] != '-') {
            cli_usage_error(cmd, "unknown option '%s' (options are long: --NAME)", w);
            return -1;
        }
        const char *name = w + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        int idx = option_find(cmd, name, name_len);
        if (idx < 0) {
            cli_usage_error(cmd, "unknown option '--%.*s'", (int)name_len, name);
            return -1;
        }
        const struct cli_option *o = &cmd->options[idx];
        if (out->values[idx] != NULL) {
            /* Refused rather than "last one wins": two different --data-dir values are
             * more likely a mistake than a wish. */
            cli_usage_error(cmd, "option --%s given more than once", o->name);
            return -1;
        }
        if (o->metavar == NULL) {
            if (eq != NULL) {
                cli_usage_error(cmd, "option --%s takes no value", o->name);
                return -1;
            }
            out->values[idx] = flag_given;
        } else if (eq != NULL) {
            out->values[idx] = eq + 1;
        } else if (i + 1 < argc) {
            out->values[idx] = argv[++i];
        } else {
            cli_usage_error(cmd, "option --%s needs a value (%s)", o->name, o->metavar);
            return -1;
        }
    }
    if (out->nargs < cmd->min_args) {
        cli_usage_error(cmd, "missing argument");
        return -1;
    }
    return 0;
}

static const struct cli_command *subcommand_find(const struct cli_command *group, const char *name)
{
    for (size_t i = 0; group->subcommands[i] != NULL; i++) {
        if (strcmp(group->subcommands[i]->name, name) == 0)
            return group->subcommands[i];
    }
    return NULL;
}

/* `help [COMMAND…]` inside `group`: walks the words down the tree and prints the help of
 * the command they name. */
static int help_run(const struct cli_command *group, int argc, char **argv)
{
    const struct cli_command *cmd = group;
    for (int i = 0; i < argc; i++) {
        const struct cli_command *sub =
            cmd->subcommands != NULL ? subcommand_find(cmd, argv[i]) : NULL;
        if (sub == NULL)
            return cli_usage_error(cmd, "no help for unknown command '%s'", argv[i]);
        cmd = sub;
    }
    cli_command_help(cmd, stdout);
    return CLI_EXIT_OK;
}

int cli_command_run(const struct cli_command *cmd, int argc, char **argv)
{
    if (cmd->subcommands != NULL) {
        if (argc == 0)
            return cli_usage_error(cmd, "missing command");
        if (is_help(argv[0])) {
            cli_command_help(cmd, stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(argv[0], "help") == 0)
            return help_run(cmd, argc - 1, argv + 1);
        if (argv[0][0] == '-')
            return cli_usage_error(cmd, "unknown option '%s' (options come after the command)",
                                   argv[0]);
        const struct cli_command *sub = subcommand_find(cmd, argv[0]);
        if (sub == NULL)
            return cli_usage_error(cmd, "unknown command '%s'", argv[0]);
        return cli_command_run(sub, argc - 1, argv + 1);
    }

    struct cli_args args;
    int r = leaf_parse(cmd, argc, argv, &args);
    if (r < 0)
        return CLI_EXIT_USAGE;
    if (r > 0) {
        cli_command_help(cmd, stdout);
        return CLI_EXIT_OK;
    }
    return cmd->run(&args);
}

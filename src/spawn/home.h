/* A user's home for the local spawner: its first-start initialisation and the
 * code-server log kept in it.
 *
 * The first start of a home creates, once (the marker ~/.config/codehub/initialized
 * says it is done; every step is also idempotent on its own, so an interrupted
 * initialisation simply runs again):
 *   ~/projects, ~/.config, ~/.local/share/code-server/User/settings.json (telemetry and
 *   update checks off, workspace trust off, no start-up editor; an existing file is kept),
 *   an SSH key pair ~/.ssh/id_ed25519 (when asked and ssh-keygen exists),
 *   a Python venv ~/.venv (when asked and `python3 -m venv` works).
 * The optional steps run as child processes through uv_spawn, so the loop never waits for
 * them; one that fails is logged and skipped.
 *
 * When the servers run as system accounts the hub is root and the home belongs to the
 * user, who may have planted symbolic links, FIFOs or hard links in it. So every file
 * operation here works relative to a directory descriptor, one component at a time, with
 * O_NOFOLLOW and O_NONBLOCK, and checks the type (and owner) of what it opened: root must
 * never be tricked into writing, truncating or reading a file outside the home. */
#ifndef CODEHUB_SPAWN_HOME_H
#define CODEHUB_SPAWN_HOME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define HOME_LOG_NAME "code-server.log"
#define HOME_LOG_OLD_NAME "code-server.log.1"
#define HOME_MARKER ".config/codehub/initialized"

/* The settings.json written into a new home. */
#define HOME_SETTINGS_JSON                                                                         \
    "{\n"                                                                                          \
    "    \"telemetry.telemetryLevel\": \"off\",\n"                                                 \
    "    \"update.mode\": \"none\",\n"                                                             \
    "    \"security.workspace.trust.enabled\": false,\n"                                           \
    "    \"workbench.startupEditor\": \"none\"\n"                                                  \
    "}\n"

/* Who owns what is created. With `chown` false files keep the hub's uid/gid. */
struct home_owner {
    bool chown;
    uid_t uid;
    gid_t gid;
};

/* Starts argv[0] (`file`) with uv_spawn in its own session and process group (setsid:
 * signals reach its whole tree, and a hub crash does not take it along), stdin ignored,
 * stdout and stderr to `log_fd` (ignored when < 0), in `cwd`, and as the owner's uid and
 * gid when owner->chown. `proc->data` must be set by the caller. Returns uv_spawn's
 * result; as with uv_spawn, the handle must be closed even when it failed. */
int home_spawn(uv_loop_t *loop, uv_process_t *proc, const char *file, char **argv, char **env,
               const char *cwd, int log_fd, const struct home_owner *owner, uv_exit_cb exit_cb);

/* Creates the directory `path` (mode `mode`) when missing; its parent must exist and is
 * trusted (it belongs to the hub). With owner->chown the directory is given to the owner.
 * With `force_mode` an existing directory gets `mode` too. Fails with -ENOTDIR when
 * `path` is a symbolic link or not a directory. Returns 0 or a negative errno. */
int home_dir_ensure(const char *path, mode_t mode, const struct home_owner *owner, bool force_mode);

/* True when the home at `home` carries the initialisation marker. */
bool home_is_initialized(const char *home);

/* The synchronous part of initialisation: ~/projects, ~/.config, ~/.config/codehub,
 * ~/.ssh (0700), ~/.local/share/code-server/User and its settings.json (kept when it
 * exists). Quick (a few mkdir and one small write). Returns 0 or a negative errno, with
 * *what (static) naming the path that failed. */
int home_prepare(const char *home, const struct home_owner *owner, const char **what);

/* Writes the marker. Returns 0 or a negative errno. */
int home_mark_initialized(const char *home, const struct home_owner *owner);

/* Everything the asynchronous initialisation needs; copied by home_init_start(). */
struct home_options {
    const char *name; /* the user: the SSH key comment is NAME@codehub */
    const char *home; /* absolute path; must exist */
    struct home_owner owner;
    bool ssh_key;     /* create ~/.ssh/id_ed25519 */
    bool venv;        /* create ~/.venv */
    char *const *env; /* environment of the steps (NULL-terminated); its PATH finds tools */
    int log_fd;       /* the steps' stdout and stderr go here; -1: /dev/null */
};

struct home_init;

/* `progress` gets a percentage (10..25) and a message as each step begins; `done` gets 0
 * once the home is initialised (optional steps may have been skipped), a negative errno
 * with a reason when a required step failed, or -ECANCELED after home_init_cancel().
 * Neither is ever called from inside home_init_start(). */
struct home_init_callbacks {
    void (*progress)(void *data, int percent, const char *message);
    void (*done)(void *data, int status, const char *reason);
};

/* Starts initialising opt->home, or only confirms it (done(0) on the next loop turn) when
 * the marker is present. Returns the running initialisation, freed by itself after
 * `done` returns (or after home_init_abandon()). */
struct home_init *home_init_start(uv_loop_t *loop, const struct home_options *opt,
                                  const struct home_init_callbacks *cb, void *data);

/* Stops early: the running step's process group gets SIGKILL, and `done` comes with
 * -ECANCELED once it has exited. Safe to call once, before `done`. */
void home_init_cancel(struct home_init *hi);

/* Forgets the initialisation without waiting (the hub is closing): no callback comes any
 * more, handles are closed, a running step's process is left to finish on its own. */
void home_init_abandon(struct home_init *hi);

/* Opens ~/code-server.log for appending (O_APPEND: every writer, and a truncation by
 * home_log_rotate(), stay consistent), creating it 0600 for the owner. Anything that is
 * not a plain file with one link (and, with owner->chown, owned by the owner) is
 * removed and replaced. Returns the descriptor (O_CLOEXEC; caller closes) or a negative
 * errno. */
int home_log_open(const char *home, const struct home_owner *owner);

/* When ~/code-server.log is larger than `max_size` bytes, copies it to
 * code-server.log.1 (replacing it) and truncates it to 0. Returns 1 when it rotated, 0
 * when the log is small enough or missing, or a negative errno. Does file I/O of up to
 * `max_size` bytes: call it on the thread pool. */
int home_log_rotate(const char *home, int64_t max_size, const struct home_owner *owner);

/* The last `max_lines` lines of ~/code-server.log (at most its last 8 KiB), with control
 * characters other than newline and tab replaced by '?', without the final newline.
 * Returns a new string ("" when there is no log); caller frees. */
char *home_log_tail(const char *home, int max_lines);

#endif

#include "spawn/home.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "spawn/proc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HOME_INIT_MAGIC 0x484f4d49u

/* An optional step that has not ended after this long is killed and skipped: creating a
 * key or a venv takes seconds, and a stuck one must not hold a start forever. */
#define STEP_TIMEOUT_MS (120 * 1000)
#define TAIL_BYTES 8192

/* ---- descriptor-relative file operations ---- */

static int open_dir_at(int parent, const char *name)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? -ENOTDIR : -errno;
    return fd;
}

static int open_home(const char *home)
{
    return open_dir_at(AT_FDCWD, home);
}

static int give(int fd, const struct home_owner *owner)
{
    if (owner == NULL || !owner->chown)
        return 0;
    if (fchown(fd, owner->uid, owner->gid) != 0)
        return -errno;
    return 0;
}

/* Creates (when missing) and opens the directory `name` inside `parent`; *out_fd is its
 * descriptor. A symbolic link there is refused, never followed. */
static int subdir_ensure(int parent, const char *name, mode_t mode, const struct home_owner *owner,
                         int *out_fd)
{
    bool created = false;
    int rc;
    if (mkdirat(parent, name, mode) == 0)
        created = true;
    else if (errno != EEXIST)
        return -errno;
    int fd = open_dir_at(parent, name);
    if (fd < 0)
        return fd;
    if (created) {
        /* The umask may have taken bits away. */
        if (fchmod(fd, mode) != 0) {
            rc = -errno;
            goto fail;
        }
        rc = give(fd, owner);
        if (rc < 0)
            goto fail;
    }
    *out_fd = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

/* Walks "a/b/c" below `base`, creating what is missing; returns the last one's fd. */
static int path_ensure(int base, const char *rel, mode_t mode, const struct home_owner *owner,
                       int *out_fd)
{
    int cur = dup(base);
    if (cur < 0)
        return -errno;
    const char *p = rel;
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);
        char *part = xstrndup(p, n);
        int next = -1;
        int rc = subdir_ensure(cur, part, mode, owner, &next);
        free(part);
        close(cur);
        if (rc < 0)
            return rc;
        cur = next;
        p += n;
        if (*p == '/')
            p++;
    }
    *out_fd = cur;
    return 0;
}

/* Is there something (not followed) at `rel` below the home? */
static bool exists_at(int homefd, const char *rel)
{
    struct stat st;
    return fstatat(homefd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int home_dir_ensure(const char *path, mode_t mode, const struct home_owner *owner, bool force_mode)
{
    bool created = false;
    int rc = 0;
    if (mkdir(path, mode) == 0)
        created = true;
    else if (errno != EEXIST)
        return -errno;
    int fd = open_dir_at(AT_FDCWD, path);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if ((created || force_mode) && (st.st_mode & 07777) != mode && fchmod(fd, mode) != 0) {
        rc = -errno;
        goto done;
    }
    if (owner != NULL && owner->chown && (st.st_uid != owner->uid || st.st_gid != owner->gid))
        rc = give(fd, owner);
done:
    close(fd);
    return rc;
}

bool home_is_initialized(const char *home)
{
    int fd = open_home(home);
    if (fd < 0)
        return false;
    bool yes = exists_at(fd, HOME_MARKER);
    close(fd);
    return yes;
}

/* Creates `name` in `dirfd` with `content` unless something is already there. */
static int write_new_file(int dirfd, const char *name, const char *content, mode_t mode,
                          const struct home_owner *owner)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return errno == EEXIST ? 0 : -errno;
    int rc = give(fd, owner);
    size_t len = strlen(content);
    size_t off = 0;
    while (rc == 0 && off < len) {
        ssize_t n = write(fd, content + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        else
            off += (size_t)n;
    }
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        unlinkat(dirfd, name, 0);
    return rc;
}

int home_prepare(const char *home, const struct home_owner *owner, const char **what)
{
    static const struct {
        const char *rel;
        mode_t mode;
    } dirs[] = {
        {"projects", 0755},
        {".config", 0755},
        {".config/codehub", 0755},
        {".local/share/code-server/User", 0755},
    };
    *what = home;
    int homefd = open_home(home);
    if (homefd < 0)
        return homefd;
    int rc = 0;
    int fd = -1;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        *what = dirs[i].rel;
        rc = path_ensure(homefd, dirs[i].rel, dirs[i].mode, owner, &fd);
        if (rc < 0)
            goto done;
        if (i + 1 < sizeof dirs / sizeof dirs[0])
            close(fd);
    }
    /* fd is ~/.local/share/code-server/User. */
    *what = ".local/share/code-server/User/settings.json";
    rc = write_new_file(fd, "settings.json", HOME_SETTINGS_JSON, 0644, owner);
    close(fd);
done:
    close(homefd);
    return rc;
}

int home_mark_initialized(const char *home, const struct home_owner *owner)
{
    int homefd = open_home(home);
    if (homefd < 0)
        return homefd;
    int dirfd = -1;
    int rc = path_ensure(homefd, ".config/codehub", 0755, owner, &dirfd);
    if (rc == 0) {
        rc = write_new_file(dirfd, "initialized",
                            "This home was initialised by codehub; delete this file to run "
                            "the first-start steps again.\n",
                            0644, owner);
        close(dirfd);
    }
    close(homefd);
    return rc;
}

/* ---- the code-server log ---- */

/* Is `fd` a plain file with one name, owned by the owner when ownership matters? A user
 * could have replaced the log with a hard link to someone else's file. */
static bool plain_own_file(int fd, const struct home_owner *owner)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)
        return false;
    if (owner != NULL && owner->chown && st.st_uid != owner->uid)
        return false;
    return true;
}

/* Opens `name` in `dirfd` for writing with `flags` added, creating it when missing and
 * replacing whatever is there that is not a plain file of the owner's. */
static int open_own_file(int dirfd, const char *name, int flags, const struct home_owner *owner)
{
    int base = O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | flags;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = openat(dirfd, name, base | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            int rc = give(fd, owner);
            if (rc < 0) {
                close(fd);
                return rc;
            }
            return fd;
        }
        if (errno != EEXIST)
            return -errno;
        fd = openat(dirfd, name, base);
        if (fd >= 0 && plain_own_file(fd, owner))
            return fd;
        if (fd >= 0)
            close(fd);
        /* A link, FIFO, socket, device or someone else's file: take the name back. */
        if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
            return -errno;
    }
    return -EAGAIN;
}

int home_log_open(const char *home, const struct home_owner *owner)
{
    int homefd = open_home(home);
    if (homefd < 0)
        return homefd;
    int fd = open_own_file(homefd, HOME_LOG_NAME, O_APPEND, owner);
    close(homefd);
    if (fd < 0)
        return fd;
    /* O_NONBLOCK only guarded the open against a FIFO; the writer gets a plain file. */
    if (fcntl(fd, F_SETFL, O_APPEND) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int home_log_rotate(const char *home, int64_t max_size, const struct home_owner *owner)
{
    int homefd = open_home(home);
    if (homefd < 0)
        return homefd;
    int rc = 0;
    int oldfd = -1;
    int logfd = openat(homefd, HOME_LOG_NAME, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (logfd < 0) {
        rc = errno == ENOENT ? 0 : -errno;
        goto done;
    }
    if (!plain_own_file(logfd, owner)) {
        rc = -EPERM;
        goto done;
    }
    struct stat st;
    if (fstat(logfd, &st) != 0) {
        rc = -errno;
        goto done;
    }
    if (st.st_size <= max_size)
        goto done;
    oldfd = open_own_file(homefd, HOME_LOG_OLD_NAME, 0, owner);
    if (oldfd < 0) {
        rc = oldfd;
        goto done;
    }
    if (ftruncate(oldfd, 0) != 0) {
        rc = -errno;
        goto done;
    }
    char chunk[65536];
    off_t off = 0;
    while (off < st.st_size) {
        ssize_t n = pread(logfd, chunk, sizeof chunk, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto done;
        }
        if (n == 0)
            break;
        for (ssize_t w = 0; w < n;) {
            ssize_t m = write(oldfd, chunk + w, (size_t)(n - w));
            if (m < 0 && errno == EINTR)
                continue;
            if (m < 0) {
                rc = -errno;
                goto done;
            }
            w += m;
        }
        off += n;
    }
    /* Lines written between the copy and here are lost; the writer's O_APPEND makes its
     * next write land at the new end, 0, instead of leaving a hole. */
    if (ftruncate(logfd, 0) != 0) {
        rc = -errno;
        goto done;
    }
    rc = 1;
done:
    if (oldfd >= 0)
        close(oldfd);
    if (logfd >= 0)
        close(logfd);
    close(homefd);
    return rc;
}

char *home_log_tail(const char *home, int max_lines)
{
    struct buf out = BUF_INIT;
    int homefd = open_home(home);
    if (homefd < 0)
        return buf_steal(&out);
    int fd = openat(homefd, HOME_LOG_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    close(homefd);
    struct stat st;
    if (fd < 0)
        return buf_steal(&out);
    /* Only a plain file: reading a FIFO or device could block or leak something. */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        close(fd);
        return buf_steal(&out);
    }
    off_t start = st.st_size > TAIL_BYTES ? st.st_size - TAIL_BYTES : 0;
    char text[TAIL_BYTES];
    ssize_t n = pread(fd, text, sizeof text, start);
    close(fd);
    if (n <= 0)
        return buf_steal(&out);
    size_t len = (size_t)n;
    size_t begin = 0;
    if (start > 0) {
        /* Drop the partial first line, unless it is all there is. */
        char *nl = memchr(text, '\n', len);
        if (nl != NULL && (size_t)(nl - text) + 1 < len)
            begin = (size_t)(nl - text) + 1;
    }
    while (len > begin && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    size_t from = len;
    int lines = 0;
    while (from > begin) {
        if (text[from - 1] == '\n') {
            if (++lines >= max_lines)
                break;
        }
        from--;
    }
    for (size_t i = from; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\r')
            continue;
        buf_append_char(&out, (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f ? '?' : (char)c);
    }
    return buf_steal(&out);
}

/* ---- the asynchronous initialisation ---- */

enum init_step { STEP_PREPARE = 0, STEP_SSH_KEY, STEP_VENV, STEP_MARK, STEP_END };

struct home_init {
    uint32_t magic;
    uv_loop_t *loop;
    char *name;
    char *home;
    struct home_owner owner;
    bool ssh_key;
    bool venv;
    char **env;
    int log_fd;
    struct home_init_callbacks cb;
    void *data;
    enum init_step next;
    uv_timer_t timer;   /* next-turn continuation, or the running step's timeout */
    uv_process_t *proc; /* the running step, NULL between steps */
    const char *step;   /* what the running step does, for logs */
    bool timed_out;
    bool cancelled;
    bool abandoned;
    bool finished;
    int open_handles;
};

static void init_free(struct home_init *hi)
{
    assert(hi->magic == HOME_INIT_MAGIC);
    hi->magic = 0;
    if (hi->env != NULL) {
        for (size_t i = 0; hi->env[i] != NULL; i++)
            free(hi->env[i]);
        free(hi->env);
    }
    if (hi->log_fd >= 0)
        close(hi->log_fd);
    free(hi->name);
    free(hi->home);
    free(hi);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct home_init *hi = h->data;
    if (h->type == UV_PROCESS)
        free(h);
    if (--hi->open_handles == 0)
        init_free(hi);
}

static void release(struct home_init *hi)
{
    if (!uv_is_closing((uv_handle_t *)&hi->timer))
        uv_close((uv_handle_t *)&hi->timer, on_handle_closed);
    if (hi->proc != NULL) {
        /* Closing a process handle does not signal the process. */
        uv_close((uv_handle_t *)hi->proc, on_handle_closed);
        hi->proc = NULL;
    }
}

static void finish(struct home_init *hi, int status, const char *reason)
{
    if (hi->finished)
        return;
    hi->finished = true;
    if (!hi->abandoned)
        hi->cb.done(hi->data, status, reason);
    release(hi);
}

static const char *env_get(char *const *env, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
        if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=')
            return env[i] + kl + 1;
    }
    return NULL;
}

static void advance(struct home_init *hi);

static void on_step_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct home_init *hi = proc->data;
    assert(hi->magic == HOME_INIT_MAGIC);
    uv_timer_stop(&hi->timer);
    uv_close((uv_handle_t *)proc, on_handle_closed);
    hi->proc = NULL;
    if (hi->cancelled) {
        finish(hi, -ECANCELED, "cancelled");
        return;
    }
    if (hi->timed_out || exit_status != 0 || term_signal != 0) {
        char *how = proc_exit_describe(exit_status, term_signal);
        log_event(LOG_WARN, "home.init_step_failed", "user", hi->name, "step", hi->step, "result",
                  hi->timed_out ? "timed out" : how, "action", "skipped", NULL);
        free(how);
    }
    hi->timed_out = false;
    advance(hi);
}

static void on_timer(uv_timer_t *t)
{
    struct home_init *hi = t->data;
    assert(hi->magic == HOME_INIT_MAGIC);
    if (hi->proc != NULL) {
        /* The running step took too long; its exit continues the walk. */
        hi->timed_out = true;
        proc_group_kill(hi->proc->pid, SIGKILL);
        return;
    }
    if (hi->cancelled) {
        finish(hi, -ECANCELED, "cancelled");
        return;
    }
    advance(hi);
}

int home_spawn(uv_loop_t *loop, uv_process_t *proc, const char *file, char **argv, char **env,
               const char *cwd, int log_fd, const struct home_owner *owner, uv_exit_cb exit_cb)
{
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    for (int i = 1; i < 3; i++) {
        stdio[i].flags = log_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
        stdio[i].data.fd = log_fd;
    }
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = file;
    o.args = argv;
    o.env = env;
    o.cwd = cwd;
    o.exit_cb = exit_cb;
    o.stdio = stdio;
    o.stdio_count = 3;
    o.flags = UV_PROCESS_DETACHED;
    if (owner->chown) {
        o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        o.uid = owner->uid;
        o.gid = owner->gid;
    }
    return uv_spawn(loop, proc, &o);
}

/* Runs `argv` (argv[0] absolute) as the running step. Returns 0 or a negative errno. */
static int run_step(struct home_init *hi, char **argv, const char *step)
{
    uv_process_t *proc = xcalloc(1, sizeof *proc);
    proc->data = hi;
    /* Its own process group, so that a cancel or a timeout reaches its children too. */
    int rc = home_spawn(hi->loop, proc, argv[0], argv, hi->env, hi->home, hi->log_fd, &hi->owner,
                        on_step_exit);
    if (rc < 0) {
        /* A failed uv_spawn still initialised the handle: it must be closed. */
        hi->open_handles++;
        uv_close((uv_handle_t *)proc, on_handle_closed);
        return rc;
    }
    hi->open_handles++;
    hi->proc = proc;
    hi->step = step;
    uv_timer_start(&hi->timer, on_timer, STEP_TIMEOUT_MS, 0);
    return 0;
}

static void step_skipped(struct home_init *hi, const char *step, const char *why)
{
    log_event(LOG_WARN, "home.init_step_skipped", "user", hi->name, "step", step, "reason", why,
              NULL);
}

/* Reports progress; false when the callback cancelled or abandoned us meanwhile. */
static bool report(struct home_init *hi, int percent, const char *message)
{
    hi->cb.progress(hi->data, percent, message);
    return !hi->cancelled && !hi->abandoned && !hi->finished;
}

static bool start_ssh_key(struct home_init *hi)
{
    int homefd = open_home(hi->home);
    if (homefd < 0) {
        step_skipped(hi, "ssh-key", strerror(-homefd));
        return false;
    }
    bool have = exists_at(homefd, ".ssh/id_ed25519");
    int sshfd = -1;
    int rc = have ? 0 : subdir_ensure(homefd, ".ssh", 0700, &hi->owner, &sshfd);
    close(homefd);
    if (have)
        return false;
    if (rc < 0) {
        step_skipped(hi, "ssh-key", "~/.ssh is not a directory");
        return false;
    }
    close(sshfd);
    char *tool = proc_find_executable("ssh-keygen", env_get(hi->env, "PATH"));
    if (tool == NULL) {
        step_skipped(hi, "ssh-key", "ssh-keygen not found");
        return false;
    }
    if (!report(hi, 15, "Initialising your home: creating an SSH key")) {
        free(tool);
        return hi->cancelled; /* a cancel finishes through the timer */
    }
    char *comment = xasprintf("%s@codehub", hi->name);
    char *keyfile = xasprintf("%s/.ssh/id_ed25519", hi->home);
    char *argv[] = {tool, "-t", "ed25519", "-N", "", "-C", comment, "-f", keyfile, "-q", NULL};
    rc = run_step(hi, argv, "ssh-key");
    if (rc < 0)
        step_skipped(hi, "ssh-key", uv_strerror(rc));
    free(tool);
    free(comment);
    free(keyfile);
    return rc == 0;
}

static bool start_venv(struct home_init *hi)
{
    int homefd = open_home(hi->home);
    if (homefd < 0) {
        step_skipped(hi, "venv", strerror(-homefd));
        return false;
    }
    bool have = exists_at(homefd, ".venv");
    close(homefd);
    if (have)
        return false;
    char *tool = proc_find_executable("python3", env_get(hi->env, "PATH"));
    if (tool == NULL) {
        step_skipped(hi, "venv", "python3 not found");
        return false;
    }
    if (!report(hi, 20, "Initialising your home: creating a Python venv (~/.venv)")) {
        free(tool);
        return hi->cancelled;
    }
    char *dir = xasprintf("%s/.venv", hi->home);
    char *argv[] = {tool, "-m", "venv", dir, NULL};
    int rc = run_step(hi, argv, "venv");
    if (rc < 0)
        step_skipped(hi, "venv", uv_strerror(rc));
    free(tool);
    free(dir);
    return rc == 0;
}

/* Runs steps until one is asynchronous (a child process) or all are done. */
static void advance(struct home_init *hi)
{
    while (!hi->finished) {
        if (hi->cancelled || hi->abandoned) {
            /* A callback cancelled: finish on the next turn, never inside it. */
            if (hi->cancelled)
                uv_timer_start(&hi->timer, on_timer, 0, 0);
            return;
        }
        enum init_step step = hi->next;
        if (step < STEP_END)
            hi->next = step + 1;
        switch (step) {
        case STEP_PREPARE: {
            if (!report(hi, 10, "Initialising your home: creating folders and settings"))
                continue;
            const char *what = NULL;
            int rc = home_prepare(hi->home, &hi->owner, &what);
            if (rc < 0) {
                char *reason = xasprintf("cannot create ~/%s: %s", what, strerror(-rc));
                finish(hi, rc, reason);
                free(reason);
                return;
            }
            break;
        }
        case STEP_SSH_KEY:
            if (hi->ssh_key && start_ssh_key(hi))
                return;
            break;
        case STEP_VENV:
            if (hi->venv && start_venv(hi))
                return;
            break;
        case STEP_MARK: {
            int rc = home_mark_initialized(hi->home, &hi->owner);
            if (rc < 0) {
                char *reason = xasprintf("cannot write ~/%s: %s", HOME_MARKER, strerror(-rc));
                finish(hi, rc, reason);
                free(reason);
                return;
            }
            break;
        }
        case STEP_END:
            finish(hi, 0, NULL);
            return;
        }
    }
}

struct home_init *home_init_start(uv_loop_t *loop, const struct home_options *opt,
                                  const struct home_init_callbacks *cb, void *data)
{
    struct home_init *hi = xcalloc(1, sizeof *hi);
    hi->magic = HOME_INIT_MAGIC;
    hi->loop = loop;
    hi->name = xstrdup(opt->name);
    hi->home = xstrdup(opt->home);
    hi->owner = opt->owner;
    hi->ssh_key = opt->ssh_key;
    hi->venv = opt->venv;
    size_t n = 0;
    while (opt->env != NULL && opt->env[n] != NULL)
        n++;
    hi->env = xcalloc(n + 1, sizeof *hi->env);
    for (size_t i = 0; i < n; i++)
        hi->env[i] = xstrdup(opt->env[i]);
    hi->log_fd = opt->log_fd >= 0 ? fcntl(opt->log_fd, F_DUPFD_CLOEXEC, 3) : -1;
    hi->cb = *cb;
    hi->data = data;
    hi->next = home_is_initialized(opt->home) ? STEP_END : STEP_PREPARE;
    uv_timer_init(loop, &hi->timer);
    hi->timer.data = hi;
    hi->open_handles = 1;
    /* Even the first step waits for the next loop turn: no callback from in here. */
    uv_timer_start(&hi->timer, on_timer, 0, 0);
    return hi;
}

void home_init_cancel(struct home_init *hi)
{
    assert(hi->magic == HOME_INIT_MAGIC);
    if (hi->finished || hi->cancelled || hi->abandoned)
        return;
    hi->cancelled = true;
    if (hi->proc != NULL)
        proc_group_kill(hi->proc->pid, SIGKILL); /* its exit finishes us */
    else
        uv_timer_start(&hi->timer, on_timer, 0, 0);
}

void home_init_abandon(struct home_init *hi)
{
    assert(hi->magic == HOME_INIT_MAGIC);
    if (hi->abandoned)
        return;
    hi->abandoned = true;
    if (!hi->finished) {
        hi->finished = true;
        release(hi);
    }
}

/* The local backend: one code-server process per user on this machine.
 *
 * Layout under server.data_dir (absolute, resolved once):
 *   users/NAME/                 the user's HOME (0700; the system account's when
 *                               local.system_users), code-server.log in it
 *   run/NAME/                   the hub's run directory for the user (0700, or 0711 when
 *                               the server runs as a system account that must reach
 *                               user/ below it)
 *   run/NAME/code-server.sock   the route the proxy connects to
 *   run/NAME/server.json        {"pid","pgid","start_time","socket"} of the running server,
 *                               the same JSON the store keeps: a start finds a server a
 *                               crashed hub did not get to record
 *   run/NAME/user/              only with system_users: the user's own directory where
 *                               code-server creates its socket. The hub hard-links that
 *                               socket to run/NAME/code-server.sock after checking it is
 *                               a socket owned by the user, so a user cannot swap the
 *                               route for a symbolic link to someone else's socket.
 *
 * Supervision: the process is spawned detached (setsid: its own session and process
 * group, signals go to -pgid), its output appended to ~/code-server.log. The hub is not
 * in any pipe, so code-server survives a hub crash. A process this hub spawned is watched
 * by its uv_process exit callback; one found again after a restart (not our child) by a
 * pidfd polled for readability. */
#include "spawn/backend.h"
#include "spawn/probe.h"

#include "auth/username.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/parse.h"
#include "spawn/home.h"
#include "spawn/proc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LOCAL_MAGIC 0x4c4f434cu
#define SERVER_MAGIC 0x4c535256u

/* Health polling starts fast (code-server answers in about half a second: a fixed 100 ms
 * poll would add 50 ms on average to every start) and slows to HEALTH_INTERVAL_MS over
 * the first second, so a slow start costs little. */
#define HEALTH_INTERVAL_MS 100
#define HEALTH_FIRST_INTERVAL_MS 10
#define PROBE_TIMEOUT_MS 2000
#define REATTACH_PROBES 3
#define REATTACH_PROBE_GAP_MS 300
#define TAIL_LINES 20
#define SAFE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define LAUNCHER_REL ".deps/code-server/bin/code-server"
#define SOCK_NAME "code-server.sock"
#define RECORD_NAME "server.json"
/* A system account below this uid is the system's own (root, daemon, www-data, ...): a
 * codehub user of that name must never get it. */
#define MIN_ACCOUNT_UID 1000

unsigned spawn__local_log_check_ms = 10 * 1000;

/* ---- the backend instance and its servers ---- */

struct local {
    uint32_t magic;
    uv_loop_t *loop;
    const struct config *cfg;
    const struct spawner_events *ev;
    char *code_server;         /* absolute launcher path, NULL while none is found */
    char *code_server_missing; /* why there is none: every start fails with this */
    char *data_dir;            /* absolute */
    bool system_users;
    struct spawner_server *servers; /* every server not yet freed */
    uv_timer_t close_timer;         /* makes close()'s `done` asynchronous */
    bool closing;
    bool close_timer_closed;
    void (*close_done)(void *data);
    void *close_data;
};

enum phase {
    PH_PREPARE, /* waiting for the next loop turn, or for useradd */
    PH_INIT,    /* the home is being initialised */
    PH_SPAWNED, /* code-server runs, not answering yet */
    PH_PROBING, /* a recorded server (reattach or found by a start) is being checked */
    PH_READY,   /* answering */
    PH_KILLING, /* signalled; waiting for the exit */
    PH_GONE,    /* the end was reported or the server detached; handles closing */
};

/* Why the end came, to word the final event. */
enum end_kind {
    END_NONE,
    END_TIMEOUT,   /* start_timeout passed */
    END_NO_ANSWER, /* a recorded server did not answer its probes */
    END_REPLACE,   /* a recorded server found by a start did not answer: start afresh */
};

struct spawner_server {
    uint32_t magic;
    struct local *lb;
    struct spawner_server *prev, *next;
    void *ctx; /* the manager's; NULL once the end is reported or the backend closes */
    char *name;
    char *home;
    char *run_dir;
    char *user_dir; /* run/NAME/user with system_users, else NULL */
    char *sock;     /* the route's socket: run/NAME/code-server.sock */
    char *cs_sock;  /* where code-server listens: sock, or user_dir/code-server.sock */
    char *record;   /* run/NAME/server.json */
    char *route;    /* "unix:" + sock */
    char *shell;
    struct home_owner owner;
    enum phase phase;
    enum end_kind end;
    bool stop_requested;
    bool adopting;  /* PH_PROBING for a start (not a reattach) */
    bool our_child; /* watched through `proc` */
    bool linked;    /* system_users: the route link points at the current socket */
    pid_t pid;      /* also the process group id: code-server leads its own session */
    uint64_t start_time;
    char *exit_how; /* "exited with status 1", once the exit is seen */
    uv_process_t proc;
    uv_process_t *aux; /* useradd */
    int pidfd;
    uv_poll_t pidfd_poll;
    bool proc_open, poll_open;
    uv_timer_t tick;     /* next turn, health polls, progress */
    uv_timer_t deadline; /* start timeout, or SIGTERM → SIGKILL */
    uv_timer_t logcheck;
    struct spawn_probe *probe;
    int probes_left;
    struct home_init *init;
    int log_fd;
    uint64_t spawned_at; /* uv_now at spawn */
    uint64_t last_progress_at;
    bool waiting_reported; /* the first "waiting" progress event went out */
    int open_handles;      /* tick, deadline, logcheck, proc, poll, aux */
    int pending_work;      /* log rotations on the thread pool */
};

static void server_release(struct spawner_server *s);
static void start_fresh(struct spawner_server *s);
static void spawn_code_server(struct spawner_server *s);
static char *find_default_launcher(void);

/* The launcher to run: local.code_server, else the default lookup. NULL when there is
 * none, with *why (caller frees) saying what was looked for, when `why` is not NULL. */
static char *find_launcher(const struct config *cfg, char **why)
{
    char *launcher;
    if (cfg->local.code_server != NULL && cfg->local.code_server[0] != '\0') {
        launcher = proc_find_executable(cfg->local.code_server, getenv("PATH"));
        if (launcher == NULL && why != NULL)
            *why = xasprintf("code-server not found: local.code_server %s is not an "
                             "executable file",
                             cfg->local.code_server);
        return launcher;
    }
    launcher = find_default_launcher();
    if (launcher == NULL && why != NULL)
        *why = xstrdup("no code-server found: looked for " LAUNCHER_REL
                       " above the codehub binary and in the working directory, and for "
                       "code-server on PATH; run scripts/install-code-server.sh or set "
                       "local.code_server");
    return launcher;
}

/* ---- small helpers ---- */

static char *state_json(const struct spawner_server *s)
{
    json_t *o = json_pack("{s:i, s:i, s:I, s:s}", "pid", (int)s->pid, "pgid", (int)s->pid,
                          "start_time", (json_int_t)s->start_time, "socket", s->sock);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    char *copy = xstrdup(text);
    free(text);
    return copy;
}

/* Writes run/NAME/server.json (replaced atomically). Failure only costs the crash-window
 * protection, so it is logged, not fatal. */
static void record_write(struct spawner_server *s)
{
    char *json = state_json(s);
    char *tmp = xasprintf("%s.tmp", s->record);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    if (ok) {
        size_t len = strlen(json);
        ok = write(fd, json, len) == (ssize_t)len;
        ok = close(fd) == 0 && ok;
    }
    if (ok)
        ok = rename(tmp, s->record) == 0;
    if (!ok) {
        log_event(LOG_WARN, "spawn.record_failed", "user", s->name, "path", s->record, "error",
                  strerror(errno), NULL);
        unlink(tmp);
    }
    free(tmp);
    free(json);
}

struct recorded {
    pid_t pid;
    pid_t pgid;
    uint64_t start_time;
    char *socket;
};

/* Parses the persisted JSON. Returns 0 or -EINVAL. */
static int recorded_parse(const char *text, struct recorded *out)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -EINVAL;
    json_int_t pid = 0, pgid = 0, start = 0;
    const char *sock = NULL;
    if (o == NULL)
        return -EINVAL;
    if (json_unpack(o, "{s:I, s:I, s:I, s:s}", "pid", &pid, "pgid", &pgid, "start_time", &start,
                    "socket", &sock) != 0)
        goto done;
    if (pid <= 1 || pid > INT_MAX || pgid != pid || start <= 0)
        goto done;
    out->pid = (pid_t)pid;
    out->pgid = (pid_t)pgid;
    out->start_time = (uint64_t)start;
    out->socket = xstrdup(sock);
    rc = 0;
done:
    json_decref(o);
    return rc;
}

/* Reads run/NAME/server.json; 0 or a negative errno. */
static int record_read(const char *path, struct recorded *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char text[1024];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -EINVAL;
    text[n] = '\0';
    return recorded_parse(text, out);
}

/* Signals the server's process group, but only while the group can still be ours: the
 * leader is alive with the recorded start time, or gone without a successor (a group id
 * can only be reused by a process with that PID). Our own unreaped child always is. */
static int server_signal(struct spawner_server *s, int sig)
{
    if (s->pid <= 1)
        return -ESRCH;
    if (!s->our_child || !s->proc_open) {
        int id = proc_identity_check(s->pid, s->start_time);
        if (id != 0 && id != -ESRCH) {
            log_event(LOG_WARN, "spawn.not_signalled", "user", s->name, "reason",
                      "the PID belongs to another process now", NULL);
            return id;
        }
    }
    return proc_group_kill(s->pid, sig);
}

static char **build_env(const struct spawner_server *s, const struct config *cfg)
{
    struct {
        const char *key;
        char *value;
    } base[] = {
        {"HOME", xstrdup(s->home)},   {"USER", xstrdup(s->name)},   {"LOGNAME", xstrdup(s->name)},
        {"SHELL", xstrdup(s->shell)}, {"PATH", xstrdup(SAFE_PATH)}, {"LANG", xstrdup("C.UTF-8")},
    };
    size_t nbase = sizeof base / sizeof base[0];
    size_t n = nbase + cfg->local.env.n;
    char **env = xcalloc(n + 1, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < nbase; i++) {
        /* A local.env entry of the same name replaces the default. */
        bool overridden = false;
        size_t kl = strlen(base[i].key);
        for (size_t j = 0; j < cfg->local.env.n; j++) {
            const char *e = cfg->local.env.items[j];
            if (strncmp(e, base[i].key, kl) == 0 && e[kl] == '=')
                overridden = true;
        }
        if (!overridden)
            env[k++] = xasprintf("%s=%s", base[i].key, base[i].value);
        free(base[i].value);
    }
    for (size_t j = 0; j < cfg->local.env.n; j++)
        env[k++] = xstrdup(cfg->local.env.items[j]);
    env[k] = NULL;
    return env;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

/* ---- reporting the end ---- */

/* Reports the end to the manager (once) and lets the server go. Called only when nothing
 * of the server runs any more. */
static void server_end(struct spawner_server *s, bool failed, const char *reason)
{
    void *ctx = s->ctx;
    const struct spawner_events *ev = s->lb->ev;
    bool requested = s->stop_requested;
    s->ctx = NULL;
    s->phase = PH_GONE;
    /* Only closes handles here (their callbacks free s later); s is not used below, so a
     * callback may start a new server for the same user at once. */
    server_release(s);
    if (ctx == NULL)
        return;
    if (requested)
        ev->exited(ctx, true, NULL);
    else if (failed)
        ev->failed(ctx, reason);
    else
        ev->exited(ctx, false, reason);
}

/* The reason text for an end: `what` plus the log tail. */
static char *with_tail(const struct spawner_server *s, const char *what)
{
    char *tail = home_log_tail(s->home, TAIL_LINES);
    char *msg = tail[0] != '\0'
                    ? xasprintf("%s; last lines of ~/%s:\n%s", what, HOME_LOG_NAME, tail)
                    : xstrdup(what);
    free(tail);
    return msg;
}

/* The process is gone (exit callback or pidfd): clean up its traces, then decide. */
static void server_exited(struct spawner_server *s)
{
    uv_timer_stop(&s->tick);
    uv_timer_stop(&s->deadline);
    uv_timer_stop(&s->logcheck);
    if (s->probe != NULL) {
        spawn_probe_cancel(s->probe);
        s->probe = NULL;
    }
    /* Children left in the group (the leader went first) follow it. */
    server_signal(s, SIGKILL);
    unlink(s->sock);
    if (s->user_dir != NULL)
        unlink(s->cs_sock);
    unlink(s->record);
    s->pid = 0;
    log_event(s->stop_requested ? LOG_INFO : LOG_WARN, "spawn.process_exited", "user", s->name,
              "result", s->exit_how, NULL);
    const struct config *cfg = s->lb->cfg;
    if (s->end == END_REPLACE && !s->stop_requested && s->ctx != NULL) {
        /* The old server was not answering and is gone now: start a new one. */
        s->end = END_NONE;
        s->adopting = false;
        free(s->exit_how);
        s->exit_how = NULL;
        start_fresh(s);
        return;
    }
    char *what;
    bool failed = s->phase != PH_READY;
    if (s->end == END_TIMEOUT)
        what = xasprintf("code-server did not answer within %llds",
                         (long long)cfg->spawn.start_timeout);
    else if (s->end == END_NO_ANSWER)
        what = xstrdup("code-server was running but did not answer its health check, so it "
                       "was stopped");
    else if (failed)
        what = xasprintf("code-server %s before it answered", s->exit_how);
    else
        what = xasprintf("code-server %s", s->exit_how);
    char *reason = with_tail(s, what);
    free(what);
    server_end(s, failed, reason);
    free(reason);
}

static void on_proc_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct spawner_server *s = proc->data;
    assert(s->magic == SERVER_MAGIC);
    free(s->exit_how);
    s->exit_how = proc_exit_describe(exit_status, term_signal);
    /* Our child is reaped: its PID is free from now on, and never signalled again except
     * for the group below, which cannot be reused while members remain. */
    s->our_child = false;
    server_exited(s);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
    struct spawner_server *s = h->data;
    assert(s->magic == SERVER_MAGIC);
    uv_poll_stop(h);
    int wstatus = 0;
    free(s->exit_how);
    /* A process found again after a restart is not our child, unless the "restart" was
     * a new manager in this same process (tests); then reap it here. */
    if (proc_pidfd_reap(s->pidfd, &wstatus) == 0)
        s->exit_how = proc_wait_describe(wstatus);
    else
        s->exit_how = xstrdup("exited");
    server_exited(s);
}

/* Starts watching the recorded process through a pidfd. Returns 0 or a negative errno
 * (-ESRCH: it is already gone). */
static int watch_pidfd(struct spawner_server *s)
{
    int fd = proc_pidfd_open(s->pid);
    if (fd < 0)
        return fd;
    /* The PID could have changed hands between the identity check and pidfd_open: check
     * again now that the descriptor pins one process. */
    int id = proc_identity_check(s->pid, s->start_time);
    if (id != 0) {
        close(fd);
        return id;
    }
    s->pidfd = fd;
    int rc = uv_poll_init(s->lb->loop, &s->pidfd_poll, fd);
    if (rc < 0) {
        close(fd);
        s->pidfd = -1;
        return rc;
    }
    s->pidfd_poll.data = s;
    s->poll_open = true;
    s->open_handles++;
    uv_poll_start(&s->pidfd_poll, UV_READABLE, on_pidfd);
    return 0;
}

/* ---- log bounding ---- */

struct rotate_work {
    uv_work_t req;
    struct spawner_server *s;
    int result;
};

static void rotate_run(uv_work_t *req)
{
    struct rotate_work *w = req->data;
    w->result = home_log_rotate(w->s->home, w->s->lb->cfg->local.log_max_size, &w->s->owner);
}

static void rotate_after(uv_work_t *req, int status)
{
    struct rotate_work *w = req->data;
    struct spawner_server *s = w->s;
    if (w->result == 1)
        log_event(LOG_INFO, "spawn.log_rotated", "user", s->name, NULL);
    else if (w->result < 0)
        log_event(LOG_WARN, "spawn.log_rotate_failed", "user", s->name, "error",
                  strerror(-w->result), NULL);
    free(w);
    s->pending_work--;
    if (s->phase == PH_GONE)
        server_release(s);
}

static void on_logcheck(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (s->pending_work > 0)
        return;
    struct rotate_work *w = xcalloc(1, sizeof *w);
    w->req.data = w;
    w->s = s;
    if (uv_queue_work(s->lb->loop, &w->req, rotate_run, rotate_after) != 0) {
        free(w);
        return;
    }
    s->pending_work++;
}

static void start_logcheck(struct spawner_server *s)
{
    unsigned every = spawn__local_log_check_ms;
    uv_timer_start(&s->logcheck, on_logcheck, every, every);
    uv_unref((uv_handle_t *)&s->logcheck);
}

/* ---- readiness ---- */

static void emit_progress(struct spawner_server *s, int percent, const char *message)
{
    if (s->ctx != NULL)
        s->lb->ev->progress(s->ctx, percent, message);
}

static void became_ready(struct spawner_server *s)
{
    s->phase = PH_READY;
    uv_timer_stop(&s->tick);
    uv_timer_stop(&s->deadline);
    char *pid_text = xasprintf("%d", (int)s->pid);
    log_event(LOG_INFO, "spawn.ready", "user", s->name, "pid", pid_text, NULL);
    free(pid_text);
    if (s->ctx != NULL)
        s->lb->ev->ready(s->ctx);
}

/* With system_users the route is a hard link, made by root, to the socket code-server
 * created in the user's directory, once that is a socket owned by the user. Returns 0
 * when the route points at the current socket. */
static int route_link(struct spawner_server *s)
{
    if (s->user_dir == NULL || s->linked)
        return 0;
    char *tmp = xasprintf("%s.new", s->sock);
    unlink(tmp);
    int rc = 0;
    /* linkat without AT_SYMLINK_FOLLOW links a symbolic link itself, never its target. */
    if (linkat(AT_FDCWD, s->cs_sock, AT_FDCWD, tmp, 0) != 0) {
        rc = -errno;
        goto done;
    }
    struct stat st;
    if (lstat(tmp, &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != s->owner.uid) {
        rc = -EPERM;
        log_event(LOG_WARN, "spawn.socket_refused", "user", s->name, "path", s->cs_sock, "reason",
                  "not a socket owned by the user", NULL);
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, s->sock) != 0) {
        rc = -errno;
        unlink(tmp);
        goto done;
    }
    s->linked = true;
done:
    free(tmp);
    return rc;
}

static void on_start_probe(void *data, int result)
{
    struct spawner_server *s = data;
    s->probe = NULL;
    if (s->phase != PH_SPAWNED)
        return;
    if (result >= 200 && result < 400)
        became_ready(s);
}

static void on_health_tick(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (s->phase != PH_SPAWNED || s->probe != NULL)
        return;
    uint64_t now = uv_now(s->lb->loop);
    uint64_t elapsed = now - s->spawned_at;
    uint64_t timeout_ms = (uint64_t)s->lb->cfg->spawn.start_timeout * 1000;
    uint64_t next = HEALTH_FIRST_INTERVAL_MS + elapsed / 10;
    uv_timer_set_repeat(t, next < HEALTH_INTERVAL_MS ? next : HEALTH_INTERVAL_MS);
    if (!s->waiting_reported || now - s->last_progress_at >= 1000) {
        int percent = 50 + (int)(40 * elapsed / (timeout_ms > 0 ? timeout_ms : 1));
        if (percent > 90)
            percent = 90;
        char msg[96];
        snprintf(msg, sizeof msg, "Waiting for code-server to answer (%llus)",
                 (unsigned long long)(elapsed / 1000));
        s->last_progress_at = now;
        s->waiting_reported = true;
        emit_progress(s, percent, msg);
        if (s->phase != PH_SPAWNED)
            return;
    }
    if (route_link(s) < 0)
        return; /* not created yet */
    s->probe =
        spawn_probe_unix(s->lb->loop, s->sock, "/healthz", PROBE_TIMEOUT_MS, on_start_probe, s);
}

static void on_start_deadline(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (s->phase != PH_SPAWNED)
        return;
    s->end = END_TIMEOUT;
    s->phase = PH_KILLING;
    log_event(LOG_WARN, "spawn.start_timeout", "user", s->name, NULL);
    server_signal(s, SIGKILL);
}

/* ---- starting ---- */

static void fail_now(struct spawner_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A start failed before any process of the server ran. */
static void fail_now(struct spawner_server *s, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&b, fmt, ap);
    va_end(ap);
    log_event(LOG_WARN, "spawn.start_failed", "user", s->name, "reason", b.data, NULL);
    server_end(s, true, b.data);
    buf_free(&b);
}

static void spawn_code_server(struct spawner_server *s)
{
    struct local *lb = s->lb;
    const struct config *cfg = lb->cfg;
    emit_progress(s, 30, "Starting code-server");
    if (s->stop_requested) {
        server_end(s, false, NULL);
        return;
    }
    if (lb->code_server == NULL) {
        /* Look again: it may have been installed since the hub started. */
        lb->code_server = find_launcher(cfg, NULL);
        if (lb->code_server == NULL) {
            fail_now(s, "%s", lb->code_server_missing);
            return;
        }
        free(lb->code_server_missing);
        lb->code_server_missing = NULL;
    }
    /* A socket left by a server that was killed would make code-server fail to listen. */
    unlink(s->sock);
    if (s->user_dir != NULL)
        unlink(s->cs_sock);
    s->linked = false;

    char *udd = xasprintf("%s/.local/share/code-server", s->home);
    char *ext = xasprintf("%s/.local/share/code-server/extensions", s->home);
    char *projects = xasprintf("%s/projects", s->home);
    size_t nfixed = 14;
    char **argv = xcalloc(nfixed + cfg->local.args.n + 2, sizeof *argv);
    size_t k = 0;
    argv[k++] = lb->code_server;
    argv[k++] = "--auth";
    argv[k++] = "none";
    argv[k++] = "--socket";
    argv[k++] = s->cs_sock;
    argv[k++] = "--socket-mode";
    argv[k++] = "600";
    argv[k++] = "--user-data-dir";
    argv[k++] = udd;
    argv[k++] = "--extensions-dir";
    argv[k++] = ext;
    argv[k++] = "--disable-telemetry";
    argv[k++] = "--disable-update-check";
    argv[k++] = "--disable-workspace-trust";
    for (size_t i = 0; i < cfg->local.args.n; i++)
        argv[k++] = cfg->local.args.items[i];
    argv[k++] = projects;
    argv[k] = NULL;
    char **env = build_env(s, cfg);

    s->proc.data = s;
    int rc = home_spawn(lb->loop, &s->proc, lb->code_server, argv, env, s->home, s->log_fd,
                        &s->owner, on_proc_exit);
    s->proc_open = true;
    s->open_handles++;
    close(s->log_fd);
    s->log_fd = -1;
    free(udd);
    free(ext);
    free(projects);
    free(argv);
    strv_free(env);
    if (rc < 0) {
        fail_now(s, "cannot run %s: %s", lb->code_server, uv_strerror(rc));
        return;
    }
    s->our_child = true;
    s->pid = s->proc.pid;
    struct proc_stat st;
    if (proc_stat_read(s->pid, &st) == 0)
        s->start_time = st.start_time;
    s->phase = PH_SPAWNED;
    s->spawned_at = uv_now(lb->loop);
    s->waiting_reported = false;
    record_write(s);
    char *pid_text = xasprintf("%d", (int)s->pid);
    log_event(LOG_INFO, "spawn.process_started", "user", s->name, "pid", pid_text, NULL);
    free(pid_text);
    char *json = state_json(s);
    if (s->ctx != NULL)
        lb->ev->placed(s->ctx, s->route, json);
    free(json);
    if (s->phase != PH_SPAWNED)
        return;
    uv_timer_start(&s->deadline, on_start_deadline, (uint64_t)cfg->spawn.start_timeout * 1000, 0);
    uv_timer_start(&s->tick, on_health_tick, 0, HEALTH_FIRST_INTERVAL_MS);
    start_logcheck(s);
}

static void on_init_progress(void *data, int percent, const char *message)
{
    emit_progress(data, percent, message);
}

static void on_init_done(void *data, int status, const char *reason)
{
    struct spawner_server *s = data;
    s->init = NULL;
    s->phase = PH_PREPARE;
    if (s->stop_requested) {
        server_end(s, false, NULL);
        return;
    }
    if (status < 0) {
        fail_now(s, "could not initialise the home: %s", reason != NULL ? reason : "error");
        return;
    }
    spawn_code_server(s);
}

/* Directories, log, home initialisation; the account (if any) exists. */
static void prepare_home(struct spawner_server *s)
{
    struct local *lb = s->lb;
    const struct config *cfg = lb->cfg;
    /* Only system accounts need to traverse the hub's directories. */
    mode_t shared_mode = lb->system_users ? 0711 : 0700;
    char *users = xasprintf("%s/users", lb->data_dir);
    char *run = xasprintf("%s/run", lb->data_dir);
    int rc = home_dir_ensure(users, shared_mode, NULL, lb->system_users);
    const char *what = users;
    if (rc == 0) {
        what = run;
        rc = home_dir_ensure(run, shared_mode, NULL, lb->system_users);
    }
    if (rc == 0) {
        what = s->home;
        rc = home_dir_ensure(s->home, 0700, &s->owner, false);
    }
    if (rc == 0) {
        what = s->run_dir;
        rc = home_dir_ensure(s->run_dir, shared_mode, NULL, true);
    }
    if (rc == 0 && s->user_dir != NULL) {
        what = s->user_dir;
        rc = home_dir_ensure(s->user_dir, 0700, &s->owner, true);
    }
    if (rc < 0) {
        fail_now(s, "cannot create %s: %s", what, strerror(-rc));
        goto done;
    }
    s->log_fd = home_log_open(s->home, &s->owner);
    if (s->log_fd < 0) {
        rc = s->log_fd;
        s->log_fd = -1;
        fail_now(s, "cannot open ~/%s: %s", HOME_LOG_NAME, strerror(-rc));
        goto done;
    }
    char **env = build_env(s, cfg);
    struct home_options ho = {
        .name = s->name,
        .home = s->home,
        .owner = s->owner,
        .ssh_key = cfg->local.init_ssh_key,
        .venv = cfg->local.init_venv,
        .env = env,
        .log_fd = s->log_fd,
    };
    static const struct home_init_callbacks icb = {on_init_progress, on_init_done};
    s->phase = PH_INIT;
    s->init = home_init_start(lb->loop, &ho, &icb, s);
    strv_free(env);
done:
    free(users);
    free(run);
}

/* Looks the system account up; refuses the system's own accounts. 0 or -errno with
 * a message. */
static int account_lookup(struct spawner_server *s, char **why)
{
    struct passwd *pw = getpwnam(s->name);
    if (pw == NULL) {
        *why = xasprintf("there is no system account %s", s->name);
        return -ENOENT;
    }
    if (pw->pw_uid < MIN_ACCOUNT_UID || pw->pw_uid == 65534) {
        *why = xasprintf("the system account %s has uid %u, which belongs to the system: "
                         "refusing to run a server as it",
                         s->name, (unsigned)pw->pw_uid);
        return -EPERM;
    }
    s->owner.chown = true;
    s->owner.uid = pw->pw_uid;
    s->owner.gid = pw->pw_gid;
    free(s->shell);
    s->shell = xstrdup(pw->pw_shell != NULL && pw->pw_shell[0] == '/' ? pw->pw_shell : "/bin/bash");
    return 0;
}

static void on_aux_closed(uv_handle_t *h)
{
    struct spawner_server *s = h->data;
    free(h);
    s->open_handles--;
    if (s->phase == PH_GONE)
        server_release(s);
}

static void on_useradd_exit(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct spawner_server *s = proc->data;
    uv_close((uv_handle_t *)proc, on_aux_closed);
    s->aux = NULL;
    if (s->stop_requested) {
        server_end(s, false, NULL);
        return;
    }
    char *why = NULL;
    if (account_lookup(s, &why) < 0) {
        char *how = proc_exit_describe(exit_status, term_signal);
        fail_now(s, "could not create the system account %s (useradd %s): %s", s->name, how, why);
        free(how);
        free(why);
        return;
    }
    log_event(LOG_INFO, "spawn.account_created", "user", s->name, NULL);
    prepare_home(s);
}

/* Makes sure the system account exists (useradd when missing), then prepares the home. */
static void ensure_account(struct spawner_server *s)
{
    char *why = NULL;
    int rc = account_lookup(s, &why);
    if (rc == 0) {
        prepare_home(s);
        return;
    }
    if (rc != -ENOENT) {
        fail_now(s, "%s", why);
        free(why);
        return;
    }
    free(why);
    char *msg = xasprintf("Creating the system account %s", s->name);
    emit_progress(s, 5, msg);
    free(msg);
    if (s->phase == PH_GONE)
        return;
    char *tool = proc_find_executable("useradd", SAFE_PATH);
    if (tool == NULL) {
        fail_now(s, "useradd not found: cannot create the system account %s", s->name);
        return;
    }
    char *argv[] = {tool,      "--no-create-home", "--home-dir", s->home,
                    "--shell", "/bin/bash",        s->name,      NULL};
    char *envp[] = {"PATH=" SAFE_PATH, "LANG=C.UTF-8", NULL};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD; /* useradd's complaints go to the hub's log */
    stdio[2].data.fd = 2;
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    o.file = tool;
    o.args = argv;
    o.env = envp;
    o.exit_cb = on_useradd_exit;
    o.stdio = stdio;
    o.stdio_count = 3;
    s->aux = xcalloc(1, sizeof *s->aux);
    s->aux->data = s;
    rc = uv_spawn(s->lb->loop, s->aux, &o);
    s->open_handles++;
    free(tool);
    if (rc < 0) {
        uv_close((uv_handle_t *)s->aux, on_aux_closed);
        s->aux = NULL;
        fail_now(s, "cannot run useradd: %s", uv_strerror(rc));
    }
}

/* The start proper, after any recorded server has been dealt with. */
static void start_fresh(struct spawner_server *s)
{
    s->phase = PH_PREPARE;
    if (s->lb->system_users)
        ensure_account(s);
    else
        prepare_home(s);
}

static void on_reattach_probe(void *data, int result);

static void probe_again(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (s->phase != PH_PROBING || s->probe != NULL)
        return;
    s->probes_left--;
    s->probe =
        spawn_probe_unix(s->lb->loop, s->sock, "/healthz", PROBE_TIMEOUT_MS, on_reattach_probe, s);
}

static void on_reattach_probe(void *data, int result)
{
    struct spawner_server *s = data;
    s->probe = NULL;
    if (s->phase != PH_PROBING)
        return;
    if (result >= 200 && result < 400) {
        char *json = state_json(s);
        if (s->adopting)
            emit_progress(s, 90, "Found your code-server still running");
        if (s->ctx != NULL)
            s->lb->ev->placed(s->ctx, s->route, json);
        free(json);
        if (s->phase != PH_PROBING)
            return;
        record_write(s);
        start_logcheck(s);
        became_ready(s);
        return;
    }
    if (s->probes_left > 0) {
        uv_timer_start(&s->tick, probe_again, REATTACH_PROBE_GAP_MS, 0);
        return;
    }
    /* Alive, verified ours, but not answering: stop it rather than leave a second
     * code-server for this user behind. Its exit (pidfd) continues. */
    log_event(LOG_WARN, "spawn.reattach_no_answer", "user", s->name, NULL);
    s->end = s->adopting ? END_REPLACE : END_NO_ANSWER;
    s->phase = PH_KILLING;
    if (server_signal(s, SIGKILL) < 0) {
        /* Gone meanwhile, or not ours: the pidfd poll still reports the end. */
    }
}

/* Begins checking a recorded server. Returns 0, or a negative errno when it is not
 * there (not ours any more, dead): the caller decides what that means. */
static int probe_recorded(struct spawner_server *s, const struct recorded *r)
{
    if (strcmp(r->socket, s->sock) != 0)
        return -EXDEV;
    s->pid = r->pid;
    s->start_time = r->start_time;
    s->our_child = false;
    int rc = proc_identity_check(s->pid, s->start_time);
    if (rc == 0)
        rc = watch_pidfd(s);
    if (rc < 0) {
        s->pid = 0;
        return rc;
    }
    s->phase = PH_PROBING;
    s->probes_left = REATTACH_PROBES;
    /* Probe on the next turn: reattach() and start() must not report anything inline. */
    uv_timer_start(&s->tick, probe_again, 0, 0);
    return 0;
}

static void on_kick(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    if (s->phase != PH_PREPARE)
        return;
    if (s->stop_requested) {
        server_end(s, false, NULL);
        return;
    }
    struct recorded r;
    if (record_read(s->record, &r) == 0) {
        s->adopting = true;
        int rc = probe_recorded(s, &r);
        free(r.socket);
        if (rc == 0) {
            emit_progress(s, 10, "Checking for a running code-server");
            return;
        }
        s->adopting = false;
        unlink(s->record);
    }
    start_fresh(s);
}

/* ---- server objects ---- */

static void on_server_handle_closed(uv_handle_t *h)
{
    struct spawner_server *s = h->data;
    assert(s->magic == SERVER_MAGIC);
    if (h == (uv_handle_t *)&s->pidfd_poll && s->pidfd >= 0) {
        close(s->pidfd);
        s->pidfd = -1;
    }
    s->open_handles--;
    server_release(s);
}

static void local_maybe_done(struct local *lb);

/* Closes what is still open; frees the server once nothing refers to it. */
static void server_release(struct spawner_server *s)
{
    assert(s->phase == PH_GONE);
    if (s->probe != NULL) {
        spawn_probe_cancel(s->probe);
        s->probe = NULL;
    }
    if (s->init != NULL) {
        home_init_abandon(s->init);
        s->init = NULL;
    }
    uv_handle_t *hs[] = {(uv_handle_t *)&s->tick, (uv_handle_t *)&s->deadline,
                         (uv_handle_t *)&s->logcheck};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], on_server_handle_closed);
    }
    if (s->proc_open) {
        s->proc_open = false;
        uv_close((uv_handle_t *)&s->proc, on_server_handle_closed);
    }
    if (s->poll_open) {
        s->poll_open = false;
        uv_close((uv_handle_t *)&s->pidfd_poll, on_server_handle_closed);
    }
    if (s->aux != NULL) {
        uv_close((uv_handle_t *)s->aux, on_aux_closed);
        s->aux = NULL;
    }
    if (s->open_handles > 0 || s->pending_work > 0)
        return;
    struct local *lb = s->lb;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        lb->servers = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (s->log_fd >= 0)
        close(s->log_fd);
    s->magic = 0;
    free(s->name);
    free(s->home);
    free(s->run_dir);
    free(s->user_dir);
    free(s->sock);
    free(s->cs_sock);
    free(s->record);
    free(s->route);
    free(s->shell);
    free(s->exit_how);
    free(s);
    local_maybe_done(lb);
}

static struct spawner_server *server_new(struct local *lb, const char *name, void *ctx, char **err)
{
    const char *why = NULL;
    if (auth_username_check(name, &why) != 0) {
        *err = xasprintf("invalid user name: %s", why);
        return NULL;
    }
    if (lb->closing) {
        *err = xstrdup("the spawner is closing");
        return NULL;
    }
    struct spawner_server *s = xcalloc(1, sizeof *s);
    s->magic = SERVER_MAGIC;
    s->lb = lb;
    s->ctx = ctx;
    s->name = xstrdup(name);
    s->home = xasprintf("%s/users/%s", lb->data_dir, name);
    s->run_dir = xasprintf("%s/run/%s", lb->data_dir, name);
    s->sock = xasprintf("%s/%s", s->run_dir, SOCK_NAME);
    if (lb->system_users) {
        s->user_dir = xasprintf("%s/user", s->run_dir);
        s->cs_sock = xasprintf("%s/%s", s->user_dir, SOCK_NAME);
    } else {
        s->cs_sock = xstrdup(s->sock);
    }
    s->record = xasprintf("%s/%s", s->run_dir, RECORD_NAME);
    s->route = xasprintf("unix:%s", s->sock);
    s->shell = xstrdup("/bin/bash");
    s->log_fd = -1;
    s->pidfd = -1;
    uv_timer_init(lb->loop, &s->tick);
    uv_timer_init(lb->loop, &s->deadline);
    uv_timer_init(lb->loop, &s->logcheck);
    s->tick.data = s;
    s->deadline.data = s;
    s->logcheck.data = s;
    s->proc.data = s;
    s->pidfd_poll.data = s;
    s->open_handles = 3;
    s->next = lb->servers;
    if (lb->servers != NULL)
        lb->servers->prev = s;
    lb->servers = s;
    return s;
}

/* ---- the backend functions ---- */

static struct spawner_server *local_start(void *impl, const char *name, void *ctx, char **err)
{
    struct local *lb = impl;
    assert(lb->magic == LOCAL_MAGIC);
    struct spawner_server *s = server_new(lb, name, ctx, err);
    if (s == NULL)
        return NULL;
    s->phase = PH_PREPARE;
    uv_timer_start(&s->tick, on_kick, 0, 0);
    return s;
}

static void on_stop_deadline(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    log_event(LOG_WARN, "spawn.stop_kill", "user", s->name, "reason",
              "still running after spawn.stop_timeout", NULL);
    server_signal(s, SIGKILL);
}

static int local_stop(void *impl, struct spawner_server *s)
{
    struct local *lb = impl;
    assert(lb->magic == LOCAL_MAGIC && s->magic == SERVER_MAGIC);
    if (s->stop_requested)
        return -EALREADY;
    s->stop_requested = true;
    switch (s->phase) {
    case PH_PREPARE:
        /* The kick, or useradd's exit (never interrupted mid-write), ends it. */
        break;
    case PH_INIT:
        if (s->init != NULL)
            home_init_cancel(s->init);
        break;
    case PH_SPAWNED:
    case PH_PROBING:
    case PH_READY:
    case PH_KILLING:
        if (s->probe != NULL) {
            spawn_probe_cancel(s->probe);
            s->probe = NULL;
        }
        uv_timer_stop(&s->tick);
        if (s->phase != PH_KILLING)
            s->phase = PH_KILLING;
        if (server_signal(s, SIGTERM) == 0)
            uv_timer_start(&s->deadline, on_stop_deadline,
                           (uint64_t)lb->cfg->spawn.stop_timeout * 1000, 0);
        break;
    case PH_GONE:
        break;
    }
    return 0;
}

static void on_reattach_gone(uv_timer_t *t)
{
    struct spawner_server *s = t->data;
    server_end(s, true, "the server is not running any more");
}

static struct spawner_server *local_reattach(void *impl, const char *name, const char *json,
                                             void *ctx, char **err)
{
    struct local *lb = impl;
    assert(lb->magic == LOCAL_MAGIC);
    struct recorded r;
    if (json == NULL || recorded_parse(json, &r) != 0) {
        *err = xstrdup("the recorded spawner state has no usable pid, start_time and socket");
        return NULL;
    }
    struct spawner_server *s = server_new(lb, name, ctx, err);
    if (s == NULL) {
        free(r.socket);
        return NULL;
    }
    int rc = probe_recorded(s, &r);
    free(r.socket);
    if (rc < 0) {
        log_event(LOG_INFO, "spawn.reattach_gone", "user", name, "reason",
                  rc == -ESTALE  ? "PID now belongs to another process"
                  : rc == -EXDEV ? "recorded socket is not this data dir's"
                                 : "process gone",
                  NULL);
        /* Not running (never signalled): report on the next turn. */
        s->phase = PH_PREPARE;
        uv_timer_start(&s->tick, on_reattach_gone, 0, 0);
    }
    return s;
}

static void on_close_timer_closed(uv_handle_t *h)
{
    struct local *lb = h->data;
    lb->close_timer_closed = true;
    local_maybe_done(lb);
}

static void local_maybe_done(struct local *lb)
{
    if (!lb->closing || !lb->close_timer_closed || lb->servers != NULL)
        return;
    void (*done)(void *) = lb->close_done;
    void *data = lb->close_data;
    lb->magic = 0;
    free(lb->code_server);
    free(lb->code_server_missing);
    free(lb->data_dir);
    free(lb);
    if (done != NULL)
        done(data);
}

static void local_close(void *impl, void (*done)(void *data), void *data)
{
    struct local *lb = impl;
    assert(lb->magic == LOCAL_MAGIC);
    lb->closing = true;
    lb->close_done = done;
    lb->close_data = data;
    /* Detach every server: handles close, processes keep running. */
    struct spawner_server *s = lb->servers;
    while (s != NULL) {
        struct spawner_server *next = s->next;
        s->ctx = NULL;
        if (s->phase != PH_GONE) {
            s->phase = PH_GONE;
            server_release(s); /* may free s; never frees before its close callbacks */
        }
        s = next;
    }
    uv_close((uv_handle_t *)&lb->close_timer, on_close_timer_closed);
}

/* ---- creation ---- */

/* Creates `path` and its missing parents with `mode`. 0 or a negative errno. */
static int mkdir_parents(const char *path, mode_t mode)
{
    char *copy = xstrdup(path);
    int rc = 0;
    for (char *p = copy + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, mode) != 0 && errno != EEXIST) {
            rc = -errno;
            goto done;
        }
        *p = '/';
    }
    if (mkdir(copy, mode) != 0 && errno != EEXIST)
        rc = -errno;
done:
    free(copy);
    return rc;
}

/* The default launcher: .deps/code-server above the binary (it is built into build/ of
 * the source tree), then in the working directory, then code-server on PATH. */
static char *find_default_launcher(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        while (slash != NULL) {
            *slash = '\0';
            char *cand = xasprintf("%s/%s", exe[0] != '\0' ? exe : "", LAUNCHER_REL);
            char *found = proc_find_executable(cand, NULL);
            free(cand);
            if (found != NULL)
                return found;
            slash = strrchr(exe, '/');
        }
    }
    char *found = proc_find_executable("./" LAUNCHER_REL, NULL);
    if (found != NULL)
        return found;
    return proc_find_executable("code-server", getenv("PATH"));
}

static void *local_create(uv_loop_t *loop, const struct config *cfg,
                          const struct spawner_events *events, char **err)
{
    char *launcher = NULL;
    char *missing = NULL;
    char *data_dir = NULL;
    if (cfg->local.system_users) {
        if (geteuid() != 0) {
            *err = xasprintf("local.system_users needs codehub to run as root (it runs as uid "
                             "%u)",
                             (unsigned)geteuid());
            goto fail;
        }
        char *useradd = proc_find_executable("useradd", SAFE_PATH);
        if (useradd == NULL) {
            *err = xstrdup("local.system_users needs useradd, which is not installed");
            goto fail;
        }
        free(useradd);
    }
    /* A missing code-server does not stop the hub: people can still sign in, and each
     * start fails with the reason, which the spawn page shows. */
    launcher = find_launcher(cfg, &missing);
    if (launcher == NULL)
        log_event(LOG_WARN, "spawn.no_code_server", "error", missing, (const char *)NULL);
    int rc = mkdir_parents(cfg->server.data_dir, 0700);
    if (rc < 0) {
        *err =
            xasprintf("cannot create server.data_dir %s: %s", cfg->server.data_dir, strerror(-rc));
        goto fail;
    }
    data_dir = realpath(cfg->server.data_dir, NULL);
    if (data_dir == NULL) {
        *err = xasprintf("cannot resolve server.data_dir %s: %s", cfg->server.data_dir,
                         strerror(errno));
        goto fail;
    }
    /* The longest socket path: DATA_DIR/run/NAME/user/code-server.sock.new (the link being
     * made). sun_path holds 108 bytes with the NUL. */
    size_t longest = strlen(data_dir) + strlen("/run/") + AUTH_USERNAME_MAX + strlen("/user/") +
                     strlen(SOCK_NAME) + strlen(".new");
    if (longest >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        *err = xasprintf("server.data_dir %s is too long: Unix socket paths below it would "
                         "exceed %zu bytes",
                         data_dir, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        goto fail;
    }
    if (cfg->local.system_users) {
        /* The servers' accounts must be able to pass through the data dir to their homes;
         * nothing in it is readable for them (the store is 0600). */
        struct stat st;
        if (stat(data_dir, &st) == 0 && (st.st_mode & 0011) != 0011) {
            if (chmod(data_dir, (st.st_mode & 07777) | 0011) != 0) {
                *err = xasprintf("cannot make %s traversable for system users: %s", data_dir,
                                 strerror(errno));
                goto fail;
            }
            log_event(LOG_INFO, "spawn.data_dir_mode", "path", data_dir, "reason",
                      "system users need to traverse it", NULL);
        }
    }
    struct local *lb = xcalloc(1, sizeof *lb);
    lb->magic = LOCAL_MAGIC;
    lb->loop = loop;
    lb->cfg = cfg;
    lb->ev = events;
    lb->code_server = launcher;
    lb->code_server_missing = missing;
    missing = NULL;
    lb->data_dir = data_dir;
    lb->system_users = cfg->local.system_users;
    uv_timer_init(loop, &lb->close_timer);
    lb->close_timer.data = lb;
    log_event(LOG_INFO, "spawn.local", "code_server", launcher, "data_dir", data_dir,
              "system_users", lb->system_users ? "true" : "false", NULL);
    return lb;
fail:
    free(launcher);
    free(missing);
    free(data_dir);
    return NULL;
}

const struct spawner_backend spawn__local_backend = {
    .name = "local",
    .create = local_create,
    .start = local_start,
    .stop = local_stop,
    .reattach = local_reattach,
    .close = local_close,
};

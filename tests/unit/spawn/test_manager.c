/* Tests of the spawn manager (spawn/spawner.h) with the local backend and the real
 * code-server from .deps, a real uv loop and a real SQLite store in a temporary data dir.
 *
 * Every test ends with the manager closed, every handle closed and uv_loop_close()
 * returning 0, so that ASan/LSan see no leak; the teardown also kills any code-server a
 * failing test left behind (from the run/NAME/server.json records). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/log.h"
#include "hub/metrics.h"
#include "spawn/backend.h"
#include "spawn/home.h"
#include "spawn/proc.h"
#include "spawn/spawner.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct config cfg;
    struct store *st;
    uv_loop_t loop;
    struct spawn_manager *m;
    char account[32]; /* a system account the test created, removed by the teardown */
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void cfg_set(struct fixture *f, const char *key, const char *value)
{
    struct buf errors = BUF_INIT;
    int rc = config_set(&f->cfg, key, value, "test", &errors);
    if (rc != 0)
        fprintf(stderr, "config_set %s: %s\n", key, errors.data);
    buf_free(&errors);
    assert_int_equal(rc, 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-spawn-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    config_init(&f->cfg);
    cfg_set(f, "server.data_dir", f->dir);
    cfg_set(f, "local.init_venv", "false");
    cfg_set(f, "spawn.start_timeout", "60s");
    cfg_set(f, "spawn.stop_timeout", "5s");
    cfg_set(f, "cull.timeout", "0");
    char *err = NULL;
    f->st = store_open("", f->dir, &err);
    if (f->st == NULL) {
        fprintf(stderr, "store_open: %s\n", err);
        free(err);
        return -1;
    }
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    spawn__local_log_check_ms = 10 * 1000;
    *state = f;
    return 0;
}

/* Kills every code-server a record still names (a failed test may leave one). */
static void kill_recorded(const char *dir)
{
    char *run = NULL;
    if (asprintf(&run, "%s/run", dir) < 0)
        return;
    DIR *d = opendir(run);
    for (struct dirent *e = d != NULL ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char *rec = NULL;
        if (asprintf(&rec, "%s/%s/server.json", run, e->d_name) < 0)
            continue;
        FILE *fp = fopen(rec, "r");
        char text[512] = "";
        if (fp != NULL) {
            size_t n = fread(text, 1, sizeof text - 1, fp);
            text[n] = '\0';
            fclose(fp);
        }
        const char *p = strstr(text, "\"pgid\":");
        if (p != NULL) {
            long pgid = strtol(p + 7, NULL, 10);
            if (pgid > 1)
                kill((pid_t)-pgid, SIGKILL);
        }
        free(rec);
    }
    if (d != NULL)
        closedir(d);
    free(run);
}

static void on_closed(void *data)
{
    *(bool *)data = true;
}

/* Runs the loop until *flag is true or `timeout_ms` passed. Returns *flag. */
static bool run_until_flag(struct fixture *f, const bool *flag, int timeout_ms);

static void close_manager(struct fixture *f)
{
    if (f->m == NULL)
        return;
    bool closed = false;
    spawn_manager_close(f->m, on_closed, &closed);
    assert_true(run_until_flag(f, &closed, 10000));
    f->m = NULL;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close_manager(f);
    kill_recorded(f->dir);
    if (f->account[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "userdel %s 2>/dev/null; groupdel %s 2>/dev/null", f->account,
                 f->account);
        if (system(cmd) != 0) {
            /* groupdel fails when userdel already removed the group. */
        }
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    store_close(f->st);
    config_free(&f->cfg);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    /* Reap anything left (children of a closed manager killed above). */
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    assert_int_equal(rc, 0);
    return 0;
}

/* ---- running the loop until something holds ---- */

static void on_tick(uv_timer_t *t)
{
}

static bool run_until(struct fixture *f, bool (*pred)(struct fixture *f, void *arg), void *arg,
                      int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    double end = mono_s() + timeout_ms / 1000.0;
    bool ok = pred(f, arg);
    while (!ok && mono_s() < end) {
        uv_run(&f->loop, UV_RUN_ONCE);
        ok = pred(f, arg);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return ok;
}

static bool flag_set(struct fixture *f, void *arg)
{
    return *(const bool *)arg;
}

static bool run_until_flag(struct fixture *f, const bool *flag, int timeout_ms)
{
    return run_until(f, flag_set, (void *)flag, timeout_ms);
}

struct state_wait {
    const char *name;
    enum spawn_state want;
};

static bool state_is(struct fixture *f, void *arg)
{
    struct state_wait *w = arg;
    return spawn_state_of(f->m, w->name) == w->want;
}

static bool wait_state(struct fixture *f, const char *name, enum spawn_state want, int timeout_ms)
{
    struct state_wait w = {name, want};
    return run_until(f, state_is, &w, timeout_ms);
}

static void sleep_loop(struct fixture *f, int ms)
{
    bool never = false;
    run_until_flag(f, &never, ms);
}

/* ---- helpers ---- */

static struct spawn_manager *new_manager(struct fixture *f)
{
    char *err = NULL;
    struct spawn_manager *m = spawn_manager_new(&f->loop, &f->cfg, f->st, NULL, &err);
    if (m == NULL)
        fprintf(stderr, "spawn_manager_new: %s\n", err);
    free(err);
    assert_non_null(m);
    return m;
}

static int64_t add_user(struct fixture *f, const char *name)
{
    struct store_user u;
    assert_int_equal(store_user_create(f->st, name, NULL, false, &u), 0);
    int64_t id = u.id;
    store_user_clear(&u);
    return id;
}

static char *path_of(const struct fixture *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static char *path_of(const struct fixture *f, const char *fmt, ...)
{
    char *rel = NULL, *p = NULL;
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&rel, fmt, ap) > 0);
    va_end(ap);
    assert_true(asprintf(&p, "%s/%s", f->dir, rel) > 0);
    free(rel);
    return p;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A raw HTTP/1.1 GET over a Unix socket; returns the status, the whole answer in *out
 * (caller frees). */
static int unix_get(const char *sock, const char *target, char **out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    *out = NULL;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -errno;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", target);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -EIO;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len >= cap - 1)
            break;
    }
    buf[len] = '\0';
    close(fd);
    *out = buf;
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    return status;
}

static const char *sock_of(const char *route)
{
    assert_non_null(route);
    assert_int_equal(strncmp(route, "unix:", 5), 0);
    return route + 5;
}

/* ---- a subscriber that records everything ---- */

struct recorder {
    struct spawn_subscription *sub;
    int n;
    int progress[64];
    char *message[64];
    bool ready[64];
    bool failed[64];
    char *url;
    bool final;
    int unsubscribe_at; /* unsubscribe from inside the callback on this event (1-based) */
    int calls_after_unsubscribe;
    bool unsubscribed;
};

static void on_event(void *data, const struct spawn_event *ev)
{
    struct recorder *r = data;
    if (r->unsubscribed) {
        r->calls_after_unsubscribe++;
        return;
    }
    if (r->n < 64) {
        r->progress[r->n] = ev->progress;
        r->message[r->n] = strdup(ev->message);
        r->ready[r->n] = ev->ready;
        r->failed[r->n] = ev->failed;
        r->n++;
    }
    if (ev->ready) {
        assert_non_null(ev->url);
        free(r->url);
        r->url = strdup(ev->url);
    } else {
        assert_null(ev->url);
    }
    if (ev->ready || ev->failed)
        r->final = true;
    if (r->unsubscribe_at == r->n && r->sub != NULL) {
        spawn_unsubscribe(r->sub);
        r->sub = NULL;
        r->unsubscribed = true;
    }
}

static void recorder_clear(struct recorder *r)
{
    if (r->sub != NULL)
        spawn_unsubscribe(r->sub);
    for (int i = 0; i < r->n && i < 64; i++)
        free(r->message[i]);
    free(r->url);
    memset(r, 0, sizeof *r);
}

static bool recorder_final(struct fixture *f, void *arg)
{
    return ((struct recorder *)arg)->final;
}

static void subscribe(struct fixture *f, const char *name, struct recorder *r)
{
    r->sub = spawn_subscribe(f->m, name, on_event, r);
    assert_non_null(r->sub);
}

/* Starts NAME and waits for the final event; returns seconds to ready. */
static double start_ready(struct fixture *f, int64_t id, const char *name, struct recorder *r)
{
    double t0 = mono_s();
    assert_int_equal(spawn_start(f->m, id, name), 1);
    subscribe(f, name, r);
    assert_true(run_until(f, recorder_final, r, 60000));
    double took = mono_s() - t0;
    if (!r->ready[r->n - 1])
        fprintf(stderr, "start failed: %s\n", r->message[r->n - 1]);
    assert_true(r->ready[r->n - 1]);
    assert_int_equal(spawn_state_of(f->m, name), SPAWN_RUNNING);
    return took;
}

static pid_t recorded_pid(struct fixture *f, const char *name)
{
    char *rec = path_of(f, "run/%s/server.json", name);
    FILE *fp = fopen(rec, "r");
    free(rec);
    if (fp == NULL)
        return 0;
    char text[512];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    const char *p = strstr(text, "\"pid\":");
    return p != NULL ? (pid_t)strtol(p + 6, NULL, 10) : 0;
}

struct row_wait {
    int64_t id;
    const char *state;
};

static bool row_is(struct fixture *f, void *arg)
{
    struct row_wait *w = arg;
    struct store_server row;
    bool yes = store_server_get(f->st, w->id, &row) == 0 && strcmp(row.state, w->state) == 0;
    store_server_clear(&row);
    return yes;
}

static bool wait_row(struct fixture *f, int64_t id, const char *state)
{
    struct row_wait w = {id, state};
    return run_until(f, row_is, &w, 5000);
}

static bool no_group(struct fixture *f, void *arg)
{
    return !proc_group_exists(*(pid_t *)arg);
}

/* True once no process of group `pgid` is left (members killed by SIGKILL may take a
 * moment to be reaped by init). */
static bool group_gone(struct fixture *f, pid_t pgid)
{
    return run_until(f, no_group, &pgid, 2000);
}

/* ---- tests ---- */

static void test_start_ready_stop(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    int64_t id = add_user(f, "ann");
    struct recorder r = {0};
    double took = start_ready(f, id, "ann", &r);
    printf("# first start (home init with ssh key, no venv) to ready: %.3f s\n", took);

    /* The events: "requested" first, percentages never going back, ready last. */
    assert_int_equal(r.progress[0], 0);
    assert_string_equal(r.message[0], "Server requested");
    for (int i = 1; i < r.n; i++)
        assert_true(r.progress[i] >= r.progress[i - 1]);
    bool saw_init = false, saw_starting = false, saw_waiting = false;
    for (int i = 0; i < r.n; i++) {
        saw_init |= strstr(r.message[i], "Initialising your home") != NULL;
        saw_starting |= strcmp(r.message[i], "Starting code-server") == 0 && r.progress[i] == 30;
        saw_waiting |= strstr(r.message[i], "Waiting for code-server") != NULL &&
                       r.progress[i] >= 50 && r.progress[i] <= 90;
        assert_false(r.failed[i]);
    }
    assert_true(saw_init && saw_starting && saw_waiting);
    assert_int_equal(r.progress[r.n - 1], 100);
    assert_string_equal(r.url, "/user/ann/");

    /* A late subscriber sees the same history. */
    struct recorder late = {0};
    subscribe(f, "ann", &late);
    assert_int_equal(late.n, r.n);
    assert_true(late.final);
    recorder_clear(&late);

    /* Where the proxy goes, and what code-server answers there. */
    const char *route = spawn_route(f->m, "ann");
    char *want = path_of(f, "run/%s/code-server.sock", "ann");
    char *want_route = NULL;
    assert_true(asprintf(&want_route, "unix:%s", want) > 0);
    assert_string_equal(route, want_route);
    char *sock = strdup(sock_of(route));
    struct stat st;
    assert_int_equal(lstat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    char *run_dir = path_of(f, "run/%s", "ann");
    assert_int_equal(stat(run_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char *answer = NULL;
    assert_int_equal(unix_get(sock, "/healthz", &answer), 200);
    free(answer);
    char *home = path_of(f, "users/%s", "ann");
    char *target = NULL;
    assert_true(asprintf(&target, "/?folder=%s/projects", home) > 0);
    assert_int_equal(unix_get(sock, target, &answer), 200);
    assert_non_null(strstr(answer, "<!DOCTYPE html>"));
    assert_non_null(strstr(answer, "vscode"));
    free(answer);
    free(target);

    /* The home. */
    assert_int_equal(stat(home, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_true(home_is_initialized(home));
    char *settings = path_of(f, "users/%s/.local/share/code-server/User/settings.json", "ann");
    assert_true(exists(settings));
    char *key = path_of(f, "users/%s/.ssh/id_ed25519", "ann");
    char *keygen = proc_find_executable("ssh-keygen", "/usr/bin:/bin");
    if (keygen != NULL)
        assert_true(exists(key));
    free(keygen);
    char *venv = path_of(f, "users/%s/.venv", "ann");
    assert_false(exists(venv)); /* init_venv is off here */
    char *log = path_of(f, "users/%s/code-server.log", "ann");
    assert_true(exists(log));

    /* The store row: running, with what a restart needs. */
    assert_true(wait_row(f, id, "running"));
    struct store_server row;
    assert_int_equal(store_server_get(f->st, id, &row), 0);
    assert_string_equal(row.url, route);
    assert_non_null(strstr(row.spawner_state, "\"start_time\":"));
    assert_non_null(strstr(row.spawner_state, "\"socket\":"));
    assert_true(row.started_ms > 0);
    store_server_clear(&row);
    pid_t pid = recorded_pid(f, "ann");
    assert_true(pid > 1);
    struct proc_stat ps;
    assert_int_equal(proc_stat_read(pid, &ps), 0);
    assert_int_equal(ps.pgid, pid); /* its own process group and session */
    assert_int_equal(ps.sid, pid);
    /* The hub's secrets never reach it: a clean environment. */
    char *envpath = NULL;
    assert_true(asprintf(&envpath, "/proc/%d/environ", (int)pid) > 0);
    FILE *fp = fopen(envpath, "r");
    char envtext[8192];
    size_t en = fread(envtext, 1, sizeof envtext - 1, fp);
    fclose(fp);
    for (size_t i = 0; i < en; i++)
        if (envtext[i] == '\0')
            envtext[i] = '\n';
    envtext[en] = '\0';
    assert_non_null(strstr(envtext, "LANG=C.UTF-8\n"));
    assert_non_null(strstr(envtext, "USER=ann\n"));
    assert_null(strstr(envtext, "CODEHUB_"));
    free(envpath);

    assert_int_equal(spawn_start(f->m, id, "ann"), 0); /* already running */
    assert_string_equal(spawn_last_error(f->m, "ann"), "");

    /* Stop: the whole group goes, the socket with it. */
    double t0 = mono_s();
    assert_int_equal(spawn_stop(f->m, "ann"), 1);
    assert_int_equal(spawn_state_of(f->m, "ann"), SPAWN_STOPPING);
    assert_null(spawn_route(f->m, "ann"));
    assert_int_equal(spawn_stop(f->m, "ann"), 1);
    assert_int_equal(spawn_start(f->m, id, "ann"), -EALREADY);
    assert_true(wait_state(f, "ann", SPAWN_STOPPED, 10000));
    printf("# stop to stopped: %.3f s\n", mono_s() - t0);
    assert_true(group_gone(f, pid));
    assert_false(exists(sock));
    assert_true(wait_row(f, id, "stopped"));
    assert_int_equal(spawn_stop(f->m, "ann"), 0);

    /* Stopped: a subscriber gets the single "not running" event. */
    struct recorder s2 = {0};
    subscribe(f, "ann", &s2);
    assert_int_equal(s2.n, 1);
    assert_true(s2.failed[0]);
    assert_string_equal(s2.message[0], "server is not running");
    recorder_clear(&s2);

    /* A second start of an initialised home is faster (no init steps). */
    struct recorder r2 = {0};
    took = start_ready(f, id, "ann", &r2);
    printf("# start of an initialised home to ready: %.3f s\n", took);
    for (int i = 0; i < r2.n; i++)
        assert_null(strstr(r2.message[i], "Initialising"));
    assert_int_equal(spawn_stop(f->m, "ann"), 1);
    assert_true(wait_state(f, "ann", SPAWN_STOPPED, 10000));
    recorder_clear(&r2);

    recorder_clear(&r);
    free(want);
    free(want_route);
    free(sock);
    free(run_dir);
    free(home);
    free(settings);
    free(key);
    free(venv);
    free(log);
}

static void test_first_start_with_venv(void **state)
{
    struct fixture *f = *state;
    cfg_set(f, "local.init_venv", "true");
    f->m = new_manager(f);
    int64_t id = add_user(f, "bob");
    struct recorder r = {0};
    double took = start_ready(f, id, "bob", &r);
    printf("# first start with SSH key and Python venv to ready: %.3f s\n", took);
    bool saw_venv = false;
    for (int i = 0; i < r.n; i++)
        saw_venv |= strstr(r.message[i], "creating a Python venv") != NULL;
    char *py = path_of(f, "users/%s/.venv/bin/python", "bob");
    /* Only when python3 -m venv works here; otherwise the step is skipped. */
    if (saw_venv && system("python3 -m venv --help >/dev/null 2>&1") == 0)
        assert_true(exists(py));
    free(py);
    assert_int_equal(spawn_stop(f->m, "bob"), 1);
    assert_true(wait_state(f, "bob", SPAWN_STOPPED, 10000));
    recorder_clear(&r);
}

static void test_killed_is_noticed(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    int64_t id = add_user(f, "cat");
    struct recorder r = {0};
    start_ready(f, id, "cat", &r);
    pid_t pid = recorded_pid(f, "cat");
    assert_true(pid > 1);
    double t0 = mono_s();
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(wait_state(f, "cat", SPAWN_FAILED, 1000));
    printf("# SIGKILL noticed after %.3f s\n", mono_s() - t0);
    assert_null(spawn_route(f->m, "cat"));
    const char *msg = spawn_last_error(f->m, "cat");
    assert_non_null(strstr(msg, "was killed by signal 9 (KILL)"));
    assert_non_null(strstr(msg, "last lines of ~/code-server.log"));
    assert_true(wait_row(f, id, "failed"));
    /* The rest of its process group went too. */
    assert_true(group_gone(f, pid));
    /* The audit trail says so. */
    struct store_event *ev = NULL;
    size_t n = 0;
    sleep_loop(f, 50);
    assert_int_equal(store_event_list(f->st, 10, &ev, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(ev[i].kind, "server.exited") == 0 && strcmp(ev[i].user, "cat") == 0;
    store_events_free(ev, n);
    assert_true(found);
    /* Failed behaves as stopped: it can start again. */
    struct recorder r2 = {0};
    start_ready(f, id, "cat", &r2);
    assert_string_equal(spawn_last_error(f->m, "cat"), "");
    assert_int_equal(spawn_stop(f->m, "cat"), 1);
    assert_true(wait_state(f, "cat", SPAWN_STOPPED, 10000));
    recorder_clear(&r);
    recorder_clear(&r2);
}

static void test_bad_code_server_path(void **state)
{
    struct fixture *f = *state;
    /* A missing launcher does not stop the hub: each start fails with the reason. */
    cfg_set(f, "local.code_server", "/nonexistent/bin/code-server");
    f->m = new_manager(f);
    int64_t id = add_user(f, "nil");
    assert_int_equal(spawn_start(f->m, id, "nil"), 1);
    struct recorder r = {0};
    subscribe(f, "nil", &r);
    assert_true(run_until(f, recorder_final, &r, 10000));
    assert_true(r.failed[r.n - 1]);
    assert_non_null(strstr(r.message[r.n - 1], "local.code_server"));
    assert_non_null(strstr(r.message[r.n - 1], "/nonexistent/bin/code-server"));
    assert_int_equal(spawn_state_of(f->m, "nil"), SPAWN_FAILED);
    recorder_clear(&r);
    /* A directory is not a launcher either. */
    close_manager(f);
    cfg_set(f, "local.code_server", "/tmp");
    f->m = new_manager(f);
    assert_int_equal(spawn_start(f->m, id, "nil"), 1);
    struct recorder r2 = {0};
    subscribe(f, "nil", &r2);
    assert_true(run_until(f, recorder_final, &r2, 10000));
    assert_true(r2.failed[r2.n - 1]);
    assert_non_null(strstr(r2.message[r2.n - 1], "/tmp"));
    recorder_clear(&r2);
}

static void test_exits_immediately(void **state)
{
    struct fixture *f = *state;
    cfg_set(f, "local.code_server", "/bin/false");
    f->m = new_manager(f);
    int64_t id = add_user(f, "dan");
    assert_int_equal(spawn_start(f->m, id, "dan"), 1);
    assert_int_equal(spawn_state_of(f->m, "dan"), SPAWN_STARTING);
    struct recorder r = {0};
    subscribe(f, "dan", &r);
    assert_true(run_until(f, recorder_final, &r, 10000));
    assert_true(r.failed[r.n - 1]);
    assert_non_null(strstr(r.message[r.n - 1], "exited with status 1 before it answered"));
    assert_int_equal(spawn_state_of(f->m, "dan"), SPAWN_FAILED);
    assert_non_null(strstr(spawn_last_error(f->m, "dan"), "exited with status 1"));
    assert_null(spawn_route(f->m, "dan"));
    assert_true(wait_row(f, id, "failed"));
    /* A late subscriber gets the failure with its reason. */
    struct recorder late = {0};
    subscribe(f, "dan", &late);
    assert_true(late.final);
    assert_true(late.failed[late.n - 1]);
    assert_non_null(strstr(late.message[late.n - 1], "exited with status 1"));
    recorder_clear(&late);
    recorder_clear(&r);
}

static void test_start_timeout(void **state)
{
    struct fixture *f = *state;
    /* A "code-server" that never listens, with a child in its process group. */
    char *script = NULL;
    assert_true(asprintf(&script, "%s/slow-server", f->dir) > 0);
    FILE *fp = fopen(script, "w");
    fputs("#!/bin/sh\necho starting slowly\nsleep 60 &\necho $! > \"$HOME/child.pid\"\n"
          "wait\n",
          fp);
    fclose(fp);
    chmod(script, 0755);
    cfg_set(f, "local.code_server", script);
    cfg_set(f, "spawn.start_timeout", "1s");
    f->m = new_manager(f);
    int64_t id = add_user(f, "eve");
    assert_int_equal(spawn_start(f->m, id, "eve"), 1);
    struct recorder r = {0};
    subscribe(f, "eve", &r);
    assert_true(run_until(f, recorder_final, &r, 10000));
    assert_true(r.failed[r.n - 1]);
    assert_non_null(strstr(r.message[r.n - 1], "did not answer within 1s"));
    assert_non_null(strstr(r.message[r.n - 1], "starting slowly"));
    /* Its child died with it. */
    char *pidfile = path_of(f, "users/%s/child.pid", "eve");
    fp = fopen(pidfile, "r");
    assert_non_null(fp);
    long child = 0;
    assert_int_equal(fscanf(fp, "%ld", &child), 1);
    fclose(fp);
    /* SIGKILL to the group is delivered asynchronously: on a loaded machine the child may
     * still be on its way out when the failure is reported. Wait for it (bounded). */
    struct proc_stat st;
    int rc = 0;
    for (int i = 0; i < 200; i++) {
        rc = proc_stat_read((pid_t)child, &st);
        if (rc == -ESRCH || (rc == 0 && st.state == 'Z'))
            break;
        usleep(50 * 1000);
    }
    assert_true(rc == -ESRCH || (rc == 0 && st.state == 'Z'));
    free(pidfile);
    free(script);
    recorder_clear(&r);
}

static void on_restored(void *data, int status)
{
    int *out = data;
    *out = status;
}

static bool int_set(struct fixture *f, void *arg)
{
    return *(int *)arg != 1;
}

static void test_restore_after_restart(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    int64_t id = add_user(f, "fay");
    struct recorder r = {0};
    start_ready(f, id, "fay", &r);
    recorder_clear(&r);
    pid_t pid = recorded_pid(f, "fay");
    spawn_note_activity(f->m, "fay", wall_ms());
    /* "Restart": the manager goes, the server stays. */
    close_manager(f);
    assert_int_equal(proc_identity_check(pid, 0) == -ESTALE, true);
    struct proc_stat st;
    assert_int_equal(proc_stat_read(pid, &st), 0);
    assert_int_not_equal(st.state, 'Z');
    struct store_server row;
    assert_int_equal(store_server_get(f->st, id, &row), 0);
    assert_string_equal(row.state, "running");
    int64_t started = row.started_ms;
    store_server_clear(&row);

    f->m = new_manager(f);
    assert_int_equal(spawn_state_of(f->m, "fay"), SPAWN_STOPPED);
    int status = 1;
    double t0 = mono_s();
    assert_int_equal(spawn_manager_restore(f->m, on_restored, &status), 0);
    assert_true(run_until(f, int_set, &status, 10000));
    printf("# restore (reattach and health check) took %.3f s\n", mono_s() - t0);
    assert_int_equal(status, 0);
    assert_int_equal(spawn_state_of(f->m, "fay"), SPAWN_RUNNING);
    assert_true(spawn_last_activity(f->m, "fay") > 0);
    char *answer = NULL;
    assert_int_equal(unix_get(sock_of(spawn_route(f->m, "fay")), "/healthz", &answer), 200);
    free(answer);
    assert_int_equal(recorded_pid(f, "fay"), pid); /* the same process, not a new one */
    assert_int_equal(spawn_start(f->m, id, "fay"), 0);
    struct recorder ready = {0};
    subscribe(f, "fay", &ready);
    assert_true(ready.final && ready.ready[ready.n - 1]);
    recorder_clear(&ready);
    sleep_loop(f, 50); /* let the write of the new state land */
    assert_int_equal(store_server_get(f->st, id, &row), 0);
    assert_string_equal(row.state, "running");
    assert_int_equal(row.started_ms, started); /* running since the original start */
    store_server_clear(&row);

    /* Not our child any more in spirit: the pidfd notices its death. */
    t0 = mono_s();
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(wait_state(f, "fay", SPAWN_FAILED, 1000));
    printf("# SIGKILL of a re-attached server noticed after %.3f s\n", mono_s() - t0);
    assert_non_null(strstr(spawn_last_error(f->m, "fay"), "killed by signal 9"));
    char *sock = path_of(f, "run/%s/code-server.sock", "fay");
    assert_false(exists(sock));
    free(sock);
    assert_true(wait_row(f, id, "failed"));
}

static void test_restore_dead_and_reused(void **state)
{
    struct fixture *f = *state;
    int64_t dead = add_user(f, "dead");
    int64_t reused = add_user(f, "reused");
    int64_t nostate = add_user(f, "nostate");
    int64_t failed = add_user(f, "failed");
    int64_t garbage = add_user(f, "garbage");

    /* A PID that is gone. */
    pid_t gone = fork();
    if (gone == 0)
        _exit(0);
    waitpid(gone, NULL, 0);
    /* A PID that is alive but another process than recorded (start time differs): it
     * must survive the restore untouched. */
    pid_t other = fork();
    if (other == 0) {
        setsid();
        alarm(60); /* never outlive a failed test for long */
        for (;;)
            pause();
    }
    struct proc_stat ost;
    for (int i = 0; i < 100 && (proc_stat_read(other, &ost) != 0 || ost.pgid != other); i++)
        usleep(1000);
    char *sock_dead = path_of(f, "run/%s/code-server.sock", "dead");
    char *sock_reused = path_of(f, "run/%s/code-server.sock", "reused");
    char js_dead[512], js_reused[512];
    snprintf(js_dead, sizeof js_dead,
             "{\"pgid\":%d,\"pid\":%d,\"socket\":\"%s\",\"start_time\":12345}", (int)gone,
             (int)gone, sock_dead);
    snprintf(js_reused, sizeof js_reused,
             "{\"pgid\":%d,\"pid\":%d,\"socket\":\"%s\",\"start_time\":%llu}", (int)other,
             (int)other, sock_reused, (unsigned long long)ost.start_time + 1);
    struct {
        int64_t id;
        const char *state;
        const char *js;
        const char *msg;
    } rows[] = {
        {dead, "running", js_dead, ""},
        {reused, "running", js_reused, ""},
        {nostate, "starting", "{}", ""},
        {failed, "failed", "{}", "it broke"},
        {garbage, "stopping", "{\"pid\": \"x\"}", ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct store_server s = {.user_id = rows[i].id,
                                 .state = (char *)rows[i].state,
                                 .url = "unix:/nowhere",
                                 .spawner_state = (char *)rows[i].js,
                                 .message = (char *)rows[i].msg,
                                 .started_ms = 1};
        assert_int_equal(store_server_put(f->st, &s), 0);
    }
    f->m = new_manager(f);
    int status = 1;
    assert_int_equal(spawn_manager_restore(f->m, on_restored, &status), 0);
    assert_int_equal(spawn_manager_restore(f->m, on_restored, &status), -EALREADY);
    assert_true(run_until(f, int_set, &status, 10000));
    assert_int_equal(status, 0);
    assert_int_equal(spawn_state_of(f->m, "dead"), SPAWN_STOPPED);
    assert_int_equal(spawn_state_of(f->m, "reused"), SPAWN_STOPPED);
    assert_int_equal(spawn_state_of(f->m, "nostate"), SPAWN_STOPPED);
    assert_int_equal(spawn_state_of(f->m, "failed"), SPAWN_FAILED);
    assert_string_equal(spawn_last_error(f->m, "failed"), "it broke");
    assert_int_equal(spawn_state_of(f->m, "garbage"), SPAWN_STOPPED);
    assert_null(spawn_route(f->m, "dead"));
    assert_true(wait_row(f, dead, "stopped"));
    assert_true(wait_row(f, reused, "stopped"));
    assert_true(wait_row(f, nostate, "stopped"));
    assert_true(wait_row(f, garbage, "stopped"));
    /* The other process was never signalled. */
    int ws;
    assert_int_equal(waitpid(other, &ws, WNOHANG), 0);
    assert_int_equal(proc_stat_read(other, &ost), 0);
    assert_int_not_equal(ost.state, 'Z');
    kill(other, SIGKILL);
    waitpid(other, &ws, 0);
    free(sock_dead);
    free(sock_reused);
}

static void test_restore_stopping(void **state)
{
    struct fixture *f = *state;
    /* The hub died while stopping a code-server that does not react to SIGTERM (it is
     * SIGSTOPped). The restarted manager's restore is done while that stop still runs:
     * the hub must not wait for spawn.stop_timeout before it serves anyone. Meanwhile the
     * server is stopping: no route, no second server; once it is gone, a start works.
     * The stop timeout is long so that the test, not the SIGKILL, decides when the
     * process may act on its SIGTERM (SIGCONT below). */
    cfg_set(f, "spawn.stop_timeout", "600s");
    f->m = new_manager(f);
    int64_t id = add_user(f, "ida");
    struct recorder r = {0};
    start_ready(f, id, "ida", &r);
    recorder_clear(&r);
    pid_t pid = recorded_pid(f, "ida");
    assert_true(pid > 0);
    assert_int_equal(kill(-pid, SIGSTOP), 0);
    /* A signal takes effect when its target next runs: on a loaded machine the SIGTERM
     * below could otherwise arrive first, and a pending SIGTERM is delivered before a
     * pending SIGSTOP. Wait (bounded) until the server is stopped. */
    struct proc_stat st;
    for (int i = 0; i < 200; i++) {
        if (proc_stat_read(pid, &st) == 0 && st.state == 'T')
            break;
        usleep(50 * 1000);
    }
    assert_int_equal(proc_stat_read(pid, &st), 0);
    assert_int_equal(st.state, 'T');
    assert_int_equal(spawn_stop(f->m, "ida"), 1);
    assert_true(wait_row(f, id, "stopping"));
    close_manager(f);

    f->m = new_manager(f);
    int status = 1;
    assert_int_equal(spawn_manager_restore(f->m, on_restored, &status), 0);
    assert_true(run_until(f, int_set, &status, 10000));
    assert_int_equal(status, 0);
    /* Done before the stop is: the process cannot have acted on SIGTERM yet. */
    assert_int_equal(proc_stat_read(pid, &st), 0);
    assert_int_equal(st.state, 'T');
    assert_int_equal(spawn_state_of(f->m, "ida"), SPAWN_STOPPING);
    assert_null(spawn_route(f->m, "ida"));
    assert_int_equal(spawn_start(f->m, id, "ida"), -EALREADY);
    assert_int_equal(spawn_stop(f->m, "ida"), 1);
    struct recorder during = {0};
    subscribe(f, "ida", &during);
    assert_int_equal(during.n, 1);
    assert_true(during.failed[0]);
    assert_string_equal(during.message[0], "server is stopping");
    recorder_clear(&during);
    struct store_server row;
    assert_int_equal(store_server_get(f->st, id, &row), 0);
    assert_string_equal(row.state, "stopping"); /* a hub dying now would resume the stop */
    store_server_clear(&row);

    /* Let it go: the SIGTERM it was sent is delivered now. */
    assert_int_equal(kill(-pid, SIGCONT), 0);
    assert_true(wait_state(f, "ida", SPAWN_STOPPED, 30000));
    assert_string_equal(spawn_last_error(f->m, "ida"), "");
    assert_true(wait_row(f, id, "stopped"));
    /* It was the first manager's child: reap it, then nothing of its group is left. */
    waitpid(pid, NULL, 0);
    assert_true(group_gone(f, pid));
    char *sock = path_of(f, "run/%s/code-server.sock", "ida");
    assert_false(exists(sock));
    free(sock);

    start_ready(f, id, "ida", &r);
    recorder_clear(&r);
    pid_t again = recorded_pid(f, "ida");
    assert_true(again > 0 && again != pid);
    assert_int_equal(spawn_stop(f->m, "ida"), 1);
    assert_true(wait_state(f, "ida", SPAWN_STOPPED, 10000));
}

static void test_adopt_recorded_server(void **state)
{
    struct fixture *f = *state;
    /* The hub died after spawning, before the store learned of it: the store says
     * stopped, but run/NAME/server.json names a live code-server. A start adopts it
     * instead of starting a second one. */
    f->m = new_manager(f);
    int64_t id = add_user(f, "gus");
    struct recorder r = {0};
    start_ready(f, id, "gus", &r);
    recorder_clear(&r);
    pid_t pid = recorded_pid(f, "gus");
    close_manager(f);
    struct store_server s = {
        .user_id = id, .state = "stopped", .url = "", .spawner_state = "{}", .message = ""};
    assert_int_equal(store_server_put(f->st, &s), 0);
    f->m = new_manager(f);
    assert_int_equal(spawn_state_of(f->m, "gus"), SPAWN_STOPPED);
    start_ready(f, id, "gus", &r);
    assert_int_equal(recorded_pid(f, "gus"), pid);
    bool found = false;
    for (int i = 0; i < r.n; i++)
        found |= strstr(r.message[i], "still running") != NULL;
    assert_true(found);
    recorder_clear(&r);
    assert_int_equal(spawn_stop(f->m, "gus"), 1);
    assert_true(wait_state(f, "gus", SPAWN_STOPPED, 10000));
    struct proc_stat st;
    int rc = proc_stat_read(pid, &st);
    /* Dead (a zombie until the teardown reaps it: it was the first manager's child). */
    assert_true(rc == -ESRCH || (rc == 0 && st.state == 'Z'));
}

static void test_limits(void **state)
{
    struct fixture *f = *state;
    cfg_set(f, "spawn.concurrent_limit", "1");
    cfg_set(f, "spawn.active_server_limit", "2");
    f->m = new_manager(f);
    int64_t a = add_user(f, "amy"), b = add_user(f, "ben"), c = add_user(f, "cal");
    assert_int_equal(spawn_start(f->m, a, "amy"), 1);
    assert_int_equal(spawn_start(f->m, b, "ben"), -EBUSY);
    assert_int_equal(spawn_state_of(f->m, "ben"), SPAWN_STOPPED);
    assert_int_equal(spawn_start(f->m, a, "amy"), 1); /* already starting */
    assert_true(wait_state(f, "amy", SPAWN_RUNNING, 60000));
    assert_int_equal(spawn_start(f->m, b, "ben"), 1);
    assert_true(wait_state(f, "ben", SPAWN_RUNNING, 60000));
    /* Two running: the active limit. */
    assert_int_equal(spawn_start(f->m, c, "cal"), -EDQUOT);
    assert_int_equal(spawn_stop(f->m, "amy"), 1);
    assert_true(wait_state(f, "amy", SPAWN_STOPPED, 10000));
    assert_int_equal(spawn_stop(f->m, "ben"), 1);
    assert_true(wait_state(f, "ben", SPAWN_STOPPED, 10000));
}

static void test_stop_during_start(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    int64_t id = add_user(f, "hal");
    assert_int_equal(spawn_start(f->m, id, "hal"), 1);
    struct recorder r = {0};
    subscribe(f, "hal", &r);
    /* Stop while the start is under way (home initialisation or code-server booting). */
    sleep_loop(f, 30);
    assert_int_equal(spawn_stop(f->m, "hal"), 1);
    assert_int_equal(spawn_state_of(f->m, "hal"), SPAWN_STOPPING);
    assert_true(run_until(f, recorder_final, &r, 10000));
    assert_true(r.failed[r.n - 1]);
    assert_string_equal(r.message[r.n - 1], "Start cancelled: the server was stopped");
    assert_int_equal(spawn_state_of(f->m, "hal"), SPAWN_STOPPED);
    assert_true(wait_row(f, id, "stopped"));
    /* No code-server is left for hal. */
    char *sock = path_of(f, "run/%s/code-server.sock", "hal");
    assert_false(exists(sock));
    free(sock);
    assert_int_equal(recorded_pid(f, "hal"), 0);
    recorder_clear(&r);

    /* Stop right after start (same loop turn). */
    assert_int_equal(spawn_start(f->m, id, "hal"), 1);
    assert_int_equal(spawn_stop(f->m, "hal"), 1);
    assert_true(wait_state(f, "hal", SPAWN_STOPPED, 10000));
}

static void test_subscriptions(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    /* Unknown user: one "not running" event, at once. */
    struct recorder u = {0};
    subscribe(f, "nobody", &u);
    assert_int_equal(u.n, 1);
    assert_true(u.failed[0]);
    assert_int_equal(u.progress[0], 0);
    assert_string_equal(u.message[0], "server is not running");
    recorder_clear(&u);

    int64_t id = add_user(f, "ivy");
    assert_int_equal(spawn_start(f->m, id, "ivy"), 1);
    /* One subscriber leaves from inside its callback at its second event; another
     * stays to the end. */
    struct recorder quitter = {.unsubscribe_at = 2};
    struct recorder stayer = {0};
    subscribe(f, "ivy", &quitter);
    subscribe(f, "ivy", &stayer);
    assert_true(run_until(f, recorder_final, &stayer, 60000));
    assert_int_equal(quitter.n, 2);
    assert_int_equal(quitter.calls_after_unsubscribe, 0);
    assert_true(stayer.n > 2);
    assert_true(stayer.ready[stayer.n - 1]);
    recorder_clear(&quitter);
    recorder_clear(&stayer);
    /* A late subscriber gets the whole finished history before spawn_subscribe returns. */
    struct recorder now = {0};
    subscribe(f, "ivy", &now);
    assert_true(now.final);
    recorder_clear(&now);
    assert_int_equal(spawn_stop(f->m, "ivy"), 1);
    assert_true(wait_state(f, "ivy", SPAWN_STOPPED, 10000));
    /* A subscription kept past the manager's close is still freed by unsubscribe. */
    struct recorder kept = {0};
    subscribe(f, "ivy", &kept);
    close_manager(f);
    recorder_clear(&kept);
}

static void test_activity_batching(void **state)
{
    struct fixture *f = *state;
    f->m = new_manager(f);
    int64_t id = add_user(f, "jan");
    add_user(f, "kim");
    struct recorder r = {0};
    start_ready(f, id, "jan", &r);
    recorder_clear(&r);
    int64_t t = wall_ms();
    for (int i = 0; i < 1000; i++)
        spawn_note_activity(f->m, "jan", t + i);
    spawn_note_activity(f->m, "jan", t - 5000); /* older: ignored */
    spawn_note_activity(f->m, "kim", t + 7);    /* no server, id unknown to the manager */
    assert_int_equal(spawn_last_activity(f->m, "jan"), t + 999);
    assert_int_equal(spawn_last_activity(f->m, "nobody"), 0);
    /* Not written per call: nothing in the store yet. */
    sleep_loop(f, 50);
    struct store_user su;
    assert_int_equal(store_user_get(f->st, "jan", &su), 0);
    assert_int_equal(su.last_activity_ms, 0);
    store_user_clear(&su);
    /* The batch goes at close (and every 30 s). */
    close_manager(f);
    assert_int_equal(store_user_get(f->st, "jan", &su), 0);
    assert_int_equal(su.last_activity_ms, t + 999);
    store_user_clear(&su);
    assert_int_equal(store_user_get(f->st, "kim", &su), 0);
    assert_int_equal(su.last_activity_ms, t + 7);
    store_user_clear(&su);
    struct store_server row;
    assert_int_equal(store_server_get(f->st, id, &row), 0);
    assert_int_equal(row.last_activity_ms, t + 999);
    assert_string_equal(row.state, "running");
    store_server_clear(&row);
    /* Clean up the server the closed manager left running. */
    f->m = new_manager(f);
    int status = 1;
    assert_int_equal(spawn_manager_restore(f->m, on_restored, &status), 0);
    assert_true(run_until(f, int_set, &status, 10000));
    assert_int_equal(spawn_last_activity(f->m, "jan"), t + 999);
    assert_int_equal(spawn_stop(f->m, "jan"), 1);
    assert_true(wait_state(f, "jan", SPAWN_STOPPED, 10000));
}

static void test_culler(void **state)
{
    struct fixture *f = *state;
    cfg_set(f, "cull.timeout", "1s");
    cfg_set(f, "cull.every", "1s");
    metrics_reset_for_tests();
    struct spawn_metrics mx = {
        .running = metrics_gauge("test_running", "r", NULL),
        .starting = metrics_gauge("test_starting", "s", NULL),
        .failures = metrics_counter("test_failures", "f", NULL),
        .culled = metrics_counter("test_culled", "c", NULL),
        .duration = metrics_histogram("test_duration", "d", (const double[]){1, 5, 30}, 3),
    };
    char *err = NULL;
    f->m = spawn_manager_new(&f->loop, &f->cfg, f->st, &mx, &err);
    assert_non_null(f->m);
    int64_t a = add_user(f, "lee"), b = add_user(f, "max");
    struct recorder r1 = {0}, r2 = {0};
    start_ready(f, a, "lee", &r1);
    start_ready(f, b, "max", &r2);
    assert_int_equal(metric_get(mx.running), 2);
    assert_int_equal(metric_get(mx.starting), 0);
    /* Direct call: nothing idle for an hour. */
    assert_int_equal(spawn_cull_idle(f->m, 3600 * 1000, wall_ms()), 0);
    /* max stays busy; lee goes idle and the timer culls it. */
    double end = mono_s() + 4;
    while (spawn_state_of(f->m, "lee") == SPAWN_RUNNING && mono_s() < end) {
        spawn_note_activity(f->m, "max", wall_ms());
        sleep_loop(f, 100);
    }
    assert_true(wait_state(f, "lee", SPAWN_STOPPED, 10000));
    assert_int_equal(spawn_state_of(f->m, "max"), SPAWN_RUNNING);
    assert_int_equal(metric_get(mx.culled), 1);
    assert_int_equal(metric_get(mx.running), 1);
    struct store_event *ev = NULL;
    size_t n = 0;
    sleep_loop(f, 50);
    assert_int_equal(store_event_list(f->st, 20, &ev, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(ev[i].kind, "server.culled") == 0 && strcmp(ev[i].user, "lee") == 0 &&
                 strcmp(ev[i].actor, "culler") == 0;
    store_events_free(ev, n);
    assert_true(found);
    /* "Stop all idle" from the admin page: everything idle longer than 0 ms. */
    assert_int_equal(spawn_cull_idle(f->m, 0, wall_ms() + 1000), 1);
    assert_true(wait_state(f, "max", SPAWN_STOPPED, 10000));
    assert_int_equal(metric_get(mx.running), 0);
    recorder_clear(&r1);
    recorder_clear(&r2);
    close_manager(f);
    metrics_reset_for_tests();
}

static void test_log_bounding(void **state)
{
    struct fixture *f = *state;
    spawn__local_log_check_ms = 100;
    cfg_set(f, "local.log_max_size", "64K");
    f->m = new_manager(f);
    int64_t id = add_user(f, "ned");
    struct recorder r = {0};
    start_ready(f, id, "ned", &r);
    recorder_clear(&r);
    char *log = path_of(f, "users/%s/code-server.log", "ned");
    char *old = path_of(f, "users/%s/code-server.log.1", "ned");
    FILE *fp = fopen(log, "a");
    for (int i = 0; i < 2000; i++)
        fprintf(fp, "filler line %04d ..................................................\n", i);
    fclose(fp);
    struct stat st;
    double end = mono_s() + 5;
    while (!exists(old) && mono_s() < end)
        sleep_loop(f, 50);
    assert_true(exists(old));
    assert_int_equal(stat(old, &st), 0);
    assert_true(st.st_size > 64 * 1024);
    assert_int_equal(stat(log, &st), 0);
    assert_true(st.st_size < 64 * 1024);
    /* code-server still writes to it and still answers. */
    char *answer = NULL;
    assert_int_equal(unix_get(sock_of(spawn_route(f->m, "ned")), "/healthz", &answer), 200);
    free(answer);
    assert_int_equal(spawn_stop(f->m, "ned"), 1);
    assert_true(wait_state(f, "ned", SPAWN_STOPPED, 10000));
    free(log);
    free(old);
}

static void test_system_users_need_root(void **state)
{
    struct fixture *f = *state;
    cfg_set(f, "local.system_users", "true");
    if (geteuid() != 0) {
        char *err = NULL;
        assert_null(spawn_manager_new(&f->loop, &f->cfg, f->st, NULL, &err));
        assert_non_null(strstr(err, "root"));
        free(err);
        return;
    }
    /* As root: a child that drops to nobody must be refused. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        uv_loop_t loop;
        uv_loop_init(&loop);
        char *err = NULL;
        struct spawn_manager *m = spawn_manager_new(&loop, &f->cfg, f->st, NULL, &err);
        _exit(m == NULL && err != NULL && strstr(err, "needs codehub to run as root") ? 0 : 1);
    }
    int ws;
    assert_int_equal(waitpid(child, &ws, 0), child);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
}

static void test_system_users(void **state)
{
    struct fixture *f = *state;
    if (geteuid() != 0 || access("/usr/sbin/useradd", X_OK) != 0) {
        printf("# skipped: needs root and useradd\n");
        return;
    }
    char name[32];
    snprintf(name, sizeof name, "chtest%d", (int)(getpid() % 100000));
    if (getpwnam(name) != NULL) {
        printf("# skipped: account %s exists\n", name);
        return;
    }
    /* The data dir must be reachable by the account. */
    chmod(f->dir, 0700);
    cfg_set(f, "local.system_users", "true");
    cfg_set(f, "local.init_ssh_key", "false");
    f->m = new_manager(f);
    struct stat st;
    assert_int_equal(stat(f->dir, &st), 0);
    assert_int_equal(st.st_mode & 0011, 0011);
    int64_t id = add_user(f, name);
    snprintf(f->account, sizeof f->account, "%s", name);
    struct recorder r = {0};
    start_ready(f, id, name, &r);
    recorder_clear(&r);
    struct passwd *pw = getpwnam(name);
    assert_non_null(pw);
    uid_t uid = pw->pw_uid;
    assert_true(uid >= 1000);
    pid_t pid = recorded_pid(f, name);
    char *statusp = NULL;
    assert_true(asprintf(&statusp, "/proc/%d", (int)pid) > 0);
    assert_int_equal(stat(statusp, &st), 0);
    assert_int_equal(st.st_uid, uid);
    free(statusp);
    char *home = path_of(f, "users/%s", name);
    assert_int_equal(stat(home, &st), 0);
    assert_int_equal(st.st_uid, uid);
    char *settings = path_of(f, "users/%s/.local/share/code-server/User/settings.json", name);
    assert_int_equal(stat(settings, &st), 0);
    assert_int_equal(st.st_uid, uid);
    /* The route is the hub's link in a directory the user cannot change. */
    char *run_dir = path_of(f, "run/%s", name);
    assert_int_equal(stat(run_dir, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_mode & 0777, 0711);
    const char *route = spawn_route(f->m, name);
    char *answer = NULL;
    assert_int_equal(unix_get(sock_of(route), "/healthz", &answer), 200);
    free(answer);
    assert_int_equal(lstat(sock_of(route), &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_uid, uid);
    assert_int_equal(spawn_stop(f->m, name), 1);
    assert_true(wait_state(f, name, SPAWN_STOPPED, 10000));
    free(home);
    free(settings);
    free(run_dir);
}

static void test_refuses_system_account(void **state)
{
    struct fixture *f = *state;
    if (geteuid() != 0) {
        printf("# skipped: needs root\n");
        return;
    }
    /* A codehub user named like a system account must never run as it. */
    cfg_set(f, "local.system_users", "true");
    f->m = new_manager(f);
    int64_t id = add_user(f, "daemon");
    assert_int_equal(spawn_start(f->m, id, "daemon"), 1);
    struct recorder r = {0};
    subscribe(f, "daemon", &r);
    assert_true(run_until(f, recorder_final, &r, 10000));
    assert_true(r.failed[r.n - 1]);
    assert_non_null(strstr(r.message[r.n - 1], "belongs to the system"));
    recorder_clear(&r);
}

int main(void)
{
    log_configure(LOG_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_ready_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_start_with_venv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_is_noticed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_code_server_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exits_immediately, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_dead_and_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_recorded_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_during_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriptions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_activity_batching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_culler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_bounding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_system_users_need_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_system_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_system_account, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

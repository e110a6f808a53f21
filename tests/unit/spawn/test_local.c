/* Tests of the local backend through spawn/backend.h alone (no manager): creation
 * checks, the event contract (nothing final from inside start/stop/reattach, `placed`
 * before `ready`, `exited(requested)` after stop), the route and its directories, stale
 * sockets, reattach refusals, and close. Uses the real code-server from .deps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/log.h"
#include "spawn/backend.h"
#include "spawn/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct config cfg;
    uv_loop_t loop;
};

/* What the backend reported, in order, as one letter each: p(rogress), P(laced),
 * R(eady), F(ailed), E(xited requested), X (exited not requested). */
struct events {
    char seq[256];
    size_t n;
    char *route;
    char *state;
    char *reason;
    bool final;
};

static void push(struct events *e, char c)
{
    if (e->n + 1 < sizeof e->seq)
        e->seq[e->n++] = c;
    e->seq[e->n] = '\0';
}

static void ev_progress(void *ctx, int percent, const char *message)
{
    assert_true(percent > 0 && percent < 100);
    push(ctx, 'p');
}

static void ev_placed(void *ctx, const char *route, const char *state_json)
{
    struct events *e = ctx;
    free(e->route);
    free(e->state);
    e->route = strdup(route);
    e->state = strdup(state_json);
    push(e, 'P');
}

static void ev_ready(void *ctx)
{
    push(ctx, 'R');
}

static void ev_failed(void *ctx, const char *reason)
{
    struct events *e = ctx;
    e->reason = strdup(reason);
    e->final = true;
    push(e, 'F');
}

static void ev_exited(void *ctx, bool requested, const char *reason)
{
    struct events *e = ctx;
    e->reason = reason != NULL ? strdup(reason) : NULL;
    e->final = true;
    push(e, requested ? 'E' : 'X');
}

static const struct spawner_events events = {ev_progress, ev_placed, ev_ready, ev_failed,
                                             ev_exited};

static void events_clear(struct events *e)
{
    free(e->route);
    free(e->state);
    free(e->reason);
    memset(e, 0, sizeof *e);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void cfg_set(struct fixture *f, const char *key, const char *value)
{
    struct buf errors = BUF_INIT;
    assert_int_equal(config_set(&f->cfg, key, value, "test", &errors), 0);
    buf_free(&errors);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-local-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    config_init(&f->cfg);
    cfg_set(f, "server.data_dir", f->dir);
    cfg_set(f, "local.init_venv", "false");
    cfg_set(f, "local.init_ssh_key", "false");
    if (uv_loop_init(&f->loop) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    config_free(&f->cfg);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    assert_int_equal(rc, 0);
    return 0;
}

static void on_closed(void *data)
{
    *(bool *)data = true;
}

static void close_backend(struct fixture *f, void *impl)
{
    bool closed = false;
    spawn__local_backend.close(impl, on_closed, &closed);
    assert_false(closed); /* never from inside close() */
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void on_tick(uv_timer_t *t)
{
}

static void run_until_final(struct fixture *f, struct events *e, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(&f->loop) + (uint64_t)timeout_ms;
    while (!e->final && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void run_until_ready(struct fixture *f, struct events *e, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uint64_t end = uv_now(&f->loop) + (uint64_t)timeout_ms;
    while (strchr(e->seq, 'R') == NULL && !e->final && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void test_create_checks(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    /* The default lookup finds .deps/code-server (above the test binary in build/, or in
     * the working directory). */
    void *impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_non_null(impl);
    close_backend(f, impl);

    /* A data dir too long for Unix socket paths is refused up front. */
    char longdir[200];
    memset(longdir, 'd', sizeof longdir);
    longdir[0] = '/';
    memcpy(longdir + 1, "tmp/", 4);
    longdir[120] = '\0';
    cfg_set(f, "server.data_dir", longdir);
    err = NULL;
    assert_null(spawn__local_backend.create(&f->loop, &f->cfg, &events, &err));
    assert_non_null(strstr(err, "too long"));
    free(err);
    rmdir(longdir);

    /* A missing data dir is created (parents too). */
    char *nested = NULL;
    assert_true(asprintf(&nested, "%s/a/b/data", f->dir) > 0);
    cfg_set(f, "server.data_dir", nested);
    err = NULL;
    impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_non_null(impl);
    struct stat st;
    assert_int_equal(stat(nested, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    close_backend(f, impl);
    free(nested);

    /* A launcher that is not there does not stop the backend: starts fail instead (see
     * test_manager's test_bad_code_server_path for the reason reaching the user). */
    cfg_set(f, "server.data_dir", f->dir);
    cfg_set(f, "local.code_server", "no-such-code-server-anywhere");
    err = NULL;
    impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_non_null(impl);
    assert_null(err);
    close_backend(f, impl);
}

static void test_start_events_and_stop(void **state)
{
    struct fixture *f = *state;
    /* A relative data dir: routes and HOME must still be absolute. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char *launcher = NULL;
    assert_true(asprintf(&launcher, "%s/.deps/code-server/bin/code-server", cwd) > 0);
    if (access(launcher, X_OK) == 0)
        cfg_set(f, "local.code_server", launcher);
    free(launcher);
    assert_int_equal(chdir("/"), 0);
    cfg_set(f, "server.data_dir", f->dir + 1); /* "tmp/codehub-local-..." relative to / */
    char *err = NULL;
    void *impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_non_null(impl);

    /* A stale socket file from a killed server is no obstacle. */
    char *run = NULL, *sock = NULL;
    assert_true(asprintf(&run, "%s/run", f->dir) > 0);
    assert_int_equal(mkdir(run, 0700), 0);
    free(run);
    assert_true(asprintf(&run, "%s/run/ann", f->dir) > 0);
    assert_int_equal(mkdir(run, 0700), 0);
    assert_true(asprintf(&sock, "%s/code-server.sock", run) > 0);
    int fd = open(sock, O_WRONLY | O_CREAT, 0600);
    close(fd);

    struct events e = {0};
    err = NULL;
    struct spawner_server *srv = spawn__local_backend.start(impl, "ann", &e, &err);
    assert_non_null(srv);
    assert_int_equal(e.n, 0); /* nothing reported from inside start() */
    run_until_ready(f, &e, 60000);
    assert_false(e.final);
    /* progress…, placed, progress…, ready */
    const char *placed = strchr(e.seq, 'P');
    assert_non_null(placed);
    assert_true(e.seq[0] == 'p');
    assert_int_equal(e.seq[e.n - 1], 'R');
    assert_true(strchr(placed, 'R') != NULL);
    char *want = NULL;
    assert_true(asprintf(&want, "unix:%s", sock) > 0);
    assert_string_equal(e.route, want);
    free(want);
    assert_non_null(strstr(e.state, "\"pid\":"));
    struct stat st;
    assert_int_equal(lstat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));

    /* A second stop is refused; the stop ends in exited(requested). */
    assert_int_equal(spawn__local_backend.stop(impl, srv), 0);
    assert_int_equal(spawn__local_backend.stop(impl, srv), -EALREADY);
    assert_false(e.final); /* never from inside stop() */
    run_until_final(f, &e, 10000);
    assert_int_equal(e.seq[e.n - 1], 'E');
    assert_int_equal(lstat(sock, &st), -1);
    events_clear(&e);
    close_backend(f, impl);
    free(sock);
    free(run);
}

static void test_bad_names_and_states(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    void *impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_non_null(impl);
    struct events e = {0};
    const char *bad[] = {"../etc", "", "Ann", "a/b", ".hidden"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = NULL;
        assert_null(spawn__local_backend.start(impl, bad[i], &e, &err));
        assert_non_null(err);
        free(err);
    }
    const char *states[] = {
        "",
        "{}",
        "not json",
        "{\"pid\": 1, \"pgid\": 1, \"start_time\": 5, \"socket\": \"/x\"}",
        "{\"pid\": 500, \"pgid\": 501, \"start_time\": 5, \"socket\": \"/x\"}",
        "{\"pid\": 500, \"pgid\": 500, \"start_time\": 0, \"socket\": \"/x\"}",
        "{\"pid\": 500, \"pgid\": 500, \"start_time\": 5}",
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        err = NULL;
        assert_null(spawn__local_backend.reattach(impl, "ann", states[i], &e, &err));
        assert_non_null(err);
        free(err);
    }
    assert_int_equal(e.n, 0);

    /* Our own PID with a wrong start time: a reused PID, never signalled. */
    char js[512];
    snprintf(js, sizeof js,
             "{\"pid\": %d, \"pgid\": %d, \"start_time\": 1, \"socket\": \"%s/run/ann/"
             "code-server.sock\"}",
             (int)getpid(), (int)getpid(), f->dir);
    struct spawner_server *srv = spawn__local_backend.reattach(impl, "ann", js, &e, &err);
    assert_non_null(srv);
    assert_int_equal(e.n, 0); /* reported on a later turn */
    run_until_final(f, &e, 5000);
    assert_string_equal(e.seq, "F");
    events_clear(&e);

    /* Alive and ours, but a socket outside this data dir: not adopted. */
    struct proc_stat self;
    assert_int_equal(proc_stat_read(getpid(), &self), 0);
    snprintf(js, sizeof js,
             "{\"pid\": %d, \"pgid\": %d, \"start_time\": %llu, \"socket\": \"/elsewhere.sock\"}",
             (int)getpid(), (int)getpid(), (unsigned long long)self.start_time);
    srv = spawn__local_backend.reattach(impl, "ann", js, &e, &err);
    assert_non_null(srv);
    run_until_final(f, &e, 5000);
    assert_string_equal(e.seq, "F");
    events_clear(&e);
    close_backend(f, impl);
}

static void test_close_detaches(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    void *impl = spawn__local_backend.create(&f->loop, &f->cfg, &events, &err);
    assert_non_null(impl);
    struct events e = {0};
    struct spawner_server *srv = spawn__local_backend.start(impl, "bea", &e, &err);
    assert_non_null(srv);
    run_until_ready(f, &e, 60000);
    assert_int_equal(e.seq[e.n - 1], 'R');
    const char *p = strstr(e.state, "\"pid\":");
    pid_t pid = (pid_t)strtol(p + 6, NULL, 10);
    /* Closing leaves the server running and reports nothing more. */
    size_t before = e.n;
    close_backend(f, impl);
    assert_int_equal(e.n, before);
    assert_int_equal(kill(pid, 0), 0);
    struct proc_stat st;
    assert_int_equal(proc_stat_read(pid, &st), 0);
    assert_int_not_equal(st.state, 'Z');
    /* Clean up: it is still our child. */
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
    events_clear(&e);
}

int main(void)
{
    log_configure(LOG_ERROR, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_events_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names_and_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_detaches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests of spawn/home.h: the synchronous home preparation, the log helpers (including
 * what a hostile home may contain: symbolic links, FIFOs, hard links) and the
 * asynchronous first-start initialisation with real ssh-keygen, on a real uv loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "spawn/home.h"
#include "spawn/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SAFE_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct fixture {
    char dir[64];
    char *home;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-home-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    if (asprintf(&f->home, "%s/home", f->dir) < 0)
        return -1;
    if (mkdir(f->home, 0700) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->home);
    free(f);
    return 0;
}

static char *path_in(const struct fixture *f, const char *rel)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", f->home, rel) < 0)
        abort();
    return p;
}

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return NULL;
    char *text = calloc(1, 1 << 20);
    size_t n = fread(text, 1, (1 << 20) - 1, fp);
    text[n] = '\0';
    fclose(fp);
    return text;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static bool is_dir(const char *path, mode_t mode)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == mode;
}

static const struct home_owner nobody = {false, 0, 0};

static void test_prepare(void **state)
{
    struct fixture *f = *state;
    const char *what = NULL;
    assert_false(home_is_initialized(f->home));
    assert_int_equal(home_prepare(f->home, &nobody, &what), 0);
    char *p = path_in(f, "projects");
    assert_true(is_dir(p, 0755));
    free(p);
    p = path_in(f, ".config/codehub");
    assert_true(is_dir(p, 0755));
    free(p);
    p = path_in(f, ".local/share/code-server/User/settings.json");
    char *text = read_all(p);
    assert_non_null(text);
    assert_string_equal(text, HOME_SETTINGS_JSON);
    assert_non_null(strstr(text, "\"telemetry.telemetryLevel\": \"off\""));
    assert_non_null(strstr(text, "\"security.workspace.trust.enabled\": false"));
    free(text);

    /* An existing settings.json is the user's: kept as it is. */
    write_file(p, "{\"editor.fontSize\": 18}\n");
    assert_int_equal(home_prepare(f->home, &nobody, &what), 0);
    text = read_all(p);
    assert_string_equal(text, "{\"editor.fontSize\": 18}\n");
    free(text);
    free(p);

    assert_false(home_is_initialized(f->home));
    assert_int_equal(home_mark_initialized(f->home, &nobody), 0);
    assert_true(home_is_initialized(f->home));
    /* Marking twice is fine. */
    assert_int_equal(home_mark_initialized(f->home, &nobody), 0);
}

static void test_prepare_refuses_symlinks(void **state)
{
    struct fixture *f = *state;
    /* ~/.config pointing elsewhere must not be written through. */
    char *outside = NULL;
    assert_true(asprintf(&outside, "%s/outside", f->dir) > 0);
    assert_int_equal(mkdir(outside, 0700), 0);
    char *cfg = path_in(f, ".config");
    assert_int_equal(symlink(outside, cfg), 0);
    const char *what = NULL;
    assert_int_equal(home_prepare(f->home, &nobody, &what), -ENOTDIR);
    assert_string_equal(what, ".config");
    char *probe = NULL;
    assert_true(asprintf(&probe, "%s/codehub", outside) > 0);
    struct stat st;
    assert_int_equal(lstat(probe, &st), -1);
    free(probe);
    /* The marker cannot be written through it either. */
    assert_true(home_mark_initialized(f->home, &nobody) < 0);
    free(cfg);
    free(outside);
    /* A home that is itself a link is refused. */
    char *link = NULL;
    assert_true(asprintf(&link, "%s/linkhome", f->dir) > 0);
    assert_int_equal(symlink(f->home, link), 0);
    assert_int_equal(home_prepare(link, &nobody, &what), -ENOTDIR);
    assert_false(home_is_initialized(link));
    free(link);
}

static void test_dir_ensure(void **state)
{
    struct fixture *f = *state;
    char *d = path_in(f, "run");
    assert_int_equal(home_dir_ensure(d, 0711, NULL, false), 0);
    assert_true(is_dir(d, 0711));
    chmod(d, 0755);
    assert_int_equal(home_dir_ensure(d, 0711, NULL, false), 0);
    assert_true(is_dir(d, 0755)); /* kept without force_mode */
    assert_int_equal(home_dir_ensure(d, 0700, NULL, true), 0);
    assert_true(is_dir(d, 0700));
    char *l = path_in(f, "link");
    assert_int_equal(symlink(d, l), 0);
    assert_int_equal(home_dir_ensure(l, 0700, NULL, true), -ENOTDIR);
    char *file = path_in(f, "file");
    write_file(file, "x");
    assert_int_equal(home_dir_ensure(file, 0700, NULL, false), -ENOTDIR);
    char *deep = path_in(f, "no/such/parent");
    assert_int_equal(home_dir_ensure(deep, 0700, NULL, false), -ENOENT);
    free(deep);
    free(file);
    free(l);
    free(d);
}

static void test_log_open_and_rotate(void **state)
{
    struct fixture *f = *state;
    char *log = path_in(f, HOME_LOG_NAME);
    char *old = path_in(f, HOME_LOG_OLD_NAME);
    int fd = home_log_open(f->home, &nobody);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(fcntl(fd, F_GETFL) & O_APPEND, O_APPEND);

    /* Small: nothing to do. */
    assert_int_equal(write(fd, "hello\n", 6), 6);
    assert_int_equal(home_log_rotate(f->home, 1024, &nobody), 0);
    assert_int_equal(stat(old, &st), -1);

    /* Large: copied to .1, truncated; the O_APPEND writer continues at the new end. */
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    chunk[sizeof chunk - 1] = '\n';
    for (int i = 0; i < 5; i++)
        assert_int_equal(write(fd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
    assert_int_equal(home_log_rotate(f->home, 1024, &nobody), 1);
    assert_int_equal(stat(old, &st), 0);
    assert_int_equal(st.st_size, 5006);
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(write(fd, "after\n", 6), 6);
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(st.st_size, 6); /* no hole where the old content was */
    char *text = read_all(log);
    assert_string_equal(text, "after\n");
    free(text);

    /* A .1 that is a symbolic link is replaced, its target left alone. */
    char *victim = NULL;
    assert_true(asprintf(&victim, "%s/victim", f->dir) > 0);
    write_file(victim, "precious\n");
    unlink(old);
    assert_int_equal(symlink(victim, old), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(write(fd, chunk, sizeof chunk), (ssize_t)sizeof chunk);
    assert_int_equal(home_log_rotate(f->home, 1024, &nobody), 1);
    text = read_all(victim);
    assert_string_equal(text, "precious\n");
    free(text);
    assert_int_equal(lstat(old, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 2006);
    close(fd);

    /* A log replaced by a symbolic link: open replaces it, never writes the target. */
    unlink(log);
    assert_int_equal(symlink(victim, log), 0);
    fd = home_log_open(f->home, &nobody);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n", 2), 2);
    close(fd);
    text = read_all(victim);
    assert_string_equal(text, "precious\n");
    free(text);
    assert_int_equal(lstat(log, &st), 0);
    assert_true(S_ISREG(st.st_mode));

    /* A hard link to another file is not rotated (truncating would hit the other name)
     * and is replaced when opened. */
    unlink(log);
    assert_int_equal(link(victim, log), 0);
    assert_int_equal(home_log_rotate(f->home, 1, &nobody), -EPERM);
    text = read_all(victim);
    assert_string_equal(text, "precious\n");
    free(text);
    fd = home_log_open(f->home, &nobody);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_nlink, 1);

    /* A FIFO must not block the open. */
    unlink(log);
    assert_int_equal(mkfifo(log, 0600), 0);
    fd = home_log_open(f->home, &nobody);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(lstat(log, &st), 0);
    assert_true(S_ISREG(st.st_mode));

    /* No log at all: nothing to rotate. */
    unlink(log);
    assert_int_equal(home_log_rotate(f->home, 1, &nobody), 0);
    free(victim);
    free(log);
    free(old);
}

static void test_log_tail(void **state)
{
    struct fixture *f = *state;
    char *t = home_log_tail(f->home, 20);
    assert_string_equal(t, ""); /* no log */
    free(t);
    char *log = path_in(f, HOME_LOG_NAME);
    FILE *fp = fopen(log, "w");
    for (int i = 1; i <= 30; i++)
        fprintf(fp, "line %d\n", i);
    fprintf(fp, "bell\a and esc\x1b[0m\n\n");
    fclose(fp);
    t = home_log_tail(f->home, 3);
    assert_string_equal(t, "line 29\nline 30\nbell? and esc?[0m");
    free(t);
    t = home_log_tail(f->home, 100);
    assert_int_equal(strncmp(t, "line 1\nline 2\n", 14), 0);
    free(t);

    /* A long log: only the end is read, starting at a line boundary. */
    fp = fopen(log, "w");
    for (int i = 0; i < 2000; i++)
        fprintf(fp, "row %04d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", i);
    fclose(fp);
    t = home_log_tail(f->home, 1000);
    assert_int_equal(strncmp(t, "row ", 4), 0);
    assert_true(strlen(t) <= 8192);
    assert_non_null(strstr(t, "row 1999 x"));
    assert_null(strstr(t, "row 0000"));
    free(t);

    /* A symbolic link to a file elsewhere is not read (it could be a secret). */
    char *secret = NULL;
    assert_true(asprintf(&secret, "%s/secret", f->dir) > 0);
    write_file(secret, "top secret\n");
    unlink(log);
    assert_int_equal(symlink(secret, log), 0);
    t = home_log_tail(f->home, 5);
    assert_string_equal(t, "");
    free(t);
    free(secret);
    free(log);
}

/* ---- asynchronous initialisation ---- */

struct init_run {
    int percents[16];
    char *messages[16];
    int nprogress;
    int done_calls;
    int status;
    char *reason;
    struct home_init *hi;
    int cancel_at;       /* cancel when this percentage is reported */
    int cancel_after_ms; /* cancel this long after the start */
};

static void on_cancel_timer(uv_timer_t *t)
{
    struct init_run *r = t->data;
    if (r->done_calls == 0)
        home_init_cancel(r->hi);
    uv_close((uv_handle_t *)t, NULL);
}

static void on_progress(void *data, int percent, const char *message)
{
    struct init_run *r = data;
    if (r->nprogress < 16) {
        r->percents[r->nprogress] = percent;
        r->messages[r->nprogress] = strdup(message);
        r->nprogress++;
    }
    if (r->cancel_at == percent)
        home_init_cancel(r->hi);
}

static void on_done(void *data, int status, const char *reason)
{
    struct init_run *r = data;
    r->done_calls++;
    r->status = status;
    r->reason = reason != NULL ? strdup(reason) : NULL;
}

static void run_clear(struct init_run *r)
{
    for (int i = 0; i < r->nprogress; i++)
        free(r->messages[i]);
    free(r->reason);
    memset(r, 0, sizeof *r);
}

static void run_init(const struct fixture *f, struct init_run *r, bool ssh, bool venv,
                     const char *path_env)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char *env[] = {(char *)path_env, "LANG=C.UTF-8", NULL};
    struct home_options o = {
        .name = "ann",
        .home = f->home,
        .owner = nobody,
        .ssh_key = ssh,
        .venv = venv,
        .env = env,
        .log_fd = -1,
    };
    static const struct home_init_callbacks cb = {on_progress, on_done};
    r->hi = home_init_start(&loop, &o, &cb, r);
    assert_non_null(r->hi);
    uv_timer_t cancel_timer;
    if (r->cancel_after_ms > 0) {
        uv_timer_init(&loop, &cancel_timer);
        cancel_timer.data = r;
        uv_timer_start(&cancel_timer, on_cancel_timer, (uint64_t)r->cancel_after_ms, 0);
    }
    /* Nothing is reported from inside home_init_start(). */
    assert_int_equal(r->nprogress, 0);
    assert_int_equal(r->done_calls, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_init_ssh_key(void **state)
{
    struct fixture *f = *state;
    char *keygen = proc_find_executable("ssh-keygen", SAFE_PATH + 5);
    struct init_run r = {0};
    run_init(f, &r, true, false, SAFE_PATH);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_true(r.nprogress >= 1);
    assert_int_equal(r.percents[0], 10);
    assert_string_equal(r.messages[0], "Initialising your home: creating folders and settings");
    assert_true(home_is_initialized(f->home));
    char *key = path_in(f, ".ssh/id_ed25519");
    char *pub = path_in(f, ".ssh/id_ed25519.pub");
    struct stat st;
    if (keygen != NULL) {
        assert_int_equal(r.nprogress, 2);
        assert_int_equal(r.percents[1], 15);
        assert_string_equal(r.messages[1], "Initialising your home: creating an SSH key");
        assert_int_equal(stat(key, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        char *text = read_all(pub);
        assert_non_null(strstr(text, "ssh-ed25519 "));
        assert_non_null(strstr(text, " ann@codehub"));
        free(text);
        char *ssh = path_in(f, ".ssh");
        assert_true(is_dir(ssh, 0700));
        free(ssh);
    }
    run_clear(&r);

    /* Initialised: the second start only confirms, with no progress at all. */
    run_init(f, &r, true, false, SAFE_PATH);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.nprogress, 0);
    run_clear(&r);

    /* Without the marker the steps run again, but the existing key is kept. */
    char *marker = path_in(f, HOME_MARKER);
    unlink(marker);
    char *before = read_all(pub);
    run_init(f, &r, true, false, SAFE_PATH);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.nprogress, 1); /* folders only: the key exists */
    char *after = read_all(pub);
    if (before != NULL)
        assert_string_equal(before, after);
    free(before);
    free(after);
    run_clear(&r);
    free(marker);
    free(key);
    free(pub);
    free(keygen);
}

static void test_init_missing_tools_skipped(void **state)
{
    struct fixture *f = *state;
    /* A PATH with neither ssh-keygen nor python3: both optional steps are skipped. */
    char *empty = NULL;
    assert_true(asprintf(&empty, "PATH=%s/nothing-here", f->dir) > 0);
    struct init_run r = {0};
    run_init(f, &r, true, true, empty);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.nprogress, 1);
    assert_true(home_is_initialized(f->home));
    char *key = path_in(f, ".ssh/id_ed25519");
    struct stat st;
    assert_int_equal(stat(key, &st), -1);
    free(key);
    run_clear(&r);
    free(empty);
}

static void test_init_failing_step_skipped(void **state)
{
    struct fixture *f = *state;
    /* A python3 that fails: logged and skipped, not fatal. */
    char *bin = NULL, *py = NULL, *pathenv = NULL;
    assert_true(asprintf(&bin, "%s/bin", f->dir) > 0);
    assert_int_equal(mkdir(bin, 0755), 0);
    assert_true(asprintf(&py, "%s/python3", bin) > 0);
    write_file(py, "#!/bin/sh\necho 'no venv here' >&2\nexit 3\n");
    chmod(py, 0755);
    assert_true(asprintf(&pathenv, "PATH=%s", bin) > 0);
    struct init_run r = {0};
    run_init(f, &r, false, true, pathenv);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.nprogress, 2);
    assert_int_equal(r.percents[1], 20);
    assert_true(home_is_initialized(f->home));
    run_clear(&r);
    free(bin);
    free(py);
    free(pathenv);
}

static void test_init_required_step_fails(void **state)
{
    struct fixture *f = *state;
    /* ~/projects is a file: the home cannot be prepared, and that is fatal. */
    char *projects = path_in(f, "projects");
    write_file(projects, "not a directory");
    struct init_run r = {0};
    run_init(f, &r, false, false, SAFE_PATH);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, -ENOTDIR);
    assert_non_null(r.reason);
    assert_non_null(strstr(r.reason, "~/projects"));
    assert_false(home_is_initialized(f->home));
    run_clear(&r);
    free(projects);
}

static void test_init_cancel(void **state)
{
    struct fixture *f = *state;
    /* A step that would hang: cancelled while it runs, its process group is killed. */
    char *bin = NULL, *kg = NULL, *pathenv = NULL;
    assert_true(asprintf(&bin, "%s/bin", f->dir) > 0);
    assert_int_equal(mkdir(bin, 0755), 0);
    assert_true(asprintf(&kg, "%s/ssh-keygen", bin) > 0);
    write_file(kg, "#!/bin/sh\nsleep 30 &\necho $! > sleep.pid\nwait\n");
    chmod(kg, 0755);
    assert_true(asprintf(&pathenv, "PATH=%s:/usr/bin:/bin", bin) > 0);
    struct init_run r = {0};
    r.cancel_after_ms = 300;
    uint64_t t0 = uv_hrtime();
    run_init(f, &r, true, false, pathenv); /* the loop ends only if the step died */
    assert_true(uv_hrtime() - t0 < 5000000000ull);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, -ECANCELED);
    assert_int_equal(r.nprogress, 2);
    assert_false(home_is_initialized(f->home));
    run_clear(&r);
    /* The step's child (same process group) died with it. */
    char *pidfile = path_in(f, "sleep.pid");
    char *text = read_all(pidfile);
    assert_non_null(text);
    pid_t sleeper = (pid_t)strtol(text, NULL, 10);
    assert_true(sleeper > 1);
    struct proc_stat st;
    int rc = -1;
    for (int i = 0; i < 100; i++) {
        rc = proc_stat_read(sleeper, &st);
        if (rc == -ESRCH || (rc == 0 && st.state == 'Z'))
            break;
        usleep(10000);
    }
    assert_true(rc == -ESRCH || (rc == 0 && st.state == 'Z'));
    free(text);
    free(pidfile);

    /* Cancelled from inside the progress callback that announces the step. */
    r.cancel_at = 15;
    run_init(f, &r, true, false, pathenv);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, -ECANCELED);
    assert_int_equal(r.nprogress, 2);
    run_clear(&r);

    /* Cancelled from the first progress callback, before any process ran. */
    r.cancel_at = 10;
    run_init(f, &r, true, false, pathenv);
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.status, -ECANCELED);
    assert_int_equal(r.nprogress, 1);
    run_clear(&r);
    free(bin);
    free(kg);
    free(pathenv);
}

static void test_init_abandon(void **state)
{
    struct fixture *f = *state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char *env[] = {SAFE_PATH, NULL};
    struct home_options o = {
        .name = "ann", .home = f->home, .owner = nobody, .env = env, .log_fd = -1};
    static const struct home_init_callbacks cb = {on_progress, on_done};
    struct init_run r = {0};
    r.hi = home_init_start(&loop, &o, &cb, &r);
    home_init_abandon(r.hi);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.nprogress, 0);
    assert_int_equal(r.done_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_refuses_symlinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_ensure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_open_and_rotate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_ssh_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_missing_tools_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_failing_step_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_required_step_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_abandon, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

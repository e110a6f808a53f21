/* Tests of spawn/proc.h against real processes: /proc parsing, identity checks, pidfd
 * watching and reaping, process-group signalling, executable lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "spawn/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A stat line as the kernel writes it, with `comm` and `start` substituted. */
static int parse_line(const char *comm, const char *start, struct proc_stat *st)
{
    char line[512];
    snprintf(line, sizeof line,
             "4242 (%s) S 1 4240 4239 34816 -1 4194560 1234 0 5 0 10 3 0 0 20 0 1 0 %s "
             "12345678 456 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
             comm, start);
    return proc_stat_parse(line, strlen(line), st);
}

static void test_stat_parse(void **state)
{
    struct proc_stat st;
    assert_int_equal(parse_line("code-server", "987654", &st), 0);
    assert_int_equal(st.pid, 4242);
    assert_int_equal(st.state, 'S');
    assert_int_equal(st.ppid, 1);
    assert_int_equal(st.pgid, 4240);
    assert_int_equal(st.sid, 4239);
    assert_int_equal(st.start_time, 987654);

    /* A command name with spaces and parentheses: parsing resumes after the last ')'. */
    assert_int_equal(parse_line("a) S 1 2 3 (b", "55", &st), 0);
    assert_int_equal(st.pgid, 4240);
    assert_int_equal(st.start_time, 55);

    /* Negative priority and nice (real-time processes) are accepted. */
    const char *rt = "7 (rt) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 -100 -20 1 0 777 0 0\n";
    assert_int_equal(proc_stat_parse(rt, strlen(rt), &st), 0);
    assert_int_equal(st.start_time, 777);
}

static void test_stat_parse_rejects(void **state)
{
    struct proc_stat st;
    const char *bad[] = {
        "",
        "abc (x) S 1 2 3",
        "12 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
        "12 (x S 1 2 3",
        "12 (x) S 1 2 3 4 5",                                      /* cut short */
        "12 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x", /* not a number */
        "-5 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
        "12 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(proc_stat_parse(bad[i], strlen(bad[i]), &st), -EINVAL);
    /* Text not NUL-terminated at `len`: only `len` bytes count. */
    char line[] = "12 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20";
    assert_int_equal(proc_stat_parse(line, 20, &st), -EINVAL);
}

static void test_stat_read_self(void **state)
{
    struct proc_stat a, b;
    assert_int_equal(proc_stat_read(getpid(), &a), 0);
    assert_int_equal(a.pid, getpid());
    assert_int_equal(a.pgid, getpgrp());
    assert_int_equal(a.ppid, getppid());
    assert_true(a.start_time > 0);
    assert_int_equal(proc_stat_read(getpid(), &b), 0);
    assert_int_equal(a.start_time, b.start_time);
    assert_int_equal(proc_stat_read(0, &a), -EINVAL);
    assert_int_equal(proc_stat_read(-1, &a), -EINVAL);
}

static pid_t fork_exit(int code)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(code);
    return pid;
}

static void test_identity(void **state)
{
    struct proc_stat self;
    assert_int_equal(proc_stat_read(getpid(), &self), 0);
    assert_int_equal(proc_identity_check(getpid(), self.start_time), 0);
    /* Same PID, another start time: another process holds the number now. */
    assert_int_equal(proc_identity_check(getpid(), self.start_time + 1), -ESTALE);

    pid_t child = fork_exit(0);
    struct proc_stat st;
    /* Until reaped the child is a zombie: it exists in /proc but is no longer alive. */
    for (int i = 0; i < 200; i++) {
        if (proc_stat_read(child, &st) == 0 && st.state == 'Z')
            break;
        sleep_ms(5);
    }
    assert_int_equal(st.state, 'Z');
    assert_int_equal(proc_identity_check(child, st.start_time), -ESRCH);
    int ws;
    assert_int_equal(waitpid(child, &ws, 0), child);
    assert_int_equal(proc_stat_read(child, &st), -ESRCH);
    assert_int_equal(proc_identity_check(child, st.start_time), -ESRCH);
}

static void test_pidfd(void **state)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c;
        close(pipefd[1]);
        /* Exit with 7 once the parent closes the pipe. */
        while (read(pipefd[0], &c, 1) > 0)
            ;
        _exit(7);
    }
    close(pipefd[0]);
    int fd = proc_pidfd_open(child);
    assert_true(fd >= 0);
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 50), 0); /* alive: not readable */
    int ws = -1;
    assert_int_equal(proc_pidfd_reap(fd, &ws), -EAGAIN);
    close(pipefd[1]);
    assert_int_equal(poll(&p, 1, 5000), 1); /* readable once it exits */
    assert_int_equal(proc_pidfd_reap(fd, &ws), 0);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 7);
    char *how = proc_wait_describe(ws);
    assert_string_equal(how, "exited with status 7");
    free(how);
    close(fd);

    /* Not our child: its status is not ours. PID 1 always exists. */
    fd = proc_pidfd_open(1);
    if (fd >= 0) {
        assert_int_equal(proc_pidfd_reap(fd, &ws), -ECHILD);
        close(fd);
    }
    assert_int_equal(proc_pidfd_open(0), -EINVAL);
    pid_t gone = fork_exit(0);
    waitpid(gone, &ws, 0);
    assert_int_equal(proc_pidfd_open(gone), -ESRCH);
}

static void test_pidfd_killed(void **state)
{
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    int fd = proc_pidfd_open(child);
    assert_true(fd >= 0);
    kill(child, SIGKILL);
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 5000), 1);
    int ws = 0;
    assert_int_equal(proc_pidfd_reap(fd, &ws), 0);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGKILL);
    char *how = proc_wait_describe(ws);
    assert_string_equal(how, "was killed by signal 9 (KILL)");
    free(how);
    close(fd);
}

static void test_group_kill(void **state)
{
    assert_int_equal(proc_group_kill(0, SIGTERM), -EINVAL);
    assert_int_equal(proc_group_kill(1, SIGTERM), -EINVAL);
    assert_int_equal(proc_group_kill(-7, SIGTERM), -EINVAL);
    assert_false(proc_group_exists(0));
    assert_false(proc_group_exists(1));

    /* The grandchild is reparented to us when the child dies, so we can reap it. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t leader = fork();
    assert_true(leader >= 0);
    if (leader == 0) {
        setsid();
        pid_t grand = fork();
        if (grand == 0) {
            for (;;)
                pause();
        }
        /* Tell the parent the group is complete. */
        if (write(pipefd[1], &grand, sizeof grand) != sizeof grand)
            _exit(1);
        for (;;)
            pause();
    }
    close(pipefd[1]);
    pid_t grand = 0;
    assert_int_equal(read(pipefd[0], &grand, sizeof grand), sizeof grand);
    close(pipefd[0]);
    struct proc_stat st;
    assert_int_equal(proc_stat_read(grand, &st), 0);
    assert_int_equal(st.pgid, leader);
    assert_true(proc_group_exists(leader));

    assert_int_equal(proc_group_kill(leader, SIGTERM), 0);
    int ws;
    assert_int_equal(waitpid(leader, &ws, 0), leader);
    assert_true(WIFSIGNALED(ws));
    /* The grandchild got the signal too (it is in the group). */
    assert_int_equal(waitpid(grand, &ws, 0), grand);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGTERM);
    assert_false(proc_group_exists(leader));
    assert_int_equal(proc_group_kill(leader, SIGTERM), -ESRCH);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

static void test_find_executable(void **state)
{
    char *p = proc_find_executable("sh", "/nonexistent:/usr/bin:/bin");
    assert_non_null(p);
    assert_true(p[0] == '/');
    assert_true(strlen(p) > 3 && strcmp(p + strlen(p) - 3, "/sh") == 0);
    free(p);
    assert_null(proc_find_executable("no-such-tool-codehub", "/usr/bin:/bin"));
    assert_null(proc_find_executable("sh", NULL));
    assert_null(proc_find_executable("", "/bin"));
    assert_null(proc_find_executable(NULL, "/bin"));
    p = proc_find_executable("/bin/sh", NULL);
    assert_non_null(p);
    assert_string_equal(p, "/bin/sh");
    free(p);
    /* A directory and a non-executable file are not executables. */
    assert_null(proc_find_executable("/tmp", NULL));

    /* A relative path and an empty PATH entry (the current directory) come back absolute. */
    char dir[] = "/tmp/codehub-proc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    int fd = open("tool", O_WRONLY | O_CREAT, 0755);
    assert_true(fd >= 0);
    close(fd);
    fd = open("data", O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_null(proc_find_executable("./data", NULL));
    assert_null(proc_find_executable("data", ":/bin"));
    char *want = NULL;
    assert_true(asprintf(&want, "%s/tool", dir) > 0);
    p = proc_find_executable("./tool", NULL);
    assert_non_null(p);
    assert_int_equal(strncmp(p, dir, strlen(dir)), 0);
    free(p);
    p = proc_find_executable("tool", "/nonexistent::/bin");
    assert_non_null(p);
    assert_int_equal(strncmp(p, dir, strlen(dir)), 0);
    free(p);
    free(want);
    unlink("tool");
    unlink("data");
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
}

static void test_describe(void **state)
{
    char *s = proc_exit_describe(0, 0);
    assert_string_equal(s, "exited with status 0");
    free(s);
    s = proc_exit_describe(127, 0);
    assert_string_equal(s, "exited with status 127");
    free(s);
    s = proc_exit_describe(0, SIGTERM);
    assert_string_equal(s, "was killed by signal 15 (TERM)");
    free(s);
    s = proc_wait_describe(3 << 8);
    assert_string_equal(s, "exited with status 3");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stat_parse),     cmocka_unit_test(test_stat_parse_rejects),
        cmocka_unit_test(test_stat_read_self), cmocka_unit_test(test_identity),
        cmocka_unit_test(test_pidfd),          cmocka_unit_test(test_pidfd_killed),
        cmocka_unit_test(test_group_kill),     cmocka_unit_test(test_find_executable),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

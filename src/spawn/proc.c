#include "spawn/proc.h"

#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* /proc/PID/stat is one line of at most a few hundred bytes; the command name is capped
 * at 15 characters by the kernel (64 for kernel threads in some versions). */
#define STAT_MAX 1024

/* Reads one unsigned decimal field starting at *p (after skipping one space) and moves
 * *p past it. Returns 0 or -EINVAL. */
static int next_field(const char **p, const char *end, unsigned long long *out, bool is_signed)
{
    const char *s = *p;
    if (s >= end || *s != ' ')
        return -EINVAL;
    s++;
    const char *start = s;
    if (is_signed && s < end && *s == '-')
        s++;
    if (s >= end || *s < '0' || *s > '9')
        return -EINVAL;
    unsigned long long v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
        s++;
    }
    if (*start == '-')
        v = (unsigned long long)(-(long long)v);
    *out = v;
    *p = s;
    return 0;
}

int proc_stat_parse(const char *text, size_t len, struct proc_stat *out)
{
    memset(out, 0, sizeof *out);
    const char *end = text + len;
    /* The PID, then " (comm)". */
    char *num_end = NULL;
    char head[24];
    size_t hl = len < sizeof head - 1 ? len : sizeof head - 1;
    memcpy(head, text, hl);
    head[hl] = '\0';
    errno = 0;
    long pid = strtol(head, &num_end, 10);
    if (errno != 0 || num_end == head || pid <= 0 || pid > INT_MAX || *num_end != ' ')
        return -EINVAL;
    if (num_end[1] != '(')
        return -EINVAL;
    const char *close = NULL;
    for (const char *s = text; s < end; s++) {
        if (*s == ')')
            close = s;
    }
    if (close == NULL)
        return -EINVAL;
    const char *p = close + 1;
    /* Field 3: one state letter. */
    if (end - p < 2 || p[0] != ' ')
        return -EINVAL;
    char state = p[1];
    if (state < 'A' || state > 'z')
        return -EINVAL;
    p += 2;
    unsigned long long v[20];
    /* Fields 4..22; 7 (tty_nr) and 8 (tpgid) may be negative. */
    for (int field = 4; field <= 22; field++) {
        bool is_signed = field == 7 || field == 8 || (field >= 16 && field <= 19);
        if (next_field(&p, end, &v[field - 4], is_signed) != 0)
            return -EINVAL;
    }
    out->pid = (pid_t)pid;
    out->state = state;
    out->ppid = (pid_t)v[0];
    out->pgid = (pid_t)v[1];
    out->sid = (pid_t)v[2];
    out->start_time = (uint64_t)v[18];
    return 0;
}

int proc_stat_read(pid_t pid, struct proc_stat *out)
{
    memset(out, 0, sizeof *out);
    if (pid <= 0)
        return -EINVAL;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    char text[STAT_MAX];
    size_t len = 0;
    int rc = 0;
    while (len < sizeof text) {
        ssize_t n = read(fd, text + len, sizeof text - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            /* The process went away between open and read. */
            rc = errno == ESRCH ? -ESRCH : -errno;
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    rc = proc_stat_parse(text, len, out);
done:
    close(fd);
    return rc;
}

int proc_identity_check(pid_t pid, uint64_t start_time)
{
    struct proc_stat st;
    int rc = proc_stat_read(pid, &st);
    if (rc < 0)
        return rc;
    if (st.start_time != start_time)
        return -ESTALE;
    if (st.state == 'Z' || st.state == 'X')
        return -ESRCH;
    return 0;
}

int proc_pidfd_open(pid_t pid)
{
    if (pid <= 0)
        return -EINVAL;
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    /* pidfd_open sets O_CLOEXEC itself. */
    return (int)fd;
#else
    return -ENOSYS;
#endif
}

int proc_pidfd_reap(int pidfd, int *wstatus)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    *wstatus = 0;
    if (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) != 0)
        return -errno;
    if (info.si_pid == 0)
        return -EAGAIN;
    if (info.si_code == CLD_EXITED)
        *wstatus = (info.si_status & 0xff) << 8;
    else
        *wstatus = info.si_status & 0x7f; /* killed or dumped: the signal number */
    return 0;
}

int proc_group_kill(pid_t pgid, int sig)
{
    if (pgid <= 1)
        return -EINVAL;
    if (kill(-pgid, sig) != 0)
        return -errno;
    return 0;
}

bool proc_group_exists(pid_t pgid)
{
    if (pgid <= 1)
        return false;
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

static bool is_executable_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    return access(path, X_OK) == 0;
}

static char *make_absolute(const char *path)
{
    if (path[0] == '/')
        return xstrdup(path);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        return NULL;
    return xasprintf("%s/%s", cwd, path);
}

char *proc_find_executable(const char *name, const char *path_list)
{
    if (name == NULL || name[0] == '\0')
        return NULL;
    if (strchr(name, '/') != NULL)
        return is_executable_file(name) ? make_absolute(name) : NULL;
    if (path_list == NULL)
        return NULL;
    const char *p = path_list;
    for (;;) {
        const char *colon = strchr(p, ':');
        size_t n = colon != NULL ? (size_t)(colon - p) : strlen(p);
        char *dir = n == 0 ? xstrdup(".") : xstrndup(p, n);
        char *cand = xasprintf("%s/%s", dir, name);
        free(dir);
        if (is_executable_file(cand)) {
            char *abs = make_absolute(cand);
            free(cand);
            return abs;
        }
        free(cand);
        if (colon == NULL)
            return NULL;
        p = colon + 1;
    }
}

char *proc_exit_describe(int64_t exit_status, int term_signal)
{
    if (term_signal != 0) {
        const char *abbrev = sigabbrev_np(term_signal);
        return xasprintf("was killed by signal %d (%s)", term_signal,
                         abbrev != NULL ? abbrev : "unknown");
    }
    return xasprintf("exited with status %lld", (long long)exit_status);
}

char *proc_wait_describe(int wstatus)
{
    if (WIFSIGNALED(wstatus))
        return proc_exit_describe(0, WTERMSIG(wstatus));
    if (WIFEXITED(wstatus))
        return proc_exit_describe(WEXITSTATUS(wstatus), 0);
    return xasprintf("ended with wait status %d", wstatus);
}

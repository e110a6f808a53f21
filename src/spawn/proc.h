/* Process helpers for the local spawner: who a PID really is (/proc/PID/stat), watching
 * a process that is not our child (pidfd), signalling a whole process group, finding an
 * executable, and describing how a process ended.
 *
 * A PID alone does not name a process: after it exits the kernel hands the number to the
 * next process that asks. What identifies a process across a hub restart is the pair
 * (PID, start time), the start time being field 22 of /proc/PID/stat (clock ticks since
 * boot), which never changes for a process and differs for any later holder of the PID. */
#ifndef CODEHUB_SPAWN_PROC_H
#define CODEHUB_SPAWN_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The fields of /proc/PID/stat the spawner uses. */
struct proc_stat {
    pid_t pid;
    char state; /* 'R', 'S', 'D', 'Z' (zombie), 'X' (dead), … */
    pid_t ppid;
    pid_t pgid;
    pid_t sid;
    uint64_t start_time; /* field 22: clock ticks after boot */
};

/* Parses the text of a /proc/PID/stat file (`len` bytes, need not be NUL-terminated).
 * The command name (field 2) may hold spaces and parentheses, so parsing resumes after
 * the last ')'. Returns 0 or -EINVAL when the text does not have the expected shape. */
int proc_stat_parse(const char *text, size_t len, struct proc_stat *out);

/* Reads /proc/PID/stat. Returns 0, -ESRCH when there is no such process, -EINVAL for
 * a PID <= 0 or unparsable contents, or another negative errno from reading. */
int proc_stat_read(pid_t pid, struct proc_stat *out);

/* Checks that PID is still the process that had `start_time`, and that it has not
 * exited (a zombie no longer counts). Returns 0 when it is, -ESRCH when no live process
 * has that PID, -ESTALE when another process now holds the PID (never signal it), or
 * another negative errno when /proc cannot be read (treat as "not ours" too). */
int proc_identity_check(pid_t pid, uint64_t start_time);

/* Opens a pidfd for PID (pidfd_open(2)): a descriptor that stays bound to this one
 * process and becomes readable when it exits, wherever its parent is. Returns the fd
 * (O_CLOEXEC; caller closes) or a negative errno (-ESRCH: no such process, -ENOSYS: a
 * kernel before 5.3). */
int proc_pidfd_open(pid_t pid);

/* Reaps the process behind `pidfd` if it is our child and has exited, storing its wait
 * status (as waitpid gives it) in *wstatus. Returns 0 when reaped, -EAGAIN when it has
 * not exited yet, -ECHILD when it is not our child (its status is not ours to know). */
int proc_pidfd_reap(int pidfd, int *wstatus);

/* Sends `sig` to every process of group `pgid` (kill(-pgid, sig)). Refuses pgid <= 1
 * with -EINVAL: kill(-1) would signal every process we may signal, kill(0) our own
 * group. Returns 0 or a negative errno (-ESRCH: the group is empty). */
int proc_group_kill(pid_t pgid, int sig);

/* True while group `pgid` has a member (zombies included). pgid <= 1 is false. */
bool proc_group_exists(pid_t pgid);

/* Finds an executable regular file. A `name` holding a '/' is checked as it is; otherwise
 * each directory of the colon-separated `path_list` is tried in order (an empty entry
 * means the current directory, as execvp does). Returns the path found, made absolute
 * (caller frees), or NULL. */
char *proc_find_executable(const char *name, const char *path_list);

/* Describes how a process ended: "exited with status 3", "was killed by signal 9
 * (KILL)". `exit_status`/`term_signal` as libuv reports them (term_signal 0 = exited).
 * Returns a new string; caller frees. */
char *proc_exit_describe(int64_t exit_status, int term_signal);

/* As proc_exit_describe(), from a waitpid() status. */
char *proc_wait_describe(int wstatus);

#endif

/* Removing a user's home, <data_dir>/users/NAME, for `codehub user del --purge-data`.
 *
 * The home belongs to the user, who may have filled it with anything: symbolic links to
 * /etc, directories they made unwritable (Go's module cache does that), a link swapped in
 * for a directory while we work. So the walk never resolves a path: every directory is
 * opened relative to its parent's descriptor with O_NOFOLLOW, links are unlinked and
 * never followed, and it does not descend into another file system (a bind mount inside
 * the home is not the user's data to delete). Directories we are refused entry to are
 * made owner-writable first, through their descriptor, as `rm -rf` would need anyway. */
#include "cli/cli.h"

#include "core/alloc.h"
#include "core/buf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Deeper trees are refused rather than risk running out of descriptors (one per level). */
#define MAX_DEPTH 256

struct purge {
    struct buf path; /* the path being worked on, for messages */
    dev_t dev;       /* the file system of the home: nothing on another one is touched */
    size_t failures;
};

char *cli_user_home_path(const char *data_dir, const char *name)
{
    size_t len = strlen(data_dir);
    while (len > 1 && data_dir[len - 1] == '/')
        len--;
    return xasprintf("%.*s/users/%s", (int)len, data_dir, name);
}

static void failure(struct purge *p, int err, const char *what)
{
    /* The first failure is shown; later ones are counted, since a tree that cannot be
     * removed may fail on every one of thousands of files. */
    if (p->failures == 0)
        fprintf(stderr, "codehub: cannot remove %s: %s\n", p->path.data,
                what ? what : strerror(err));
    p->failures++;
}

static size_t path_push(struct purge *p, const char *name)
{
    size_t mark = p->path.len;
    buf_appendf(&p->path, "/%s", name);
    return mark;
}

static void path_pop(struct purge *p, size_t mark)
{
    p->path.len = mark;
    p->path.data[mark] = '\0';
}

static bool remove_dir_at(struct purge *p, int parent, const char *name, int depth);

/* Removes the entries of the open directory `fd`. Returns how many it removed. */
static size_t remove_entries(struct purge *p, DIR *dir, int fd, int depth)
{
    size_t removed = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(dir);
        if (e == NULL) {
            if (errno != 0)
                failure(p, errno, NULL);
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t mark = path_push(p, e->d_name);
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                failure(p, errno, NULL);
        } else if (S_ISDIR(st.st_mode)) {
            if (remove_dir_at(p, fd, e->d_name, depth + 1))
                removed++;
        } else if (unlinkat(fd, e->d_name, 0) == 0 || errno == ENOENT) {
            removed++;
        } else {
            failure(p, errno, NULL);
        }
        path_pop(p, mark);
    }
    return removed;
}

/* Removes the directory `name` in `parent` and everything under it; p->path names it.
 * Returns true when it is gone. */
static bool remove_dir_at(struct purge *p, int parent, const char *name, int depth)
{
    struct stat st;
    if (depth > MAX_DEPTH) {
        failure(p, 0, "too deeply nested");
        return false;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        /* Replaced by a link or a file since we looked: remove that instead (never the
         * home itself, which home_check() saw as a directory). */
        if ((errno == ELOOP || errno == ENOTDIR) && depth > 0) {
            if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
                return true;
        }
        if (errno == ENOENT)
            return true;
        failure(p, errno, NULL);
        return false;
    }
    if (fstat(fd, &st) != 0) {
        failure(p, errno, NULL);
        close(fd);
        return false;
    }
    if (depth == 0)
        p->dev = st.st_dev;
    if (st.st_dev != p->dev) {
        failure(p, 0, "on another file system (a mount point); not descending into it");
        close(fd);
        return false;
    }
    if ((st.st_mode & S_IRWXU) != S_IRWXU)
        (void)fchmod(fd, (st.st_mode & 07777) | S_IRWXU);

    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        failure(p, errno, NULL);
        close(fd);
        return false;
    }
    /* Entries removed while readdir() runs may make some file systems skip others, so
     * read again until a pass finds nothing left to remove (or fails: retrying would
     * only fail again). */
    for (int pass = 0; pass < 4; pass++) {
        size_t failures = p->failures;
        if (remove_entries(p, dir, fd, depth) == 0 || p->failures != failures)
            break;
        rewinddir(dir);
    }
    closedir(dir);
    if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return true;
    failure(p, errno, NULL);
    return false;
}

/* Opens <data_dir>/users without following a link at `users`. Returns the descriptor,
 * -ENOENT when data_dir or users does not exist, or another negative errno after printing
 * why. */
static int users_dir_open(const char *data_dir)
{
    struct stat st;
    int rc;
    /* The data directory itself may be a link: it is the administrator's choice. */
    int data = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data < 0) {
        rc = -errno;
        if (rc != -ENOENT)
            fprintf(stderr, "codehub: cannot open data directory %s: %s\n", data_dir,
                    strerror(-rc));
        return rc;
    }
    if (fstatat(data, "users", &st, AT_SYMLINK_NOFOLLOW) != 0) {
        rc = -errno;
        if (rc != -ENOENT)
            fprintf(stderr, "codehub: cannot examine %s/users: %s\n", data_dir, strerror(-rc));
        goto done;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "codehub: refusing to purge: %s/users is %s, not a directory\n", data_dir,
                S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory");
        rc = -ENOTDIR;
        goto done;
    }
    rc = openat(data, "users", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rc < 0) {
        rc = -errno;
        fprintf(stderr, "codehub: cannot open %s/users: %s\n", data_dir, strerror(-rc));
    }
done:
    close(data);
    return rc;
}

/* Checks the home's own entry in `users`. Returns 0 for a directory, -ENOENT when there
 * is none, or -ENOTDIR / another negative errno after printing why. */
static int home_check(int users, const char *home_path, const char *name)
{
    struct stat st;
    if (fstatat(users, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        int rc = -errno;
        if (rc != -ENOENT)
            fprintf(stderr, "codehub: cannot examine %s: %s\n", home_path, strerror(-rc));
        return rc;
    }
    if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = readlinkat(users, name, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr,
                "codehub: refusing to purge %s: it is a symbolic link (to %s), and purging "
                "never follows links out of the data directory\n",
                home_path, n > 0 ? target : "?");
        return -ENOTDIR;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "codehub: refusing to purge %s: it is not a directory\n", home_path);
        return -ENOTDIR;
    }
    return 0;
}

int cli_purge_check(const char *data_dir, const char *name)
{
    char *home = cli_user_home_path(data_dir, name);
    int users = users_dir_open(data_dir);
    int rc = users;
    if (users >= 0) {
        rc = home_check(users, home, name);
        close(users);
    }
    free(home);
    return rc;
}

int cli_purge_user_home(const char *data_dir, const char *name, enum cli_purge_result *result)
{
    struct purge p = {.path = BUF_INIT};
    char *home = cli_user_home_path(data_dir, name);
    int rc;

    *result = CLI_PURGE_MISSING;
    int users = users_dir_open(data_dir);
    if (users < 0) {
        rc = users == -ENOENT ? 0 : users;
        goto done;
    }
    /* Checked again: time has passed since cli_purge_check(). */
    rc = home_check(users, home, name);
    if (rc < 0) {
        if (rc == -ENOENT)
            rc = 0;
        goto done;
    }
    buf_append_str(&p.path, home);
    remove_dir_at(&p, users, name, 0);
    if (p.failures > 1)
        fprintf(stderr, "codehub: %zu more paths under %s could not be removed\n", p.failures - 1,
                home);
    if (p.failures > 0) {
        rc = -EIO;
        goto done;
    }
    *result = CLI_PURGE_REMOVED;
done:
    if (users >= 0)
        close(users);
    buf_free(&p.path);
    free(home);
    return rc;
}

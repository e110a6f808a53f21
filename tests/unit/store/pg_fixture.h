/* Fixture code that the store's tests (test_store.c, test_pg.c) share: the PostgreSQL test
 * server, that is the one ctest starts (scripts/pg-test-server.sh, found through
 * CODEHUB_TEST_PG_DIR) or one a test starts in a directory of its own; a fresh database on
 * it for each test; and the small file, sleep and stderr helpers both files need.
 *
 * Header-only (static functions) so that each test executable gets its own copy. */
#ifndef CODEHUB_TESTS_STORE_PG_FIXTURE_H
#define CODEHUB_TESTS_STORE_PG_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Not every test uses every helper. */
#define PG_FIXTURE_FN static __attribute__((unused))

/* ---- files, time, stderr ----------------------------------------------------------- */

PG_FIXTURE_FN int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* rm -rf `dir`. */
PG_FIXTURE_FN void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Reads a small file, without its trailing newline; NULL when unreadable. */
PG_FIXTURE_FN char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return NULL;
    char line[1024] = "";
    char *ok = fgets(line, sizeof line, fp);
    fclose(fp);
    if (ok == NULL)
        return NULL;
    line[strcspn(line, "\r\n")] = '\0';
    return strdup(line);
}

PG_FIXTURE_FN void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Runs `fn(arg)` with stderr sent to a file; returns what was written (caller frees). */
PG_FIXTURE_FN char *capture_stderr(void (*fn)(void *), void *arg)
{
    char tmpl[] = "/tmp/codehub-stderr-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    unlink(tmpl);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    return text;
}

/* ---- races -------------------------------------------------------------------------- */

/* One thread of run_together(). */
struct together {
    pthread_barrier_t *barrier;
    void *(*fn)(void *);
    void *arg;
};

PG_FIXTURE_FN void *together_main(void *arg)
{
    struct together *t = arg;
    pthread_barrier_wait(t->barrier);
    return t->fn(t->arg);
}

/* Runs fn(&args[i]) for each of the `n` elements (of `size` bytes) of `args`, each on a
 * thread of its own, all released at once from a barrier so that they race, and returns
 * when every one has. */
PG_FIXTURE_FN void run_together(int n, void *(*fn)(void *), void *args, size_t size)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    struct together *t = calloc((size_t)n, sizeof *t);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    for (int i = 0; i < n; i++) {
        t[i] = (struct together){&barrier, fn, (char *)args + (size_t)i * size};
        assert_int_equal(pthread_create(&th[i], NULL, together_main, &t[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    free(th);
    free(t);
}

/* ---- the PostgreSQL test server ---------------------------------------------------- */

/* A server started by scripts/pg-test-server.sh, as its directory describes it. */
struct pg_server {
    char *dir;
    char *url_prefix; /* DIR/url up to its last '/': the database name follows */
    char *hostport;   /* "127.0.0.1:PORT" */
    char *pwfile;     /* DIR/password */
    char *password;
    char *ca; /* DIR/ca.crt */
};

PG_FIXTURE_FN void pg_server_clear(struct pg_server *s)
{
    free(s->dir);
    free(s->url_prefix);
    free(s->hostport);
    free(s->pwfile);
    free(s->password);
    free(s->ca);
    memset(s, 0, sizeof *s);
}

/* Reads DIR's url and password into `s`. Returns 0, or -1 after saying why. */
PG_FIXTURE_FN int pg_server_load(struct pg_server *s, const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/url", dir);
    char *url = slurp(path);
    snprintf(path, sizeof path, "%s/password", dir);
    char *password = slurp(path);
    if (url == NULL || password == NULL || strchr(url, '@') == NULL || strrchr(url, '/') == NULL) {
        fprintf(stderr, "%s holds no running test server (url, password)\n", dir);
        free(url);
        free(password);
        return -1;
    }
    s->dir = strdup(dir);
    s->url_prefix = strndup(url, (size_t)(strrchr(url, '/') - url) + 1);
    const char *at = strchr(url, '@');
    s->hostport = strndup(at + 1, (size_t)(strrchr(url, '/') - at - 1));
    s->pwfile = strdup(path);
    s->password = password;
    snprintf(path, sizeof path, "%s/ca.crt", dir);
    s->ca = strdup(path);
    free(url);
    return 0;
}

/* Loads the server ctest started (CODEHUB_TEST_PG_DIR) into `s`, once. Returns 0, or -1
 * after saying why: the PostgreSQL tests must fail, not skip, when there is no server. */
PG_FIXTURE_FN int pg_server_load_shared(struct pg_server *s)
{
    if (s->dir != NULL)
        return 0;
    const char *dir = getenv("CODEHUB_TEST_PG_DIR");
    if (dir == NULL || dir[0] == '\0') {
        fprintf(stderr, "CODEHUB_TEST_PG_DIR is not set: run the tests through ctest (make "
                        "test-unit), or start a server with scripts/pg-test-server.sh start DIR "
                        "and export CODEHUB_TEST_PG_DIR=DIR\n");
        return -1;
    }
    return pg_server_load(s, dir);
}

/* The URL of database `db` on `s`, without the password (caller frees). */
PG_FIXTURE_FN char *pg_server_url(const struct pg_server *s, const char *db)
{
    char *url = NULL;
    assert_true(asprintf(&url, "%s%s", s->url_prefix, db) > 0);
    return url;
}

/* A direct connection to database `db` on `s` (caller closes with PQfinish), or NULL after
 * saying why. */
PG_FIXTURE_FN PGconn *pg_server_connect(const struct pg_server *s, const char *db)
{
    char *url = pg_server_url(s, db);
    const char *keys[] = {"dbname", "password", NULL};
    const char *values[] = {url, s->password, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    free(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connecting to %s: %s", db, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs `sql`. Returns 0, or -1 after saying why. */
PG_FIXTURE_FN int pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Runs `sql`; the test fails if it does. */
PG_FIXTURE_FN void pg_exec_ok(PGconn *c, const char *sql)
{
    if (pg_exec(c, sql) != 0)
        fail_msg("%s failed", sql);
}

/* The single integer `sql` returns; the test fails when there is not exactly one row. */
PG_FIXTURE_FN int64_t pg_query_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* Creates an empty database t_<pid>_<random> on `s` for one test. Returns its name (caller
 * frees; drop it with pg_db_drop), or NULL after saying why. */
PG_FIXTURE_FN char *pg_db_create(const struct pg_server *s)
{
    unsigned char rnd[6];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t got = read(fd, rnd, sizeof rnd);
    close(fd);
    if (got != (ssize_t)sizeof rnd)
        return NULL;
    char *name = NULL;
    if (asprintf(&name, "t_%d_%02x%02x%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1], rnd[2],
                 rnd[3], rnd[4], rnd[5]) < 0)
        return NULL;
    PGconn *admin = pg_server_connect(s, "codehub");
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (admin == NULL || pg_exec(admin, sql) != 0) {
        PQfinish(admin);
        free(name);
        return NULL;
    }
    PQfinish(admin);
    return name;
}

/* Drops database `name` from `s`, closing whatever sessions it still has. */
PG_FIXTURE_FN void pg_db_drop(const struct pg_server *s, const char *name)
{
    PGconn *admin = pg_server_connect(s, "codehub");
    if (admin == NULL)
        return;
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    pg_exec(admin, sql);
    PQfinish(admin);
}

#endif

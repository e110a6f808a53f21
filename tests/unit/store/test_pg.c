/* Tests of what only the PostgreSQL backend of the store does: opening (password file, URL
 * password, TLS, unreachable and malformed servers), migrations by several processes at
 * once under the advisory lock, surviving dropped connections and a server restart, and the
 * notification triggers. The backend-independent behaviour is tested on PostgreSQL too, by
 * test_store.c. The server is the one ctest starts (CODEHUB_TEST_PG_DIR); the restart test
 * starts a server of its own so as not to disturb tests running in parallel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "store/backend.h"
#include "store/migrations.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(fchmod(fd, mode), 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* ---- fixtures ------------------------------------------------------------------------- */

/* The server ctest started (pg_fixture.h), loaded by the first setup. */
static struct pg_server shared;

struct fixture {
    char dir[64]; /* a temporary directory for files the test writes */
    char *dbname; /* a fresh database on the shared server */
    char *url;
    PGconn *raw; /* a direct connection to it */
    struct store *st;
};

static int setup(void **state)
{
    if (pg_server_load_shared(&shared) != 0)
        return -1;
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-pgtest-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    f->dbname = pg_db_create(&shared);
    if (f->dbname == NULL)
        return -1;
    f->url = pg_server_url(&shared, f->dbname);
    f->raw = pg_server_connect(&shared, f->dbname);
    if (f->raw == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    PQfinish(f->raw);
    pg_db_drop(&shared, f->dbname);
    rm_tree(f->dir);
    free(f->dbname);
    free(f->url);
    free(f);
    return 0;
}

static struct store *open_store(struct fixture *f, const char *url, const char *pwfile, char **err)
{
    return store_open_password(url != NULL ? url : f->url, NULL, pwfile, err);
}

/* Opens the fixture's database with the server's password file into f->st, failing the
 * test with the reason when it cannot. */
static void open_fixture_store(struct fixture *f)
{
    char *err = NULL;
    f->st = open_store(f, NULL, shared.pwfile, &err);
    if (f->st == NULL)
        fail_msg("store_open_password: %s", err);
}

/* ---- open: passwords ------------------------------------------------------------------- */

struct open_call {
    const char *url;
    const char *pwfile;
    struct store *st;
    char *err;
};

static void open_captured(void *arg)
{
    struct open_call *o = arg;
    o->st = store_open_password(o->url, NULL, o->pwfile, &o->err);
}

static void test_password_file(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    char path[128];

    /* The fixture's file: first line, newline stripped. */
    f->st = open_store(f, NULL, shared.pwfile, &err);
    assert_non_null(f->st);
    assert_null(err);
    assert_true(store_is_shared(f->st));
    store_close(f->st);
    f->st = NULL;

    /* CR LF and further lines are not part of the password. */
    snprintf(path, sizeof path, "%s/crlf", f->dir);
    char *text = NULL;
    assert_true(asprintf(&text, "%s\r\nsecond line\n", shared.password) > 0);
    write_file(path, text, 0600);
    free(text);
    struct store *st = open_store(f, NULL, path, &err);
    assert_non_null(st);
    store_close(st);

    /* Missing, empty, a lone newline: clear errors naming the file. */
    assert_null(open_store(f, NULL, "/nonexistent/codehub-pw", &err));
    assert_string_equal(err, "cannot read store.password_file /nonexistent/codehub-pw: "
                             "No such file or directory");
    free(err);
    snprintf(path, sizeof path, "%s/empty", f->dir);
    write_file(path, "", 0600);
    assert_null(open_store(f, NULL, path, &err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "is empty"));
    free(err);
    write_file(path, "\n", 0600);
    assert_null(open_store(f, NULL, path, &err));
    assert_non_null(strstr(err, "is empty"));
    free(err);
    /* A directory is not readable as a file. */
    assert_null(open_store(f, NULL, f->dir, &err));
    assert_non_null(strstr(err, "cannot read store.password_file"));
    free(err);

    /* A wrong password: the server says so, the message names the server and never the
     * password. */
    snprintf(path, sizeof path, "%s/wrong", f->dir);
    write_file(path, "Wr0ngPassw0rdXYZ\n", 0600);
    struct open_call o = {f->url, path, NULL, NULL};
    char *log = capture_stderr(open_captured, &o);
    assert_null(o.st);
    char *expect = NULL;
    assert_true(asprintf(&expect, "cannot connect to PostgreSQL at %s/%s: ", shared.hostport,
                         f->dbname) > 0);
    assert_non_null(strstr(o.err, expect));
    assert_non_null(strstr(o.err, "password authentication failed"));
    assert_null(strstr(o.err, "Wr0ngPassw0rdXYZ"));
    assert_null(strstr(log, "Wr0ngPassw0rdXYZ"));
    free(expect);
    free(o.err);
    free(log);

    /* A file others may read still works, with a warning; the password is not logged. */
    snprintf(path, sizeof path, "%s/open", f->dir);
    assert_true(asprintf(&text, "%s\n", shared.password) > 0);
    write_file(path, text, 0644);
    free(text);
    o = (struct open_call){f->url, path, NULL, NULL};
    log = capture_stderr(open_captured, &o);
    assert_non_null(o.st);
    assert_non_null(strstr(log, "store.password_file_mode"));
    assert_non_null(strstr(log, "mode=0644"));
    assert_null(strstr(log, shared.password));
    store_close(o.st);
    free(log);

    /* Readable by the group only (a Secret mounted 0440 for the pod's fsGroup): no warning. */
    snprintf(path, sizeof path, "%s/group", f->dir);
    assert_true(asprintf(&text, "%s\n", shared.password) > 0);
    write_file(path, text, 0640);
    free(text);
    o = (struct open_call){f->url, path, NULL, NULL};
    log = capture_stderr(open_captured, &o);
    assert_non_null(o.st);
    assert_null(strstr(log, "store.password_file_mode"));
    store_close(o.st);
    free(log);
}

static void test_password_elsewhere(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    char *url = NULL;
    char path[128];

    /* No password anywhere: libpq's own sources are consulted and find none. */
    char passfile[128];
    snprintf(passfile, sizeof passfile, "%s/no-pgpass", f->dir);
    setenv("PGPASSFILE", passfile, 1);
    unsetenv("PGPASSWORD");
    assert_null(open_store(f, NULL, NULL, &err));
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at"));
    assert_non_null(strstr(err, "no password supplied"));
    free(err);

    /* libpq's PGPASSFILE applies when no password file is given. */
    snprintf(path, sizeof path, "%s/pgpass", f->dir);
    char *line = NULL;
    assert_true(asprintf(&line, "*:*:*:codehub:%s\n", shared.password) > 0);
    write_file(path, line, 0600);
    free(line);
    setenv("PGPASSFILE", path, 1);
    struct store *st = open_store(f, NULL, NULL, &err);
    assert_non_null(st);
    store_close(st);
    unsetenv("PGPASSFILE");

    /* In the URL. */
    assert_true(asprintf(&url, "postgres://codehub:%s@%s/%s", shared.password, shared.hostport,
                         f->dbname) > 0);
    st = open_store(f, url, NULL, &err);
    assert_non_null(st);
    store_close(st);
    free(url);

    /* A wrong one in the URL is never echoed, even when libpq cannot parse the URL. */
    assert_true(
        asprintf(&url, "postgres://codehub:N0tTheRightOne@%s/%s", shared.hostport, f->dbname) > 0);
    assert_null(open_store(f, url, NULL, &err));
    assert_non_null(strstr(err, "password authentication failed"));
    assert_null(strstr(err, "N0tTheRightOne"));
    free(err);
    /* The password file wins over the URL's password. */
    st = open_store(f, url, shared.pwfile, &err);
    assert_non_null(st);
    store_close(st);
    free(url);
    assert_null(open_store(f, "postgres://codehub:Bad%zzSecret@127.0.0.1/x", NULL, &err));
    assert_non_null(strstr(err, "invalid PostgreSQL URL"));
    assert_null(strstr(err, "Bad%zzSecret"));
    assert_null(strstr(err, "zzSecret"));
    free(err);
}

/* ---- open: TLS, defaults, unreachable servers ------------------------------------------- */

static void test_tls(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    char *url = NULL;

    /* verify-full against the server's CA: TLS is used, and application_name defaults to
     * "codehub". */
    assert_true(asprintf(&url, "%s?sslmode=verify-full&sslrootcert=%s", f->url, shared.ca) > 0);
    f->st = open_store(f, url, shared.pwfile, &err);
    if (f->st == NULL)
        fail_msg("%s", err);
    free(url);
    assert_int_equal(store_user_create(f->st, "ann", NULL, false, NULL), 0);
    assert_true(pg_query_int(f->raw, "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                                     "USING (pid) WHERE a.datname = current_database() AND "
                                     "a.application_name = 'codehub' AND s.ssl") >= 1);
    assert_int_equal(pg_query_int(f->raw,
                                  "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity "
                                  "a USING (pid) WHERE a.datname = current_database() AND "
                                  "a.application_name = 'codehub' AND NOT s.ssl"),
                     0);
    store_close(f->st);
    f->st = NULL;

    /* The URL's own application_name wins. */
    assert_true(asprintf(&url, "%s?application_name=mine", f->url) > 0);
    f->st = open_store(f, url, shared.pwfile, &err);
    assert_non_null(f->st);
    free(url);
    assert_int_equal(store_user_create(f->st, "bob", NULL, false, NULL), 0);
    assert_true(pg_query_int(f->raw, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND application_name = 'mine'") >= 1);
    store_close(f->st);
    f->st = NULL;

    /* A CA that did not sign the server's certificate: refused, with the reason. */
    char cmd[512], key[128], crt[128];
    snprintf(key, sizeof key, "%s/other.key", f->dir);
    snprintf(crt, sizeof crt, "%s/other.crt", f->dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=other-ca "
             "-keyout %s -out %s 2>/dev/null",
             key, crt);
    assert_int_equal(system(cmd), 0);
    assert_true(asprintf(&url, "%s?sslmode=verify-full&sslrootcert=%s", f->url, crt) > 0);
    assert_null(open_store(f, url, shared.pwfile, &err));
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at"));
    assert_non_null(strstr(err, "certificate verify failed"));
    free(err);
    free(url);
    /* verify-full without any CA file at all is refused too. */
    assert_true(asprintf(&url, "%s?sslmode=verify-full&sslrootcert=%s/none.crt", f->url, f->dir) >
                0);
    assert_null(open_store(f, url, shared.pwfile, &err));
    assert_non_null(strstr(err, "none.crt"));
    free(err);
    free(url);
}

static void test_unreachable_fails_fast(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;

    /* Refused: at once, naming the server. */
    int64_t start = mono_ms();
    assert_null(open_store(f, "postgres://codehub@127.0.0.1:1/codehub", shared.pwfile, &err));
    assert_true(mono_ms() - start < 2000);
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at 127.0.0.1:1/codehub: "));
    free(err);

    /* A server that accepts the TCP connection and never answers: the default
     * connect_timeout (5 s) ends the wait; a URL may shorten it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char url[128];
    snprintf(url, sizeof url, "postgres://codehub@127.0.0.1:%d/codehub", ntohs(sa.sin_port));
    start = mono_ms();
    assert_null(open_store(f, url, shared.pwfile, &err));
    int64_t waited = mono_ms() - start;
    assert_true(waited >= 4000 && waited < 9000);
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at 127.0.0.1:"));
    free(err);
    snprintf(url, sizeof url, "postgres://codehub@127.0.0.1:%d/codehub?connect_timeout=1",
             ntohs(sa.sin_port));
    start = mono_ms();
    assert_null(open_store(f, url, shared.pwfile, &err));
    waited = mono_ms() - start;
    assert_true(waited < 3000);
    free(err);
    close(fd);
}

static void test_conninfo_for_listener(void **state)
{
    struct fixture *f = *state;
    open_fixture_store(f);
    const char *const *keys = NULL;
    const char *const *values = NULL;
    assert_int_equal(store__pg_conninfo(f->st, &keys, &values), 0);
    /* The listener connects with these arrays exactly as the pool does: same database,
     * same password (from the file), same defaults. */
    PGconn *c = PQconnectdbParams(keys, values, 1);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(PQdb(c), f->dbname);
    PGresult *r = PQexec(c, "SHOW application_name");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "codehub");
    PQclear(r);
    PQfinish(c);

    /* Not for SQLite. */
    char *err = NULL;
    char *url = NULL;
    assert_true(asprintf(&url, "sqlite:%s/x.sqlite", f->dir) > 0);
    struct store *sq = store_open(url, NULL, &err);
    free(url);
    assert_non_null(sq);
    assert_int_equal(store__pg_conninfo(sq, &keys, &values), -ENOTSUP);
    assert_int_equal(store__pg_conninfo(NULL, &keys, &values), -ENOTSUP);
    store_close(sq);
}

/* ---- migrations by several processes at once -------------------------------------------- */

enum { OPENERS = 8 };

struct opener {
    const char *url;
    struct store *st;
    char *err;
};

static void *opener_thread(void *arg)
{
    struct opener *o = arg;
    o->st = store_open_password(o->url, NULL, shared.pwfile, &o->err);
    return NULL;
}

static void test_migrate_concurrently(void **state)
{
    struct fixture *f = *state;
    struct opener o[OPENERS];
    for (int i = 0; i < OPENERS; i++)
        o[i] = (struct opener){f->url, NULL, NULL};
    run_together(OPENERS, opener_thread, o, sizeof o[0]);
    for (int i = 0; i < OPENERS; i++) {
        if (o[i].st == NULL)
            fail_msg("opener %d: %s", i, o[i].err);
    }
    /* Each migration ran once: one row per version, one set of triggers. */
    assert_int_equal(pg_query_int(f->raw, "SELECT COUNT(*) FROM schema_version"),
                     STORE__SCHEMA_VERSION);
    assert_int_equal(pg_query_int(f->raw, "SELECT MAX(version) FROM schema_version"),
                     STORE__SCHEMA_VERSION);
    /* servers; users on update and on delete; sessions; tokens. */
    assert_int_equal(pg_query_int(f->raw, "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal"),
                     5);
    /* The lock is not left held (pg_locks is server-wide: look at this database only). */
    assert_int_equal(pg_query_int(f->raw, "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON "
                                          "d.oid = l.database WHERE l.locktype = 'advisory' AND "
                                          "d.datname = current_database()"),
                     0);
    for (int i = 0; i < OPENERS; i++) {
        int v = 0;
        assert_int_equal(store_schema_version(o[i].st, &v), 0);
        assert_int_equal(v, STORE__SCHEMA_VERSION);
        store_close(o[i].st);
    }
}

/* A database whose schema cannot be built (the role may not create tables in it) fails
 * the open with the migration's error, and leaves no version recorded. */
static void test_migration_failure(void **state)
{
    struct fixture *f = *state;
    /* A table in the way of migration 2's: it fails, and migration 1 stays applied. */
    pg_exec_ok(f->raw, "CREATE TABLE replicas (x INTEGER)");
    char *err = NULL;
    assert_null(open_store(f, NULL, shared.pwfile, &err));
    assert_non_null(strstr(err, "migration 2 failed"));
    assert_non_null(strstr(err, "replicas"));
    free(err);
    assert_int_equal(pg_query_int(f->raw, "SELECT MAX(version) FROM schema_version"), 1);
    assert_int_equal(pg_query_int(f->raw, "SELECT COUNT(*) FROM information_schema.columns WHERE "
                                          "table_name = 'servers' AND column_name = 'owner'"),
                     0);
    pg_exec_ok(f->raw, "DROP TABLE replicas");
    f->st = open_store(f, NULL, shared.pwfile, &err);
    assert_non_null(f->st);
    int v = 0;
    assert_int_equal(store_schema_version(f->st, &v), 0);
    assert_int_equal(v, STORE__SCHEMA_VERSION);
}

/* ---- connections that go away ----------------------------------------------------------- */

struct fill_arg {
    struct store *st;
    int rc;
};

static void *fill_thread(void *arg)
{
    struct fill_arg *a = arg;
    size_t n = 0;
    a->rc = 0;
    for (int i = 0; i < 20 && a->rc == 0; i++) {
        struct store_user u;
        a->rc = store_user_get(a->st, "ann", &u);
        if (a->rc == 0)
            a->rc = store_user_touch(a->st, u.id, i);
        store_user_clear(&u);
        if (a->rc == 0)
            a->rc = store_user_count(a->st, &n);
    }
    return NULL;
}

/* Runs a few callers at once so that the pool holds several connections, each with the
 * statements the tests use next already prepared (a statement prepared on first use would
 * reveal a dead connection before anything ran, which is not the case under test). User
 * "ann" must exist. */
static void fill_pool(struct store *st)
{
    enum { N = 4 };
    struct fill_arg a[N];
    for (int i = 0; i < N; i++)
        a[i] = (struct fill_arg){st, -1};
    run_together(N, fill_thread, a, sizeof a[0]);
    for (int i = 0; i < N; i++)
        assert_int_equal(a[i].rc, 0);
}

struct calls_after {
    struct store *st;
    int64_t id;
    int rc_write;
    int rc_read;
    int rc_write2;
};

/* A write first: a read that finds its connection dead may be retried on a fresh one,
 * a write may not, so only the pool's check before lending a connection saves it. */
static void calls_after_run(void *arg)
{
    struct calls_after *c = arg;
    c->rc_write = store_user_touch(c->st, c->id, 42);
    struct store_user u;
    c->rc_read = store_user_get(c->st, "ann", &u);
    store_user_clear(&u);
    c->rc_write2 = store_event_add(c->st, "test", NULL, NULL, NULL);
}

static void test_dropped_connections_reopened(void **state)
{
    struct fixture *f = *state;
    open_fixture_store(f);
    struct store_user u;
    assert_int_equal(store_user_create(f->st, "ann", NULL, false, &u), 0);
    fill_pool(f->st);
    int64_t before = pg_query_int(f->raw, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                          "current_database() AND pid <> pg_backend_pid()");
    assert_true(before >= 2);

    /* An administrator (or a failover, or an idle timeout) kills every connection. */
    assert_int_equal(pg_query_int(f->raw, "SELECT COUNT(pg_terminate_backend(pid)) FROM "
                                          "pg_stat_activity WHERE datname = current_database() AND "
                                          "pid <> pg_backend_pid()"),
                     before);
    sleep_ms(200);
    /* The pool notices the dead connections before using them: the very next calls,
     * reads and writes alike, succeed. */
    struct calls_after c = {f->st, u.id, 1, 1, 1};
    store_user_clear(&u);
    char *log = capture_stderr(calls_after_run, &c);
    assert_int_equal(c.rc_write, 0);
    assert_int_equal(c.rc_read, 0);
    assert_int_equal(c.rc_write2, 0);
    assert_non_null(strstr(log, "store.reconnect"));
    assert_null(strstr(log, "store.error"));
    free(log);
    fill_pool(f->st);
}

/* The restart test runs a server of its own. */
struct own_server {
    char dir[64];
    char script[PATH_MAX];
    struct pg_server s;
};

static int own_server_run(struct own_server *o, const char *cmd)
{
    char line[PATH_MAX + 128];
    snprintf(line, sizeof line, "%s %s %s >/dev/null", o->script, cmd, o->dir);
    return system(line);
}

static int setup_own_server(void **state)
{
    struct own_server *o = calloc(1, sizeof *o);
    const char *src = getenv("CODEHUB_SOURCE_DIR");
    snprintf(o->script, sizeof o->script, "%s/scripts/pg-test-server.sh", src != NULL ? src : ".");
    snprintf(o->dir, sizeof o->dir, "/tmp/codehub-pgrestart-XXXXXX");
    if (mkdtemp(o->dir) == NULL || own_server_run(o, "start") != 0 ||
        pg_server_load(&o->s, o->dir) != 0) {
        fprintf(stderr, "cannot start a PostgreSQL server with %s\n", o->script);
        own_server_run(o, "destroy");
        free(o);
        return -1;
    }
    *state = o;
    return 0;
}

static int teardown_own_server(void **state)
{
    struct own_server *o = *state;
    own_server_run(o, "destroy");
    pg_server_clear(&o->s);
    free(o);
    return 0;
}

struct down_calls {
    struct store *st;
    int rc_read;
    int rc_write;
    int64_t elapsed_ms;
};

static void down_calls_run(void *arg)
{
    struct down_calls *d = arg;
    int64_t start = mono_ms();
    struct store_user u;
    d->rc_read = store_user_get(d->st, "ann", &u);
    store_user_clear(&u);
    d->rc_write = store_user_create(d->st, "while-down", NULL, false, NULL);
    d->elapsed_ms = mono_ms() - start;
}

static void test_server_restart_survived(void **state)
{
    struct own_server *o = *state;
    char *url = pg_server_url(&o->s, "codehub");
    char *err = NULL;
    struct store *st = store_open_password(url, NULL, o->s.pwfile, &err);
    free(url);
    if (st == NULL)
        fail_msg("%s", err);
    assert_int_equal(store_user_create(st, "ann", NULL, false, NULL), 0);
    fill_pool(st);

    /* Restarted while nobody called: the first call afterwards works, even a write. */
    assert_int_equal(own_server_run(o, "stop"), 0);
    assert_int_equal(own_server_run(o, "start"), 0);
    assert_int_equal(store_event_add(st, "test", NULL, NULL, NULL), 0);
    struct store_user u;
    assert_int_equal(store_user_get(st, "ann", &u), 0);
    store_user_clear(&u);
    fill_pool(st);

    /* Down: calls fail at once with -EIO and a log line that names the server, not the
     * password. */
    assert_int_equal(own_server_run(o, "stop"), 0);
    struct down_calls d = {st, 1, 1, 0};
    char *log = capture_stderr(down_calls_run, &d);
    assert_int_equal(d.rc_read, -EIO);
    assert_int_equal(d.rc_write, -EIO);
    assert_true(d.elapsed_ms < 3000);
    assert_non_null(strstr(log, "store.error"));
    assert_non_null(strstr(log, "op=user_get"));
    assert_non_null(strstr(log, "op=user_create"));
    assert_non_null(strstr(log, o->s.hostport));
    assert_null(strstr(log, o->s.password));
    free(log);

    /* Back: the store reconnects by itself. */
    assert_int_equal(own_server_run(o, "start"), 0);
    assert_int_equal(store_user_get(st, "ann", &u), 0);
    store_user_clear(&u);
    assert_int_equal(store_user_create(st, "after", NULL, false, NULL), 0);
    assert_int_equal(store_user_get(st, "while-down", &u), -ENOENT);
    fill_pool(st);
    store_close(st);
}

/* ---- notifications ---------------------------------------------------------------------- */

/* Collects what channel `codehub` carries until the marker this sends after the action; the
 * marker's commit comes after the action's, and notifications arrive in commit order. */
static char *heard_since(PGconn *c, int mark)
{
    char sql[64], marker[32];
    snprintf(marker, sizeof marker, "mark %d", mark);
    snprintf(sql, sizeof sql, "NOTIFY codehub, '%s'", marker);
    pg_exec_ok(c, sql);
    char *heard = strdup("");
    int64_t deadline = mono_ms() + 5000;
    for (;;) {
        PGnotify *n = NULL;
        assert_int_equal(PQconsumeInput(c), 1);
        bool done = false;
        while ((n = PQnotifies(c)) != NULL) {
            assert_string_equal(n->relname, "codehub");
            if (strcmp(n->extra, marker) == 0) {
                done = true;
            } else {
                char *next = NULL;
                assert_true(asprintf(&next, "%s%s%s", heard, heard[0] ? "," : "", n->extra) >= 0);
                free(heard);
                heard = next;
            }
            PQfreemem(n);
        }
        if (done)
            return heard;
        assert_true(mono_ms() < deadline);
        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        poll(&pfd, 1, 100);
    }
}

static void expect_heard(PGconn *c, int *mark, const char *expected)
{
    char *heard = heard_since(c, ++*mark);
    if (strcmp(heard, expected) != 0)
        fail_msg("heard \"%s\", expected \"%s\"", heard, expected);
    free(heard);
}

static void test_notifications(void **state)
{
    struct fixture *f = *state;
    open_fixture_store(f);
    pg_exec_ok(f->raw, "LISTEN codehub");
    int mark = 0;
    char want[128];

    int64_t ann, bob;
    struct store_user u;
    assert_int_equal(store_user_create(f->st, "ann", NULL, false, &u), 0);
    ann = u.id;
    store_user_clear(&u);
    assert_int_equal(store_user_create(f->st, "bob", NULL, false, &u), 0);
    bob = u.id;
    store_user_clear(&u);
    expect_heard(f->raw, &mark, ""); /* a new user changes nothing anyone caches */

    /* Silent: activity and heartbeats. */
    assert_int_equal(store_user_touch(f->st, ann, 1000), 0);
    assert_int_equal(store_replica_beat(f->st, "r1", "10.0.0.1:8000", 1), 0);
    assert_int_equal(store_replica_beat(f->st, "r1", "10.0.0.1:8000", 1), 0);
    assert_int_equal(store_session_create(f->st, "sess-a", ann, 0, NULL), 0);
    assert_int_equal(store_session_touch(f->st, "sess-a", 2000), 0);
    struct store_token t;
    assert_int_equal(store_token_create(f->st, "tok-a", "ch_", ann, STORE_SCOPE_USER, NULL, 0, &t),
                     0);
    assert_int_equal(store_token_touch(f->st, t.id, 3000), 0);
    assert_int_equal(store_event_add(f->st, "login.ok", "ann", NULL, NULL), 0);
    char *value = NULL;
    assert_int_equal(store_meta_get_or_set(f->st, "k", "v", &value), 0);
    free(value);
    expect_heard(f->raw, &mark, "");

    /* Admin flag and password; setting the same value again is silent. */
    snprintf(want, sizeof want, "user %lld", (long long)ann);
    assert_int_equal(store_user_set_admin(f->st, "ann", true), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_user_set_admin(f->st, "ann", true), 0);
    expect_heard(f->raw, &mark, "");
    assert_int_equal(store_user_claim_password(f->st, "ann", "h1"), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_user_set_password(f->st, "ann", "h1", false), 0);
    expect_heard(f->raw, &mark, "");
    /* A password change that logs out everywhere names the sessions too. */
    snprintf(want, sizeof want, "user %lld,session sess-a", (long long)ann);
    assert_int_equal(store_user_set_password(f->st, "ann", "h2", true), 0);
    expect_heard(f->raw, &mark, want);

    /* Sessions and tokens going away. */
    assert_int_equal(store_session_create(f->st, "sess-b", bob, 0, NULL), 0);
    assert_int_equal(store_session_delete(f->st, "sess-b"), 0);
    expect_heard(f->raw, &mark, "session sess-b");
    assert_int_equal(store_token_delete(f->st, ann, t.id), 0);
    expect_heard(f->raw, &mark, "token tok-a");
    store_token_clear(&t);
    assert_int_equal(store_session_create(f->st, "sess-old", bob, 5, NULL), 0);
    assert_int_equal(store_expire(f->st, 10, NULL), 0);
    expect_heard(f->raw, &mark, "session sess-old");

    /* Every server row write, the claim, adoption and stop request included. */
    snprintf(want, sizeof want, "server %lld", (long long)bob);
    struct store_server in = {.user_id = bob, .owner = (char *)"r1"};
    assert_int_equal(store_server_claim(f->st, &in, NULL), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_server_claim(f->st, &in, NULL), -EBUSY);
    expect_heard(f->raw, &mark, ""); /* a lost claim changed nothing */
    in.state = (char *)"running";
    assert_int_equal(store_server_put(f->st, &in), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_server_request_stop(f->st, bob), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_server_adopt(f->st, bob, "r1", "r2", NULL), 0);
    expect_heard(f->raw, &mark, want);
    in.owner = (char *)"r1";
    assert_int_equal(store_server_put(f->st, &in), -ESTALE);
    expect_heard(f->raw, &mark, "");
    assert_int_equal(store_server_delete(f->st, bob), 0);
    expect_heard(f->raw, &mark, want);

    /* Deleting a user names the user and everything that goes with it. */
    assert_int_equal(store_session_create(f->st, "sess-c", bob, 0, NULL), 0);
    assert_int_equal(
        store_token_create(f->st, "tok-b", "ch_", bob, STORE_SCOPE_USER, NULL, 0, NULL), 0);
    in = (struct store_server){.user_id = bob, .state = (char *)"stopped"};
    assert_int_equal(store_server_put(f->st, &in), 0);
    expect_heard(f->raw, &mark, want);
    assert_int_equal(store_user_delete(f->st, "bob"), 0);
    char *heard = heard_since(f->raw, ++mark);
    snprintf(want, sizeof want, "user %lld", (long long)bob);
    assert_non_null(strstr(heard, want));
    assert_non_null(strstr(heard, "session sess-c"));
    assert_non_null(strstr(heard, "token tok-b"));
    snprintf(want, sizeof want, "server %lld", (long long)bob);
    assert_non_null(strstr(heard, want));
    free(heard);

    /* A rolled-back change is never announced: a failed claim on a missing user. */
    in = (struct store_server){.user_id = bob + 100};
    assert_int_equal(store_server_claim(f->st, &in, NULL), -ENOENT);
    expect_heard(f->raw, &mark, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_password_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_elsewhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conninfo_for_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_concurrently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_connections_reopened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart_survived, setup_own_server,
                                        teardown_own_server),
        cmocka_unit_test_setup_teardown(test_notifications, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    pg_server_clear(&shared);
    return rc;
}

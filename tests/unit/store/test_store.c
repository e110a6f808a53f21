/* Tests of the store (store.h) through the public API only, against both backends: every
 * test that does not depend on the database runs twice, as "NAME/sqlite" and "NAME/postgres".
 * The PostgreSQL variants run against the server that ctest starts (scripts/pg-test-server.sh,
 * found through CODEHUB_TEST_PG_DIR), each in a database of its own that is created for the
 * test and dropped after it. Where a test needs to look under the API (integrity check,
 * schema version bump, lock holding, row counts) it opens the database directly, with sqlite3
 * or libpq. PostgreSQL-only behaviour (password file, TLS, reconnects, notifications) is in
 * test_pg.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pg_fixture.h"
#include "store/migrations.h"
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The backends' pool cap (POOL_MAX in sqlite.c and pg.c). */
#define POOL_MAX 8

enum backend { BE_SQLITE, BE_PG };

struct fixture {
    enum backend be;
    char dir[64];  /* a temporary directory: the SQLite data dir */
    char *path;    /* SQLite: <dir>/codehub.sqlite */
    char *url;     /* the store URL: "" for SQLite, the test database's for PostgreSQL */
    char *pwfile;  /* PostgreSQL: the password file; NULL for SQLite */
    char *display; /* how error messages name the database: the path or HOST:PORT/DB */
    char *dbname;  /* PostgreSQL: the test database */
    PGconn *raw;   /* PostgreSQL: a direct connection to it, opened on first use */
    struct store *st;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fixtures ------------------------------------------------------------------------ */

/* The PostgreSQL server ctest started (pg_fixture.h), loaded by the first PostgreSQL test. */
static struct pg_server pgenv;

static struct fixture *fixture_new(enum backend be)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->be = be;
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return NULL;
    if (asprintf(&f->path, "%s/codehub.sqlite", f->dir) < 0)
        return NULL;
    if (be == BE_SQLITE) {
        f->url = strdup("");
        f->display = strdup(f->path);
        return f;
    }
    if (pg_server_load_shared(&pgenv) != 0)
        goto fail;
    f->dbname = pg_db_create(&pgenv);
    if (f->dbname == NULL)
        goto fail;
    f->url = pg_server_url(&pgenv, f->dbname);
    if (asprintf(&f->display, "%s/%s", pgenv.hostport, f->dbname) < 0)
        goto fail;
    f->pwfile = strdup(pgenv.pwfile);
    return f;
fail:
    rm_tree(f->dir);
    free(f->path);
    free(f->url);
    free(f->dbname);
    free(f);
    return NULL;
}

static void fixture_free(struct fixture *f)
{
    store_close(f->st);
    PQfinish(f->raw);
    if (f->dbname != NULL)
        pg_db_drop(&pgenv, f->dbname);
    rm_tree(f->dir);
    free(f->path);
    free(f->url);
    free(f->pwfile);
    free(f->display);
    free(f->dbname);
    free(f);
}

/* Opens another handle on the fixture's database (standing for another process). */
static struct store *open_other(struct fixture *f, char **err)
{
    return store_open_password(f->url, f->dir, f->pwfile, err);
}

/* The same, failing the test with the reason when it cannot be opened. */
static struct store *open_other_ok(struct fixture *f)
{
    char *err = NULL;
    struct store *st = open_other(f, &err);
    if (st == NULL)
        fail_msg("opening another handle: %s", err);
    return st;
}

static int setup_open(void **state, enum backend be)
{
    struct fixture *f = fixture_new(be);
    if (f == NULL)
        return -1;
    char *err = NULL;
    f->st = open_other(f, &err);
    if (f->st == NULL) {
        fprintf(stderr, "store_open: %s\n", err);
        free(err);
        fixture_free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_open(state, BE_SQLITE);
}

static int setup_pg(void **state)
{
    return setup_open(state, BE_PG);
}

/* A fixture whose database exists (empty) but is not opened by the store. */
static int setup_dir_only(void **state)
{
    struct fixture *f = fixture_new(BE_SQLITE);
    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static int setup_pg_db_only(void **state)
{
    struct fixture *f = fixture_new(BE_PG);
    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* ---- raw access under the API -------------------------------------------------------- */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static int64_t raw_count_file(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path);
    int64_t v = raw_int(db, sql);
    sqlite3_close(db);
    return v;
}

static PGconn *raw_pg(struct fixture *f)
{
    if (f->raw == NULL)
        f->raw = pg_server_connect(&pgenv, f->dbname);
    assert_non_null(f->raw);
    return f->raw;
}

/* Runs `sql` on the fixture's database, whichever it is. */
static void raw_exec_f(struct fixture *f, const char *sql)
{
    if (f->be == BE_SQLITE) {
        sqlite3 *db = raw_open(f->path);
        raw_exec(db, sql);
        sqlite3_close(db);
        return;
    }
    pg_exec_ok(raw_pg(f), sql);
}

/* The single integer `sql` returns from the fixture's database. */
static int64_t raw_count(struct fixture *f, const char *sql)
{
    if (f->be == BE_SQLITE)
        return raw_count_file(f->path, sql);
    return pg_query_int(raw_pg(f), sql);
}

static int64_t new_user(struct store *st, const char *name, const char *hash, bool admin)
{
    struct store_user u;
    assert_int_equal(store_user_create(st, name, hash, admin, &u), 0);
    int64_t id = u.id;
    store_user_clear(&u);
    return id;
}

static mode_t file_mode(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_mode & 07777;
}

/* ---- open ---------------------------------------------------------------------------- */

static void test_open_url_schemes(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;

    /* Nothing listens on port 1: the PostgreSQL URLs are recognised and fail to connect,
     * naming the server but never the password. */
    assert_null(store_open("postgres://u:s3cret@127.0.0.1:1/codehub", f->dir, &err));
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at 127.0.0.1:1/codehub: "));
    assert_null(strstr(err, "s3cret"));
    free(err);
    err = NULL;
    assert_null(store_open("postgresql://127.0.0.1:1/other", f->dir, &err));
    assert_non_null(strstr(err, "cannot connect to PostgreSQL at 127.0.0.1:1/other: "));
    free(err);
    err = NULL;
    /* "postgres" alone is not a URL. */
    assert_null(store_open("postgres", f->dir, &err));
    assert_string_equal(err, "unknown store URL scheme");
    free(err);
    err = NULL;
    /* A password file is for PostgreSQL only. */
    assert_null(store_open_password("", f->dir, "/etc/hostname", &err));
    assert_string_equal(err, "store.password_file applies to PostgreSQL only");
    free(err);
    err = NULL;
    assert_null(store_open_password("sqlite:/tmp/x.db", f->dir, "/etc/hostname", &err));
    assert_string_equal(err, "store.password_file applies to PostgreSQL only");
    free(err);
    err = NULL;
    /* An empty password file name means none. */
    struct store *st = store_open_password("", f->dir, "", &err);
    assert_non_null(st);
    assert_false(store_is_shared(st));
    store_close(st);
    assert_false(store_is_shared(NULL));
    assert_null(store_open("mysql://db/codehub", f->dir, &err));
    assert_string_equal(err, "unknown store URL scheme");
    free(err);
    err = NULL;
    assert_null(store_open("/just/a/path", f->dir, &err));
    assert_string_equal(err, "unknown store URL scheme");
    free(err);
    err = NULL;
    /* The default location needs a data directory. */
    assert_null(store_open("", NULL, &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_null(store_open("sqlite:", "", &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    /* An in-memory database cannot be shared by a pool of connections. */
    assert_null(store_open("sqlite::memory:", f->dir, &err));
    assert_non_null(strstr(err, ":memory:"));
    free(err);
    /* err may be NULL. */
    assert_null(store_open("mysql://x", f->dir, NULL));
    /* A path whose directory does not exist fails with a message naming it. */
    err = NULL;
    char *url = NULL;
    assert_true(asprintf(&url, "sqlite:%s/missing/x.db", f->dir) > 0);
    assert_null(store_open(url, f->dir, &err));
    assert_non_null(strstr(err, "missing/x.db"));
    free(err);
    free(url);
    /* A file that is not a database. */
    char *junk = NULL;
    assert_true(asprintf(&junk, "%s/junk.db", f->dir) > 0);
    FILE *fp = fopen(junk, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database at all, just text\n", fp);
    fclose(fp);
    assert_true(asprintf(&url, "sqlite:%s", junk) > 0);
    err = NULL;
    assert_null(store_open(url, f->dir, &err));
    assert_non_null(err);
    free(err);
    free(url);
    free(junk);
}

static void test_open_default_creates_dir_and_private_file(void **state)
{
    struct fixture *f = *state;
    char *data = NULL;
    assert_true(asprintf(&data, "%s/a/b/data/", f->dir) > 0);
    /* With umask 0, SQLite on its own would create a 0644 file: the mode must not
     * depend on the umask. */
    mode_t old = umask(0);
    char *err = NULL;
    struct store *st = store_open("sqlite:", data, &err);
    umask(old);
    assert_non_null(st);
    assert_null(err);

    char *sub = NULL;
    assert_true(asprintf(&sub, "%s/a/b/data", f->dir) > 0);
    assert_int_equal(file_mode(sub), 0700);
    char *db = NULL, *wal = NULL, *shm = NULL;
    assert_true(asprintf(&db, "%s/codehub.sqlite", sub) > 0);
    assert_true(asprintf(&wal, "%s-wal", db) > 0);
    assert_true(asprintf(&shm, "%s-shm", db) > 0);
    new_user(st, "ann", NULL, false);
    assert_int_equal(file_mode(db), 0600);
    assert_int_equal(file_mode(wal), 0600);
    assert_int_equal(file_mode(shm), 0600);
    /* The pragma took: the file is in WAL mode. */
    sqlite3 *raw = raw_open(db);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(raw);
    store_close(st);

    /* "" names the same file as "sqlite:". */
    st = store_open("", data, &err);
    assert_non_null(st);
    struct store_user u;
    assert_int_equal(store_user_get(st, "ann", &u), 0);
    store_user_clear(&u);
    store_close(st);
    free(db);
    free(wal);
    free(shm);
    free(sub);
    free(data);
}

static void test_open_explicit_path_and_tighten_mode(void **state)
{
    struct fixture *f = *state;
    char *path = NULL, *url = NULL;
    assert_true(asprintf(&path, "%s/own.db", f->dir) > 0);
    assert_true(asprintf(&url, "sqlite:%s", path) > 0);
    /* An existing file readable by others is tightened to owner-only. */
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    fchmod(fd, 0644);
    close(fd);
    assert_int_equal(file_mode(path), 0644);

    char *err = NULL;
    struct store *st = store_open(url, "/nonexistent-data-dir-not-used", &err);
    assert_non_null(st);
    assert_int_equal(file_mode(path), 0600);
    /* The data directory is not touched for an explicit path. */
    assert_int_equal(access("/nonexistent-data-dir-not-used", F_OK), -1);
    new_user(st, "bob", NULL, false);
    store_close(st);
    assert_int_equal(raw_count_file(path, "SELECT COUNT(*) FROM users WHERE name = 'bob'"), 1);
    free(path);
    free(url);
}

static void test_two_handles_share_one_file(void **state)
{
    struct fixture *f = *state;
    struct store *other = open_other_ok(f);
    new_user(f->st, "ann", NULL, false);
    struct store_user u;
    assert_int_equal(store_user_get(other, "ann", &u), 0);
    store_user_clear(&u);
    /* Closing one handle must not disturb the other (POSIX locks are per process). */
    store_close(other);
    new_user(f->st, "bob", NULL, false);
    size_t n = 0;
    assert_int_equal(store_user_count(f->st, &n), 0);
    assert_int_equal(n, 2);
}

/* ---- migrations ---------------------------------------------------------------------- */

static void test_schema_version_and_reopen(void **state)
{
    struct fixture *f = *state;
    int v = -1;
    assert_int_equal(store_schema_version(f->st, &v), 0);
    assert_int_equal(v, STORE__SCHEMA_VERSION);
    assert_true(v >= 1);
    new_user(f->st, "keep", NULL, true);
    store_close(f->st);

    f->st = open_other_ok(f);
    assert_int_equal(store_schema_version(f->st, &v), 0);
    assert_int_equal(v, STORE__SCHEMA_VERSION);
    /* Each migration recorded once, data kept. */
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM schema_version"), STORE__SCHEMA_VERSION);
    struct store_user u;
    assert_int_equal(store_user_get(f->st, "keep", &u), 0);
    assert_true(u.admin);
    store_user_clear(&u);
    assert_int_equal(store_schema_version(NULL, &v), -EINVAL);
    assert_int_equal(store_schema_version(f->st, NULL), -EINVAL);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    f->st = NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO schema_version VALUES (%d, 0)",
             STORE__SCHEMA_VERSION + 3);
    raw_exec_f(f, sql);

    char *err = NULL;
    assert_null(open_other(f, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "newer"));
    char num[16];
    snprintf(num, sizeof num, "%d", STORE__SCHEMA_VERSION + 3);
    assert_non_null(strstr(err, num));
    assert_non_null(strstr(err, f->display));
    free(err);
    /* Refusing left the database as it was. */
    assert_int_equal(raw_count(f, "SELECT MAX(version) FROM schema_version"),
                     STORE__SCHEMA_VERSION + 3);
}

static void test_fresh_db_rolled_back_migration_retried(void **state)
{
    /* A database left at version 0 with only the version table (e.g. a process killed
     * before its first migration committed) is migrated normally. */
    struct fixture *f = *state;
    if (f->be == BE_SQLITE) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        sqlite3_close(db);
    }
    raw_exec_f(f, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                  "applied_ms BIGINT NOT NULL)");
    struct store *st = open_other_ok(f);
    int v = 0;
    assert_int_equal(store_schema_version(st, &v), 0);
    assert_int_equal(v, STORE__SCHEMA_VERSION);
    store_close(st);
}

/* ---- meta ---------------------------------------------------------------------------- */

struct meta_race {
    struct store *st;
    const char *mine;
    char *got;
    int rc;
};

static void *meta_race_thread(void *arg)
{
    struct meta_race *r = arg;
    r->rc = store_meta_get_or_set(r->st, "cookie_secret", r->mine, &r->got);
    return NULL;
}

static void test_meta(void **state)
{
    struct fixture *f = *state;
    char *v = (char *)"untouched";
    assert_int_equal(store_meta_get(f->st, "k", &v), -ENOENT);
    assert_null(v);
    assert_int_equal(store_meta_get_or_set(f->st, "k", "first", &v), 0);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(store_meta_get_or_set(f->st, "k", "second", &v), 0);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(store_meta_get(f->st, "k", &v), 0);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(store_meta_get_or_set(f->st, "empty", "", &v), 0);
    assert_string_equal(v, "");
    free(v);

    assert_int_equal(store_meta_get(NULL, "k", &v), -EINVAL);
    assert_int_equal(store_meta_get(f->st, NULL, &v), -EINVAL);
    assert_int_equal(store_meta_get(f->st, "k", NULL), -EINVAL);
    assert_int_equal(store_meta_get_or_set(f->st, "k", NULL, &v), -EINVAL);
    assert_int_equal(store_meta_get_or_set(f->st, NULL, "x", &v), -EINVAL);
    assert_int_equal(store_meta_get_or_set(f->st, "k", "x", NULL), -EINVAL);

    /* Two handles (standing for two processes) and several threads race to set the
     * same secret: all agree on one value. */
    struct store *other = open_other_ok(f);
    enum { N = 6 };
    static const char *const values[N] = {"a", "b", "c", "d", "e", "f"};
    struct meta_race r[N];
    for (int i = 0; i < N; i++)
        r[i] = (struct meta_race){i % 2 ? other : f->st, values[i], NULL, -1};
    run_together(N, meta_race_thread, r, sizeof r[0]);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].rc, 0);
        assert_string_equal(r[i].got, r[0].got);
    }
    for (int i = 0; i < N; i++)
        free(r[i].got);
    store_close(other);
}

/* ---- users --------------------------------------------------------------------------- */

static void test_user_create_and_get(void **state)
{
    struct fixture *f = *state;
    int64_t before = wall_ms();
    struct store_user u;
    assert_int_equal(store_user_create(f->st, "ann", "$argon2id$x", true, &u), 0);
    assert_true(u.id > 0);
    assert_string_equal(u.name, "ann");
    assert_string_equal(u.password_hash, "$argon2id$x");
    assert_true(u.admin);
    assert_true(u.created_ms >= before && u.created_ms <= wall_ms());
    assert_int_equal(u.last_activity_ms, 0);
    int64_t id = u.id;
    store_user_clear(&u);
    assert_null(u.name);

    assert_int_equal(store_user_create(f->st, "bob", NULL, false, NULL), 0);
    assert_int_equal(store_user_get(f->st, "bob", &u), 0);
    assert_null(u.password_hash);
    assert_false(u.admin);
    assert_true(u.id != id);
    store_user_clear(&u);

    assert_int_equal(store_user_get_by_id(f->st, id, &u), 0);
    assert_string_equal(u.name, "ann");
    assert_string_equal(u.password_hash, "$argon2id$x");
    store_user_clear(&u);

    assert_int_equal(store_user_create(f->st, "ann", NULL, false, &u), -EEXIST);
    assert_null(u.name);
    assert_int_equal(store_user_get(f->st, "nobody", &u), -ENOENT);
    assert_null(u.name);
    assert_int_equal(store_user_get_by_id(f->st, 999999, &u), -ENOENT);
    assert_int_equal(store_user_get(f->st, NULL, &u), -EINVAL);
    assert_int_equal(store_user_get(f->st, "ann", NULL), -EINVAL);
    assert_int_equal(store_user_get_by_id(f->st, id, NULL), -EINVAL);

    /* The name rule: [a-z0-9][a-z0-9._-]{0,31}. */
    static const char *const bad[] = {"",   "Ann", "-ann", ".ann",
                                      "_a", "a b", "a/b",  "ann\n",
                                      "é",  "a:b", "a@b",  "abcdefghijabcdefghijabcdefghijabc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(store_user_create(f->st, bad[i], NULL, false, NULL), -EINVAL);
    assert_int_equal(store_user_create(f->st, NULL, NULL, false, NULL), -EINVAL);
    assert_int_equal(store_user_create(NULL, "x", NULL, false, NULL), -EINVAL);
    static const char *const good[] = {"0", "a.b_c-d", "abcdefghijabcdefghijabcdefghijab"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(store_user_create(f->st, good[i], NULL, false, NULL), 0);

    /* Ids are never reused, even after the newest user is deleted. */
    int64_t last = new_user(f->st, "zed", NULL, false);
    assert_int_equal(store_user_delete(f->st, "zed"), 0);
    assert_true(new_user(f->st, "zed2", NULL, false) > last);
}

static void test_user_list_and_count(void **state)
{
    struct fixture *f = *state;
    size_t n = 99, total = 99;
    struct store_user *users = (struct store_user *)&n;
    assert_int_equal(store_user_list(f->st, 0, 10, &users, &n, &total), 0);
    assert_null(users);
    assert_int_equal(n, 0);
    assert_int_equal(total, 0);

    /* Created out of order; listed by name. */
    for (int i = 0; i < 25; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%02d", (i * 7) % 25);
        new_user(f->st, name, NULL, i % 5 == 0);
    }
    assert_int_equal(store_user_count(f->st, &n), 0);
    assert_int_equal(n, 25);

    assert_int_equal(store_user_list(f->st, 0, 10, &users, &n, &total), 0);
    assert_int_equal(n, 10);
    assert_int_equal(total, 25);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "u%02d", (int)i);
        assert_string_equal(users[i].name, name);
    }
    store_users_free(users, n);

    assert_int_equal(store_user_list(f->st, 20, 10, &users, &n, &total), 0);
    assert_int_equal(n, 5);
    assert_int_equal(total, 25);
    assert_string_equal(users[0].name, "u20");
    assert_string_equal(users[4].name, "u24");
    store_users_free(users, n);

    assert_int_equal(store_user_list(f->st, 30, 10, &users, &n, &total), 0);
    assert_int_equal(n, 0);
    assert_int_equal(total, 25);
    store_users_free(users, n);

    /* limit 0: no limit; total may be NULL. */
    assert_int_equal(store_user_list(f->st, 3, 0, &users, &n, NULL), 0);
    assert_int_equal(n, 22);
    assert_string_equal(users[0].name, "u03");
    store_users_free(users, n);
    assert_int_equal(store_user_list(f->st, 0, SIZE_MAX, &users, &n, &total), 0);
    assert_int_equal(n, 25);
    store_users_free(users, n);

    assert_int_equal(store_user_list(f->st, 0, 1, NULL, &n, &total), -EINVAL);
    assert_int_equal(store_user_list(f->st, 0, 1, &users, NULL, &total), -EINVAL);
    assert_int_equal(store_user_count(f->st, NULL), -EINVAL);
    store_users_free(NULL, 0);
}

static void test_user_admin_password_touch(void **state)
{
    struct fixture *f = *state;
    int64_t id = new_user(f->st, "ann", "h1", false);
    struct store_user u;

    assert_int_equal(store_user_set_admin(f->st, "ann", true), 0);
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_true(u.admin);
    store_user_clear(&u);
    /* Setting the same value again still finds the row. */
    assert_int_equal(store_user_set_admin(f->st, "ann", true), 0);
    assert_int_equal(store_user_set_admin(f->st, "ann", false), 0);
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_false(u.admin);
    store_user_clear(&u);
    assert_int_equal(store_user_set_admin(f->st, "nobody", true), -ENOENT);
    assert_int_equal(store_user_set_admin(f->st, NULL, true), -EINVAL);

    int64_t far = wall_ms() + 3600000;
    assert_int_equal(store_session_create(f->st, "s1", id, far, "10.0.0.1"), 0);
    assert_int_equal(store_session_create(f->st, "s2", id, far, "10.0.0.2"), 0);
    assert_int_equal(store_user_set_password(f->st, "ann", "h2", false), 0);
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_string_equal(u.password_hash, "h2");
    store_user_clear(&u);
    size_t n = 0;
    assert_int_equal(store_session_count(f->st, wall_ms(), &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_user_set_password(f->st, "ann", "h3", true), 0);
    assert_int_equal(store_session_count(f->st, wall_ms(), &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_string_equal(u.password_hash, "h3");
    store_user_clear(&u);
    /* NULL clears the password, so that the next first-use login may claim it. */
    assert_int_equal(store_user_set_password(f->st, "ann", NULL, false), 0);
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_null(u.password_hash);
    store_user_clear(&u);
    assert_int_equal(store_user_set_password(f->st, "nobody", "h", true), -ENOENT);
    assert_int_equal(store_user_set_password(f->st, NULL, "h", true), -EINVAL);

    /* Touch only moves forward. */
    assert_int_equal(store_user_touch(f->st, id, 5000), 0);
    assert_int_equal(store_user_touch(f->st, id, 3000), 0);
    assert_int_equal(store_user_get_by_id(f->st, id, &u), 0);
    assert_int_equal(u.last_activity_ms, 5000);
    store_user_clear(&u);
    assert_int_equal(store_user_touch(f->st, id, 7000), 0);
    assert_int_equal(store_user_get_by_id(f->st, id, &u), 0);
    assert_int_equal(u.last_activity_ms, 7000);
    store_user_clear(&u);
    assert_int_equal(store_user_touch(f->st, id + 1000, 7000), -ENOENT);
}

static void test_user_claim_password(void **state)
{
    struct fixture *f = *state;
    new_user(f->st, "ann", NULL, false);
    new_user(f->st, "bob", "set", false);
    assert_int_equal(store_user_claim_password(f->st, "ann", "mine"), 0);
    assert_int_equal(store_user_claim_password(f->st, "ann", "theirs"), -EEXIST);
    assert_int_equal(store_user_claim_password(f->st, "bob", "theirs"), -EEXIST);
    assert_int_equal(store_user_claim_password(f->st, "nobody", "x"), -ENOENT);
    assert_int_equal(store_user_claim_password(f->st, "ann", NULL), -EINVAL);
    assert_int_equal(store_user_claim_password(f->st, NULL, "x"), -EINVAL);
    struct store_user u;
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    assert_string_equal(u.password_hash, "mine");
    store_user_clear(&u);
    assert_int_equal(store_user_get(f->st, "bob", &u), 0);
    assert_string_equal(u.password_hash, "set");
    store_user_clear(&u);
}

struct claim_race {
    struct store *st;
    const char *name;
    const char *hash;
    int rc;
};

static void *claim_thread(void *arg)
{
    struct claim_race *c = arg;
    c->rc = store_user_claim_password(c->st, c->name, c->hash);
    return NULL;
}

static void test_user_claim_race(void **state)
{
    struct fixture *f = *state;
    struct store *other = open_other_ok(f);
    for (int round = 0; round < 30; round++) {
        char name[16];
        snprintf(name, sizeof name, "race%02d", round);
        new_user(f->st, name, NULL, false);
        /* Half the rounds through one handle, half through two (as two processes). */
        struct claim_race c[2] = {{f->st, name, "hash-a", 1},
                                  {round % 2 ? other : f->st, name, "hash-b", 1}};
        run_together(2, claim_thread, c, sizeof c[0]);
        assert_true((c[0].rc == 0 && c[1].rc == -EEXIST) || (c[0].rc == -EEXIST && c[1].rc == 0));
        struct store_user u;
        assert_int_equal(store_user_get(f->st, name, &u), 0);
        assert_string_equal(u.password_hash, c[0].rc == 0 ? "hash-a" : "hash-b");
        store_user_clear(&u);
    }
    store_close(other);
}

static void test_user_delete_cascades(void **state)
{
    struct fixture *f = *state;
    int64_t far = wall_ms() + 3600000;
    int64_t ann = new_user(f->st, "ann", "h", false);
    int64_t bob = new_user(f->st, "bob", "h", false);
    int64_t ids[2] = {ann, bob};
    const char *names[2] = {"ann", "bob"};
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            char key[32];
            snprintf(key, sizeof key, "s-%s-%d", names[i], j);
            assert_int_equal(store_session_create(f->st, key, ids[i], far, NULL), 0);
            snprintf(key, sizeof key, "t-%s-%d", names[i], j);
            assert_int_equal(
                store_token_create(f->st, key, "t-", ids[i], STORE_SCOPE_USER, NULL, 0, NULL), 0);
        }
        struct store_server s = {.user_id = ids[i], .state = (char *)"running"};
        assert_int_equal(store_server_put(f->st, &s), 0);
    }
    assert_int_equal(store_user_delete(f->st, "ann"), 0);

    struct store_session sess;
    struct store_token tok;
    struct store_server srv;
    assert_int_equal(store_session_get(f->st, "s-ann-0", wall_ms(), &sess), -ENOENT);
    assert_int_equal(store_token_get(f->st, "t-ann-1", wall_ms(), &tok), -ENOENT);
    assert_int_equal(store_server_get(f->st, ann, &srv), -ENOENT);
    struct store_user u;
    assert_int_equal(store_user_get(f->st, "ann", &u), -ENOENT);
    assert_int_equal(store_user_get_by_id(f->st, ann, &u), -ENOENT);
    /* Under the API: no orphan row is left in any table. */
    char sql[128];
    static const char *const tables[] = {"sessions", "tokens", "servers"};
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE user_id = %lld", tables[i],
                 (long long)ann);
        assert_int_equal(raw_count(f, sql), 0);
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE user_id = %lld", tables[i],
                 (long long)bob);
        assert_int_equal(raw_count(f, sql), i == 2 ? 1 : 2);
    }
    /* Bob is untouched. */
    assert_int_equal(store_session_get(f->st, "s-bob-0", wall_ms(), &sess), 0);
    store_session_clear(&sess);
    assert_int_equal(store_server_get(f->st, bob, &srv), 0);
    store_server_clear(&srv);

    assert_int_equal(store_user_delete(f->st, "ann"), -ENOENT);
    assert_int_equal(store_user_delete(f->st, NULL), -EINVAL);
}

/* ---- sessions ------------------------------------------------------------------------ */

static void test_sessions(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", true);
    int64_t now = wall_ms();
    int64_t before = now;
    struct store_session s;

    assert_int_equal(store_session_create(f->st, "aa", ann, now + 1000, "192.0.2.1"), 0);
    assert_int_equal(store_session_get(f->st, "aa", now, &s), 0);
    assert_string_equal(s.id_hash, "aa");
    assert_int_equal(s.user_id, ann);
    assert_string_equal(s.user_name, "ann");
    assert_true(s.user_admin);
    assert_true(s.created_ms >= before && s.created_ms <= wall_ms());
    assert_int_equal(s.last_seen_ms, s.created_ms);
    assert_int_equal(s.expires_ms, now + 1000);
    assert_string_equal(s.client_addr, "192.0.2.1");
    store_session_clear(&s);
    assert_null(s.id_hash);

    /* Still valid at its expiry instant, gone one millisecond later. */
    assert_int_equal(store_session_get(f->st, "aa", now + 1000, &s), 0);
    store_session_clear(&s);
    assert_int_equal(store_session_get(f->st, "aa", now + 1001, &s), -ENOENT);
    assert_null(s.id_hash);

    /* 0 = never expires; NULL address = "". */
    assert_int_equal(store_session_create(f->st, "bb", ann, 0, NULL), 0);
    assert_int_equal(store_session_get(f->st, "bb", INT64_MAX, &s), 0);
    assert_string_equal(s.client_addr, "");
    store_session_clear(&s);

    assert_int_equal(store_session_create(f->st, "aa", ann, now + 1000, NULL), -EEXIST);
    assert_int_equal(store_session_create(f->st, "cc", ann + 100, now + 1000, NULL), -ENOENT);
    assert_int_equal(store_session_create(f->st, "cc", ann, -1, NULL), -EINVAL);
    assert_int_equal(store_session_create(f->st, NULL, ann, 0, NULL), -EINVAL);
    assert_int_equal(store_session_create(f->st, "", ann, 0, NULL), -EINVAL);
    assert_int_equal(store_session_get(f->st, "zz", now, &s), -ENOENT);
    assert_int_equal(store_session_get(f->st, NULL, now, &s), -EINVAL);
    assert_int_equal(store_session_get(f->st, "aa", now, NULL), -EINVAL);

    /* Admin status is read live from users. */
    assert_int_equal(store_user_set_admin(f->st, "ann", false), 0);
    assert_int_equal(store_session_get(f->st, "aa", now, &s), 0);
    assert_false(s.user_admin);
    store_session_clear(&s);

    assert_int_equal(store_session_touch(f->st, "aa", now + 500), 0);
    assert_int_equal(store_session_touch(f->st, "aa", now + 200), 0);
    assert_int_equal(store_session_get(f->st, "aa", now, &s), 0);
    assert_int_equal(s.last_seen_ms, now + 500);
    store_session_clear(&s);
    assert_int_equal(store_session_touch(f->st, "zz", now), -ENOENT);
    assert_int_equal(store_session_touch(f->st, NULL, now), -EINVAL);

    size_t n = 0;
    assert_int_equal(store_session_count(f->st, now, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_session_count(f->st, now + 2000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_session_count(f->st, now, NULL), -EINVAL);

    assert_int_equal(store_session_delete(f->st, "aa"), 0);
    assert_int_equal(store_session_get(f->st, "aa", now, &s), -ENOENT);
    assert_int_equal(store_session_delete(f->st, "aa"), -ENOENT);
    assert_int_equal(store_session_delete(f->st, NULL), -EINVAL);

    int64_t bob = new_user(f->st, "bob", "h", false);
    assert_int_equal(store_session_create(f->st, "b1", bob, 0, NULL), 0);
    assert_int_equal(store_session_create(f->st, "b2", bob, 0, NULL), 0);
    assert_int_equal(store_session_delete_user(f->st, bob), 0);
    assert_int_equal(store_session_get(f->st, "b1", now, &s), -ENOENT);
    assert_int_equal(store_session_get(f->st, "b2", now, &s), -ENOENT);
    assert_int_equal(store_session_get(f->st, "bb", now, &s), 0); /* ann's stays */
    store_session_clear(&s);
    /* Nothing left to delete is not an error. */
    assert_int_equal(store_session_delete_user(f->st, bob), 0);
    assert_int_equal(store_session_delete_user(NULL, bob), -EINVAL);
}

static void test_expire(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    int64_t now = 1000000;
    assert_int_equal(store_session_create(f->st, "old", ann, now - 1, NULL), 0);
    assert_int_equal(store_session_create(f->st, "edge", ann, now, NULL), 0);
    assert_int_equal(store_session_create(f->st, "new", ann, now + 1, NULL), 0);
    assert_int_equal(store_session_create(f->st, "never", ann, 0, NULL), 0);
    assert_int_equal(
        store_token_create(f->st, "t-old", "t", ann, STORE_SCOPE_USER, NULL, now - 50, NULL), 0);
    assert_int_equal(
        store_token_create(f->st, "t-new", "t", ann, STORE_SCOPE_USER, NULL, now + 50, NULL), 0);
    assert_int_equal(
        store_token_create(f->st, "t-never", "t", ann, STORE_SCOPE_USER, NULL, 0, NULL), 0);

    size_t removed = 99;
    assert_int_equal(store_expire(f->st, now, &removed), 0);
    assert_int_equal(removed, 2);
    struct store_session s;
    struct store_token t;
    assert_int_equal(store_session_get(f->st, "old", 0, &s), -ENOENT);
    static const char *const kept[] = {"edge", "new", "never"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_session_get(f->st, kept[i], 0, &s), 0);
        store_session_clear(&s);
    }
    assert_int_equal(store_token_get(f->st, "t-old", 0, &t), -ENOENT);
    assert_int_equal(store_token_get(f->st, "t-new", 0, &t), 0);
    store_token_clear(&t);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM sessions"), 3);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM tokens"), 2);

    assert_int_equal(store_expire(f->st, now, &removed), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(store_expire(f->st, INT64_MAX, NULL), 0);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM sessions"), 1);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM tokens"), 1);
    assert_int_equal(store_expire(NULL, now, &removed), -EINVAL);
}

/* ---- tokens -------------------------------------------------------------------------- */

static void test_tokens(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", true);
    int64_t bob = new_user(f->st, "bob", "h", false);
    int64_t now = wall_ms();
    struct store_token t;

    assert_int_equal(
        store_token_create(f->st, "h1", "ch_ab", ann, STORE_SCOPE_ADMIN, "ci", now + 1000, &t), 0);
    assert_true(t.id > 0);
    int64_t t1 = t.id;
    assert_string_equal(t.hash, "h1");
    assert_string_equal(t.prefix, "ch_ab");
    assert_int_equal(t.user_id, ann);
    assert_string_equal(t.user_name, "ann");
    assert_true(t.user_admin);
    assert_int_equal(t.scope, STORE_SCOPE_ADMIN);
    assert_string_equal(t.note, "ci");
    assert_true(t.created_ms >= now);
    assert_int_equal(t.expires_ms, now + 1000);
    assert_int_equal(t.last_used_ms, 0);
    store_token_clear(&t);
    assert_null(t.hash);

    assert_int_equal(store_token_create(f->st, "h2", "ch_cd", ann, STORE_SCOPE_USER, NULL, 0, &t),
                     0);
    int64_t t2 = t.id;
    assert_string_equal(t.note, "");
    assert_int_equal(t.scope, STORE_SCOPE_USER);
    store_token_clear(&t);
    assert_int_equal(store_token_create(f->st, "h3", "ch_ef", bob, STORE_SCOPE_USER, "", 0, NULL),
                     0);

    assert_int_equal(store_token_create(f->st, "h1", "x", bob, STORE_SCOPE_USER, NULL, 0, &t),
                     -EEXIST);
    assert_null(t.hash);
    assert_int_equal(
        store_token_create(f->st, "h9", "x", bob + 100, STORE_SCOPE_USER, NULL, 0, NULL), -ENOENT);
    assert_int_equal(
        store_token_create(f->st, "h9", "x", bob, (enum store_token_scope)7, NULL, 0, NULL),
        -EINVAL);
    assert_int_equal(store_token_create(f->st, NULL, "x", bob, STORE_SCOPE_USER, NULL, 0, NULL),
                     -EINVAL);
    assert_int_equal(store_token_create(f->st, "h9", NULL, bob, STORE_SCOPE_USER, NULL, 0, NULL),
                     -EINVAL);
    assert_int_equal(store_token_create(f->st, "h9", "x", bob, STORE_SCOPE_USER, NULL, -5, NULL),
                     -EINVAL);

    assert_int_equal(store_token_get(f->st, "h1", now, &t), 0);
    assert_int_equal(t.id, t1);
    assert_string_equal(t.user_name, "ann");
    store_token_clear(&t);
    assert_int_equal(store_token_get(f->st, "h1", now + 1001, &t), -ENOENT);
    assert_int_equal(store_token_get(f->st, "h2", INT64_MAX, &t), 0);
    store_token_clear(&t);
    assert_int_equal(store_token_get(f->st, "nope", now, &t), -ENOENT);
    assert_int_equal(store_token_get(f->st, NULL, now, &t), -EINVAL);
    assert_int_equal(store_token_get(f->st, "h1", now, NULL), -EINVAL);

    struct store_token *list = NULL;
    size_t n = 0;
    assert_int_equal(store_token_list(f->st, ann, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].id, t1);
    assert_int_equal(list[1].id, t2);
    assert_string_equal(list[1].prefix, "ch_cd");
    store_tokens_free(list, n);
    assert_int_equal(store_token_list(f->st, bob + 100, &list, &n), 0);
    assert_int_equal(n, 0);
    assert_null(list);
    assert_int_equal(store_token_list(f->st, ann, NULL, &n), -EINVAL);

    assert_int_equal(store_token_touch(f->st, t1, now + 10), 0);
    assert_int_equal(store_token_touch(f->st, t1, now + 5), 0);
    assert_int_equal(store_token_get(f->st, "h1", now, &t), 0);
    assert_int_equal(t.last_used_ms, now + 10);
    store_token_clear(&t);
    assert_int_equal(store_token_touch(f->st, 999999, now), -ENOENT);

    /* Bob cannot delete Ann's token. */
    assert_int_equal(store_token_delete(f->st, bob, t1), -ENOENT);
    assert_int_equal(store_token_get(f->st, "h1", now, &t), 0);
    store_token_clear(&t);
    assert_int_equal(store_token_delete(f->st, ann, t1), 0);
    assert_int_equal(store_token_get(f->st, "h1", now, &t), -ENOENT);
    assert_int_equal(store_token_delete(f->st, ann, t1), -ENOENT);
    assert_int_equal(store_token_delete(NULL, ann, t1), -EINVAL);
}

/* ---- servers ------------------------------------------------------------------------- */

static void test_servers(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    int64_t bob = new_user(f->st, "bob", "h", false);
    int64_t cat = new_user(f->st, "cat", "h", false);
    struct store_server s;

    assert_int_equal(store_server_get(f->st, ann, &s), -ENOENT);
    assert_null(s.state);

    int64_t before = wall_ms();
    struct store_server in = {.user_id = ann, .state = (char *)"starting"};
    assert_int_equal(store_server_put(f->st, &in), 0);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_int_equal(s.user_id, ann);
    assert_string_equal(s.user_name, "ann");
    assert_string_equal(s.state, "starting");
    assert_string_equal(s.url, "");
    assert_string_equal(s.spawner_state, "{}");
    assert_string_equal(s.message, "");
    assert_int_equal(s.started_ms, 0);
    assert_true(s.updated_ms >= before && s.updated_ms <= wall_ms());
    store_server_clear(&s);
    assert_null(s.state);

    /* Put replaces every field; user_name is ignored. */
    in = (struct store_server){.user_id = ann,
                               .user_name = (char *)"ignored",
                               .state = (char *)"running",
                               .url = (char *)"unix:/run/ann.sock",
                               .spawner_state = (char *)"{\"pid\":42}",
                               .message = (char *)"ready",
                               .started_ms = 11,
                               .last_activity_ms = 22,
                               .updated_ms = 33};
    assert_int_equal(store_server_put(f->st, &in), 0);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_string_equal(s.user_name, "ann");
    assert_string_equal(s.state, "running");
    assert_string_equal(s.url, "unix:/run/ann.sock");
    assert_string_equal(s.spawner_state, "{\"pid\":42}");
    assert_string_equal(s.message, "ready");
    assert_int_equal(s.started_ms, 11);
    assert_int_equal(s.last_activity_ms, 22);
    assert_int_equal(s.updated_ms, 33);
    store_server_clear(&s);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM servers"), 1);

    in = (struct store_server){.user_id = bob, .state = (char *)"stopped", .updated_ms = 1};
    assert_int_equal(store_server_put(f->st, &in), 0);
    in = (struct store_server){.user_id = cat, .state = (char *)"failed", .updated_ms = 1};
    assert_int_equal(store_server_put(f->st, &in), 0);

    struct store_server *list = NULL;
    size_t n = 0;
    assert_int_equal(store_server_list_active(f->st, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].user_name, "ann");
    assert_string_equal(list[1].user_name, "cat");
    assert_string_equal(list[1].state, "failed");
    store_servers_free(list, n);
    assert_int_equal(store_server_list_active(f->st, NULL, &n), -EINVAL);

    in = (struct store_server){.user_id = ann, .state = (char *)"sleeping"};
    assert_int_equal(store_server_put(f->st, &in), -EINVAL);
    in = (struct store_server){.user_id = ann, .state = NULL};
    assert_int_equal(store_server_put(f->st, &in), -EINVAL);
    assert_int_equal(store_server_put(f->st, NULL), -EINVAL);
    in = (struct store_server){.user_id = cat + 100, .state = (char *)"running"};
    assert_int_equal(store_server_put(f->st, &in), -ENOENT);

    assert_int_equal(store_server_delete(f->st, ann), 0);
    assert_int_equal(store_server_get(f->st, ann, &s), -ENOENT);
    assert_int_equal(store_server_delete(f->st, ann), -ENOENT);
    assert_int_equal(store_server_get(f->st, ann, NULL), -EINVAL);
    assert_int_equal(store_server_list_active(f->st, &list, &n), 0);
    assert_int_equal(n, 1);
    store_servers_free(list, n);
}

/* ---- replicas: owners, claims, adoption ------------------------------------------------ */

static void put_server(struct store *st, int64_t user_id, const char *state, const char *owner,
                       int expect)
{
    struct store_server in = {.user_id = user_id, .state = (char *)state, .owner = (char *)owner};
    assert_int_equal(store_server_put(st, &in), expect);
}

static void test_server_owner_fields(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    int64_t bob = new_user(f->st, "bob", "h", false);
    struct store_server s;

    /* Without an owner (one replica) the row says "". stop_requested in the input is
     * ignored: a new row starts without a stop request. */
    struct store_server in = {.user_id = ann, .state = (char *)"running", .stop_requested = true};
    assert_int_equal(store_server_put(f->st, &in), 0);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_string_equal(s.owner, "");
    assert_false(s.stop_requested);
    store_server_clear(&s);
    assert_null(s.owner);

    put_server(f->st, bob, "starting", "replica-b", 0);
    assert_int_equal(store_server_get(f->st, bob, &s), 0);
    assert_string_equal(s.owner, "replica-b");
    store_server_clear(&s);

    struct store_server *list = NULL;
    size_t n = 0;
    assert_int_equal(store_server_list_active(f->st, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].owner, "");
    assert_string_equal(list[1].owner, "replica-b");
    assert_false(list[1].stop_requested);
    store_servers_free(list, n);
}

static void test_server_put_fencing(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    struct store_server s;

    /* A missing row may be written by anyone. */
    put_server(f->st, ann, "starting", "r1", 0);
    put_server(f->st, ann, "running", "r1", 0);
    /* Another replica's fenced write is refused and changes nothing. */
    put_server(f->st, ann, "stopped", "r2", -ESTALE);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_string_equal(s.state, "running");
    assert_string_equal(s.owner, "r1");
    store_server_clear(&s);

    /* stop_requested survives the owner's own writes. */
    assert_int_equal(store_server_request_stop(f->st, ann), 0);
    struct store_server in = {.user_id = ann, .state = (char *)"running", .owner = (char *)"r1"};
    assert_int_equal(store_server_put(f->st, &in), 0);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_true(s.stop_requested);
    store_server_clear(&s);

    /* An unfenced write (no owner: one replica, or the CLI) always lands and leaves the
     * row ownerless, which any replica may then write. */
    put_server(f->st, ann, "stopped", NULL, 0);
    assert_int_equal(store_server_get(f->st, ann, &s), 0);
    assert_string_equal(s.owner, "");
    assert_string_equal(s.state, "stopped");
    store_server_clear(&s);
    put_server(f->st, ann, "starting", "r2", 0);
    put_server(f->st, ann, "running", "r1", -ESTALE);
    put_server(f->st, ann, "running", "", 0);
    put_server(f->st, ann, "running", "r1", 0);
}

static void test_server_claim(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    struct store_server cur;
    int64_t before = wall_ms();

    /* No row: claimed. The stored row is "starting", owned, with the caller's fields. */
    struct store_server in = {.user_id = ann,
                              .owner = (char *)"r1",
                              .url = (char *)"",
                              .spawner_state = (char *)"{\"try\":1}",
                              .message = (char *)"queued",
                              .stop_requested = true};
    assert_int_equal(store_server_claim(f->st, &in, &cur), 0);
    assert_int_equal(cur.user_id, ann);
    assert_string_equal(cur.user_name, "ann");
    assert_string_equal(cur.state, "starting");
    assert_string_equal(cur.owner, "r1");
    assert_string_equal(cur.spawner_state, "{\"try\":1}");
    assert_string_equal(cur.message, "queued");
    assert_false(cur.stop_requested);
    assert_true(cur.updated_ms >= before);
    store_server_clear(&cur);

    /* Starting or running: busy, and the caller sees who holds it. */
    in.owner = (char *)"r2";
    assert_int_equal(store_server_claim(f->st, &in, &cur), -EBUSY);
    assert_string_equal(cur.owner, "r1");
    assert_string_equal(cur.state, "starting");
    store_server_clear(&cur);
    put_server(f->st, ann, "running", "r1", 0);
    assert_int_equal(store_server_claim(f->st, &in, NULL), -EBUSY);
    put_server(f->st, ann, "stopping", "r1", 0);
    assert_int_equal(store_server_claim(f->st, &in, &cur), -EBUSY);
    assert_string_equal(cur.state, "stopping");
    store_server_clear(&cur);

    /* Failed or stopped: claimable again, and a stop request left over is cleared. */
    put_server(f->st, ann, "running", "r1", 0);
    assert_int_equal(store_server_request_stop(f->st, ann), 0);
    put_server(f->st, ann, "failed", "r1", 0);
    assert_int_equal(store_server_claim(f->st, &in, &cur), 0);
    assert_string_equal(cur.owner, "r2");
    assert_string_equal(cur.state, "starting");
    assert_false(cur.stop_requested);
    store_server_clear(&cur);
    put_server(f->st, ann, "stopped", "r2", 0);
    in.owner = NULL; /* one replica: no owner */
    assert_int_equal(store_server_claim(f->st, &in, NULL), 0);
    assert_int_equal(store_server_get(f->st, ann, &cur), 0);
    assert_string_equal(cur.owner, "");
    assert_string_equal(cur.state, "starting");
    store_server_clear(&cur);

    /* Arguments: the state, when given, must be "starting"; the user must exist. */
    in.state = (char *)"running";
    assert_int_equal(store_server_claim(f->st, &in, &cur), -EINVAL);
    assert_null(cur.state);
    in.state = (char *)"starting";
    in.user_id = ann + 1000;
    assert_int_equal(store_server_claim(f->st, &in, &cur), -ENOENT);
    assert_null(cur.state);
    assert_int_equal(store_server_claim(f->st, NULL, &cur), -EINVAL);
    assert_int_equal(store_server_claim(NULL, &in, &cur), -EINVAL);
}

enum { CLAIM_THREADS = 8, CLAIM_ROUNDS = 10 };

struct server_claim_race {
    struct store *st;
    int64_t user_id;
    char owner[16];
    int rc;
    char *seen_owner;
};

static void *server_claim_thread(void *arg)
{
    struct server_claim_race *c = arg;
    struct store_server in = {.user_id = c->user_id, .owner = c->owner};
    struct store_server cur;
    c->rc = store_server_claim(c->st, &in, &cur);
    c->seen_owner = cur.owner != NULL ? strdup(cur.owner) : NULL;
    store_server_clear(&cur);
    return NULL;
}

static void test_server_claim_race(void **state)
{
    struct fixture *f = *state;
    struct store *other = open_other_ok(f);
    int64_t ann = new_user(f->st, "ann", "h", false);
    for (int round = 0; round < CLAIM_ROUNDS; round++) {
        if (round % 2 == 1)
            put_server(f->st, ann, "stopped", NULL, 0); /* even rounds: no row at all */
        else if (round > 0)
            assert_int_equal(store_server_delete(f->st, ann), 0);
        struct server_claim_race r[CLAIM_THREADS];
        for (int i = 0; i < CLAIM_THREADS; i++) {
            r[i] = (struct server_claim_race){i % 2 ? other : f->st, ann, "", 1, NULL};
            snprintf(r[i].owner, sizeof r[i].owner, "r%d", i);
        }
        run_together(CLAIM_THREADS, server_claim_thread, r, sizeof r[0]);
        int winners = 0, winner = -1;
        for (int i = 0; i < CLAIM_THREADS; i++) {
            if (r[i].rc == 0) {
                winners++;
                winner = i;
            } else {
                assert_int_equal(r[i].rc, -EBUSY);
            }
        }
        assert_int_equal(winners, 1);
        /* Everyone saw the winner's row. */
        for (int i = 0; i < CLAIM_THREADS; i++) {
            assert_non_null(r[i].seen_owner);
            assert_string_equal(r[i].seen_owner, r[winner].owner);
            free(r[i].seen_owner);
        }
        struct store_server s;
        assert_int_equal(store_server_get(f->st, ann, &s), 0);
        assert_string_equal(s.owner, r[winner].owner);
        store_server_clear(&s);
    }
    store_close(other);
}

static void test_server_adopt(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    int64_t bob = new_user(f->st, "bob", "h", false);
    struct store_server s;

    assert_int_equal(store_server_adopt(f->st, ann, "r1", "r2", &s), -ENOENT);
    assert_null(s.state);
    struct store_server in = {.user_id = ann,
                              .state = (char *)"running",
                              .owner = (char *)"r1",
                              .url = (char *)"http://10.0.0.7:8080",
                              .updated_ms = 1234};
    assert_int_equal(store_server_put(f->st, &in), 0);
    assert_int_equal(store_server_request_stop(f->st, ann), 0);

    /* Only from the stated owner. */
    assert_int_equal(store_server_adopt(f->st, ann, "r9", "r2", &s), -ESTALE);
    assert_null(s.state);
    assert_int_equal(store_server_adopt(f->st, ann, "r1", "r2", &s), 0);
    assert_string_equal(s.owner, "r2");
    assert_string_equal(s.user_name, "ann");
    assert_string_equal(s.state, "running");
    assert_string_equal(s.url, "http://10.0.0.7:8080");
    assert_int_equal(s.updated_ms, 1234); /* the row is otherwise untouched */
    assert_true(s.stop_requested);        /* a pending stop goes with it */
    store_server_clear(&s);
    /* Someone else adopted it meanwhile: the second adopter loses. */
    assert_int_equal(store_server_adopt(f->st, ann, "r1", "r3", NULL), -ESTALE);
    /* The old owner's writes are fenced off from now on. */
    put_server(f->st, ann, "stopped", "r1", -ESTALE);
    put_server(f->st, ann, "running", "r2", 0);

    /* A stopped row is not adopted; an ownerless active one is, from "". */
    put_server(f->st, bob, "stopped", "r1", 0);
    assert_int_equal(store_server_adopt(f->st, bob, "r1", "r2", NULL), -ENOENT);
    put_server(f->st, bob, "failed", NULL, 0);
    assert_int_equal(store_server_adopt(f->st, bob, "", "r2", NULL), 0);
    assert_int_equal(store_server_get(f->st, bob, &s), 0);
    assert_string_equal(s.owner, "r2");
    store_server_clear(&s);

    assert_int_equal(store_server_adopt(f->st, ann, NULL, "r2", &s), -EINVAL);
    assert_int_equal(store_server_adopt(f->st, ann, "r2", NULL, &s), -EINVAL);
    assert_int_equal(store_server_adopt(NULL, ann, "r2", "r3", &s), -EINVAL);
}

static void test_server_request_stop(void **state)
{
    struct fixture *f = *state;
    int64_t ann = new_user(f->st, "ann", "h", false);
    struct store_server s;
    assert_int_equal(store_server_request_stop(f->st, ann), -ENOENT);
    static const struct {
        const char *state;
        int rc;
    } cases[] = {{"starting", 0},
                 {"running", 0},
                 {"stopping", -ENOENT},
                 {"failed", -ENOENT},
                 {"stopped", -ENOENT}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_server(f->st, ann, "stopped", NULL, 0);
        assert_int_equal(store_server_claim(f->st, &(struct store_server){.user_id = ann}, NULL),
                         0); /* clears any earlier request */
        put_server(f->st, ann, cases[i].state, "r1", 0);
        assert_int_equal(store_server_request_stop(f->st, ann), cases[i].rc);
        assert_int_equal(store_server_get(f->st, ann, &s), 0);
        assert_int_equal(s.stop_requested, cases[i].rc == 0);
        store_server_clear(&s);
    }
    assert_int_equal(store_server_request_stop(NULL, ann), -EINVAL);
}

static void test_replicas(void **state)
{
    struct fixture *f = *state;
    struct store_replica *list = (struct store_replica *)f;
    size_t n = 7;
    assert_int_equal(store_replica_list(f->st, &list, &n), 0);
    assert_null(list);
    assert_int_equal(n, 0);

    int64_t before = wall_ms();
    assert_int_equal(store_replica_beat(f->st, "node-b-2-x", "10.0.0.2:8000", 1000), 0);
    assert_int_equal(store_replica_beat(f->st, "node-a-1-y", NULL, 2000), 0);
    assert_int_equal(store_replica_list(f->st, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "node-a-1-y"); /* ordered by id */
    assert_string_equal(list[0].address, "");
    assert_int_equal(list[0].started_ms, 2000);
    assert_string_equal(list[1].id, "node-b-2-x");
    assert_string_equal(list[1].address, "10.0.0.2:8000");
    assert_int_equal(list[1].started_ms, 1000);
    assert_true(list[1].heartbeat_ms >= before && list[1].heartbeat_ms <= wall_ms());
    int64_t first_beat = list[1].heartbeat_ms;
    store_replicas_free(list, n);

    /* Later beats move the heartbeat and may change the address; the start stays. */
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
    assert_int_equal(store_replica_beat(f->st, "node-b-2-x", "10.0.0.9:8000", 1000), 0);
    assert_int_equal(store_replica_list(f->st, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[1].address, "10.0.0.9:8000");
    assert_true(list[1].heartbeat_ms > first_beat);
    assert_int_equal(list[1].started_ms, 1000);
    store_replica_clear(&list[1]);
    assert_null(list[1].id);
    store_replicas_free(list, n);

    assert_int_equal(store_replica_delete(f->st, "node-a-1-y"), 0);
    assert_int_equal(store_replica_delete(f->st, "node-a-1-y"), -ENOENT);
    assert_int_equal(store_replica_list(f->st, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, "node-b-2-x");
    store_replicas_free(list, n);

    assert_int_equal(store_replica_beat(f->st, "", NULL, 0), -EINVAL);
    assert_int_equal(store_replica_beat(f->st, NULL, NULL, 0), -EINVAL);
    assert_int_equal(store_replica_beat(NULL, "x", NULL, 0), -EINVAL);
    assert_int_equal(store_replica_list(f->st, NULL, &n), -EINVAL);
    assert_int_equal(store_replica_list(f->st, &list, NULL), -EINVAL);
    assert_int_equal(store_replica_delete(f->st, NULL), -EINVAL);
    store_replica_clear(NULL);
    store_replicas_free(NULL, 0);
}

/* A version-1 database (as the previous release left it) is brought to the current version
 * with its rows kept: servers get no owner and no stop request. */
static void test_migrate_from_v1(void **state)
{
    struct fixture *f = *state;
    if (f->be == BE_SQLITE) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        raw_exec(db, "PRAGMA journal_mode = WAL");
        raw_exec(db, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                     "applied_ms INTEGER NOT NULL)");
        raw_exec(db, store__migrations[1].sqlite);
        sqlite3_close(db);
    } else {
        raw_exec_f(f, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                      "applied_ms BIGINT NOT NULL)");
        raw_exec_f(f, store__migrations[1].postgres);
    }
    raw_exec_f(f, "INSERT INTO schema_version VALUES (1, 0)");
    raw_exec_f(f, "INSERT INTO users (name, created_ms) VALUES ('old', 5)");
    raw_exec_f(f, "INSERT INTO servers (user_id, state, url, updated_ms) "
                  "SELECT id, 'running', 'unix:/x', 7 FROM users");

    f->st = open_other_ok(f);
    int v = 0;
    assert_int_equal(store_schema_version(f->st, &v), 0);
    assert_int_equal(v, STORE__SCHEMA_VERSION);
    assert_int_equal(raw_count(f, "SELECT COUNT(*) FROM schema_version"), STORE__SCHEMA_VERSION);
    struct store_server *list = NULL;
    size_t n = 0;
    assert_int_equal(store_server_list_active(f->st, &list, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].user_name, "old");
    assert_string_equal(list[0].url, "unix:/x");
    assert_string_equal(list[0].owner, "");
    assert_false(list[0].stop_requested);
    store_servers_free(list, n);
    assert_int_equal(store_replica_beat(f->st, "r1", NULL, 1), 0);
}

/* ---- events -------------------------------------------------------------------------- */

static void test_events(void **state)
{
    struct fixture *f = *state;
    struct store_event *ev = NULL;
    size_t n = 5;
    assert_int_equal(store_event_list(f->st, 10, &ev, &n), 0);
    assert_int_equal(n, 0);
    assert_null(ev);

    int64_t before = wall_ms();
    assert_int_equal(store_event_add(f->st, "user.add", "ann", "root", "via cli"), 0);
    assert_int_equal(store_event_add(f->st, "login.ok", "ann", NULL, NULL), 0);
    assert_int_equal(store_event_add(f->st, "server.start", NULL, "ann", "local"), 0);
    assert_int_equal(store_event_add(f->st, NULL, "ann", NULL, NULL), -EINVAL);
    assert_int_equal(store_event_add(f->st, "", "ann", NULL, NULL), -EINVAL);

    assert_int_equal(store_event_list(f->st, 2, &ev, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ev[0].kind, "server.start");
    assert_string_equal(ev[0].user, "");
    assert_string_equal(ev[0].actor, "ann");
    assert_string_equal(ev[0].detail, "local");
    assert_string_equal(ev[1].kind, "login.ok");
    assert_string_equal(ev[1].actor, "");
    assert_string_equal(ev[1].detail, "");
    assert_true(ev[0].id > ev[1].id);
    assert_true(ev[1].ts_ms >= before && ev[0].ts_ms <= wall_ms());
    store_events_free(ev, n);

    assert_int_equal(store_event_list(f->st, 0, &ev, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(ev[2].kind, "user.add");
    assert_string_equal(ev[2].user, "ann");
    assert_string_equal(ev[2].actor, "root");
    assert_string_equal(ev[2].detail, "via cli");
    store_events_free(ev, n);
    assert_int_equal(store_event_list(f->st, 1, NULL, &n), -EINVAL);
    assert_int_equal(store_event_list(f->st, 1, &ev, NULL), -EINVAL);
}

/* ---- argument checks ----------------------------------------------------------------- */

static void test_null_store(void **state)
{
    struct store_user u;
    struct store_session s;
    struct store_token t;
    struct store_server v = {.state = (char *)"running"};
    struct store_user *ul;
    struct store_token *tl;
    struct store_server *vl;
    struct store_event *el;
    size_t n;
    char *str;
    assert_int_equal(store_meta_get_or_set(NULL, "k", "v", &str), -EINVAL);
    assert_int_equal(store_user_get(NULL, "a", &u), -EINVAL);
    assert_int_equal(store_user_get_by_id(NULL, 1, &u), -EINVAL);
    assert_int_equal(store_user_list(NULL, 0, 0, &ul, &n, NULL), -EINVAL);
    assert_int_equal(store_user_count(NULL, &n), -EINVAL);
    assert_int_equal(store_user_set_admin(NULL, "a", true), -EINVAL);
    assert_int_equal(store_user_set_password(NULL, "a", "h", false), -EINVAL);
    assert_int_equal(store_user_claim_password(NULL, "a", "h"), -EINVAL);
    assert_int_equal(store_user_touch(NULL, 1, 1), -EINVAL);
    assert_int_equal(store_user_delete(NULL, "a"), -EINVAL);
    assert_int_equal(store_session_create(NULL, "x", 1, 0, NULL), -EINVAL);
    assert_int_equal(store_session_get(NULL, "x", 0, &s), -EINVAL);
    assert_int_equal(store_session_touch(NULL, "x", 0), -EINVAL);
    assert_int_equal(store_session_delete(NULL, "x"), -EINVAL);
    assert_int_equal(store_session_count(NULL, 0, &n), -EINVAL);
    assert_int_equal(store_token_create(NULL, "h", "p", 1, STORE_SCOPE_USER, NULL, 0, &t), -EINVAL);
    assert_int_equal(store_token_get(NULL, "h", 0, &t), -EINVAL);
    assert_int_equal(store_token_list(NULL, 1, &tl, &n), -EINVAL);
    assert_int_equal(store_token_touch(NULL, 1, 0), -EINVAL);
    assert_int_equal(store_server_get(NULL, 1, &v), -EINVAL);
    v.state = (char *)"running";
    assert_int_equal(store_server_put(NULL, &v), -EINVAL);
    assert_int_equal(store_server_list_active(NULL, &vl, &n), -EINVAL);
    assert_int_equal(store_server_delete(NULL, 1), -EINVAL);
    assert_int_equal(store_event_add(NULL, "k", NULL, NULL, NULL), -EINVAL);
    assert_int_equal(store_event_list(NULL, 1, &el, &n), -EINVAL);
    store_close(NULL);
    /* The clear functions accept NULL and empty structs. */
    store_user_clear(NULL);
    store_session_clear(NULL);
    store_token_clear(NULL);
    store_server_clear(NULL);
    store_event_clear(NULL);
    store_tokens_free(NULL, 0);
    store_servers_free(NULL, 0);
    store_events_free(NULL, 0);
}

/* ---- failures of the database -------------------------------------------------------- */

struct busy_call {
    struct store *st;
    int rc;
    int64_t elapsed_ms;
};

static void busy_create(void *arg)
{
    struct busy_call *b = arg;
    int64_t start = wall_ms();
    b->rc = store_user_create(b->st, "blocked", NULL, false, NULL);
    b->elapsed_ms = wall_ms() - start;
}

static void test_busy_timeout_is_eio_and_logged(void **state)
{
    struct fixture *f = *state;
    new_user(f->st, "ann", NULL, false);
    /* Another process holds the write lock with an uncommitted change. */
    sqlite3 *db = raw_open(f->path);
    raw_exec(db, "BEGIN IMMEDIATE");
    raw_exec(db, "INSERT INTO users (name, created_ms) VALUES ('ghost', 0)");

    /* Readers are not blocked by the writer (WAL) and do not see its change. */
    struct store_user u;
    int64_t start = wall_ms();
    assert_int_equal(store_user_get(f->st, "ann", &u), 0);
    store_user_clear(&u);
    assert_int_equal(store_user_get(f->st, "ghost", &u), -ENOENT);
    assert_true(wall_ms() - start < 1000);

    struct busy_call b = {f->st, 1, 0};
    char *log = capture_stderr(busy_create, &b);
    assert_int_equal(b.rc, -EIO);
    assert_true(b.elapsed_ms >= 4500); /* it waited for the busy timeout first */
    assert_non_null(strstr(log, "store.error"));
    assert_non_null(strstr(log, "op=user_create"));
    assert_non_null(strstr(log, "locked"));
    free(log);

    raw_exec(db, "ROLLBACK");
    sqlite3_close(db);
    /* The connection that failed is still usable. */
    assert_int_equal(store_user_create(f->st, "blocked", NULL, false, NULL), 0);
    assert_int_equal(store_user_get(f->st, "ghost", &u), -ENOENT);
}

/* ---- concurrency --------------------------------------------------------------------- */

enum { CONC_THREADS = 12, CONC_USERS = 40 };

struct conc_arg {
    struct store *st;
    int index;
    int failures;
};

static void *conc_thread(void *arg)
{
    struct conc_arg *c = arg;
    for (int i = 0; i < CONC_USERS; i++) {
        char name[32], sid[48];
        snprintf(name, sizeof name, "t%02d-%03d", c->index, i);
        snprintf(sid, sizeof sid, "sess-%s", name);
        struct store_user u;
        if (store_user_create(c->st, name, "h", false, &u) != 0) {
            c->failures++;
            continue;
        }
        if (store_session_create(c->st, sid, u.id, 0, "127.0.0.1") != 0)
            c->failures++;
        struct store_session s;
        if (store_session_get(c->st, sid, wall_ms(), &s) != 0 || s.user_id != u.id)
            c->failures++;
        store_session_clear(&s);
        if (i % 10 == 0) {
            struct store_user *list = NULL;
            size_t n = 0, total = 0;
            if (store_user_list(c->st, 0, 5, &list, &n, &total) != 0 || total < 1)
                c->failures++;
            store_users_free(list, n);
            if (store_event_add(c->st, "user.add", name, "test", NULL) != 0)
                c->failures++;
        }
        store_user_clear(&u);
    }
    return NULL;
}

/* How many descriptors this process holds on `path` (one per open connection). */
static int fds_on(const char *path)
{
    char real[PATH_MAX];
    assert_non_null(realpath(path, real));
    int count = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    for (;;) {
        struct dirent *e = readdir(d);
        if (e == NULL)
            break;
        char link[300], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strcmp(target, real) == 0)
            count++;
    }
    closedir(d);
    return count;
}

static void test_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    struct conc_arg args[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++)
        args[i] = (struct conc_arg){f->st, i, 0};
    run_together(CONC_THREADS, conc_thread, args, sizeof args[0]);
    for (int i = 0; i < CONC_THREADS; i++)
        assert_int_equal(args[i].failures, 0);

    size_t n = 0;
    assert_int_equal(store_user_count(f->st, &n), 0);
    assert_int_equal(n, CONC_THREADS * CONC_USERS);
    assert_int_equal(store_session_count(f->st, wall_ms(), &n), 0);
    assert_int_equal(n, CONC_THREADS * CONC_USERS);
    struct store_event *ev = NULL;
    assert_int_equal(store_event_list(f->st, 0, &ev, &n), 0);
    assert_int_equal(n, CONC_THREADS * (CONC_USERS / 10));
    store_events_free(ev, n);
    /* More threads than the pool holds: connections were shared, never more than the
     * cap, and more than one was used. */
    int conns = f->be == BE_SQLITE
                    ? fds_on(f->path)
                    : (int)raw_count(f, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = "
                                        "current_database() AND pid <> pg_backend_pid()");
    assert_true(conns >= 2);
    assert_true(conns <= POOL_MAX);
}

/* ---- crash safety -------------------------------------------------------------------- */

enum { CRASH_ROUNDS = 5, CRASH_SPAN = 1000000 };

/* The child: writes users and sessions in a tight loop, each its own transaction, and
 * reports each user number on `wfd` once both writes have returned. */
static void crash_child(const char *dir, int wfd, int first)
{
    char *err = NULL;
    struct store *st = store_open("", dir, &err);
    if (st == NULL)
        _exit(2);
    for (int i = first; i < first + CRASH_SPAN; i++) {
        char name[32], sid[48];
        snprintf(name, sizeof name, "crash%07d", i);
        snprintf(sid, sizeof sid, "sid-%07d", i);
        struct store_user u;
        if (store_user_create(st, name, "h", false, &u) != 0)
            _exit(3);
        if (store_session_create(st, sid, u.id, 0, "127.0.0.1") != 0)
            _exit(4);
        store_user_clear(&u);
        if (write(wfd, &i, sizeof i) != (ssize_t)sizeof i)
            _exit(5);
    }
    _exit(0);
}

static uint64_t jitter_state;

static uint64_t jitter_next(void)
{
    /* xorshift64: the libc generator is banned here, and only a varying delay is needed. */
    jitter_state ^= jitter_state << 13;
    jitter_state ^= jitter_state >> 7;
    jitter_state ^= jitter_state << 17;
    return jitter_state;
}

static void test_crash_kill9(void **state)
{
    struct fixture *f = *state;
    struct timespec seed;
    clock_gettime(CLOCK_MONOTONIC, &seed);
    jitter_state = (uint64_t)seed.tv_nsec * 2654435761u + 1;
    size_t reported_total = 0;

    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(f->dir, fds[1], round * CRASH_SPAN);
        }
        close(fds[1]);

        int *reported = NULL;
        size_t n = 0, cap = 0;
        int got;
        /* Wait for the first commit, then let it run a few milliseconds more. */
        ssize_t r = read(fds[0], &got, sizeof got);
        if (r == (ssize_t)sizeof got) {
            reported = realloc(reported, (cap = 1024) * sizeof *reported);
            reported[n++] = got;
        }
        sleep_ms(1 + (int)(jitter_next() % 15));
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        for (;;) {
            r = read(fds[0], &got, sizeof got);
            if (r != (ssize_t)sizeof got)
                break;
            if (n == cap)
                reported = realloc(reported, (cap = cap ? cap * 2 : 1024) * sizeof *reported);
            reported[n++] = got;
        }
        close(fds[0]);
        assert_true(n > 0);
        reported_total += n;

        /* The file is sound... */
        sqlite3 *db = raw_open(f->path);
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
        sqlite3_finalize(s);
        assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check"), 0);
        sqlite3_close(db);

        /* ...and holds every write the child saw committed. */
        char *err = NULL;
        struct store *st = store_open("", f->dir, &err);
        assert_non_null(st);
        for (size_t i = 0; i < n; i++) {
            char name[32], sid[48];
            snprintf(name, sizeof name, "crash%07d", reported[i]);
            snprintf(sid, sizeof sid, "sid-%07d", reported[i]);
            struct store_user u;
            struct store_session sess;
            assert_int_equal(store_user_get(st, name, &u), 0);
            assert_int_equal(store_session_get(st, sid, 0, &sess), 0);
            assert_int_equal(sess.user_id, u.id);
            store_user_clear(&u);
            store_session_clear(&sess);
        }
        size_t count = 0;
        assert_int_equal(store_user_count(st, &count), 0);
        assert_true(count >= reported_total);
        /* At most one write per round was committed but not yet reported. */
        assert_true(count <= reported_total + (size_t)round + 1);
        store_close(st);
        free(reported);
    }
}

/* Every test that does not depend on the database, on both backends. */
#define BOTH(fn, set)                                                                              \
    {#fn "/sqlite", fn, set, teardown, NULL},                                                      \
    {                                                                                              \
#fn "/postgres", fn, set##_pg, teardown, NULL                                              \
    }

#define setup_dir_only_pg setup_pg_db_only

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_url_schemes, setup_dir_only, teardown),
        cmocka_unit_test_setup_teardown(test_open_default_creates_dir_and_private_file,
                                        setup_dir_only, teardown),
        cmocka_unit_test_setup_teardown(test_open_explicit_path_and_tighten_mode, setup_dir_only,
                                        teardown),
        BOTH(test_two_handles_share_one_file, setup),
        BOTH(test_schema_version_and_reopen, setup),
        BOTH(test_newer_schema_refused, setup),
        BOTH(test_fresh_db_rolled_back_migration_retried, setup_dir_only),
        BOTH(test_migrate_from_v1, setup_dir_only),
        BOTH(test_meta, setup),
        BOTH(test_user_create_and_get, setup),
        BOTH(test_user_list_and_count, setup),
        BOTH(test_user_admin_password_touch, setup),
        BOTH(test_user_claim_password, setup),
        BOTH(test_user_claim_race, setup),
        BOTH(test_user_delete_cascades, setup),
        BOTH(test_sessions, setup),
        BOTH(test_expire, setup),
        BOTH(test_tokens, setup),
        BOTH(test_servers, setup),
        BOTH(test_server_owner_fields, setup),
        BOTH(test_server_put_fencing, setup),
        BOTH(test_server_claim, setup),
        BOTH(test_server_claim_race, setup),
        BOTH(test_server_adopt, setup),
        BOTH(test_server_request_stop, setup),
        BOTH(test_replicas, setup),
        BOTH(test_events, setup),
        cmocka_unit_test(test_null_store),
        cmocka_unit_test_setup_teardown(test_busy_timeout_is_eio_and_logged, setup, teardown),
        BOTH(test_concurrent_writers, setup),
        cmocka_unit_test_setup_teardown(test_crash_kill9, setup_dir_only, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

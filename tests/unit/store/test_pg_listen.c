/* Tests of the store's notification and leadership listener (src/store/pg_listen.c) against
 * a real PostgreSQL server of this file's own (scripts/pg-test-server.sh), which the tests
 * stop, start and freeze. The listener is opened with store__listener_open_params() on the
 * server's parameters; the test side talks to the server with plain blocking libpq.
 *
 * Waits are deadlines, not sleeps: the loop runs until the condition holds or WAIT_MS
 * passes, so a slow machine only makes the tests slower. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store/pg_listen.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <uv.h>

#define WAIT_MS 20000
#define MAX_PAYLOADS 4096

/* Each test contends on keys of its own, so that sessions of one test never decide another's
 * leadership. */
#define KEY_NOTIFY 71001
#define KEY_LEADER 71002
#define KEY_OTHER 71003
#define KEY_RESTART 71004
#define KEY_SILENT 71005
#define KEY_MISC 71006
#define KEY_NAMES 71007

static char g_dir[64];
static char g_url[256];
static char g_password[128];
static char g_port[16];

/* ---- the server ---- */

static int server_script(const char *cmd)
{
    const char *src = getenv("CODEHUB_SOURCE_DIR");
    char line[1024];
    snprintf(line, sizeof(line), "'%s/scripts/pg-test-server.sh' %s '%s' >/dev/null",
             src != NULL ? src : ".", cmd, g_dir);
    return system(line) == 0 ? 0 : -1;
}

static int read_line(const char *name, char *out, size_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char *got = fgets(out, (int)size, f);
    fclose(f);
    if (got == NULL)
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static int group_setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/codehub-listen-%d", (int)getpid());
    if (server_script("start") != 0) {
        fprintf(stderr, "pg-test-server.sh start %s failed\n", g_dir);
        return -1;
    }
    if (read_line("url", g_url, sizeof(g_url)) != 0 ||
        read_line("password", g_password, sizeof(g_password)) != 0 ||
        read_line("port", g_port, sizeof(g_port)) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    server_script("destroy");
    return 0;
}

/* ---- the test side's own blocking connection ---- */

static PGconn *test_connect(void)
{
    const char *kw[] = {"dbname", "password", NULL};
    const char *val[] = {g_url, g_password, NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("test connection: %s", PQerrorMessage(c));
    return c;
}

static void sql(const char *query)
{
    PGconn *c = test_connect();
    PGresult *res = PQexec(c, query);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", query, PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(c);
}

/* The backend pid of the session named `app`, or -1. */
static long backend_pid(const char *app)
{
    PGconn *c = test_connect();
    const char *params[] = {app};
    PGresult *res = PQexecParams(c, "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                 1, NULL, params, NULL, NULL, 0);
    long pid = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        pid = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(c);
    return pid;
}

/* ---- what a listener reports ---- */

struct rec {
    struct store_listener *l;
    bool up;
    bool leading;
    int ups;
    int leads;
    char seq[64]; /* C/c connection true/false, L/l leader true/false, in order */
    size_t nseq;
    char *payloads[MAX_PAYLOADS];
    size_t npayloads;
    size_t want_payloads;
    bool closed;     /* store_listener_close was called */
    int after_close; /* events after that: must stay 0 */
    int done_calls;
    bool close_on_up;     /* close from inside connection(true) */
    bool close_on_notify; /* close from inside the first notify */
    struct rec *peer;     /* contends for the same key */
    int both_leading;     /* leader(true) while the peer led: must stay 0 */
};

static void on_done(void *data)
{
    struct rec *r = data;
    r->done_calls++;
}

static void rec_close(struct rec *r)
{
    r->closed = true;
    store_listener_close(r->l, on_done, r);
    /* Never from inside store_listener_close. */
    assert_int_equal(r->done_calls, 0);
}

static void seq_add(struct rec *r, char c)
{
    if (r->nseq + 1 < sizeof(r->seq))
        r->seq[r->nseq++] = c;
    r->seq[r->nseq] = '\0';
}

static void ev_notify(void *data, const char *payload)
{
    struct rec *r = data;
    if (r->closed)
        r->after_close++;
    if (r->npayloads < MAX_PAYLOADS)
        r->payloads[r->npayloads++] = strdup(payload);
    if (r->close_on_notify && !r->closed)
        rec_close(r);
}

static void ev_connection(void *data, bool up)
{
    struct rec *r = data;
    if (r->closed)
        r->after_close++;
    r->up = up;
    r->ups += up;
    seq_add(r, up ? 'C' : 'c');
    if (up && r->close_on_up)
        rec_close(r);
}

static void ev_leader(void *data, bool leading)
{
    struct rec *r = data;
    if (r->closed)
        r->after_close++;
    /* A closed peer reports nothing more; its session may still hold the lock, but then
     * this one cannot have got it. */
    if (leading && r->peer != NULL && r->peer->leading && !r->peer->closed)
        r->both_leading++;
    r->leading = leading;
    r->leads += leading;
    seq_add(r, leading ? 'L' : 'l');
}

static const struct store_listener_events events = {ev_notify, ev_connection, ev_leader};

static void rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->npayloads; i++)
        free(r->payloads[i]);
    r->npayloads = 0;
}

/* Opens `r` on this file's server, named `app` in pg_stat_activity. */
static int rec_open(struct rec *r, uv_loop_t *loop, const char *app, int64_t key)
{
    const char *kw[] = {"dbname", "password", "application_name", NULL};
    const char *val[] = {g_url, g_password, app, NULL};
    return store__listener_open_params(loop, kw, val, &events, r, key, &r->l);
}

/* ---- running the loop ---- */

static void on_expire(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs `loop` until cond(arg) holds or `ms` pass; returns whether it holds. */
static bool run_until(uv_loop_t *loop, bool (*cond)(const void *), const void *arg, uint64_t ms)
{
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_expire, ms, 0);
    while (!cond(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* the timer's close */
    return cond(arg);
}

static bool never(const void *arg)
{
    return false;
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
    run_until(loop, never, NULL, ms);
}

static bool is_up(const void *arg)
{
    return ((const struct rec *)arg)->up;
}

static bool is_down(const void *arg)
{
    const struct rec *r = arg;
    return r->ups > 0 && !r->up;
}

static bool is_up_leading(const void *arg)
{
    const struct rec *r = arg;
    return r->up && r->leading;
}

static bool is_done(const void *arg)
{
    return ((const struct rec *)arg)->done_calls > 0;
}

static bool has_payloads(const void *arg)
{
    const struct rec *r = arg;
    return r->npayloads >= r->want_payloads;
}

static bool wait_for(uv_loop_t *loop, bool (*cond)(const void *), const void *arg)
{
    return run_until(loop, cond, arg, WAIT_MS);
}

static void close_and_wait(uv_loop_t *loop, struct rec *r)
{
    rec_close(r);
    assert_true(wait_for(loop, is_done, r));
    assert_int_equal(r->done_calls, 1);
    assert_int_equal(r->after_close, 0);
}

static void loop_finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_NOWAIT);
    /* Every handle and request of the listener is gone. */
    assert_int_equal(uv_loop_close(loop), 0);
}

/* A TCP port on 127.0.0.1 nothing listens on (bound, then released). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        fail_msg("closed_port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- tests ---- */

/* Notifications on "codehub" arrive with their payload, in order, others are ignored; a
 * burst from one transaction (larger than one read, over TLS) arrives whole. */
static void test_notifications(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    assert_int_equal(rec_open(&r, &loop, "listen-notify", KEY_NOTIFY), 0);
    assert_true(wait_for(&loop, is_up, &r));

    sql("NOTIFY other_channel, 'nope'; NOTIFY codehub, 'server 7'");
    r.want_payloads = 1;
    assert_true(wait_for(&loop, has_payloads, &r));
    assert_string_equal(r.payloads[0], "server 7");
    /* Delivered in order, so the other channel's came first and was dropped. */
    assert_int_equal(r.npayloads, 1);

    sql("SELECT pg_notify('codehub', 'user ' || g) FROM generate_series(1, 3000) g");
    r.want_payloads = 3001;
    assert_true(wait_for(&loop, has_payloads, &r));
    for (size_t i = 1; i <= 3000; i++) {
        char want[32];
        snprintf(want, sizeof(want), "user %zu", i);
        assert_string_equal(r.payloads[i], want);
    }
    assert_string_equal(r.seq, "CL");

    close_and_wait(&loop, &r);
    assert_int_equal(r.npayloads, 3001);
    rec_free(&r);
    loop_finish(&loop);
}

static bool one_leads(const void *arg)
{
    const struct rec *r = arg;
    return r[0].up && r[1].up && (r[0].leading || r[1].leading);
}

/* Two listeners on one key: exactly one leads, and keeps leading while the other retries;
 * when the leader closes, the other takes over. A listener on another key leads too. */
static void test_one_leader(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r[2] = {{0}, {0}};
    struct rec other = {0};
    r[0].peer = &r[1];
    r[1].peer = &r[0];
    assert_int_equal(rec_open(&r[0], &loop, "listen-lead-a", KEY_LEADER), 0);
    assert_int_equal(rec_open(&r[1], &loop, "listen-lead-b", KEY_LEADER), 0);
    assert_int_equal(rec_open(&other, &loop, "listen-lead-c", KEY_OTHER), 0);
    assert_true(wait_for(&loop, one_leads, r));
    assert_true(wait_for(&loop, is_up_leading, &other));

    /* Several lock retries of the loser later, still one leader. */
    run_for(&loop, 2500);
    assert_true(r[0].leading != r[1].leading);
    assert_int_equal(r[0].leads + r[1].leads, 1);
    assert_int_equal(r[0].both_leading + r[1].both_leading, 0);

    struct rec *leader = r[0].leading ? &r[0] : &r[1];
    struct rec *loser = leader == &r[0] ? &r[1] : &r[0];
    rec_close(leader);
    assert_true(wait_for(&loop, is_up_leading, loser));
    assert_true(wait_for(&loop, is_done, leader));
    assert_int_equal(leader->after_close, 0);
    assert_string_equal(leader->seq, "CL");
    assert_string_equal(loser->seq, "CL");
    assert_int_equal(loser->both_leading, 0);

    close_and_wait(&loop, loser);
    close_and_wait(&loop, &other);
    loop_finish(&loop);
}

/* The server stops: leader(false), then connection(false). It starts again: connection(true),
 * leadership regained, notifications flow again. */
static void test_server_restart(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    assert_int_equal(rec_open(&r, &loop, "listen-restart", KEY_RESTART), 0);
    assert_true(wait_for(&loop, is_up_leading, &r));

    assert_int_equal(server_script("stop"), 0);
    assert_true(wait_for(&loop, is_down, &r));
    assert_string_equal(r.seq, "CLlc");
    assert_false(r.leading);
    /* Retrying against a stopped server, paced by the backoff. */
    uint64_t before = store__listener_attempts(r.l);
    run_for(&loop, 1000);
    uint64_t during = store__listener_attempts(r.l) - before;
    assert_true(during >= 1 && during <= 6);
    assert_string_equal(r.seq, "CLlc");

    assert_int_equal(server_script("start"), 0);
    assert_true(wait_for(&loop, is_up_leading, &r));
    assert_string_equal(r.seq, "CLlcCL");

    sql("NOTIFY codehub, 'session abc'");
    r.want_payloads = 1;
    assert_true(wait_for(&loop, has_payloads, &r));
    assert_string_equal(r.payloads[0], "session abc");

    close_and_wait(&loop, &r);
    rec_free(&r);
    loop_finish(&loop);
}

static bool is_up_again(const void *arg)
{
    const struct rec *r = arg;
    return r->ups >= 2 && r->up;
}

/* A server that stops answering (its backend frozen with SIGSTOP: the TCP connection stays
 * open, only the deadline can tell) is noticed; the listener reconnects, cannot lead while
 * the frozen session still holds the lock, and leads again once that session ends. */
static void test_silent_server(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    assert_int_equal(rec_open(&r, &loop, "listen-silent", KEY_SILENT), 0);
    assert_true(wait_for(&loop, is_up_leading, &r));
    long pid = backend_pid("listen-silent");
    assert_true(pid > 0);

    assert_int_equal(kill((pid_t)pid, SIGSTOP), 0);
    bool lost = wait_for(&loop, is_down, &r);
    bool back = lost && wait_for(&loop, is_up_again, &r);
    /* The frozen session holds the lock: the new one must not lead. */
    if (back)
        run_for(&loop, 1500);
    bool led_meanwhile = r.leading;
    /* Thaw before asserting anything, so that a failure leaves no frozen backend behind. */
    kill((pid_t)pid, SIGCONT);
    assert_true(lost);
    assert_true(back);
    assert_false(led_meanwhile);
    assert_string_equal(r.seq, "CLlcC");

    /* The thawed backend finds its client gone and exits, which frees the lock. */
    assert_true(wait_for(&loop, is_up_leading, &r));
    assert_string_equal(r.seq, "CLlcCL");

    close_and_wait(&loop, &r);
    loop_finish(&loop);
}

/* Closing right after open (mid-handshake, or mid-lookup of a host name) reports nothing
 * and frees everything; `done` runs once, later. */
static void test_close_while_connecting(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    assert_int_equal(rec_open(&r, &loop, "listen-close-early", KEY_MISC), 0);
    close_and_wait(&loop, &r);
    assert_string_equal(r.seq, "");

    struct rec named = {0};
    const char *kw[] = {"dbname", "password", "host", NULL};
    const char *val[] = {g_url, g_password, "localhost", NULL};
    assert_int_equal(
        store__listener_open_params(&loop, kw, val, &events, &named, KEY_MISC, &named.l), 0);
    close_and_wait(&loop, &named);
    assert_string_equal(named.seq, "");

    /* NULL `done` is allowed. */
    struct rec quiet = {0};
    assert_int_equal(rec_open(&quiet, &loop, "listen-close-quiet", KEY_MISC), 0);
    store_listener_close(quiet.l, NULL, NULL);
    run_for(&loop, 200);
    assert_string_equal(quiet.seq, "");
    loop_finish(&loop);
}

/* Where the listener's defaults go: before the first "dbname", so that they override
 * defaults the caller put first (the store's pool sets its own keepalives there) but not
 * the URL's fields or keywords after the URL. application_name shows which value won. */
static void test_parameter_precedence(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec before = {0};
    const char *kw1[] = {"application_name", "dbname", "password", NULL};
    const char *val1[] = {"set-before-url", g_url, g_password, NULL};
    assert_int_equal(
        store__listener_open_params(&loop, kw1, val1, &events, &before, KEY_MISC, &before.l), 0);
    assert_true(wait_for(&loop, is_up, &before));
    assert_true(backend_pid("codehub-listener") > 0);
    assert_int_equal(backend_pid("set-before-url"), -1);
    close_and_wait(&loop, &before);

    struct rec in_url = {0};
    char url[320];
    snprintf(url, sizeof(url), "%s?application_name=set-in-url", g_url);
    const char *kw2[] = {"dbname", "password", NULL};
    const char *val2[] = {url, g_password, NULL};
    assert_int_equal(
        store__listener_open_params(&loop, kw2, val2, &events, &in_url, KEY_MISC, &in_url.l), 0);
    assert_true(wait_for(&loop, is_up, &in_url));
    assert_true(backend_pid("set-in-url") > 0);
    close_and_wait(&loop, &in_url);
    loop_finish(&loop);
}

/* Host names are looked up off the loop and every address is tried: a URL with two
 * hosts, the first on a closed port, both named "localhost" (which may resolve to ::1
 * first, where the server does not listen). */
static void test_host_names(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[256];
    snprintf(url, sizeof(url), "postgres://codehub@localhost:%d,localhost:%s/codehub",
             closed_port(), g_port);
    struct rec r = {0};
    const char *kw[] = {"dbname", "password", NULL};
    const char *val[] = {url, g_password, NULL};
    assert_int_equal(store__listener_open_params(&loop, kw, val, &events, &r, KEY_NAMES, &r.l), 0);
    assert_true(wait_for(&loop, is_up_leading, &r));
    sql("NOTIFY codehub, 'token 00ff'");
    r.want_payloads = 1;
    assert_true(wait_for(&loop, has_payloads, &r));
    assert_string_equal(r.payloads[0], "token 00ff");
    close_and_wait(&loop, &r);
    rec_free(&r);
    loop_finish(&loop);
}

/* Nothing listens on the port: the listener keeps retrying, paced by the backoff (100 ms
 * doubling, jittered down to half), reports nothing, and closes cleanly while backing off. */
static void test_refused_port(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char port[16];
    snprintf(port, sizeof(port), "%d", closed_port());
    struct rec r = {0};
    const char *kw[] = {"host", "port", "dbname", "user", "connect_timeout", NULL};
    const char *val[] = {"127.0.0.1", port, "codehub", "codehub", "", NULL};
    assert_int_equal(store__listener_open_params(&loop, kw, val, &events, &r, KEY_MISC, &r.l), 0);
    run_for(&loop, 1200);
    /* Attempts at 0 and after delays of at least 50, 100, 200, 400, 800 ms: at most 5 in
     * 1.2 s however fast the machine; at least 2 unless it is very slow. */
    uint64_t attempts = store__listener_attempts(r.l);
    assert_true(attempts >= 2);
    assert_true(attempts <= 5);
    assert_string_equal(r.seq, "");
    close_and_wait(&loop, &r);
    loop_finish(&loop);
}

/* Accepts, reads what the client sends first (libpq's SSLRequest), and hangs up: a clean
 * FIN, which the client sees as a readable socket and EOF, not as a socket error. */
struct rude_server {
    uv_tcp_t tcp;
    int accepted;
};

static void rude_closed(uv_handle_t *h)
{
    free(h);
}

static void rude_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    static char space[1024];
    *buf = uv_buf_init(space, sizeof(space));
}

static void rude_read(uv_stream_t *c, ssize_t nread, const uv_buf_t *buf)
{
    if (nread != 0)
        uv_close((uv_handle_t *)c, rude_closed);
}

static void rude_on_connection(uv_stream_t *server, int status)
{
    struct rude_server *s = server->data;
    if (status < 0)
        return;
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) != 0 ||
        uv_read_start((uv_stream_t *)c, rude_alloc, rude_read) != 0) {
        uv_close((uv_handle_t *)c, rude_closed);
        return;
    }
    s->accepted++;
}

/* Starts `s` on a free port of 127.0.0.1; returns the port. */
static int rude_start(uv_loop_t *loop, struct rude_server *s)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    assert_int_equal(uv_tcp_bind(&s->tcp, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 16, rude_on_connection), 0);
    int len = sizeof(a);
    assert_int_equal(uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

/* Something that accepts and hangs up (not PostgreSQL): every attempt reaches it, retries
 * are paced, nothing is reported. */
static void test_server_hangs_up(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rude_server s = {0};
    char port[16];
    snprintf(port, sizeof(port), "%d", rude_start(&loop, &s));

    struct rec r = {0};
    const char *kw[] = {"host", "port", "dbname", "user", "password", NULL};
    const char *val[] = {"127.0.0.1", port, "codehub", "codehub", "secret", NULL};
    assert_int_equal(store__listener_open_params(&loop, kw, val, &events, &r, KEY_MISC, &r.l), 0);
    run_for(&loop, 1200);
    uint64_t attempts = store__listener_attempts(r.l);
    assert_true(attempts >= 2);
    assert_true(attempts <= 5);
    /* The last attempt may still be on its way. */
    assert_true((uint64_t)s.accepted >= attempts - 1);
    assert_string_equal(r.seq, "");
    close_and_wait(&loop, &r);
    uv_close((uv_handle_t *)&s.tcp, NULL);
    loop_finish(&loop);
}

/* With target_session_attrs=prefer-standby libpq first looks for a standby: it completes
 * the handshake, finds the server is a primary, closes that socket and connects again on a
 * new one (usually with the same fd number), inside PQconnectPoll calls woken by a readable
 * socket, not by an error. The poll handle must follow onto the new socket, or the attempt
 * hangs until its 10 s deadline. */
static void test_socket_replaced_while_connecting(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    const char *kw[] = {"dbname", "password", "target_session_attrs", NULL};
    const char *val[] = {g_url, g_password, "prefer-standby", NULL};
    assert_int_equal(store__listener_open_params(&loop, kw, val, &events, &r, KEY_MISC, &r.l), 0);
    /* Well under the connect deadline, yet ample for two local handshakes. */
    assert_true(run_until(&loop, is_up, &r, 8000));
    assert_int_equal(store__listener_attempts(r.l), 1);
    close_and_wait(&loop, &r);
    loop_finish(&loop);
}

/* Closing from inside connection(true): no leader event follows. */
static void test_close_inside_connection_event(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    r.close_on_up = true;
    assert_int_equal(rec_open(&r, &loop, "listen-close-cb", KEY_MISC), 0);
    assert_true(wait_for(&loop, is_done, &r));
    run_for(&loop, 300);
    assert_string_equal(r.seq, "C");
    assert_int_equal(r.done_calls, 1);
    assert_int_equal(r.after_close, 0);
    loop_finish(&loop);
}

static bool is_closed_and_done(const void *arg)
{
    const struct rec *r = arg;
    return r->closed && r->done_calls > 0;
}

/* Closing from inside notify: the rest of the burst is not handed out. */
static void test_close_inside_notify(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    assert_int_equal(rec_open(&r, &loop, "listen-close-notify", KEY_MISC), 0);
    assert_true(wait_for(&loop, is_up, &r));
    r.close_on_notify = true;
    sql("SELECT pg_notify('codehub', 'server ' || g) FROM generate_series(1, 100) g");
    assert_true(wait_for(&loop, is_closed_and_done, &r));
    assert_int_equal(r.npayloads, 1);
    assert_string_equal(r.payloads[0], "server 1");
    assert_int_equal(r.after_close, 0);
    rec_free(&r);
    loop_finish(&loop);
}

/* Arguments that cannot work are refused at once, and nothing is allocated. */
static void test_bad_arguments(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct rec r = {0};
    const char *kw[] = {"dbname", NULL};
    const char *val[] = {"codehub", NULL};
    assert_int_equal(store__listener_open_params(NULL, kw, val, &events, &r, 1, &r.l), -EINVAL);
    assert_int_equal(store__listener_open_params(&loop, NULL, val, &events, &r, 1, &r.l), -EINVAL);
    assert_int_equal(store__listener_open_params(&loop, kw, NULL, &events, &r, 1, &r.l), -EINVAL);
    assert_int_equal(store__listener_open_params(&loop, kw, val, NULL, &r, 1, &r.l), -EINVAL);
    assert_int_equal(store__listener_open_params(&loop, kw, val, &events, &r, 1, NULL), -EINVAL);

    const char *bad_kw[] = {"dbname", "no_such_option", NULL};
    const char *bad_val[] = {"codehub", "1", NULL};
    assert_int_equal(store__listener_open_params(&loop, bad_kw, bad_val, &events, &r, 1, &r.l),
                     -EINVAL);

    const char *bad_url[] = {"postgres://codehub@[::1/codehub", NULL};
    assert_int_equal(store__listener_open_params(&loop, kw, bad_url, &events, &r, 1, &r.l),
                     -EINVAL);
    assert_null(r.l);
    loop_finish(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_notifications),
        cmocka_unit_test(test_one_leader),
        cmocka_unit_test(test_close_while_connecting),
        cmocka_unit_test(test_parameter_precedence),
        cmocka_unit_test(test_host_names),
        cmocka_unit_test(test_refused_port),
        cmocka_unit_test(test_server_hangs_up),
        cmocka_unit_test(test_socket_replaced_while_connecting),
        cmocka_unit_test(test_close_inside_connection_event),
        cmocka_unit_test(test_close_inside_notify),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_server_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* Tests for src/spawn/probe.c: the health probe both spawners poll with, over TCP and a
 * Unix socket, against real sockets: an answer, a refusal, nothing listening, silence, a
 * malformed answer, cancellation. A helper thread plays the server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spawn/probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct server {
    int lfd;
    const char *answer; /* NULL: accept, read, say nothing, keep the connection */
    char request[1024];
    atomic_bool got_request; /* request[] is complete (set by the server thread) */
    int held;
};

static void *serve_one(void *arg)
{
    struct server *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t n = 0;
    while (n < sizeof s->request - 1 && strstr(s->request, "\r\n\r\n") == NULL) {
        ssize_t k = recv(fd, s->request + n, sizeof s->request - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        s->request[n] = '\0';
    }
    atomic_store(&s->got_request, true);
    if (s->answer == NULL) {
        s->held = fd;
        return NULL;
    }
    if (send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL) < 0)
        perror("send");
    close(fd);
    return NULL;
}

static int tcp_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

struct outcome {
    int calls;
    int result;
};

static void on_result(void *data, int result)
{
    struct outcome *o = data;
    o->calls++;
    o->result = result;
}

/* Runs the loop until the probe's handles are closed (it frees itself). */
static void drain(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
}

static void probe_tcp_answer(const char *answer, int want)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server s = {.answer = answer, .held = -1};
    int port;
    s.lfd = tcp_listener(&port);
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &s);
    struct outcome o = {0};
    struct spawn_probe *p =
        spawn_probe_tcp(&loop, "127.0.0.1", port, "/healthz", 2000, on_result, &o);
    assert_non_null(p);
    assert_int_equal(o.calls, 0); /* never from inside the start call */
    drain(&loop);
    pthread_join(t, NULL);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, want);
    assert_non_null(strstr(s.request, "GET /healthz HTTP/1.1\r\n"));
    char host[64];
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\n", port);
    assert_non_null(strstr(s.request, host));
    close(s.lfd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_tcp_status(void **state)
{
    probe_tcp_answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200);
    probe_tcp_answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno", 503);
    /* Not HTTP at all. */
    probe_tcp_answer("SSH-2.0-OpenSSH_9.2\r\n", -EPROTO);
}

static void test_tcp_refused_and_bad_address(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port;
    int fd = tcp_listener(&port);
    close(fd); /* nothing listens there now */
    struct outcome o = {0};
    assert_non_null(spawn_probe_tcp(&loop, "127.0.0.1", port, "/healthz", 2000, on_result, &o));
    drain(&loop);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, UV_ECONNREFUSED);
    /* Not an address literal: no probe, no callback. */
    assert_null(spawn_probe_tcp(&loop, "localhost", port, "/healthz", 2000, on_result, &o));
    assert_null(spawn_probe_tcp(&loop, "10.0.0.300", port, "/healthz", 2000, on_result, &o));
    assert_int_equal(o.calls, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_tcp_silence_times_out(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server s = {.answer = NULL, .held = -1};
    int port;
    s.lfd = tcp_listener(&port);
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &s);
    struct outcome o = {0};
    assert_non_null(spawn_probe_tcp(&loop, "127.0.0.1", port, "/x", 200, on_result, &o));
    drain(&loop);
    pthread_join(t, NULL);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, -ETIMEDOUT);
    close(s.held);
    close(s.lfd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_unix(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char dir[] = "/tmp/codehub-probe-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[108];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    /* Nothing there yet. */
    struct outcome o = {0};
    spawn_probe_unix(&loop, path, "/healthz", 2000, on_result, &o);
    drain(&loop);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, UV_ENOENT);

    struct server s = {.answer = "HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", .held = -1};
    s.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(s.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s.lfd, 4), 0);
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &s);
    o = (struct outcome){0};
    spawn_probe_unix(&loop, path, "/healthz", 2000, on_result, &o);
    drain(&loop);
    pthread_join(t, NULL);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, 302);
    assert_non_null(strstr(s.request, "Host: localhost\r\n"));
    close(s.lfd);
    unlink(path);
    rmdir(dir);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_cancel(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct server s = {.answer = NULL, .held = -1};
    int port;
    s.lfd = tcp_listener(&port);
    pthread_t t;
    pthread_create(&t, NULL, serve_one, &s);
    struct outcome o = {0};
    struct spawn_probe *p = spawn_probe_tcp(&loop, "127.0.0.1", port, "/", 5000, on_result, &o);
    /* Let it connect and send, then drop it: no callback, everything closed. */
    for (int i = 0; i < 20 && !atomic_load(&s.got_request); i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    spawn_probe_cancel(p);
    drain(&loop);
    pthread_join(t, NULL);
    assert_int_equal(o.calls, 0);
    if (s.held >= 0)
        close(s.held);
    close(s.lfd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_status),
        cmocka_unit_test(test_tcp_refused_and_bad_address),
        cmocka_unit_test(test_tcp_silence_times_out),
        cmocka_unit_test(test_unix),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

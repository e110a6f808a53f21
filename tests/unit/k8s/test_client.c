/* Tests for src/k8s/client.c through its public header, end to end against the fake
 * apiserver (plain HTTP on 127.0.0.1, same loop): JSON in and out, error statuses and their
 * messages, raw bodies, timeouts, refused connections, keep-alive reuse, cancellation and
 * closing from every place a caller may do it, streams (data, non-2xx, consumer stop,
 * cancel and new requests from inside the data callback), bearer-token rotation (by the
 * check interval and after a 401) and the body cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "k8s/client.h"
#include "k8s/kubeconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake_apiserver.h"

/* ---- fixture ---- */

struct seen {
    char method[16];
    char *url;
    char *authorization;
    char *content_type;
    char *accept;
    char *body;
};

struct result {
    int calls;
    int status;
    json_t *body;
    char *error;
};

struct fx {
    uv_loop_t loop;
    uv_timer_t tick;
    struct fake_server srv;
    struct k8s_client *client;
    char dir[64];
    char *token_path;

    /* what the handler does */
    int mode;
    int respond_status;
    const char *respond_body;
    const char *respond_type;
    struct fake_conn *held; /* a request left unanswered, or a stream */
    struct fake_conn *held2;
    const char *good_token; /* MODE_AUTH: the only token accepted */

    struct seen seen[16];
    int nseen;

    struct result res[8];
    int closed;
    int stream_calls;
    struct buf stream_data;
    int stream_stop_after; /* on_data returns -1 on this call (1-based), 0: never */
    bool cancel_in_data;
    bool request_in_data;
    struct k8s_request *req; /* for cancel from callbacks */
    struct k8s_request *other;
};

enum { MODE_RESPOND, MODE_HOLD, MODE_STREAM, MODE_AUTH };

static void record(struct fx *f, struct fake_request *req)
{
    if (f->nseen >= 16)
        return;
    struct seen *s = &f->seen[f->nseen++];
    snprintf(s->method, sizeof(s->method), "%s", req->method);
    s->url = xstrdup(req->url ? req->url : "");
    s->authorization = req->authorization ? xstrdup(req->authorization) : NULL;
    s->content_type = req->content_type ? xstrdup(req->content_type) : NULL;
    s->accept = req->accept ? xstrdup(req->accept) : NULL;
    s->body = xstrndup(req->body.data ? req->body.data : "", req->body.len);
}

static void handler(void *data, struct fake_request *req)
{
    struct fx *f = data;
    record(f, req);
    switch (f->mode) {
    case MODE_RESPOND:
        fake_respond(req->conn, f->respond_status, f->respond_type, f->respond_body);
        break;
    case MODE_HOLD:
        if (f->held == NULL)
            fake_conn_hold(req->conn, &f->held);
        else
            fake_conn_hold(req->conn, &f->held2);
        break;
    case MODE_STREAM:
        fake_stream_begin(req->conn);
        fake_conn_hold(req->conn, &f->held);
        break;
    case MODE_AUTH:
        if (req->authorization && f->good_token &&
            strcmp(req->authorization + strlen("Bearer "), f->good_token) == 0)
            fake_respond_json(req->conn, 200, "{\"ok\":true}");
        else
            fake_respond_status(req->conn, 401, "Unauthorized", "Unauthorized");
        break;
    }
}

static void write_file(const char *path, const char *text)
{
    /* Written aside and renamed into place, the way kubelet swaps projected tokens. */
    char *tmp = xasprintf("%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(rename(tmp, path), 0);
    free(tmp);
}

static struct k8s_client *new_client(struct fx *f, const struct k8s_client_options *opt,
                                     bool token_file)
{
    struct k8s_config cfg = {0};
    cfg.server = fake_url(&f->srv);
    cfg.namespace = "ns1";
    cfg.allow_http = true;
    if (token_file)
        cfg.token_file = f->token_path;
    else
        cfg.token = "static-token";
    char *err = NULL;
    struct k8s_client *c = k8s_client_new(&f->loop, &cfg, opt, &err);
    assert_null(err);
    assert_non_null(c);
    free(cfg.server);
    return c;
}

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    assert_int_equal(fake_start(&f->srv, &f->loop, handler, f), 0);
    snprintf(f->dir, sizeof(f->dir), "/tmp/k8s-client-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->token_path = xasprintf("%s/token", f->dir);
    write_file(f->token_path, "token-one\n");
    f->mode = MODE_RESPOND;
    f->respond_status = 200;
    f->respond_type = "application/json";
    f->respond_body = "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}";
    *state = f;
    return 0;
}

static void on_closed(void *data)
{
    struct fx *f = data;
    f->closed++;
}

static bool is_closed(void *arg)
{
    struct fx *f = arg;
    return f->closed > 0;
}

static bool server_down(void *arg)
{
    struct fx *f = arg;
    return f->srv.open == 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->client) {
        k8s_client_close(f->client, on_closed, f);
        assert_int_equal(f->closed, 0); /* never from inside close */
        assert_true(run_until(&f->loop, &f->tick, is_closed, f, 2000));
    }
    fake_stop(&f->srv);
    assert_true(run_until(&f->loop, &f->tick, server_down, f, 2000));
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < f->nseen; i++) {
        free(f->seen[i].url);
        free(f->seen[i].authorization);
        free(f->seen[i].content_type);
        free(f->seen[i].accept);
        free(f->seen[i].body);
    }
    for (int i = 0; i < 8; i++) {
        json_decref(f->res[i].body);
        free(f->res[i].error);
    }
    buf_free(&f->stream_data);
    unlink(f->token_path);
    rmdir(f->dir);
    free(f->token_path);
    free(f);
    return 0;
}

/* The callback data is &f->res[i]; the fixture is found from it. */
struct slot {
    struct fx *f;
    int i;
};

static struct slot slots[8];

static void *slot(struct fx *f, int i)
{
    slots[i].f = f;
    slots[i].i = i;
    return &slots[i];
}

static void on_response(void *data, int status, json_t *body, const char *error)
{
    struct slot *s = data;
    struct result *r = &s->f->res[s->i];
    r->calls++;
    r->status = status;
    json_decref(r->body);
    r->body = json_incref(body);
    free(r->error);
    r->error = error ? xstrdup(error) : NULL;
}

static bool done0(void *arg)
{
    struct fx *f = arg;
    return f->res[0].calls > 0;
}

static bool done01(void *arg)
{
    struct fx *f = arg;
    return f->res[0].calls > 0 && f->res[1].calls > 0;
}

/* ---- plain requests ---- */

static void test_get_json(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    assert_string_equal(k8s_client_namespace(f->client), "ns1");
    struct k8s_request *r = k8s_client_request(f->client, "GET", "/api/v1/namespaces/ns1/pods/a",
                                               NULL, on_response, slot(f, 0));
    assert_non_null(r);
    assert_int_equal(f->res[0].calls, 0); /* never from inside the call */
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].calls, 1);
    assert_int_equal(f->res[0].status, 200);
    assert_null(f->res[0].error);
    assert_non_null(f->res[0].body);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(f->res[0].body, "metadata"), "name")),
        "a");
    assert_int_equal(f->nseen, 1);
    assert_string_equal(f->seen[0].method, "GET");
    assert_string_equal(f->seen[0].url, "/api/v1/namespaces/ns1/pods/a");
    assert_string_equal(f->seen[0].authorization, "Bearer static-token");
    assert_string_equal(f->seen[0].accept, "application/json");
    assert_null(f->seen[0].content_type);
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.active, 0);
}

static void test_post_json_body(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_status = 201;
    json_t *body = json_pack("{s:s, s:{s:s}}", "kind", "Pod", "metadata", "name", "b");
    struct k8s_request *r = k8s_client_request(f->client, "POST", "/api/v1/namespaces/ns1/pods",
                                               body, on_response, slot(f, 0));
    json_decref(body); /* serialised already */
    assert_non_null(r);
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 201);
    assert_null(f->res[0].error);
    assert_string_equal(f->seen[0].method, "POST");
    assert_string_equal(f->seen[0].content_type, "application/json");
    json_t *sent = json_loads(f->seen[0].body, 0, NULL);
    assert_non_null(sent);
    assert_string_equal(json_string_value(json_object_get(sent, "kind")), "Pod");
    json_decref(sent);
}

static void test_raw_merge_patch(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    const char patch[] = "{\"metadata\":{\"labels\":{\"x\":null}}}";
    assert_non_null(k8s_client_request_raw(f->client, "PATCH", "/api/v1/namespaces/ns1/pods/a",
                                           "application/merge-patch+json", patch, strlen(patch),
                                           on_response, slot(f, 0)));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_null(f->res[0].error);
    assert_string_equal(f->seen[0].method, "PATCH");
    assert_string_equal(f->seen[0].content_type, "application/merge-patch+json");
    assert_string_equal(f->seen[0].body, patch);
}

static void test_delete_without_body(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_body = "{\"kind\":\"Status\",\"status\":\"Success\"}";
    assert_non_null(k8s_client_request(f->client, "DELETE", "/api/v1/namespaces/ns1/pods/a", NULL,
                                       on_response, slot(f, 0)));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_null(f->res[0].error);
    assert_string_equal(f->seen[0].method, "DELETE");
    assert_string_equal(f->seen[0].body, "");
}

static void test_error_status_message(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_status = 404;
    f->respond_body = "{\"kind\":\"Status\",\"message\":\"pods \\\"x\\\" not found\","
                      "\"reason\":\"NotFound\",\"code\":404}";
    k8s_client_request(f->client, "GET", "/api/v1/namespaces/ns1/pods/x", NULL, on_response,
                       slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 404);
    assert_non_null(f->res[0].body); /* the Status object comes with the error */
    assert_string_equal(json_string_value(json_object_get(f->res[0].body, "reason")), "NotFound");
    assert_string_equal(f->res[0].error, "HTTP 404: pods \"x\" not found");
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.failures, 1);
}

static void test_error_without_json(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_status = 500;
    f->respond_type = "text/plain";
    f->respond_body = "oops";
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 500);
    assert_null(f->res[0].body);
    assert_string_equal(f->res[0].error, "HTTP 500");
}

static void test_invalid_json_on_success(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_body = "{\"a\":1,";
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    f->respond_body = "{\"a\":1,\"a\":2}"; /* duplicate keys are refused too */
    k8s_client_request(f->client, "GET", "/y", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, done01, f, 2000));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(f->res[i].status, 200);
        assert_null(f->res[i].body);
        assert_non_null(f->res[i].error);
        assert_non_null(strstr(f->res[i].error, "invalid JSON in response"));
    }
    assert_non_null(strstr(f->res[1].error, "duplicate"));
}

static void test_empty_success_body(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_body = NULL;
    k8s_client_request(f->client, "DELETE", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 200);
    assert_null(f->res[0].body);
    assert_null(f->res[0].error);
}

static void test_timeout(void **state)
{
    struct fx *f = *state;
    struct k8s_client_options opt = {.request_timeout_ms = 200};
    f->client = new_client(f, &opt, false);
    f->mode = MODE_HOLD;
    uint64_t t0 = fake_now_ms();
    k8s_client_request(f->client, "GET", "/slow", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 3000));
    uint64_t took = fake_now_ms() - t0;
    assert_true(took >= 190);
    assert_true(took < 2000);
    assert_int_equal(f->res[0].status, 0);
    assert_null(f->res[0].body);
    assert_non_null(strstr(f->res[0].error, "timed out"));
    assert_non_null(strstr(f->res[0].error, "the API server is unreachable"));
}

static void test_connection_refused(void **state)
{
    struct fx *f = *state;
    /* A port that was just free: bind one, note it, close it. */
    uv_tcp_t t;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&f->loop, &t);
    uv_tcp_bind(&t, (const struct sockaddr *)&a, 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);

    struct k8s_config cfg = {0};
    cfg.server = xasprintf("http://127.0.0.1:%d", port);
    cfg.allow_http = true;
    char *err = NULL;
    f->client = k8s_client_new(&f->loop, &cfg, NULL, &err);
    free(cfg.server);
    assert_non_null(f->client);
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 3000));
    assert_int_equal(f->res[0].status, 0);
    assert_non_null(f->res[0].error);
    /* Users read this in a failed spawn: what happened, not curl's socket detail alone. */
    assert_non_null(strstr(f->res[0].error, "the API server is unreachable ("));
    assert_null(f->res[0].body);
}

static void test_https_to_plain_server_fails(void **state)
{
    struct fx *f = *state;
    /* TLS against a plain-HTTP port: a handshake error, never a fallback to plain text. */
    struct k8s_config cfg = {0};
    cfg.server = xasprintf("https://127.0.0.1:%d", f->srv.port);
    char *err = NULL;
    f->client = k8s_client_new(&f->loop, &cfg, NULL, &err);
    free(cfg.server);
    assert_non_null(f->client);
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 3000));
    assert_int_equal(f->res[0].status, 0);
    assert_non_null(f->res[0].error);
}

static void test_new_refuses(void **state)
{
    struct fx *f = *state;
    struct k8s_config cfg = {0};
    char *err = NULL;
    cfg.server = "http://127.0.0.1:1";
    assert_null(k8s_client_new(&f->loop, &cfg, NULL, &err));
    assert_non_null(strstr(err, "only https://"));
    free(err);
    cfg.server = "ftp://x";
    cfg.allow_http = true;
    assert_null(k8s_client_new(&f->loop, &cfg, NULL, &err));
    free(err);
    cfg.server = NULL;
    assert_null(k8s_client_new(&f->loop, &cfg, NULL, &err));
    free(err);
    cfg.server = "https://127.0.0.1:1";
    cfg.token_file = "/nonexistent/token";
    assert_null(k8s_client_new(&f->loop, &cfg, NULL, &err));
    assert_non_null(strstr(err, "/nonexistent/token"));
    free(err);
}

static void test_bad_request_args(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    assert_null(k8s_client_request(f->client, "GET", "no-slash", NULL, on_response, NULL));
    assert_null(k8s_client_request(f->client, "GET", "/a b", NULL, on_response, NULL));
    assert_null(k8s_client_request(f->client, "GET", "/a\r\nX: y", NULL, on_response, NULL));
    assert_null(k8s_client_request(f->client, "get", "/a", NULL, on_response, NULL));
    assert_null(k8s_client_request(f->client, "GE T", "/a", NULL, on_response, NULL));
    assert_null(k8s_client_request(f->client, "GET", "/a", NULL, NULL, NULL));
    assert_null(k8s_client_stream(f->client, "/a", NULL, on_response, NULL));
    run_for(&f->loop, &f->tick, 20);
    assert_int_equal(f->nseen, 0);
}

static void test_keepalive_reuse(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    for (int i = 0; i < 3; i++) {
        f->res[0].calls = 0;
        k8s_client_request(f->client, "GET", "/again", NULL, on_response, slot(f, 0));
        assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
        assert_null(f->res[0].error);
    }
    assert_int_equal(f->srv.requests, 3);
    assert_int_equal(f->srv.connections, 1);
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.sockets_opened, 1);
}

static void test_reconnect_after_server_closes(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    k8s_client_request(f->client, "GET", "/1", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    /* The server drops the idle keep-alive connection; the next request opens another. */
    for (struct fake_conn *c = f->srv.conns; c; c = c->next)
        fake_conn_drop(c);
    run_for(&f->loop, &f->tick, 30);
    k8s_client_request(f->client, "GET", "/2", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, done01, f, 2000));
    assert_null(f->res[1].error);
    assert_int_equal(f->srv.connections, 2);
}

static void test_many_parallel(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    for (int i = 0; i < 8; i++)
        assert_non_null(k8s_client_request(f->client, "GET", "/p", NULL, on_response, slot(f, i)));
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.active, 8);
    for (int i = 0; i < 8; i++) {
        while (f->res[i].calls == 0)
            uv_run(&f->loop, UV_RUN_ONCE);
        assert_null(f->res[i].error);
    }
    assert_int_equal(f->srv.requests, 8);
}

/* ---- cancel and close ---- */

static bool held_one(void *arg)
{
    struct fx *f = arg;
    return f->held != NULL;
}

static bool held_two(void *arg)
{
    struct fx *f = arg;
    return f->held != NULL && f->held2 != NULL;
}

static bool held_gone(void *arg)
{
    struct fx *f = arg;
    return f->held == NULL && f->held2 == NULL;
}

static bool done1(void *arg)
{
    struct fx *f = arg;
    return f->res[1].calls > 0;
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_HOLD;
    struct k8s_request *r =
        k8s_client_request(f->client, "GET", "/held", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, held_one, f, 2000));
    k8s_request_cancel(r);
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.active, 0);
    /* The half-answered connection was closed, not put back for reuse. */
    assert_true(run_until(&f->loop, &f->tick, held_gone, f, 2000));
    run_for(&f->loop, &f->tick, 30);
    assert_int_equal(f->res[0].calls, 0);
}

static void cancel_other(void *data, int status, json_t *body, const char *error)
{
    struct slot *s = data;
    struct fx *f = s->f;
    on_response(data, status, body, error);
    k8s_request_cancel(f->other);
    f->other = NULL;
    /* A request started from a callback goes out too. */
    assert_non_null(
        k8s_client_request(f->client, "GET", "/from-callback", NULL, on_response, slot(f, 2)));
}

static bool done2(void *arg)
{
    struct fx *f = arg;
    return f->res[2].calls > 0;
}

static void test_cancel_and_request_from_callback(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_HOLD;
    k8s_client_request(f->client, "GET", "/first", NULL, cancel_other, slot(f, 0));
    f->other = k8s_client_request(f->client, "GET", "/second", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, held_two, f, 2000));
    f->mode = MODE_RESPOND;
    /* Answer /first only; its callback cancels /second. */
    struct fake_conn *first = strcmp(f->seen[0].url, "/first") == 0 ? f->held : f->held2;
    fake_respond_json(first, 200, "{}");
    assert_true(run_until(&f->loop, &f->tick, done2, f, 2000));
    assert_int_equal(f->res[0].calls, 1);
    assert_int_equal(f->res[1].calls, 0);
    assert_null(f->res[2].error);
    assert_string_equal(f->seen[2].url, "/from-callback");
}

static void test_close_with_requests_in_flight(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_HOLD;
    k8s_client_request(f->client, "GET", "/a", NULL, on_response, slot(f, 0));
    k8s_client_request(f->client, "GET", "/b", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, held_two, f, 2000));
    k8s_client_close(f->client, on_closed, f);
    f->client = NULL;
    assert_int_equal(f->closed, 0);
    assert_true(run_until(&f->loop, &f->tick, is_closed, f, 2000));
    assert_int_equal(f->closed, 1);
    assert_int_equal(f->res[0].calls, 0);
    assert_int_equal(f->res[1].calls, 0);
    /* The connections were closed by the client. */
    assert_true(run_until(&f->loop, &f->tick, held_gone, f, 2000));
}

static void close_in_callback(void *data, int status, json_t *body, const char *error)
{
    struct slot *s = data;
    struct fx *f = s->f;
    on_response(data, status, body, error);
    k8s_client_close(f->client, on_closed, f);
    f->client = NULL;
    assert_int_equal(f->closed, 0);
}

static void test_close_inside_callback(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    k8s_client_request(f->client, "GET", "/a", NULL, close_in_callback, slot(f, 0));
    /* A second request still in flight when the client closes is cancelled. */
    k8s_client_request(f->client, "GET", "/b", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, is_closed, f, 2000));
    assert_int_equal(f->res[0].calls, 1);
    assert_true(f->res[1].calls <= 1); /* it may have finished first */
}

static void test_close_idle(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    k8s_client_request(f->client, "GET", "/a", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    /* teardown closes it with its idle keep-alive connection */
}

/* ---- streams ---- */

static int on_data(void *data, const char *bytes, size_t len)
{
    struct slot *s = data;
    struct fx *f = s->f;
    f->stream_calls++;
    buf_append(&f->stream_data, bytes, len);
    if (f->request_in_data) {
        f->request_in_data = false;
        assert_non_null(
            k8s_client_request(f->client, "GET", "/from-data", NULL, on_response, slot(f, 1)));
    }
    if (f->cancel_in_data) {
        k8s_request_cancel(f->req);
        f->req = NULL;
    }
    if (f->stream_stop_after && f->stream_calls >= f->stream_stop_after)
        return -1;
    return 0;
}

static bool got_bytes(void *arg)
{
    struct fx *f = arg;
    return f->stream_data.len >= 6;
}

static void test_stream(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_STREAM;
    assert_non_null(k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0)));
    assert_true(run_until(&f->loop, &f->tick, held_one, f, 2000));
    fake_stream_send(f->held, "abc", 3);
    fake_stream_send(f->held, "def", 3);
    assert_true(run_until(&f->loop, &f->tick, got_bytes, f, 2000));
    assert_int_equal(f->res[0].calls, 0);
    assert_memory_equal(f->stream_data.data, "abcdef", 6);
    fake_stream_end(f->held);
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 200);
    assert_null(f->res[0].body);
    assert_null(f->res[0].error);
}

static void test_stream_no_timeout(void **state)
{
    struct fx *f = *state;
    struct k8s_client_options opt = {.request_timeout_ms = 100};
    f->client = new_client(f, &opt, false);
    f->mode = MODE_STREAM;
    k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0));
    run_for(&f->loop, &f->tick, 300);
    assert_int_equal(f->res[0].calls, 0); /* ordinary timeouts do not apply to streams */
    assert_non_null(f->held);
}

static void test_stream_dropped(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_STREAM;
    k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, held_one, f, 2000));
    fake_stream_send(f->held, "abcdef", 6);
    assert_true(run_until(&f->loop, &f->tick, got_bytes, f, 2000));
    fake_conn_drop(f->held);
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 200); /* the head came */
    assert_non_null(f->res[0].error);
}

static void test_stream_error_status(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->respond_status = 403;
    f->respond_body = "{\"kind\":\"Status\",\"message\":\"forbidden\",\"code\":403}";
    k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->stream_calls, 0);
    assert_int_equal(f->res[0].status, 403);
    assert_non_null(f->res[0].body);
    assert_string_equal(f->res[0].error, "HTTP 403: forbidden");
}

static void test_stream_consumer_stop(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_STREAM;
    f->stream_stop_after = 1;
    k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, held_one, f, 2000));
    fake_stream_send(f->held, "abc", 3);
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->stream_calls, 1);
    assert_string_equal(f->res[0].error, "stream stopped by the consumer");
}

static void test_stream_cancel_inside_data(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_STREAM;
    f->cancel_in_data = true;
    f->request_in_data = true;
    f->req = k8s_client_stream(f->client, "/watch", on_data, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, held_one, f, 2000));
    f->mode = MODE_RESPOND;
    fake_stream_send(f->held, "abc", 3);
    /* The request started inside on_data goes out once curl has returned. */
    assert_true(run_until(&f->loop, &f->tick, done1, f, 2000));
    assert_null(f->res[1].error);
    run_for(&f->loop, &f->tick, 30);
    assert_int_equal(f->stream_calls, 1);
    assert_int_equal(f->res[0].calls, 0); /* cancelled: never called back */
}

/* ---- tokens ---- */

static bool done_n(struct fx *f, int n)
{
    return f->res[n].calls > 0;
}

static void test_token_rotation_by_interval(void **state)
{
    struct fx *f = *state;
    struct k8s_client_options opt = {.token_check_ms = 50};
    f->client = new_client(f, &opt, true);
    k8s_client_request(f->client, "GET", "/1", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_string_equal(f->seen[0].authorization, "Bearer token-one");

    write_file(f->token_path, "  token-two \n");
    /* Within the interval the file is not looked at. */
    k8s_client_request(f->client, "GET", "/2", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, done01, f, 2000));
    assert_string_equal(f->seen[1].authorization, "Bearer token-one");

    run_for(&f->loop, &f->tick, 80);
    k8s_client_request(f->client, "GET", "/3", NULL, on_response, slot(f, 2));
    while (!done_n(f, 2))
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_string_equal(f->seen[2].authorization, "Bearer token-two");
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.token_reloads, 1);

    /* A token file that turns unreadable keeps the last good token. */
    unlink(f->token_path);
    run_for(&f->loop, &f->tick, 80);
    k8s_client_request(f->client, "GET", "/4", NULL, on_response, slot(f, 3));
    while (!done_n(f, 3))
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_string_equal(f->seen[3].authorization, "Bearer token-two");
}

static void test_token_reload_on_401(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, true); /* default interval: 60 s */
    f->mode = MODE_AUTH;
    f->good_token = "token-two";
    write_file(f->token_path, "token-two\n");
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    /* Sent with the old token, refused, re-read, sent again: the caller sees one 200. */
    assert_int_equal(f->res[0].calls, 1);
    assert_int_equal(f->res[0].status, 200);
    assert_null(f->res[0].error);
    assert_int_equal(f->nseen, 2);
    assert_string_equal(f->seen[0].authorization, "Bearer token-one");
    assert_string_equal(f->seen[1].authorization, "Bearer token-two");
    struct k8s_client_stats st;
    k8s_client_stats_get(f->client, &st);
    assert_int_equal(st.retries_401, 1);
    assert_int_equal(st.token_reloads, 1);

    /* A 401 with an unchanged token is the caller's: no retry loop. */
    f->good_token = "something-else";
    k8s_client_request(f->client, "GET", "/y", NULL, on_response, slot(f, 1));
    assert_true(run_until(&f->loop, &f->tick, done01, f, 2000));
    assert_int_equal(f->res[1].status, 401);
    assert_string_equal(f->res[1].error, "HTTP 401: Unauthorized");
    assert_int_equal(f->nseen, 3);
}

static void test_static_token_401_not_retried(void **state)
{
    struct fx *f = *state;
    f->client = new_client(f, NULL, false);
    f->mode = MODE_AUTH;
    f->good_token = "nope";
    k8s_client_request(f->client, "GET", "/x", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 401);
    assert_int_equal(f->nseen, 1);
}

/* ---- limits and helpers ---- */

static void test_body_cap(void **state)
{
    struct fx *f = *state;
    struct k8s_client_options opt = {.max_body = 100};
    f->client = new_client(f, &opt, false);
    char big[1001];
    memset(big, 'x', 1000);
    big[0] = '"';
    big[999] = '"';
    big[1000] = '\0';
    f->respond_body = big;
    k8s_client_request(f->client, "GET", "/big", NULL, on_response, slot(f, 0));
    assert_true(run_until(&f->loop, &f->tick, done0, f, 2000));
    assert_int_equal(f->res[0].status, 0);
    assert_null(f->res[0].body);
    assert_non_null(strstr(f->res[0].error, "larger than 100 bytes"));
}

static void test_query_append(void **state)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, "/api/v1/pods");
    k8s_query_append(&b, "labelSelector", "app=codehub,user in (a b)");
    k8s_query_append(&b, "limit", "500");
    k8s_query_append(&b, "continue", "eyJ2Ijo+/=~._-");
    assert_string_equal(b.data, "/api/v1/pods?labelSelector=app%3Dcodehub%2Cuser%20in%20%28a%20b"
                                "%29&limit=500&continue=eyJ2Ijo%2B%2F%3D~._-");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_json_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_merge_patch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_without_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_status_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_without_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_json_on_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_success_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_to_plain_server_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_request_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_server_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_parallel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_request_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_requests_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_no_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_error_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_consumer_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cancel_inside_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_rotation_by_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_reload_on_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_token_401_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_cap, setup, teardown),
        cmocka_unit_test(test_query_append),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

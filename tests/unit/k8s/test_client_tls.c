/* TLS tests for src/k8s/client.c: the client against `openssl s_server` on 127.0.0.1 with
 * a throw-away CA, a server certificate for IP 127.0.0.1 and a required client certificate.
 * They check that inline PEM (CURLOPT_*_BLOB) and files both work for the CA, the client
 * certificate and its key, and that verification really happens: an unknown CA, a host name
 * the certificate does not name, or no client certificate all fail the handshake.
 * Skipped when the openssl command is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "k8s/client.h"
#include "k8s/kubeconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct tls {
    char dir[64];
    int port;
    pid_t server;
};

static struct tls T;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    struct buf cmd = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&cmd, fmt, ap);
    va_end(ap);
    buf_append_str(&cmd, " >/dev/null 2>&1");
    int r = system(cmd.data);
    buf_free(&cmd);
    return r;
}

static char *path(const char *name)
{
    return xasprintf("%s/%s", T.dir, name);
}

/* A CA, and a certificate it signs for `name` with extensions `ext`. */
static void make_certs(void)
{
    const char *d = T.dir;
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    assert_int_equal(sh("cd %s && openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 "
                        "-subj /CN=codehub-test-ca",
                        d, ec),
                     0);
    assert_int_equal(sh("cd %s && openssl req -x509 %s -keyout other.key -out other.crt "
                        "-days 2 -subj /CN=someone-else",
                        d, ec),
                     0);
    char *server_ext = path("server.ext");
    FILE *fp = fopen(server_ext, "w");
    free(server_ext);
    assert_non_null(fp);
    fputs("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", fp);
    fclose(fp);
    char *client_ext = path("client.ext");
    fp = fopen(client_ext, "w");
    free(client_ext);
    assert_non_null(fp);
    fputs("extendedKeyUsage=clientAuth\n", fp);
    fclose(fp);
    const char *who[] = {"server", "client"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sh("cd %s && openssl req %s -keyout %s.key -out %s.csr -subj /CN=%s", d,
                            ec, who[i], who[i], i == 0 ? "127.0.0.1" : "codehub"),
                         0);
        assert_int_equal(sh("cd %s && openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key "
                            "-CAcreateserial -out %s.crt -days 2 -extfile %s.ext",
                            d, who[i], who[i], who[i]),
                         0);
    }
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static int group_setup(void **state)
{
    memset(&T, 0, sizeof(T));
    if (sh("command -v openssl") != 0) {
        /* scripts/deps.sh installs it: a missing tool fails, it does not skip. */
        print_error("the openssl command is missing (make deps installs it)\n");
        return -1;
    }
    snprintf(T.dir, sizeof(T.dir), "/tmp/k8s-tls-XXXXXX");
    assert_non_null(mkdtemp(T.dir));
    make_certs();
    T.port = free_port();
    char accept[32];
    snprintf(accept, sizeof(accept), "127.0.0.1:%d", T.port);
    char *cert = path("server.crt"), *key = path("server.key"), *ca = path("ca.crt");
    char *argv[] = {"openssl", "s_server", "-quiet", "-accept", accept, "-cert", cert, "-key",
                    key,       "-CAfile",  ca,       "-Verify", "1",    "-www",  NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    assert_int_equal(posix_spawnp(&T.server, "openssl", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    free(cert);
    free(key);
    free(ca);
    for (int i = 0; i < 300 && !port_open(T.port); i++)
        usleep(10000);
    assert_true(port_open(T.port));
    return 0;
}

static int group_teardown(void **state)
{
    if (T.server <= 0)
        return 0;
    kill(T.server, SIGTERM);
    waitpid(T.server, NULL, 0);
    assert_int_equal(sh("rm -rf '%s'", T.dir), 0);
    return 0;
}

static void read_blob(const char *name, struct k8s_blob *b)
{
    char *p = path(name);
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    struct buf data = BUF_INIT;
    char chunk[4096];
    size_t n;
    for (;;) {
        n = fread(chunk, 1, sizeof(chunk), fp);
        buf_append(&data, chunk, n);
        if (n < sizeof(chunk))
            break;
    }
    fclose(fp);
    free(p);
    b->len = data.len;
    b->data = (unsigned char *)buf_steal(&data);
}

struct outcome {
    int calls;
    int status;
    char *error;
    int closed;
};

static void on_done(void *data, int status, json_t *body, const char *error)
{
    struct outcome *o = data;
    o->calls++;
    o->status = status;
    o->error = error ? xstrdup(error) : NULL;
}

static void on_closed(void *data)
{
    ((struct outcome *)data)->closed = 1;
}

/* Runs one GET / with `cfg` and returns what came back (caller frees o->error). */
static struct outcome fetch(struct k8s_config *cfg)
{
    uv_loop_t loop;
    struct outcome o = {0};
    char *err = NULL;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct k8s_client_options opt = {.request_timeout_ms = 5000};
    struct k8s_client *c = k8s_client_new(&loop, cfg, &opt, &err);
    assert_null(err);
    assert_non_null(c);
    assert_non_null(k8s_client_request(c, "GET", "/", NULL, on_done, &o));
    while (o.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    k8s_client_close(c, on_closed, &o);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    return o;
}

static struct k8s_config *base(const char *host)
{
    struct k8s_config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->server = xasprintf("https://%s:%d", host, T.port);
    cfg->namespace = xstrdup("default");
    return cfg;
}

/* s_server -www answers 200 with an HTML page: the handshake and the request went through,
 * and the body is (rightly) not accepted as JSON. */
static void assert_reached(struct outcome *o)
{
    assert_int_equal(o->status, 200);
    assert_non_null(o->error);
    assert_non_null(strstr(o->error, "invalid JSON"));
    free(o->error);
}

static void assert_refused(struct outcome *o)
{
    assert_int_equal(o->status, 0);
    assert_non_null(o->error);
    free(o->error);
}

static void test_inline_blobs(void **state)
{
    struct k8s_config *cfg = base("127.0.0.1");
    read_blob("ca.crt", &cfg->ca_data);
    read_blob("client.crt", &cfg->cert_data);
    read_blob("client.key", &cfg->key_data);
    struct outcome o = fetch(cfg);
    assert_reached(&o);
    k8s_config_free(cfg);
}

static void test_files(void **state)
{
    struct k8s_config *cfg = base("127.0.0.1");
    cfg->ca_file = path("ca.crt");
    cfg->cert_file = path("client.crt");
    cfg->key_file = path("client.key");
    struct outcome o = fetch(cfg);
    assert_reached(&o);
    k8s_config_free(cfg);
}

static void test_unknown_ca_refused(void **state)
{
    struct k8s_config *cfg = base("127.0.0.1");
    read_blob("other.crt", &cfg->ca_data);
    read_blob("client.crt", &cfg->cert_data);
    read_blob("client.key", &cfg->key_data);
    struct outcome o = fetch(cfg);
    assert_non_null(strstr(o.error, "certificate"));
    assert_refused(&o);
    k8s_config_free(cfg);
}

static void test_wrong_host_name_refused(void **state)
{
    /* "localhost" reaches the same server, but its certificate names only 127.0.0.1. */
    struct k8s_config *cfg = base("localhost");
    read_blob("ca.crt", &cfg->ca_data);
    read_blob("client.crt", &cfg->cert_data);
    read_blob("client.key", &cfg->key_data);
    struct outcome o = fetch(cfg);
    assert_non_null(strstr(o.error, "'localhost'"));
    assert_refused(&o);
    k8s_config_free(cfg);
}

static void test_client_certificate_required(void **state)
{
    struct k8s_config *cfg = base("127.0.0.1");
    read_blob("ca.crt", &cfg->ca_data);
    struct outcome o = fetch(cfg);
    assert_non_null(strstr(o.error, "certificate required"));
    assert_refused(&o);
    k8s_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inline_blobs),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_unknown_ca_refused),
        cmocka_unit_test(test_wrong_host_name_refused),
        cmocka_unit_test(test_client_certificate_required),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

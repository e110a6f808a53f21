/* Tests for src/k8s/kubeconfig.c: kubeconfigs with each kind of credentials (token,
 * tokenFile, client certificate files, inline *-data), contexts (current and named),
 * relative paths and the namespace default; every refusal and error with its exact message
 * and line; the in-cluster config (environment, service-account directory, IPv6, defaults,
 * errors) and its token rotating the way kubelet rotates it (an atomic symlink swap),
 * followed end to end through a client and the fake apiserver. */
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
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake_apiserver.h"

static const char CA_PEM[] = "-----BEGIN CERTIFICATE-----\nMIIBcaCA\n-----END CERTIFICATE-----\n";
static const char CERT_PEM[] = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
static const char KEY_PEM[] = "-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n";

struct fx {
    char dir[64];
    char *path; /* DIR/config */
    char *ca_b64, *cert_b64, *key_b64;
    struct k8s_config *cfg;
    char *err;
};

static char *b64(const char *s)
{
    size_t n = sodium_base64_encoded_len(strlen(s), sodium_base64_VARIANT_ORIGINAL);
    char *out = xmalloc(n);
    sodium_bin2base64(out, n, (const unsigned char *)s, strlen(s), sodium_base64_VARIANT_ORIGINAL);
    return out;
}

static void put(struct fx *f, const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", f->dir, name);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    free(p);
}

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/k8s-kc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->path = xasprintf("%s/config", f->dir);
    f->ca_b64 = b64(CA_PEM);
    f->cert_b64 = b64(CERT_PEM);
    f->key_b64 = b64(KEY_PEM);
    put(f, "ca.crt", CA_PEM);
    put(f, "client.crt", CERT_PEM);
    put(f, "client.key", KEY_PEM);
    put(f, "token", "file-token\n");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    k8s_config_free(f->cfg);
    free(f->err);
    char *cmd = xasprintf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(f->path);
    free(f->ca_b64);
    free(f->cert_b64);
    free(f->key_b64);
    free(f);
    return 0;
}

/* Writes `yaml` as the kubeconfig and loads it with `context`. */
static int load(struct fx *f, const char *yaml, const char *context)
{
    put(f, "config", yaml);
    k8s_config_free(f->cfg);
    f->cfg = NULL;
    free(f->err);
    f->err = NULL;
    int r = k8s_config_load_kubeconfig(f->path, context, &f->cfg, &f->err);
    if (r == 0) {
        assert_non_null(f->cfg);
        assert_null(f->err);
    } else {
        assert_null(f->cfg);
        assert_non_null(f->err);
    }
    return r;
}

/* The expected error, with "P" standing for the kubeconfig's path. */
static void assert_err(struct fx *f, const char *fmt_with_p)
{
    struct buf want = BUF_INIT;
    for (const char *p = fmt_with_p; *p; p++) {
        if (*p == 'P' && p[1] == ':')
            buf_append_str(&want, f->path);
        else
            buf_append_char(&want, *p);
    }
    assert_string_equal(f->err, want.data);
    buf_free(&want);
}

/* ---- good files ---- */

static void test_token_and_ca_file(void **state)
{
    struct fx *f = *state;
    const char *y = "apiVersion: v1\n"
                    "kind: Config\n"
                    "current-context: dev\n"
                    "clusters:\n"
                    "- name: c1\n"
                    "  cluster:\n"
                    "    server: https://k8s.example:6443/\n"
                    "    certificate-authority: ca.crt\n"
                    "contexts:\n"
                    "- name: dev\n"
                    "  context: {cluster: c1, user: u1, namespace: team-a}\n"
                    "users:\n"
                    "- name: u1\n"
                    "  user:\n"
                    "    token: abc.def\n"
                    "preferences: {}\n";
    assert_int_equal(load(f, y, NULL), 0);
    assert_string_equal(f->cfg->server, "https://k8s.example:6443");
    assert_string_equal(f->cfg->namespace, "team-a");
    assert_string_equal(f->cfg->context, "dev");
    char *ca = xasprintf("%s/ca.crt", f->dir);
    assert_string_equal(f->cfg->ca_file, ca); /* relative to the kubeconfig's directory */
    free(ca);
    assert_null(f->cfg->ca_data.data);
    assert_string_equal(f->cfg->token, "abc.def");
    assert_null(f->cfg->token_file);
    assert_null(f->cfg->cert_file);
    assert_null(f->cfg->key_file);
    assert_false(f->cfg->allow_http);
}

static const char *MULTI = "current-context: one\n"
                           "clusters:\n"
                           "- name: c1\n"
                           "  cluster: {server: 'https://one.example'}\n"
                           "- name: c2\n"
                           "  cluster:\n"
                           "    server: HTTPS://two.example:8443\n"
                           "    insecure-skip-tls-verify: false\n"
                           "contexts:\n"
                           "- name: one\n"
                           "  context: {cluster: c1, user: u1}\n"
                           "- name: two\n"
                           "  context: {cluster: c2, user: u2}\n"
                           "- name: anon\n"
                           "  context: {cluster: c2}\n"
                           "users:\n"
                           "- name: u1\n"
                           "  user: {token: t1}\n"
                           "- name: u2\n"
                           "  user: {tokenFile: token}\n";

static void test_contexts(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, MULTI, NULL), 0);
    assert_string_equal(f->cfg->context, "one");
    assert_string_equal(f->cfg->server, "https://one.example");
    assert_string_equal(f->cfg->namespace, "default");
    assert_string_equal(f->cfg->token, "t1");
    assert_null(f->cfg->ca_file); /* the system's CA store */

    assert_int_equal(load(f, MULTI, "two"), 0);
    assert_string_equal(f->cfg->context, "two");
    assert_string_equal(f->cfg->server, "https://two.example:8443");
    assert_null(f->cfg->token);
    char *tf = xasprintf("%s/token", f->dir);
    assert_string_equal(f->cfg->token_file, tf);
    free(tf);

    assert_int_equal(load(f, MULTI, "anon"), 0);
    assert_null(f->cfg->token);
    assert_null(f->cfg->token_file);
    assert_null(f->cfg->cert_file);
}

static void test_inline_data(void **state)
{
    struct fx *f = *state;
    char *y = xasprintf("current-context: x\n"
                        "clusters:\n"
                        "- name: c\n"
                        "  cluster:\n"
                        "    server: https://10.0.0.1\n"
                        "    certificate-authority-data: %s\n"
                        "contexts:\n"
                        "- {name: x, context: {cluster: c, user: u}}\n"
                        "users:\n"
                        "- name: u\n"
                        "  user:\n"
                        "    client-certificate-data: %s\n"
                        "    client-key-data: |\n"
                        "      %.20s\n"
                        "      %s\n",
                        f->ca_b64, f->cert_b64, f->key_b64, f->key_b64 + 20);
    assert_int_equal(load(f, y, NULL), 0);
    free(y);
    assert_null(f->cfg->ca_file);
    assert_int_equal(f->cfg->ca_data.len, strlen(CA_PEM));
    assert_memory_equal(f->cfg->ca_data.data, CA_PEM, strlen(CA_PEM));
    assert_int_equal(f->cfg->cert_data.len, strlen(CERT_PEM));
    assert_memory_equal(f->cfg->cert_data.data, CERT_PEM, strlen(CERT_PEM));
    /* a block scalar wrapped over two lines decodes too */
    assert_int_equal(f->cfg->key_data.len, strlen(KEY_PEM));
    assert_memory_equal(f->cfg->key_data.data, KEY_PEM, strlen(KEY_PEM));
    assert_null(f->cfg->cert_file);
    assert_null(f->cfg->key_file);
}

static void test_cert_files_absolute(void **state)
{
    struct fx *f = *state;
    char *y = xasprintf("current-context: x\n"
                        "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
                        "users:\n"
                        "- name: u\n"
                        "  user:\n"
                        "    client-certificate: %s/client.crt\n"
                        "    client-key: %s/client.key\n",
                        f->dir, f->dir);
    assert_int_equal(load(f, y, NULL), 0);
    free(y);
    char *crt = xasprintf("%s/client.crt", f->dir);
    char *key = xasprintf("%s/client.key", f->dir);
    assert_string_equal(f->cfg->cert_file, crt);
    assert_string_equal(f->cfg->key_file, key);
    free(crt);
    free(key);
    assert_null(f->cfg->cert_data.data);
}

/* ---- errors ---- */

static void test_unreadable(void **state)
{
    struct fx *f = *state;
    struct k8s_config *cfg = NULL;
    char *err = NULL;
    char *p = xasprintf("%s/missing", f->dir);
    assert_int_equal(k8s_config_load_kubeconfig(p, NULL, &cfg, &err), -ENOENT);
    char *want = xasprintf("kubeconfig %s: cannot read: No such file or directory", p);
    assert_string_equal(err, want);
    assert_null(cfg);
    free(want);
    free(err);
    free(p);
}

static void test_syntax_and_shape(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, "a: [1, 2\n", NULL), -EINVAL);
    assert_non_null(strstr(f->err, f->path));
    assert_true(strncmp(f->err + strlen("kubeconfig ") + strlen(f->path), ":2", 2) == 0 ||
                strncmp(f->err + strlen("kubeconfig ") + strlen(f->path), ":1", 2) == 0);

    assert_int_equal(load(f, "a: 1\na: 2\n", NULL), -EINVAL); /* duplicate key */
    assert_int_equal(load(f, "", NULL), -EINVAL);
    assert_err(f, "kubeconfig P: empty file");
    assert_int_equal(load(f, "- a\n- b\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P: not a kubeconfig (expected a mapping)");
    assert_int_equal(load(f, "kind: Config\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P: no context given and no current-context set");
    assert_int_equal(load(f, "current-context: [a]\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P:1: kubeconfig.current-context: expected a string");
    assert_int_equal(load(f, "current-context: x\ncontexts: {}\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P:2: contexts: expected a list");
    assert_int_equal(load(f, "current-context: x\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P:1: current-context: context \"x\" not found (no contexts list)");
    assert_int_equal(load(f, "current-context: x\ncontexts:\n- 7\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P:3: contexts[0]: expected a mapping");
}

static void test_missing_entries(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, MULTI, "three"), -EINVAL);
    assert_err(f, "kubeconfig P: context \"three\" not found in contexts");
    assert_int_equal(load(f,
                          "current-context: x\n"
                          "contexts:\n"
                          "- name: x\n"
                          "  context: {cluster: nope}\n"
                          "clusters: []\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:4: contexts[0].context.cluster: cluster \"nope\" not found in "
                  "clusters");
    assert_int_equal(load(f,
                          "current-context: x\n"
                          "contexts: [{name: x, context: {cluster: c, user: ghost}}]\n"
                          "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                          "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:2: contexts[0].context.user: user \"ghost\" not found in users");
    assert_int_equal(load(f,
                          "current-context: x\n"
                          "contexts: [{name: x, context: {user: u}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:2: contexts[0].context: no cluster");
    assert_int_equal(load(f, "current-context: x\ncontexts: [{name: x}]\n", NULL), -EINVAL);
    assert_err(f, "kubeconfig P:2: contexts[0]: context \"x\" has no context");
    assert_int_equal(load(f,
                          "current-context: x\n"
                          "contexts: [{name: x, context: {cluster: c}}]\n"
                          "clusters:\n"
                          "- name: c\n"
                          "  cluster:\n"
                          "    certificate-authority: ca.crt\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:5: clusters[0].cluster: no server");
}

#define CTX "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"

static void test_server_checks(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f,
                          CTX "clusters:\n"
                              "- name: c\n"
                              "  cluster:\n"
                              "    server: http://k8s.example\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:6: clusters[0].cluster.server: plain http:// is refused; codehub "
                  "talks to the API over verified TLS only");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'k8s.example:443'}}]\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:3: clusters[0].cluster.server: expected an https:// URL, got "
                  "\"k8s.example:443\"");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https:///x'}}]\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:3: clusters[0].cluster.server: no host in \"https:///x\"");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: {a: b}}}]\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:3: clusters[0].cluster.server: expected a string");
}

static void test_refusals(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f,
                          CTX "clusters:\n"
                              "- name: c\n"
                              "  cluster:\n"
                              "    server: https://h\n"
                              "    insecure-skip-tls-verify: true\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:7: clusters[0].cluster.insecure-skip-tls-verify: refused; codehub "
                  "always verifies the API server's certificate (give certificate-authority or "
                  "certificate-authority-data)");
    assert_int_equal(load(f,
                          CTX "clusters:\n"
                              "- name: c\n"
                              "  cluster:\n"
                              "    server: https://h\n"
                              "    insecure-skip-tls-verify: maybe\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:7: clusters[0].cluster.insecure-skip-tls-verify: expected true or "
                  "false, got \"maybe\"");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users:\n"
                              "- name: u\n"
                              "  user:\n"
                              "    exec:\n"
                              "      apiVersion: client.authentication.k8s.io/v1\n"
                              "      command: aws\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:7: users[0].user.exec: exec credential plugins are not supported "
                  "(codehub runs no helper programs); use a service-account token or a client "
                  "certificate");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users:\n"
                              "- name: u\n"
                              "  user:\n"
                              "    auth-provider: {name: gcp}\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:7: users[0].user.auth-provider: auth-provider plugins are not "
                  "supported; use a service-account token or a client certificate");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users: [{name: u, user: {username: a, password: b}}]\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:4: users[0].user.username: basic authentication is not "
                  "supported");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h', proxy-url: "
                              "'http://p'}}]\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -ENOTSUP);
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users: [{name: u, user: {token: t, as: admin}}]\n",
                          NULL),
                     -ENOTSUP);
    assert_err(f, "kubeconfig P:4: users[0].user.as: impersonation is not supported");
    /* an empty exec (as some tools write) is not a plugin */
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users: [{name: u, user: {token: t, exec: null}}]\n",
                          NULL),
                     0);
}

static void test_data_errors(void **state)
{
    struct fx *f = *state;
    char *y = xasprintf(CTX "clusters:\n"
                            "- name: c\n"
                            "  cluster:\n"
                            "    server: https://h\n"
                            "users:\n"
                            "- name: u\n"
                            "  user:\n"
                            "    client-certificate-data: %s\n"
                            "    client-key-data: not*base64\n",
                        f->cert_b64);
    assert_int_equal(load(f, y, NULL), -EINVAL);
    free(y);
    assert_err(f, "kubeconfig P:11: users[0].user.client-key-data: not valid base64");

    char *plain = b64("just some bytes");
    y = xasprintf(CTX "clusters:\n"
                      "- name: c\n"
                      "  cluster:\n"
                      "    server: https://h\n"
                      "    certificate-authority-data: %s\n"
                      "users: [{name: u, user: {token: t}}]\n",
                  plain);
    free(plain);
    assert_int_equal(load(f, y, NULL), -EINVAL);
    free(y);
    assert_err(f, "kubeconfig P:7: clusters[0].cluster.certificate-authority-data: decoded value "
                  "is not PEM (no -----BEGIN line)");

    y = xasprintf(CTX "clusters:\n"
                      "- name: c\n"
                      "  cluster:\n"
                      "    server: https://h\n"
                      "    certificate-authority: ca.crt\n"
                      "    certificate-authority-data: %s\n"
                      "users: [{name: u, user: {token: t}}]\n",
                  f->ca_b64);
    assert_int_equal(load(f, y, NULL), -EINVAL);
    free(y);
    assert_err(f, "kubeconfig P:8: clusters[0].cluster: both certificate-authority and "
                  "certificate-authority-data are set; use one");

    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users:\n"
                              "- name: u\n"
                              "  user:\n"
                              "    client-certificate: client.crt\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:6: users[0].user: client-certificate without client-key");

    assert_int_equal(load(f,
                          CTX "clusters:\n"
                              "- name: c\n"
                              "  cluster:\n"
                              "    server: https://h\n"
                              "    certificate-authority: nowhere/ca.crt\n"
                              "users: [{name: u, user: {token: t}}]\n",
                          NULL),
                     -EINVAL);
    struct buf want = BUF_INIT;
    buf_appendf(&want,
                "kubeconfig %s:7: clusters[0].cluster.certificate-authority: cannot read "
                "%s/nowhere/ca.crt: No such file or directory",
                f->path, f->dir);
    assert_string_equal(f->err, want.data);
    buf_free(&want);

    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users: [{name: u, user: {token: \"a\\nb\"}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:4: users[0].user.token: control characters in token");

    put(f, "empty-token", "\n\n");
    assert_int_equal(load(f,
                          CTX "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
                              "users: [{name: u, user: {tokenFile: empty-token}}]\n",
                          NULL),
                     -EINVAL);
    want = (struct buf)BUF_INIT;
    buf_appendf(&want,
                "kubeconfig %s:4: users[0].user.tokenFile: %s/empty-token: empty, too "
                "large or holds control characters",
                f->path, f->dir);
    assert_string_equal(f->err, want.data);
    buf_free(&want);
}

static void test_namespace_checked(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f,
                          "current-context: x\n"
                          "contexts: [{name: x, context: {cluster: c, namespace: ../etc}}]\n"
                          "clusters: [{name: c, cluster: {server: 'https://h'}}]\n",
                          NULL),
                     -EINVAL);
    assert_err(f, "kubeconfig P:2: contexts[0].context.namespace: \"../etc\" is not a valid "
                  "namespace");
}

/* ---- in-cluster ---- */

static void set_env(const char *host, const char *port)
{
    if (host)
        setenv("KUBERNETES_SERVICE_HOST", host, 1);
    else
        unsetenv("KUBERNETES_SERVICE_HOST");
    if (port)
        setenv("KUBERNETES_SERVICE_PORT", port, 1);
    else
        unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_incluster(void **state)
{
    struct fx *f = *state;
    put(f, "namespace", "codehub\n");
    set_env("10.96.0.1", "443");
    struct k8s_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), 0);
    assert_null(err);
    assert_string_equal(cfg->server, "https://10.96.0.1:443");
    assert_string_equal(cfg->namespace, "codehub");
    char *tok = xasprintf("%s/token", f->dir);
    char *ca = xasprintf("%s/ca.crt", f->dir);
    assert_string_equal(cfg->token_file, tok);
    assert_string_equal(cfg->ca_file, ca);
    assert_null(cfg->token);
    assert_null(cfg->context);
    k8s_config_free(cfg);

    /* IPv6, no namespace file, the directory from the environment */
    set_env("fd00::1", "6443");
    char *ns = xasprintf("%s/namespace", f->dir);
    unlink(ns);
    free(ns);
    setenv("CODEHUB_K8S_SERVICEACCOUNT_DIR", f->dir, 1);
    assert_int_equal(k8s_config_load_incluster(NULL, &cfg, &err), 0);
    unsetenv("CODEHUB_K8S_SERVICEACCOUNT_DIR");
    assert_string_equal(cfg->server, "https://[fd00::1]:6443");
    assert_string_equal(cfg->namespace, "default");
    assert_string_equal(cfg->token_file, tok);
    k8s_config_free(cfg);
    free(tok);
    free(ca);
}

static void test_incluster_errors(void **state)
{
    struct fx *f = *state;
    struct k8s_config *cfg = NULL;
    char *err = NULL;
    set_env(NULL, NULL);
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -ENOENT);
    assert_null(cfg);
    assert_string_equal(err, "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                             "are not set (not running in a pod?)");
    free(err);

    set_env("10.0.0.1", "https");
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -EINVAL);
    assert_string_equal(err, "in-cluster: KUBERNETES_SERVICE_PORT \"https\" is not a port");
    free(err);
    set_env("10.0.0.1", "70000");
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -EINVAL);
    free(err);
    set_env("10.0.0.1/x", "443");
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -EINVAL);
    free(err);

    set_env("10.0.0.1", "443");
    char *other = xasprintf("%s/nothing-here", f->dir);
    assert_int_equal(k8s_config_load_incluster(other, &cfg, &err), -ENOENT);
    char *want = xasprintf("in-cluster: token %s/token: No such file or directory", other);
    assert_string_equal(err, want);
    free(want);
    free(err);
    free(other);

    put(f, "token", "   \n");
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -EINVAL);
    free(err);
    put(f, "token", "tok\n");

    char *ca = xasprintf("%s/ca.crt", f->dir);
    unlink(ca);
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -ENOENT);
    want = xasprintf("in-cluster: CA %s: No such file or directory", ca);
    assert_string_equal(err, want);
    free(want);
    free(err);
    free(ca);
    put(f, "ca.crt", CA_PEM);

    put(f, "namespace", "Not_Valid\n");
    assert_int_equal(k8s_config_load_incluster(f->dir, &cfg, &err), -EINVAL);
    assert_non_null(strstr(err, "\"Not_Valid\" is not a valid namespace"));
    free(err);
    set_env(NULL, NULL);
}

/* kubelet's atomic writer: DIR/token -> ..data/token, ..data -> ..<timestamp>/; a rotation
 * writes a new timestamped directory and renames a new ..data symlink over the old one. */
static void sa_write(const char *dir, int gen, const char *token)
{
    char *ts = xasprintf("%s/..gen%d", dir, gen);
    assert_int_equal(mkdir(ts, 0755), 0);
    char *tf = xasprintf("%s/token", ts);
    FILE *fp = fopen(tf, "w");
    assert_non_null(fp);
    fputs(token, fp);
    fclose(fp);
    char *rel = xasprintf("..gen%d", gen);
    char *tmp = xasprintf("%s/..data_tmp", dir);
    char *data = xasprintf("%s/..data", dir);
    assert_int_equal(symlink(rel, tmp), 0);
    assert_int_equal(rename(tmp, data), 0);
    free(ts);
    free(tf);
    free(rel);
    free(tmp);
    free(data);
}

struct rot {
    uv_loop_t loop;
    uv_timer_t tick;
    struct fake_server srv;
    char *auth[4];
    int n;
    int done;
    int closed;
};

static void rot_handler(void *data, struct fake_request *req)
{
    struct rot *r = data;
    if (r->n < 4)
        r->auth[r->n++] = xstrdup(req->authorization ? req->authorization : "");
    fake_respond_json(req->conn, 200, "{}");
}

static void rot_done(void *data, int status, json_t *body, const char *error)
{
    struct rot *r = data;
    assert_null(error);
    r->done++;
}

static bool rot_done_1(void *arg)
{
    return ((struct rot *)arg)->done >= 1;
}

static bool rot_done_2(void *arg)
{
    return ((struct rot *)arg)->done >= 2;
}

static bool rot_closed(void *arg)
{
    struct rot *r = arg;
    return r->closed && r->srv.open == 0;
}

static void rot_close_cb(void *data)
{
    ((struct rot *)data)->closed = 1;
}

static void test_incluster_token_rotation(void **state)
{
    struct fx *f = *state;
    char *sa = xasprintf("%s/sa", f->dir);
    assert_int_equal(mkdir(sa, 0755), 0);
    sa_write(sa, 1, "first-token\n");
    char *link = xasprintf("%s/token", sa);
    assert_int_equal(symlink("..data/token", link), 0);
    char *ca = xasprintf("%s/ca.crt", sa);
    FILE *fp = fopen(ca, "w");
    fputs(CA_PEM, fp);
    fclose(fp);

    struct rot r = {0};
    assert_int_equal(uv_loop_init(&r.loop), 0);
    uv_timer_init(&r.loop, &r.tick);
    assert_int_equal(fake_start(&r.srv, &r.loop, rot_handler, &r), 0);
    char port[16];
    snprintf(port, sizeof(port), "%d", r.srv.port);
    set_env("127.0.0.1", port);

    struct k8s_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(k8s_config_load_incluster(sa, &cfg, &err), 0);
    /* The fake apiserver speaks plain HTTP: the one change a test may make by hand. */
    char *http = xasprintf("http://%s", cfg->server + strlen("https://"));
    free(cfg->server);
    cfg->server = http;
    cfg->allow_http = true;
    struct k8s_client_options opt = {.token_check_ms = 20};
    struct k8s_client *c = k8s_client_new(&r.loop, cfg, &opt, &err);
    assert_non_null(c);
    k8s_config_free(cfg);

    k8s_client_request(c, "GET", "/api", NULL, rot_done, &r);
    assert_true(run_until(&r.loop, &r.tick, rot_done_1, &r, 2000));
    sa_write(sa, 2, "second-token\n");
    run_for(&r.loop, &r.tick, 40);
    k8s_client_request(c, "GET", "/api", NULL, rot_done, &r);
    assert_true(run_until(&r.loop, &r.tick, rot_done_2, &r, 2000));
    assert_int_equal(r.n, 2);
    assert_string_equal(r.auth[0], "Bearer first-token");
    assert_string_equal(r.auth[1], "Bearer second-token");

    k8s_client_close(c, rot_close_cb, &r);
    fake_stop(&r.srv);
    assert_true(run_until(&r.loop, &r.tick, rot_closed, &r, 2000));
    uv_close((uv_handle_t *)&r.tick, NULL);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r.loop), 0);
    for (int i = 0; i < r.n; i++)
        free(r.auth[i]);
    set_env(NULL, NULL);
    free(sa);
    free(link);
    free(ca);
}

static void test_token_file_read(void **state)
{
    struct fx *f = *state;
    char *tok = NULL;
    char *p = xasprintf("%s/t", f->dir);
    put(f, "t", "\n  abc  \r\n");
    assert_int_equal(k8s_token_file_read(p, &tok), 0);
    assert_string_equal(tok, "abc");
    free(tok);
    put(f, "t", "a\tb\n");
    assert_int_equal(k8s_token_file_read(p, &tok), -EINVAL);
    put(f, "t", "");
    assert_int_equal(k8s_token_file_read(p, &tok), -EINVAL);
    char *big = xmalloc(70000);
    memset(big, 'x', 69999);
    big[69999] = '\0';
    put(f, "t", big);
    free(big);
    assert_int_equal(k8s_token_file_read(p, &tok), -EINVAL);
    unlink(p);
    assert_int_equal(k8s_token_file_read(p, &tok), -ENOENT);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_token_and_ca_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_files_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_syntax_and_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_namespace_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incluster_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incluster_token_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_file_read, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

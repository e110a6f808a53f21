/* libFuzzer driver: the kubeconfig reader (k8s/kubeconfig.c).
 *
 * k8s_config_load_kubeconfig reads only from a path and resolves relative file names
 * against the kubeconfig's directory, so the driver keeps a private directory with a
 * kubeconfig file it rewrites for each input, next to the files a kubeconfig may name:
 * ca.crt, client.crt, client.key (PEM), token (a good token file), badtoken (a control
 * character), empty. Each input is loaded twice: with its own current-context and with
 * the context "dev" asked for by name. Checked every time:
 *   - the result is 0, -EINVAL or -ENOTSUP (the file itself is always readable);
 *   - a config comes back exactly when the result is 0, and an error message otherwise:
 *     one line, starting with "kubeconfig PATH:";
 * and for a config that loads, what the header promises codehub may rely on:
 *   - the server is https://host[...] without spaces, controls, query, fragment or a
 *     trailing slash; the namespace is a DNS-1123 label; the context is the one asked for;
 *   - at most one source for the CA, for the certificate and for the key; a certificate
 *     exactly when a key; inline values are PEM; the token has no control character; every
 *     file named is readable; plain HTTP is never allowed. */
#include "fuzz_check.h"
#include "k8s/kubeconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[96];
static int fd = -1;

static void put(const char *name, const char *text)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    check(f != NULL);
    fputs(text, f);
    check(fclose(f) == 0);
}

static void cleanup(void)
{
    static const char *const names[] = {"config", "ca.crt",   "client.crt", "client.key",
                                        "token",  "badtoken", "empty"};
    char p[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/codehub-fuzz-kubeconfig-XXXXXX");
    check(mkdtemp(dir) != NULL);
    atexit(cleanup);
    put("ca.crt", "-----BEGIN CERTIFICATE-----\nMIIBcaCA\n-----END CERTIFICATE-----\n");
    put("client.crt", "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n");
    put("client.key", "-----BEGIN PRIVATE KEY-----\nMIIBkey\n-----END PRIVATE KEY-----\n");
    put("token", "  eyJhbGciOiJSUzI1NiJ9.payload.sig\n");
    put("badtoken", "abc\x01"
                    "def\n");
    put("empty", "");
    snprintf(path, sizeof path, "%s/config", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    check(fd >= 0);
}

static void set_content(const uint8_t *data, size_t size)
{
    check(ftruncate(fd, 0) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t n = pwrite(fd, data + off, size - off, (off_t)off);
        check(n > 0);
        off += (size_t)n;
    }
}

static bool readable(const char *file)
{
    return file != NULL && access(file, R_OK) == 0;
}

static bool is_pem(const struct k8s_blob *b)
{
    return b->data != NULL && b->len > 0 && memmem(b->data, b->len, "-----BEGIN ", 11) != NULL;
}

static bool namespace_ok(const char *ns)
{
    size_t n = strlen(ns);
    if (n < 1 || n > 63 || ns[0] == '-' || ns[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((ns[i] >= 'a' && ns[i] <= 'z') || (ns[i] >= '0' && ns[i] <= '9') || ns[i] == '-'))
            return false;
    }
    return true;
}

static void check_config(const struct k8s_config *c, const char *context)
{
    size_t n = strlen(c->server);
    check(strncmp(c->server, "https://", 8) == 0 && n > 8 && c->server[8] != '/');
    check(c->server[n - 1] != '/' && strpbrk(c->server, "?#") == NULL);
    for (size_t i = 0; i < n; i++)
        check((unsigned char)c->server[i] > 0x20 && c->server[i] != 0x7f);
    check(c->namespace != NULL && namespace_ok(c->namespace));
    check(c->context != NULL && (context == NULL || strcmp(c->context, context) == 0));
    check(!c->allow_http);

    check(!(c->ca_file && c->ca_data.data));
    check(!(c->cert_file && c->cert_data.data));
    check(!(c->key_file && c->key_data.data));
    bool cert = c->cert_file || c->cert_data.data;
    bool key = c->key_file || c->key_data.data;
    check(cert == key);
    check(!c->ca_data.data || is_pem(&c->ca_data));
    check(!c->cert_data.data || is_pem(&c->cert_data));
    check(!c->key_data.data || is_pem(&c->key_data));
    check(!c->ca_file || readable(c->ca_file));
    check(!c->cert_file || readable(c->cert_file));
    check(!c->key_file || readable(c->key_file));
    check(!c->token_file || readable(c->token_file));
    if (c->token != NULL) {
        for (const char *t = c->token; *t; t++)
            check((unsigned char)*t >= 0x20 && *t != 0x7f);
    }
}

static void load(const char *context)
{
    struct k8s_config *cfg = (struct k8s_config *)&cfg; /* must be overwritten */
    char *err = (char *)&err;
    int rc = k8s_config_load_kubeconfig(path, context, &cfg, &err);
    check(rc == 0 || rc == -EINVAL || rc == -ENOTSUP);
    if (rc == 0) {
        check(cfg != NULL && err == NULL);
        check_config(cfg, context);
    } else {
        check(cfg == NULL && err != NULL);
        size_t plen = strlen(path);
        check(strncmp(err, "kubeconfig ", 11) == 0 && strncmp(err + 11, path, plen) == 0 &&
              err[11 + plen] == ':');
        if (strchr(err, '\n') != NULL)
            fprintf(stderr, "error message of more than one line: %s\n", err);
        check(strchr(err, '\n') == NULL);
    }
    k8s_config_free(cfg);
    free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        setup();
    set_content(data, size);
    load(NULL);
    load("dev");
    return 0;
}

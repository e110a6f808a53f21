/* libFuzzer driver: the YAML configuration reader (core/config.c).
 *
 * config_load_file reads only from a path, so the input is written to a memfd and read
 * back through /proc/self/fd/N: no file system traffic, and the path in error lines is
 * a fixed string the driver can check for. For every input:
 *   - the result is 0 or -EINVAL, never anything else (the file exists and is small);
 *   - errors are reported exactly when the result is -EINVAL, as whole lines that each
 *     start with the path and hold no control character (they go to a terminal and logs);
 * and for a file that loads and passes config_finish:
 *   - `codehub check-config --print` output (config_dump) loads back without an error,
 *     passes config_finish again and dumps to the same text;
 *   - the values config_finish accepted are usable: server.bind splits into host and port,
 *     and the kubernetes spawner builds a pod for every profile and a volume claim, since
 *     config_finish is what stands between a config file and those manifests. */
#include "fuzz_check.h"
#include "core/buf.h"
#include "core/config.h"
#include "spawn/kube.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct memfile {
    int fd;
    char path[64];
};

static void memfile_open(struct memfile *m, const char *name)
{
    m->fd = memfd_create(name, MFD_CLOEXEC);
    check(m->fd >= 0);
    snprintf(m->path, sizeof m->path, "/proc/self/fd/%d", m->fd);
}

/* Replaces the file's content with data[0..len). */
static void memfile_set(struct memfile *m, const void *data, size_t len)
{
    check(ftruncate(m->fd, 0) == 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = pwrite(m->fd, (const char *)data + off, len - off, (off_t)off);
        check(n > 0);
        off += (size_t)n;
    }
}

/* Each line of `errors` starts with "PATH:" and is free of control characters. */
static void check_error_lines(const struct buf *errors, const char *path)
{
    size_t plen = strlen(path);
    size_t i = 0;
    while (i < errors->len) {
        const char *line = errors->data + i;
        const char *nl = memchr(line, '\n', errors->len - i);
        check(nl != NULL);
        size_t len = (size_t)(nl - line);
        check(len > plen + 1 && memcmp(line, path, plen) == 0 && line[plen] == ':');
        for (size_t k = 0; k < len; k++)
            check((unsigned char)line[k] >= 0x20 && line[k] != 0x7f);
        i += len + 1;
    }
}

/* A config that passed config_finish yields what the rest of the program builds from it. */
static void check_usable(const struct config *cfg)
{
    char *host = NULL;
    int port = -1;
    check(config_parse_bind(cfg->server.bind, &host, &port) == 0);
    check(host != NULL && port >= 0 && port <= 65535);
    free(host);

    char *err = NULL;
    json_t *pod = spawn__kube_pod_manifest(cfg, "alice", NULL, &err);
    check(pod != NULL && err == NULL);
    json_decref(pod);
    json_t *pvc = spawn__kube_pvc_manifest(cfg, "bob.b");
    check(pvc != NULL);
    json_decref(pvc);

    json_t *list = spawn__kube_profiles_list(cfg);
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        check(name != NULL && spawn__kube_profile_exists(cfg, name));
        pod = spawn__kube_pod_manifest(cfg, "alice", name, &err);
        check(pod != NULL && err == NULL);
        json_decref(pod);
        if (i >= 8)
            break;
    }
    json_decref(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct memfile in, again;
    if (in.path[0] == '\0') {
        memfile_open(&in, "codehub-fuzz.yaml");
        memfile_open(&again, "codehub-fuzz-dump.yaml");
    }
    memfile_set(&in, data, size);

    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    int rc = config_load_file(&cfg, in.path, &errors);
    check(rc == 0 || rc == -EINVAL);
    check((rc == 0) == (errors.len == 0));
    check_error_lines(&errors, in.path);
    if (rc != 0 || config_finish(&cfg, NULL) != 0)
        goto out;
    check_usable(&cfg);

    /* The dump reads back as the same configuration. */
    struct buf dump = BUF_INIT, dump2 = BUF_INIT, errors2 = BUF_INIT;
    struct config copy;
    config_dump(&cfg, &dump);
    memfile_set(&again, dump.data, dump.len);
    config_init(&copy);
    rc = config_load_file(&copy, again.path, &errors2);
    if (rc != 0)
        fprintf(stderr, "dump does not load back:\n%s---\n%s", errors2.data, dump.data);
    check(rc == 0);
    rc = config_finish(&copy, &errors2);
    if (rc != 0)
        fprintf(stderr, "dump does not pass config_finish:\n%s", errors2.data);
    check(rc == 0);
    config_dump(&copy, &dump2);
    check(dump.len == dump2.len && memcmp(dump.data, dump2.data, dump.len) == 0);
    config_free(&copy);
    buf_free(&dump);
    buf_free(&dump2);
    buf_free(&errors2);
out:
    config_free(&cfg);
    buf_free(&errors);
    return 0;
}

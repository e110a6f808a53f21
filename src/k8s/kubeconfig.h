/* Where the Kubernetes API is and how to authenticate to it: read from a kubeconfig file
 * or from the in-cluster service account (see docs/k8s.md).
 *
 * Only what codehub can use safely is accepted. TLS is always verified: a kubeconfig that
 * says `insecure-skip-tls-verify: true` or names an http:// server is refused, and so are
 * exec and auth-provider plugins (codehub runs no helper programs), basic auth and
 * impersonation. Inline `*-data` values are decoded into memory and later handed to curl
 * as blobs; they are never written to disk.
 *
 * Errors are one line, naming the file and, where possible, the line and the key:
 *   kubeconfig /x/y:12: users[0].user.client-key-data: not valid base64 */
#ifndef CODEHUB_K8S_KUBECONFIG_H
#define CODEHUB_K8S_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes decoded from a `*-data` value (PEM text); data == NULL when absent. */
struct k8s_blob {
    unsigned char *data;
    size_t len;
};

/* Zeroes and frees the blob's bytes and leaves it empty. Safe on an empty blob. */
void k8s_blob_wipe(struct k8s_blob *b);

/* Zeroes and frees a NUL-terminated secret (a token). NULL is fine. */
void k8s_secret_free(char *s);

struct k8s_config {
    char *server;    /* "https://host[:port][/prefix]", no trailing slash */
    char *namespace; /* the context's (or the service account's) namespace; "default" */
    char *context;   /* the kubeconfig context used; NULL in-cluster */

    /* Trust: a CA file, or inline CA bytes, or neither (then the system's CA store). */
    char *ca_file;
    struct k8s_blob ca_data;

    /* Bearer token: fixed, or read from a file that is re-read as it rotates. The file
     * wins when both are set (kubectl's order). */
    char *token;
    char *token_file;

    /* Client certificate and key (PEM), each from a file or inline; both or neither. */
    char *cert_file;
    struct k8s_blob cert_data;
    char *key_file;
    struct k8s_blob key_data;

    /* Never set by the loaders. Only a caller that builds a config by hand (the unit tests'
     * plain-HTTP fake apiserver) may set it to let k8s_client_new accept http:// servers. */
    bool allow_http;
};

/* Reads the kubeconfig at `path` and resolves `context` (NULL: its current-context).
 * Relative file names inside it are taken relative to the kubeconfig's directory, as
 * kubectl does. Files it names (CA, certificate, key, token file) are checked to be
 * readable now; their contents are read later, by the client.
 * Returns 0 and sets *out (caller frees with k8s_config_free), or a negative errno with
 * *err set to a one-line message (caller frees): -ENOENT when the file cannot be read,
 * -EINVAL when its content is wrong, -ENOTSUP for a refused feature. */
int k8s_config_load_kubeconfig(const char *path, const char *context, struct k8s_config **out,
                               char **err);

/* The service-account directory when none is given: the kubelet mounts it here. */
#define K8S_SERVICEACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* Builds the in-cluster config: server https://$KUBERNETES_SERVICE_HOST:
 * $KUBERNETES_SERVICE_PORT (an IPv6 host is bracketed), the token file `DIR/token` (re-read
 * by the client as it rotates), the CA `DIR/ca.crt`, the namespace from `DIR/namespace`
 * ("default" when that file is missing). DIR is `dir` when not NULL, else the environment
 * variable CODEHUB_K8S_SERVICEACCOUNT_DIR when set and not empty, else
 * K8S_SERVICEACCOUNT_DIR.
 * Returns 0 and sets *out (caller frees with k8s_config_free), or a negative errno with
 * *err set (caller frees): -ENOENT when not in a cluster (variables unset, token or CA
 * missing), -EINVAL for unusable values. */
int k8s_config_load_incluster(const char *dir, struct k8s_config **out, char **err);

/* Frees `cfg` and everything in it (NULL is fine). Inline key bytes are wiped first. */
void k8s_config_free(struct k8s_config *cfg);

/* Reads a bearer-token file: its content with surrounding whitespace removed.
 * Returns 0 and sets *token (caller frees), -ENOENT/-EACCES/... when it cannot be read,
 * -EINVAL when it is empty, larger than 64 KiB or holds a control character (a token
 * goes into an HTTP header). */
int k8s_token_file_read(const char *path, char **token);

#endif

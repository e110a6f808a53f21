/* `codehub user del NAME --purge-data` for the kubernetes spawner (see spawn/kube.h):
 * two DELETEs on a loop of its own. The pod goes first: a claim still mounted by a pod is
 * only marked for deletion (the pvc-protection finalizer) and would linger until the pod
 * is gone, which is what the admin asked for anyway; the answer to the claim's DELETE is
 * enough to report success. */
#include "spawn/kube.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "k8s/client.h"
#include "k8s/kubeconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct purge {
    struct k8s_client *client;
    char *ns;
    char *pvc_path;
    int rc;
    char *err;
    bool done;
};

static void on_closed(void *data)
{
    struct purge *p = data;
    p->client = NULL;
}

static void on_claim_deleted(void *data, int status, json_t *body, const char *error)
{
    struct purge *p = data;
    if (status == 404) {
        p->rc = -ENOENT;
    } else if (error != NULL) {
        p->rc = status == 403 ? -EACCES : -EIO;
        p->err = xasprintf("cannot delete the volume claim: %s", error);
    }
    p->done = true;
    k8s_client_close(p->client, on_closed, p);
}

static void on_pod_deleted(void *data, int status, json_t *body, const char *error)
{
    struct purge *p = data;
    if (error != NULL && status != 404) {
        p->rc = status == 403 ? -EACCES : -EIO;
        p->err = xasprintf("cannot delete the pod: %s", error);
        p->done = true;
        k8s_client_close(p->client, on_closed, p);
        return;
    }
    if (k8s_client_request(p->client, "DELETE", p->pvc_path, NULL, on_claim_deleted, p) == NULL) {
        p->rc = -EIO;
        p->err = xstrdup("cannot start the request");
        k8s_client_close(p->client, on_closed, p);
    }
}

int spawn_kube_purge(const struct config *cfg, const char *user, char **err)
{
    struct purge p = {.rc = 0};
    struct k8s_config *kc = NULL;
    uv_loop_t loop;
    int rc;
    if (cfg->kube.kubeconfig[0] != '\0')
        rc = k8s_config_load_kubeconfig(cfg->kube.kubeconfig,
                                        cfg->kube.context[0] != '\0' ? cfg->kube.context : NULL,
                                        &kc, err);
    else
        rc = k8s_config_load_incluster(NULL, &kc, err);
    if (rc < 0)
        return rc;
    rc = uv_loop_init(&loop);
    if (rc < 0) {
        k8s_config_free(kc);
        *err = xasprintf("cannot create a loop: %s", uv_strerror(rc));
        return rc;
    }
    struct k8s_client_options opt = {.user_agent = "codehub-cli"};
    p.client = k8s_client_new(&loop, kc, &opt, err);
    p.ns = xstrdup(cfg->kube.namespace[0] != '\0' ? cfg->kube.namespace : kc->namespace);
    k8s_config_free(kc);
    if (p.client == NULL) {
        rc = -EIO;
        goto out;
    }
    char *pod = spawn__kube_name(cfg->kube.pod_name, user);
    char *pvc = spawn__kube_name(cfg->kube.pvc_name, user);
    char *pod_path = xasprintf("/api/v1/namespaces/%s/pods/%s", p.ns, pod);
    p.pvc_path = xasprintf("/api/v1/namespaces/%s/persistentvolumeclaims/%s", p.ns, pvc);
    free(pod);
    free(pvc);
    if (k8s_client_request(p.client, "DELETE", pod_path, NULL, on_pod_deleted, &p) == NULL) {
        p.rc = -EIO;
        p.err = xstrdup("cannot start the request");
        k8s_client_close(p.client, on_closed, &p);
    }
    free(pod_path);
    uv_run(&loop, UV_RUN_DEFAULT);
    rc = p.rc;
    if (p.err != NULL)
        *err = p.err;
out:
    uv_loop_close(&loop);
    free(p.ns);
    free(p.pvc_path);
    return rc;
}

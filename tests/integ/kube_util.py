"""A real Kubernetes API server for black-box tests: `kubetest` (tests/kube) runs a real
kube-apiserver with an embedded etcd and a simulated kubelet on 127.0.0.1, and this module
starts it, talks to it, and stops it.

Use it from a test module with

    from kube_util import kube  # noqa: F401  (the session fixture)

    def test_x(kube):
        kube.create("pods", manifest)              # admin credentials
        kube.hub.get(kube.path("pods"))            # the hub's ServiceAccount token

`kube` is one cluster for the whole session (shared by every module that imports the
fixture). Its attributes: dir, server, port, namespace, ca_path, admin_kubeconfig,
hub_kubeconfig, incluster_dir, pv_dir, pod_subnet, admin_token, hub_token. Only the
standard library is used.
"""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBETEST = Path(os.environ.get("KUBETEST_BIN", str(ROOT / ".deps" / "kube" / "bin" / "kubetest")))
BUILD_SCRIPT = ROOT / "scripts" / "build-kubetest.sh"
IMAGES = ROOT / "tests" / "kube" / "images.yaml"
WORKSPACE_IMAGE = "codehub/workspace:latest"


class KubeError(Exception):
    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


def wait_for(pred, timeout=30.0, interval=0.1, what="condition"):
    """Poll pred() until it returns something truthy; return that. Fail after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except (KubeError, OSError) as e:  # the apiserver may be away for a moment
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


class Client:
    """A minimal Kubernetes REST client with one bearer token, TLS verified against the
    cluster's CA (for host 127.0.0.1)."""

    def __init__(self, host, port, ca_path, token):
        self.host, self.port, self.token = host, port, token
        self.ctx = ssl.create_default_context(cafile=str(ca_path))

    def _conn(self, timeout):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, content_type="application/json", query=None,
                timeout=15):
        """Return (status, decoded JSON or text)."""
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = content_type
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def call(self, method, path, body=None, **kw):
        status, out = self.request(method, path, body, **kw)
        if status >= 400:
            raise KubeError(method, path, status, out)
        return out

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.call("POST", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.call("DELETE", path, body, **kw)

    def merge_patch(self, path, body, **kw):
        return self.call("PATCH", path, body, content_type="application/merge-patch+json", **kw)

    def status_of(self, method, path, body=None, **kw):
        """Just the HTTP status (for authorization checks)."""
        return self.request(method, path, body, **kw)[0]

    def watch(self, path, query=None, timeout=30):
        """Yield watch events ({"type", "object"}) from a streaming watch until the server
        ends it or `timeout` seconds pass without data."""
        q = dict(query or {})
        q["watch"] = "1"
        full = path + "?" + urllib.parse.urlencode(q)
        conn = self._conn(timeout)
        try:
            conn.request("GET", full, headers={"Authorization": f"Bearer {self.token}"})
            resp = conn.getresponse()
            if resp.status >= 400:
                raise KubeError("GET", full, resp.status, resp.read().decode(errors="replace"))
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


class KubeCluster:
    """A running kubetest cluster (read from DIR/state.json)."""

    def __init__(self, dir):
        self.dir = Path(dir)
        st = json.loads((self.dir / "state.json").read_text())
        self.state = st
        self.server = st["server"]
        self.port = st["apiserver_port"]
        self.namespace = st["namespace"]
        self.node_name = st.get("node_name", "sim-node")
        self.ca_path = self.dir / "pki" / "ca.crt"
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self.hub_kubeconfig = self.dir / "hub.kubeconfig"
        self.incluster_dir = self.dir / "incluster"
        self.pv_dir = self.dir / "pv"
        self.admin_token = (self.dir / "pki" / "admin.token").read_text().strip()
        self.admin = Client("127.0.0.1", self.port, self.ca_path, self.admin_token)
        # This cluster's pod addresses: 127.42.0.0/24 for the first cluster on the machine,
        # 127.42.1.0/24 for a second one running at the same time, ...
        self.pod_subnet = (self.dir / "run" / "subnet").read_text().strip()

    # -- credentials -------------------------------------------------------------------
    @property
    def hub_token(self):
        """The hub ServiceAccount's current token (re-read: rotate_token replaces it)."""
        return (self.incluster_dir / "token").read_text().strip()

    @property
    def hub(self):
        return Client("127.0.0.1", self.port, self.ca_path, self.hub_token)

    # -- paths -------------------------------------------------------------------------
    def path(self, resource, name=None, ns=None, sub=None):
        """/api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]] (NS defaults to the hub namespace)."""
        p = f"/api/v1/namespaces/{ns or self.namespace}/{resource}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    # -- admin shortcuts ---------------------------------------------------------------
    def create(self, resource, manifest, ns=None):
        return self.admin.post(self.path(resource, ns=ns), manifest)

    def get(self, resource, name, ns=None):
        """The object, or None when it does not exist."""
        status, out = self.admin.request("GET", self.path(resource, name, ns))
        if status == 404:
            return None
        if status >= 400:
            raise KubeError("GET", self.path(resource, name, ns), status, out)
        return out

    def delete(self, resource, name, ns=None, grace=None):
        q = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        status, out = self.admin.request("DELETE", self.path(resource, name, ns), query=q)
        if status not in (200, 202, 404):
            raise KubeError("DELETE", self.path(resource, name, ns), status, out)
        return out

    def pod(self, name, ns=None):
        return self.get("pods", name, ns)

    def wait_pod(self, name, pred, timeout=60, what=None, ns=None):
        """Wait until pred(pod) is true; return the pod."""
        def check():
            p = self.pod(name, ns)
            return p if p is not None and pred(p) else None
        return wait_for(check, timeout, what=what or f"pod {name}")

    def wait_gone(self, resource, name, timeout=60, ns=None):
        wait_for(lambda: self.get(resource, name, ns) is None, timeout,
                 what=f"{resource}/{name} to be gone")

    def events(self, name=None, kind="Pod", ns=None):
        """Events of one object (oldest first)."""
        sel = f"involvedObject.kind={kind}"
        if name:
            sel += f",involvedObject.name={name}"
        items = self.admin.get(self.path("events", ns=ns), query={"fieldSelector": sel})["items"]
        return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))

    def wait_event(self, name, reason, kind="Pod", timeout=60, ns=None):
        """Wait for an event with this reason on the object; return it."""
        def check():
            for e in self.events(name, kind, ns):
                if e["reason"] == reason:
                    return e
            return None
        return wait_for(check, timeout, what=f"event {reason} on {kind} {name}")

    # -- lifecycle ---------------------------------------------------------------------
    def kubetest(self, *args, timeout=180):
        return subprocess.run([str(KUBETEST), *args, "--dir", str(self.dir)], check=True,
                              capture_output=True, text=True, timeout=timeout)

    def apiserver_stop(self):
        self.kubetest("apiserver-stop")

    def apiserver_start(self):
        self.kubetest("apiserver-start")

    def rotate_token(self):
        self.kubetest("rotate-token")

    def down(self):
        subprocess.run([str(KUBETEST), "down", "--dir", str(self.dir)], check=True,
                       capture_output=True, text=True, timeout=120)

    def log(self, component):
        """Text of DIR/<component>.log (etcd, apiserver, kubelet)."""
        p = self.dir / f"{component}.log"
        return p.read_text(errors="replace") if p.exists() else ""


def workspace_pod(name, claim=None, image=WORKSPACE_IMAGE, port=8080, probe="/healthz", **extra):
    """A pod like the hub's: code-server on `port` with a readiness probe on the path
    `probe` (None: no probe), home on `claim` at /home/coder. Other images (sim/http,
    sim/sleep) fit the same shape."""
    c = {"name": "workspace", "image": image, "ports": [{"name": "http", "containerPort": port}]}
    if probe:
        c["readinessProbe"] = {"httpGet": {"path": probe, "port": port},
                               "periodSeconds": 1, "failureThreshold": 30}
    spec = {"containers": [c], "terminationGracePeriodSeconds": 5}
    if claim:
        c["volumeMounts"] = [{"name": "home", "mountPath": "/home/coder"}]
        spec["volumes"] = [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}]
    spec.update(extra)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "codehub-workspace"}}, "spec": spec}


def pvc(name, size="1Gi", storage_class=None):
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": spec}


def ensure_kubetest():
    """Build the kubetest binary if it is missing or older than its sources (the script is
    silent and quick when it is up to date)."""
    r = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/build-kubetest.sh failed:\n{r.stdout}\n{r.stderr}")
    return KUBETEST


def start_cluster(dir=None, *extra_args):
    """Run `kubetest up` into DIR (a new short /tmp dir by default) and return the cluster.
    Short on purpose: code-server's sockets live under pod homes, and a Unix socket path
    may not exceed 107 bytes.

    Without a DIR of the caller's, a failed `up` is tried once more in a new directory: the
    ports it picks are free when it looks, and another process on the machine can take one
    before etcd or the apiserver binds it (seen once in CI while a benchmark ran its own
    cluster). The first failure is printed, so it is never silent."""
    ensure_kubetest()
    if dir is not None:
        return _start_cluster_once(Path(dir), extra_args)
    try:
        return _start_cluster_once(Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp")), extra_args)
    except RuntimeError as first:
        print(f"kube_util: first kubetest up failed, trying once more:\n{first}",
              file=sys.stderr)
        return _start_cluster_once(Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp")), extra_args)


def _start_cluster_once(dir, extra_args):
    r = subprocess.run([str(KUBETEST), "up", "--dir", str(dir), "--images", str(IMAGES),
                        *extra_args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        # "up" stops what it started when it fails; this also covers an "up" that was cut
        # short by the timeout.
        subprocess.run([str(KUBETEST), "down", "--dir", str(dir)], capture_output=True, timeout=120)
        logs = ""
        for comp in ("etcd", "apiserver", "kubelet"):
            p = dir / f"{comp}.log"
            if p.exists():
                logs += f"\n--- {comp}.log (tail) ---\n" + "\n".join(
                    p.read_text(errors="replace").splitlines()[-30:])
        if not os.environ.get("KUBETEST_KEEP"):
            shutil.rmtree(dir, ignore_errors=True)
        raise RuntimeError(f"kubetest up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}{logs}")
    return KubeCluster(dir)


_lock = threading.Lock()
_shared = {"cluster": None, "users": 0}


@pytest.fixture(scope="session")
def kube():
    """One kubetest cluster for the session. Imported by several test modules it is still
    one cluster: each import gets its own fixture definition, so they share by count."""
    with _lock:
        if _shared["cluster"] is None:
            _shared["cluster"] = start_cluster()
        _shared["users"] += 1
        cluster = _shared["cluster"]
    try:
        yield cluster
    finally:
        with _lock:
            _shared["users"] -= 1
            last = _shared["users"] == 0
            if last:
                _shared["cluster"] = None
        if last:
            cluster.down()
            if not os.environ.get("KUBETEST_KEEP"):
                shutil.rmtree(cluster.dir, ignore_errors=True)

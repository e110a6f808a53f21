"""The Kubernetes test harness itself (tests/kube, `kubetest`): a real kube-apiserver and
etcd, and a simulated kubelet that schedules pods, runs them as local processes on their own
loopback address, reports status and events, and provisions volumes. The hub's Kubernetes
tests rely on every behaviour checked here."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from kube_util import (KUBETEST, Client, KubeError, pvc, start_cluster, wait_for,
                       workspace_pod)
from kube_util import kube  # noqa: F401  (session fixture)


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def cond(pod, typ):
    for c in pod.get("status", {}).get("conditions", []):
        if c["type"] == typ:
            return c
    return None


def is_ready(pod):
    c = cond(pod, "Ready")
    return c is not None and c["status"] == "True"


def ctr_status(pod, i=0):
    cs = pod.get("status", {}).get("containerStatuses") or []
    return cs[i] if len(cs) > i else None


def waiting_reason(pod):
    cs = ctr_status(pod)
    return cs and cs["state"].get("waiting", {}).get("reason")


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def pod_pids(kube, uid):
    """Process-group leaders the kubelet runs for the pod (from DIR/run/pods)."""
    out = []
    d = kube.dir / "run" / "pods"
    for f in d.iterdir() if d.exists() else []:
        try:
            if f" {uid} " in f.read_text():
                out.append(int(f.name))
        except OSError:
            pass
    return out


def proc_env(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def delete_and_wait(kube, name, timeout=60):
    kube.delete("pods", name)
    kube.wait_gone("pods", name, timeout)


def shell_pod(name, script, **spec):
    s = {"containers": [{"name": "main", "image": "sim/shell", "command": ["/bin/sh", "-c", script]}],
         "terminationGracePeriodSeconds": 2}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s}


# --- the workspace pod -------------------------------------------------------------------

def test_workspace_pod_runs_code_server_on_its_pod_ip_with_the_pv_as_home(kube):
    claim, name = uniq("home"), uniq("ws")
    kube.create("persistentvolumeclaims", pvc(claim))
    kube.create("pods", workspace_pod(name, claim=claim))
    pod = kube.wait_pod(name, is_ready, timeout=90, what="workspace pod Ready")

    st = pod["status"]
    assert st["phase"] == "Running"
    assert re.fullmatch(r"127\.42\.\d{1,3}\.\d{1,3}", st["podIP"])
    assert st["podIP"].startswith(kube.pod_subnet.rsplit(".", 1)[0] + ".")
    assert st["podIPs"][0]["ip"] == st["podIP"]
    assert st["hostIP"] == "127.0.0.1"
    assert st["startTime"]
    # Server-set fields survive the kubelet's status patches.
    assert st["qosClass"] == "BestEffort"
    assert pod["spec"]["nodeName"] == "sim-node"
    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert cond(pod, t)["status"] == "True", t
    cs = ctr_status(pod)
    assert cs["ready"] is True and cs["started"] is True and cs["restartCount"] == 0
    assert "running" in cs["state"]

    # code-server answers on the pod's own address and port.
    status, body = http_get(f"http://{st['podIP']}:8080/healthz")
    assert status == 200 and b"status" in body
    # ... and nowhere else: not on 127.0.0.1, where another pod's port would collide.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 8080), timeout=1).close()

    # Its HOME is the PersistentVolume's host directory.
    vol = kube.get("persistentvolumeclaims", claim)["spec"]["volumeName"]
    host_dir = kube.admin.get(f"/api/v1/persistentvolumes/{vol}")["spec"]["hostPath"]["path"]
    assert Path(host_dir).parent == kube.pv_dir
    pids = pod_pids(kube, pod["metadata"]["uid"])
    assert len(pids) == 1 and alive(pids[0])
    env = proc_env(pids[0])
    assert env["HOME"] == host_dir
    wait_for(lambda: (Path(host_dir) / ".local" / "share" / "code-server").is_dir(), 30,
             what="code-server's user data in the PV")

    reasons = [e["reason"] for e in kube.events(name)]
    order = ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    assert [r for r in reasons if r in order] == order, reasons

    # Deletion: SIGTERM, Killing event, the process gone, then the object.
    kube.delete("pods", name)
    kube.wait_gone("pods", name, timeout=30)
    assert not alive(pids[0])
    assert pod_pids(kube, pod["metadata"]["uid"]) == []
    assert "Killing" in [e["reason"] for e in kube.events(name)]
    # The claim (and the data on it) outlive the pod.
    assert kube.get("persistentvolumeclaims", claim)["status"]["phase"] == "Bound"
    assert (Path(host_dir) / ".local").is_dir()
    kube.delete("persistentvolumeclaims", claim)


def test_pod_recreated_under_the_same_name_gets_a_fresh_start(kube):
    name = uniq("same")
    kube.create("pods", workspace_pod(name, image="sim/http", probe="/"))
    first = kube.wait_pod(name, is_ready, what="first instance Ready")
    delete_and_wait(kube, name)
    kube.create("pods", workspace_pod(name, image="sim/http", probe="/"))
    second = kube.wait_pod(name, is_ready, what="second instance Ready")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    # Addresses are not reused right away (a client may hold a connection to the old pod).
    assert second["status"]["podIP"] != first["status"]["podIP"]
    assert http_get(f"http://{second['status']['podIP']}:8080/")[0] == 200
    delete_and_wait(kube, name)


def test_two_pods_listen_on_the_same_port_on_their_own_addresses(kube):
    a, b = uniq("a"), uniq("b")
    for n in (a, b):
        kube.create("pods", workspace_pod(n, image="sim/http", probe="/"))
    pa = kube.wait_pod(a, is_ready)
    pb = kube.wait_pod(b, is_ready)
    assert pa["status"]["podIP"] != pb["status"]["podIP"]
    for p in (pa, pb):
        assert http_get(f"http://{p['status']['podIP']}:8080/")[0] == 200
    for n in (a, b):
        delete_and_wait(kube, n)


def test_graceful_deletion_waits_for_the_grace_period_then_kills(kube):
    name = uniq("stubborn")
    # Ignores SIGTERM (the ignore disposition is inherited by sleep).
    kube.create("pods", shell_pod(name, "trap '' TERM; sleep 1000", terminationGracePeriodSeconds=3))
    pod = kube.wait_pod(name, is_ready)
    pids = pod_pids(kube, pod["metadata"]["uid"])
    assert pids and all(alive(p) for p in pids)
    t0 = time.monotonic()
    kube.delete("pods", name)
    p = kube.pod(name)
    assert p is not None and p["metadata"].get("deletionTimestamp"), "deleted without grace"
    kube.wait_gone("pods", name, timeout=30)
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.5, f"pod went away after {elapsed:.1f}s, before its 3 s grace period"
    assert not any(alive(p) for p in pids)


def test_force_deletion_kills_the_processes_at_once(kube):
    name = uniq("forced")
    kube.create("pods", shell_pod(name, "trap '' TERM; sleep 1000", terminationGracePeriodSeconds=60))
    pod = kube.wait_pod(name, is_ready)
    pids = pod_pids(kube, pod["metadata"]["uid"])
    kube.delete("pods", name, grace=0)
    wait_for(lambda: not any(alive(p) for p in pids), 15, what="processes killed")
    assert kube.pod(name) is None


def test_env_field_refs_var_expansion_and_volume_paths(kube):
    name = uniq("env")
    out = Path(tempfile.mkdtemp(prefix="kt-out-", dir="/tmp"))
    try:
        c = {
            "name": "main", "image": "sim/shell",
            "command": ["/bin/sh", "-c", "env > /out/env.txt; echo \"$@\" > /out/args.txt; sleep 1000", "sh"],
            "args": ["$(GREETING)", "$(MY_IP)", "$$(LITERAL)", "$(UNDEFINED)", "0.0.0.0:9000", "/data/x"],
            "env": [
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "MY_TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                   "divisor": "1Mi"}}},
                {"name": "GREETING", "value": "hello-$(MY_NAME)"},
                {"name": "DATA", "value": "/data/sub"},
            ],
            "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}},
            "volumeMounts": [{"name": "out", "mountPath": "/out"},
                             {"name": "scratch", "mountPath": "/data"}],
        }
        manifest = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"team": "blue"}},
                    "spec": {"containers": [c], "terminationGracePeriodSeconds": 1,
                             "volumes": [{"name": "out", "hostPath": {"path": str(out)}},
                                         {"name": "scratch", "emptyDir": {}}]}}
        kube.create("pods", manifest)
        pod = kube.wait_pod(name, is_ready)
        ip = pod["status"]["podIP"]
        wait_for(lambda: (out / "args.txt").exists() and (out / "args.txt").read_text(), 15)
        env = dict(line.split("=", 1) for line in (out / "env.txt").read_text().splitlines()
                   if "=" in line)
        assert env["MY_IP"] == ip
        assert env["MY_NAME"] == name
        assert env["MY_NS"] == kube.namespace
        assert env["MY_NODE"] == "sim-node"
        assert env["MY_TEAM"] == "blue"
        assert env["MEM"] == "256"
        assert env["GREETING"] == f"hello-{name}"
        assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
        assert env["KUBERNETES_SERVICE_PORT"] == str(kube.port)
        scratch = env["DATA"]
        assert scratch.startswith(str(kube.dir / "pods")) and scratch.endswith("/sub")
        args = (out / "args.txt").read_text().split()
        assert args[0] == f"hello-{name}"
        assert args[1] == ip
        assert args[2] == "$(LITERAL)"
        assert args[3] == "$(UNDEFINED)"
        assert args[4] == f"{ip}:9000"
        assert args[5] == str(Path(scratch).parent / "x")
        delete_and_wait(kube, name)
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --- failures the hub must see early -----------------------------------------------------

def test_unknown_image_is_a_pull_failure_and_never_runs(kube):
    name = uniq("noimg")
    kube.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"containers": [{"name": "c", "image": "registry.invalid/nope:1"}]}})
    kube.wait_pod(name, lambda p: waiting_reason(p) == "ErrImagePull", what="ErrImagePull")
    pod = kube.wait_pod(name, lambda p: waiting_reason(p) == "ImagePullBackOff",
                        what="ImagePullBackOff")
    assert pod["status"]["phase"] == "Pending"
    assert ctr_status(pod)["started"] is False
    assert not is_ready(pod)
    kube.wait_event(name, "BackOff")
    msgs = [e["message"] for e in kube.events(name) if e["reason"] == "Failed"]
    assert "Error: ErrImagePull" in msgs
    assert "Error: ImagePullBackOff" in msgs
    assert any("registry.invalid/nope:1" in m and "not found" in m for m in msgs)
    assert pod_pids(kube, pod["metadata"]["uid"]) == []
    delete_and_wait(kube, name)


def test_crashing_container_restarts_with_crashloopbackoff(kube):
    name = uniq("crash")
    kube.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"containers": [{"name": "c", "image": "sim/crash"}]}})
    pod = kube.wait_pod(name, lambda p: (ctr_status(p) or {}).get("restartCount", 0) >= 1
                        and waiting_reason(p) == "CrashLoopBackOff", timeout=60,
                        what="a restart and CrashLoopBackOff")
    cs = ctr_status(pod)
    term = cs["lastState"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"
    assert not is_ready(pod)
    ev = kube.wait_event(name, "BackOff")
    assert ev["type"] == "Warning" and "Back-off restarting failed container" in ev["message"]
    # The back-off grows: 1 s, 2 s, 4 s ... so restarts slow down but go on.
    n = cs["restartCount"]
    kube.wait_pod(name, lambda p: ctr_status(p)["restartCount"] > n, timeout=30,
                  what="another restart")
    delete_and_wait(kube, name)


@pytest.mark.parametrize("script,phase,code", [("exit 0", "Succeeded", 0), ("exit 7", "Failed", 7)])
def test_restart_policy_never_ends_the_pod(kube, script, phase, code):
    name = uniq("once")
    kube.create("pods", shell_pod(name, script, restartPolicy="Never"))
    pod = kube.wait_pod(name, lambda p: p["status"].get("phase") == phase, what=phase)
    cs = ctr_status(pod)
    assert cs["state"]["terminated"]["exitCode"] == code
    assert cs["restartCount"] == 0
    delete_and_wait(kube, name)


def test_missing_executable_is_a_start_error(kube):
    name = uniq("noexec")
    kube.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"restartPolicy": "Never", "containers": [
                             {"name": "c", "image": "codehub/workspace:1", "command": ["/opt/nothing"]}]}})
    pod = kube.wait_pod(name, lambda p: p["status"].get("phase") == "Failed", what="Failed")
    term = ctr_status(pod)["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128
    assert "/opt/nothing" in term["message"]
    delete_and_wait(kube, name)


def test_readiness_probe_gates_ready(kube):
    name = uniq("probe")
    kube.create("pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "volumes": [{"name": "www", "emptyDir": {}}],
                 "containers": [{
                     "name": "web", "image": "sim/shell",
                     "command": ["python3", "-m", "http.server", "--bind", "$(POD_IP)",
                                 "--directory", "/srv", "8080"],
                     "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                     "volumeMounts": [{"name": "www", "mountPath": "/srv"}],
                     "readinessProbe": {"httpGet": {"path": "/ready.txt", "port": 8080},
                                        "periodSeconds": 1, "failureThreshold": 1}}]}})
    pod = kube.wait_pod(name, lambda p: p["status"].get("phase") == "Running", what="Running")
    ip = pod["status"]["podIP"]
    wait_for(lambda: http_get(f"http://{ip}:8080/")[0] == 200, 15, what="server up")
    # Serving, but /ready.txt is 404: not Ready, for several probe periods.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert not is_ready(kube.pod(name))
        time.sleep(0.2)
    assert kube.wait_event(name, "Unhealthy")["message"].startswith("Readiness probe failed")
    www = kube.dir / "pods" / f"{kube.namespace}_{name}_{pod['metadata']['uid']}" / "volumes" / "www"
    (www / "ready.txt").write_text("ok")
    kube.wait_pod(name, is_ready, timeout=15, what="Ready after the probe passes")
    # ... and not Ready again once it fails.
    (www / "ready.txt").unlink()
    kube.wait_pod(name, lambda p: not is_ready(p), timeout=15, what="unready again")
    delete_and_wait(kube, name)


def test_liveness_probe_failure_restarts_the_container(kube):
    name = uniq("live")
    m = workspace_pod(name, image="sim/http", probe=None)
    m["spec"]["containers"][0]["livenessProbe"] = {
        "httpGet": {"path": "/missing", "port": "http"}, "periodSeconds": 1, "failureThreshold": 2}
    m["spec"]["terminationGracePeriodSeconds"] = 1
    kube.create("pods", m)
    ev = kube.wait_event(name, "Killing", timeout=30)
    assert "failed liveness probe, will be restarted" in ev["message"]
    pod = kube.wait_pod(name, lambda p: ctr_status(p)["restartCount"] >= 1, what="a restart")
    assert ctr_status(pod)["lastState"]["terminated"]
    assert "Liveness probe failed" in kube.wait_event(name, "Unhealthy")["message"]
    delete_and_wait(kube, name)


def test_init_containers_run_first_and_exec_probe(kube):
    name = uniq("init")
    kube.create("pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "volumes": [{"name": "w", "emptyDir": {}}],
                 "initContainers": [{"name": "prep", "image": "sim/shell",
                                     "command": ["/bin/sh", "-c", "sleep 0.5; echo prepared > /w/flag"],
                                     "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
                 "containers": [{"name": "main", "image": "sim/shell",
                                 "command": ["/bin/sh", "-c", "cat /w/flag > /w/seen; sleep 1000"],
                                 "volumeMounts": [{"name": "w", "mountPath": "/w"}],
                                 "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}})
    pod = kube.wait_pod(name, lambda p: p["status"].get("initContainerStatuses"), what="init status")
    if pod["status"]["phase"] == "Pending":
        assert cond(pod, "Initialized")["status"] in ("False", "True")
    pod = kube.wait_pod(name, is_ready, what="Ready after init")
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert cond(pod, "Initialized")["status"] == "True"
    w = kube.dir / "pods" / f"{kube.namespace}_{name}_{pod['metadata']['uid']}" / "volumes" / "w"
    wait_for(lambda: (w / "seen").exists() and (w / "seen").read_text() == "prepared\n", 10,
             what="main saw the init container's file")
    delete_and_wait(kube, name)


# --- scheduling --------------------------------------------------------------------------

def test_unmatched_node_selector_is_unschedulable_until_the_node_is_labelled(kube):
    name = uniq("sel")
    label = f"kubetest.test/{uniq('disk')}"
    m = workspace_pod(name, image="sim/sleep", probe=None, nodeSelector={label: "ssd"})
    kube.create("pods", m)
    pod = kube.wait_pod(name, lambda p: (cond(p, "PodScheduled") or {}).get("reason") == "Unschedulable",
                        what="Unschedulable")
    assert cond(pod, "PodScheduled")["status"] == "False"
    assert "node affinity/selector" in cond(pod, "PodScheduled")["message"]
    ev = kube.wait_event(name, "FailedScheduling")
    assert ev["type"] == "Warning" and "didn't match Pod's node affinity/selector" in ev["message"]
    assert ev["source"]["component"] == "default-scheduler"
    assert not kube.pod(name)["spec"].get("nodeName")

    node_path = f"/api/v1/nodes/{kube.node_name}"
    kube.admin.merge_patch(node_path, {"metadata": {"labels": {label: "ssd"}}})
    try:
        pod = kube.wait_pod(name, lambda p: p["status"].get("phase") == "Running", what="bound and Running")
        assert pod["spec"]["nodeName"] == "sim-node"
        assert cond(pod, "PodScheduled")["status"] == "True"
        kube.wait_event(name, "Scheduled")
    finally:
        kube.admin.merge_patch(node_path, {"metadata": {"labels": {label: None}}})
    delete_and_wait(kube, name)


def test_requests_beyond_the_node_are_unschedulable(kube):
    name = uniq("big")
    m = workspace_pod(name, image="sim/sleep", probe=None)
    m["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "64", "memory": "1Gi"}}
    kube.create("pods", m)
    ev = kube.wait_event(name, "FailedScheduling")
    assert "Insufficient cpu" in ev["message"]
    assert "Insufficient memory" not in ev["message"]
    delete_and_wait(kube, name)


def test_requests_count_what_other_pods_use(kube):
    first, second = uniq("half1"), uniq("half2")
    for n in (first, second):
        m = workspace_pod(n, image="sim/sleep", probe=None)
        m["spec"]["containers"][0]["resources"] = {"requests": {"memory": "5Gi"}}
        kube.create("pods", m)
        if n == first:
            kube.wait_pod(n, lambda p: p["status"].get("phase") == "Running")
    assert "Insufficient memory" in kube.wait_event(second, "FailedScheduling")["message"]
    delete_and_wait(kube, first)
    # The freed memory lets the second one in.
    kube.wait_pod(second, lambda p: p["status"].get("phase") == "Running", what="second scheduled")
    delete_and_wait(kube, second)


def test_taints_need_tolerations(kube):
    key = f"kubetest.test/{uniq('dedicated')}"
    node_path = f"/api/v1/nodes/{kube.node_name}"
    node = kube.admin.get(node_path)
    taints = node["spec"].get("taints") or []
    kube.admin.merge_patch(node_path, {"spec": {"taints": taints + [
        {"key": key, "value": "gpu", "effect": "NoSchedule"}]}})
    plain, tolerant = uniq("plain"), uniq("tolerant")
    try:
        kube.create("pods", workspace_pod(plain, image="sim/sleep", probe=None))
        kube.create("pods", workspace_pod(tolerant, image="sim/sleep", probe=None, tolerations=[
            {"key": key, "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]))
        kube.wait_pod(tolerant, lambda p: p["status"].get("phase") == "Running")
        ev = kube.wait_event(plain, "FailedScheduling")
        assert f"untolerated taint {{{key}: gpu}}" in ev["message"]
    finally:
        kube.admin.merge_patch(node_path, {"spec": {"taints": taints or None}})
    kube.wait_pod(plain, lambda p: p["status"].get("phase") == "Running", what="scheduled once untainted")
    for n in (plain, tolerant):
        delete_and_wait(kube, n)


# --- volumes -----------------------------------------------------------------------------

def test_pvc_binds_to_a_hostpath_pv_and_is_cleaned_up(kube):
    claim = uniq("data")
    kube.create("persistentvolumeclaims", pvc(claim, size="2Gi"))
    c = wait_for(lambda: (lambda x: x if x and x["status"].get("phase") == "Bound" else None)(
        kube.get("persistentvolumeclaims", claim)), 30, what="PVC Bound")
    assert c["spec"]["storageClassName"] == "standard"  # the default class was applied
    assert c["status"]["capacity"]["storage"] == "2Gi"
    pv = kube.admin.get(f"/api/v1/persistentvolumes/{c['spec']['volumeName']}")
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]
    assert pv["spec"]["claimRef"]["name"] == claim
    assert pv["spec"]["capacity"]["storage"] == "2Gi"
    host = Path(pv["spec"]["hostPath"]["path"])
    assert host.is_dir() and host.parent == kube.pv_dir
    sc = kube.admin.get("/apis/storage.k8s.io/v1/storageclasses/standard")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"

    kube.delete("persistentvolumeclaims", claim)
    kube.wait_gone("persistentvolumeclaims", claim, timeout=30)
    wait_for(lambda: kube.admin.status_of("GET", f"/api/v1/persistentvolumes/{pv['metadata']['name']}") == 404,
             30, what="PV deleted (reclaimPolicy Delete)")
    assert not host.exists()


def test_pvc_in_use_is_kept_until_its_pod_is_gone(kube):
    claim, name = uniq("busy"), uniq("user")
    kube.create("persistentvolumeclaims", pvc(claim))
    m = workspace_pod(name, image="sim/sleep", probe=None)
    m["spec"]["containers"][0]["volumeMounts"] = [{"name": "d", "mountPath": "/d"}]
    m["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
    m["spec"]["terminationGracePeriodSeconds"] = 1
    kube.create("pods", m)
    kube.wait_pod(name, is_ready)
    kube.delete("persistentvolumeclaims", claim)
    time.sleep(1.0)  # give the controller every chance to wrongly let it go
    c = kube.get("persistentvolumeclaims", claim)
    assert c is not None and c["metadata"].get("deletionTimestamp")
    assert "kubernetes.io/pvc-protection" in c["metadata"]["finalizers"]
    delete_and_wait(kube, name)
    kube.wait_gone("persistentvolumeclaims", claim, timeout=30)


def test_unknown_storage_class_stays_pending_with_provisioning_failed(kube):
    claim = uniq("fast")
    kube.create("persistentvolumeclaims", pvc(claim, storage_class="no-such-class"))
    ev = kube.wait_event(claim, "ProvisioningFailed", kind="PersistentVolumeClaim")
    assert ev["type"] == "Warning" and "no-such-class" in ev["message"]
    c = kube.get("persistentvolumeclaims", claim)
    assert c["status"]["phase"] == "Pending" and not c["spec"].get("volumeName")
    # A pod using it is not scheduled.
    name = uniq("waits")
    m = workspace_pod(name, image="sim/sleep", probe=None)
    m["spec"]["containers"][0]["volumeMounts"] = [{"name": "d", "mountPath": "/d"}]
    m["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
    kube.create("pods", m)
    ev = kube.wait_event(name, "FailedScheduling")
    assert "pod has unbound immediate PersistentVolumeClaims" in ev["message"]
    kube.delete("pods", name)
    kube.wait_gone("pods", name)
    kube.delete("persistentvolumeclaims", claim)
    kube.wait_gone("persistentvolumeclaims", claim)


# --- credentials and RBAC ----------------------------------------------------------------

def test_credential_files(kube):
    inc = kube.incluster_dir
    assert (inc / "namespace").read_text() == kube.namespace
    assert (inc / "ca.crt").read_bytes() == kube.ca_path.read_bytes()
    env = dict(line.split("=", 1) for line in (inc / "env").read_text().splitlines())
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == str(kube.port)
    hub_cfg = kube.hub_kubeconfig.read_text()
    assert f"server: https://127.0.0.1:{kube.port}" in hub_cfg
    assert "certificate-authority-data:" in hub_cfg
    assert kube.hub_token in hub_cfg
    assert kube.admin_token in kube.admin_kubeconfig.read_text()
    st = json.loads((kube.dir / "state.json").read_text())
    assert st["apiserver_port"] == kube.port and set(st["pids"]) == {"etcd", "apiserver", "kubelet"}
    # The token is a real service-account token of codehub-hub.
    review = kube.admin.post("/apis/authentication.k8s.io/v1/tokenreviews",
                             {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "spec": {"token": kube.hub_token}})
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{kube.namespace}:codehub-hub"


def test_tls_is_verified_against_our_ca(kube):
    import ssl
    # Our CA verifies the serving certificate for the IP 127.0.0.1 ...
    ours = ssl.create_default_context(cafile=str(kube.ca_path))
    with socket.create_connection(("127.0.0.1", kube.port), timeout=5) as s:
        with ours.wrap_socket(s, server_hostname="127.0.0.1") as tls:
            assert tls.getpeercert()
    # ... and a client that does not trust it fails the handshake.
    system = ssl.create_default_context()
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", kube.port), timeout=5) as s:
            system.wrap_socket(s, server_hostname="127.0.0.1")


def test_hub_token_can_do_a_spawners_job(kube):
    hub = kube.hub
    claim, name = uniq("hubhome"), uniq("hubpod")
    hub.post(kube.path("persistentvolumeclaims"), pvc(claim))
    hub.post(kube.path("pods"), workspace_pod(name, claim=claim, image="sim/http", probe="/"))
    names = [p["metadata"]["name"] for p in hub.get(kube.path("pods"))["items"]]
    assert name in names
    assert hub.get(kube.path("pods", name))["metadata"]["name"] == name
    assert claim in [c["metadata"]["name"] for c in hub.get(kube.path("persistentvolumeclaims"))["items"]]
    # Watch pods from the list's resourceVersion until ours is Ready.
    rv = hub.get(kube.path("pods"))["metadata"]["resourceVersion"]
    ready = False
    for ev in hub.watch(kube.path("pods"), {"resourceVersion": rv,
                                           "fieldSelector": f"metadata.name={name}",
                                           "timeoutSeconds": "60"}, timeout=70):
        if ev["type"] in ("ADDED", "MODIFIED") and is_ready(ev["object"]):
            ready = True
            break
    assert ready
    reasons = [e["reason"] for e in hub.get(kube.path("events"),
                                            query={"fieldSelector": f"involvedObject.name={name}"})["items"]]
    assert "Started" in reasons
    hub.delete(kube.path("pods", name))
    hub.delete(kube.path("persistentvolumeclaims", claim))
    kube.wait_gone("pods", name)
    kube.wait_gone("persistentvolumeclaims", claim)


@pytest.mark.parametrize("method,path_fn,body", [
    ("GET", lambda k: k.path("secrets"), None),
    ("GET", lambda k: k.path("secrets", "x"), None),
    ("GET", lambda k: k.path("pods", ns="default"), None),
    ("POST", lambda k: k.path("pods", ns="default"), {"metadata": {"name": "x"}}),
    ("GET", lambda k: "/api/v1/pods", None),
    ("GET", lambda k: "/api/v1/nodes", None),
    ("GET", lambda k: k.path("configmaps"), None),
    ("POST", lambda k: k.path("services"), {"metadata": {"name": "x"}}),
    ("PATCH", lambda k: k.path("pods", "x"), {}),
    ("POST", lambda k: k.path("events"), {"metadata": {"name": "x"}}),
    ("DELETE", lambda k: k.path("events", "x"), None),
    ("POST", lambda k: k.path("pods", "x", sub="exec"), None),
    ("GET", lambda k: "/apis/rbac.authorization.k8s.io/v1/namespaces/codehub/roles", None),
], ids=["list-secrets", "get-secret", "list-pods-other-ns", "create-pod-other-ns",
        "list-pods-all-ns", "list-nodes", "list-configmaps", "create-service", "patch-pod",
        "create-event", "delete-event", "exec", "list-roles"])
def test_hub_token_is_denied_everything_else(kube, method, path_fn, body):
    kw = {"content_type": "application/merge-patch+json"} if method == "PATCH" else {}
    assert kube.hub.status_of(method, path_fn(kube), body, **kw) == 403


def test_anonymous_and_bad_tokens_are_rejected(kube):
    bad = Client("127.0.0.1", kube.port, kube.ca_path, "not-a-token")
    assert bad.status_of("GET", kube.path("pods")) == 401


def test_rotated_hub_token_is_written_atomically_and_works(kube):
    old = kube.hub_token
    kube.rotate_token()
    new = kube.hub_token
    assert new != old
    assert new in kube.hub_kubeconfig.read_text()
    assert kube.hub.status_of("GET", kube.path("pods")) == 200


# --- outages and shutdown ----------------------------------------------------------------

def test_apiserver_stop_and_start(kube):
    name = uniq("survivor")
    kube.create("pods", workspace_pod(name, image="sim/http", probe="/"))
    pod = kube.wait_pod(name, is_ready)
    ip = pod["status"]["podIP"]
    rv = kube.admin.get(kube.path("pods"))["metadata"]["resourceVersion"]
    kube.apiserver_stop()
    try:
        with pytest.raises(OSError):
            kube.admin.request("GET", kube.path("pods"), timeout=3)
        # Pods keep running while the API is away.
        assert http_get(f"http://{ip}:8080/")[0] == 200
        out = subprocess.run([str(KUBETEST), "status", "--dir", str(kube.dir)],
                             capture_output=True, text=True)
        assert out.returncode != 0 and re.search(r"apiserver\s+pid \d+\s+stopped", out.stdout)
        kube.apiserver_stop()  # idempotent
    finally:
        kube.apiserver_start()
    assert kube.admin.status_of("GET", kube.path("pods")) == 200
    # A watch resumed from before the restart is too old for the new watch cache: 410, the
    # case a client must answer with a fresh list.
    first = next(kube.admin.watch(kube.path("pods"), {"resourceVersion": rv, "timeoutSeconds": "5"}))
    assert first["type"] == "ERROR" and first["object"]["code"] == 410
    # The kubelet's watches came back: a pod created now runs, a deletion completes.
    after = uniq("after")
    kube.create("pods", workspace_pod(after, image="sim/http", probe="/"))
    kube.wait_pod(after, is_ready, timeout=60, what="pod created after the restart Ready")
    for n in (name, after):
        delete_and_wait(kube, n)


def test_down_stops_everything_and_is_idempotent(kube):
    c = start_cluster(None, "--namespace", "other")
    try:
        assert c.namespace == "other"
        # Running beside the session's cluster, it has its own pod addresses.
        assert c.pod_subnet != kube.pod_subnet
        assert c.admin.get("/api/v1/namespaces/other/serviceaccounts/codehub-hub")
        c.create("pods", workspace_pod("w", image="sim/http", probe="/"))
        pod = c.wait_pod("w", is_ready)
        assert pod["status"]["podIP"].startswith(c.pod_subnet.rsplit(".", 1)[0] + ".")
        assert http_get(f"http://{pod['status']['podIP']}:8080/")[0] == 200
        pod_pid_list = pod_pids(c, pod["metadata"]["uid"])
        assert pod_pid_list
        st = json.loads((c.dir / "state.json").read_text())
        pids = list(st["pids"].values()) + pod_pid_list
        assert all(alive(p) for p in pids)
        # A second "up" on a running dir refuses.
        r = subprocess.run([str(KUBETEST), "up", "--dir", str(c.dir)], capture_output=True, text=True)
        assert r.returncode != 0 and "already runs" in r.stderr
        c.down()
        assert not [p for p in pids if alive(p)]
        for port in (st["apiserver_port"], st["etcd_port"]):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        c.down()  # twice is fine
    finally:
        subprocess.run([str(KUBETEST), "down", "--dir", str(c.dir)], capture_output=True)
        shutil.rmtree(c.dir, ignore_errors=True)


def test_down_on_an_empty_dir_succeeds():
    d = tempfile.mkdtemp(prefix="kt-empty-", dir="/tmp")
    try:
        r = subprocess.run([str(KUBETEST), "down", "--dir", d], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        os.rmdir(d)


def test_helper_reports_missing_objects_and_api_errors(kube):
    # Sanity of the helper itself: a missing object is None, a bad request raises.
    assert kube.pod("does-not-exist") is None
    with pytest.raises(KubeError) as e:
        kube.create("pods", {"metadata": {"name": "Invalid_Name"}, "spec": {"containers": []}})
    assert e.value.status == 422

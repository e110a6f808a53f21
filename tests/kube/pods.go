package main

// Pod runtime: each container of a pod bound to our node is a local process in its own
// process group, on the pod's own loopback address 127.42.0.N. This file holds the
// per-pod state machine (pull, start, restart with back-off, terminate) and the status it
// reports. Process launch details (env, volumes, argv) are in launch.go.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

const (
	pullNone = iota
	pullInProgress
	pullDone
	pullErr     // ErrImagePull shown
	pullBackOff // ImagePullBackOff shown
)

type ctrRT struct {
	spec  corev1.Container
	init  bool
	image *imageSpec // nil: the image "does not exist"

	proc         *exec.Cmd // non-nil while running
	startedAt    time.Time
	containerID  string
	everStarted  bool
	restartCount int32
	crashes      int // consecutive, for the back-off
	waitReason   string
	waitMsg      string
	nextAt       time.Time // earliest time of the next step (restart, pull retry)
	pullState    int
	pullStarted  time.Time
	pullFails    int
	lastTerm     *corev1.ContainerStateTerminated
	final        *corev1.ContainerStateTerminated // terminated and not going to restart
	ready        bool
	startupDone  bool
	probeStop    chan struct{}
	killing      bool // a liveness/startup failure is killing it
}

type condState struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

type podRT struct {
	mu          sync.Mutex
	uid         types.UID
	key         string
	ns, name    string
	ipN         int
	ip          string
	startTime   metav1.Time
	ctrs        []*ctrRT
	terminating bool
	removed     bool
	conds       map[corev1.PodConditionType]condState
	lastPatch   string
	dir         string            // DIR/pods/NS_NAME_UID: emptyDirs, ephemeral homes
	volumes     map[string]string // volume name -> host directory, filled at first start
}

func (k *kubelet) backoff(n int) time.Duration {
	d := k.flags.backoffBase
	for i := 0; i < n && d < k.flags.backoffMax; i++ {
		d *= 2
	}
	if d > k.flags.backoffMax {
		d = k.flags.backoffMax
	}
	return d
}

// runtimesForKey returns the runtimes of every pod instance that had this name.
func (k *kubelet) runtimesForKey(key string) []*podRT {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*podRT
	for _, rt := range k.pods {
		if rt.key == key {
			out = append(out, rt)
		}
	}
	return out
}

// runtimeFor returns the pod's runtime, creating it (and taking a loopback IP) on first use.
// It returns nil when all 254 addresses are taken.
func (k *kubelet) runtimeFor(pod *corev1.Pod) *podRT {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rt, ok := k.pods[pod.UID]; ok {
		return rt
	}
	n := 0
	// Round-robin from the last address handed out, so a freed address is reused as late
	// as possible (a client may still hold a connection to the old pod).
	for i := 0; i < 254; i++ {
		cand := (k.ipNext-1+i)%254 + 1
		if _, used := k.ipUsed[cand]; !used {
			n = cand
			break
		}
	}
	if n == 0 {
		return nil
	}
	k.ipUsed[n] = pod.UID
	k.ipNext = n%254 + 1
	rt := &podRT{
		uid: pod.UID, key: pod.Namespace + "/" + pod.Name, ns: pod.Namespace, name: pod.Name,
		ipN: n, ip: fmt.Sprintf("%s.%d", k.subnet, n), startTime: metav1.Now(),
		conds: map[corev1.PodConditionType]condState{},
		dir:   filepath.Join(k.dir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
	}
	for _, c := range pod.Spec.InitContainers {
		rt.ctrs = append(rt.ctrs, &ctrRT{spec: c, init: true, image: k.images.lookup(c.Image)})
	}
	for _, c := range pod.Spec.Containers {
		rt.ctrs = append(rt.ctrs, &ctrRT{spec: c, image: k.images.lookup(c.Image)})
	}
	k.pods[pod.UID] = rt
	return rt
}

func (k *kubelet) syncPod(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		return err
	}
	// An instance of this name that is gone (or replaced by a new pod of the same name)
	// must not keep running.
	for _, rt := range k.runtimesForKey(key) {
		if pod == nil || rt.uid != pod.UID {
			k.forceRemove(rt)
		}
	}
	if pod == nil {
		k.schedMu.Lock()
		for uid := range k.schedMsg {
			if k.podByUID(uid) == nil {
				delete(k.schedMsg, uid)
			}
		}
		k.schedMu.Unlock()
		return nil
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp != nil {
			return nil
		}
		return k.schedulePod(pod)
	}
	if pod.Spec.NodeName != k.flags.nodeName {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		k.startTermination(pod)
		return nil
	}
	k.mu.Lock()
	_, known := k.pods[pod.UID]
	k.mu.Unlock()
	if !known && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
		return nil
	}
	rt := k.runtimeFor(pod)
	if rt == nil {
		k.events.emit(podRef(pod, ""), corev1.EventTypeWarning, "FailedCreatePodSandBox",
			fmt.Sprintf("no free address in %s.0/24", k.subnet), "kubelet")
		k.podQueue.AddAfter(key, 5*time.Second)
		return nil
	}
	rt.mu.Lock()
	wait := k.advance(rt, pod)
	rt.mu.Unlock()
	if wait > 0 {
		k.podQueue.AddAfter(key, wait)
	}
	return k.reportStatus(rt, pod)
}

// advance moves every container one step forward. Called with rt.mu held; returns how long
// until something is due (0: nothing scheduled).
func (k *kubelet) advance(rt *podRT, pod *corev1.Pod) time.Duration {
	if rt.terminating {
		return 0
	}
	if rt.volumes == nil {
		vols, err := k.prepareVolumes(rt, pod)
		if err != nil {
			k.events.emit(podRef(pod, ""), corev1.EventTypeWarning, "FailedMount",
				fmt.Sprintf("MountVolume.SetUp failed: %v", err), "kubelet")
			return k.flags.backoffBase
		}
		rt.volumes = vols
	}
	var due time.Duration
	note := func(d time.Duration) {
		if d > 0 && (due == 0 || d < due) {
			due = d
		}
	}
	// Init containers run one at a time, each to a successful exit, before the others.
	for _, c := range rt.ctrs {
		if !c.init {
			continue
		}
		if c.final != nil {
			if c.final.ExitCode == 0 {
				continue
			}
			return 0 // failed for good (restartPolicy Never): the pod is Failed
		}
		note(k.advanceContainer(rt, pod, c))
		return due
	}
	for _, c := range rt.ctrs {
		if !c.init {
			note(k.advanceContainer(rt, pod, c))
		}
	}
	return due
}

func (k *kubelet) advanceContainer(rt *podRT, pod *corev1.Pod, c *ctrRT) time.Duration {
	if c.proc != nil || c.final != nil {
		return 0
	}
	now := time.Now()
	if now.Before(c.nextAt) {
		return c.nextAt.Sub(now)
	}
	ref := podRef(pod, c.spec.Name)
	img := c.spec.Image
	if c.image == nil {
		switch c.pullState {
		case pullErr:
			c.pullState = pullBackOff
			c.waitReason = "ImagePullBackOff"
			c.waitMsg = fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", img, pullError(img))
			k.events.emit(ref, corev1.EventTypeNormal, "BackOff",
				fmt.Sprintf("Back-off pulling image %q", img), "kubelet")
			k.events.emit(ref, corev1.EventTypeWarning, "Failed", "Error: ImagePullBackOff", "kubelet")
			c.nextAt = now.Add(k.backoff(c.pullFails - 1))
		default:
			c.pullFails++
			c.pullState = pullErr
			c.waitReason = "ErrImagePull"
			c.waitMsg = pullError(img)
			k.events.emit(ref, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", img), "kubelet")
			k.events.emit(ref, corev1.EventTypeWarning, "Failed",
				fmt.Sprintf("Failed to pull image %q: %s", img, pullError(img)), "kubelet")
			k.events.emit(ref, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull", "kubelet")
			// ErrImagePull stays visible for a moment before the back-off starts.
			c.nextAt = now.Add(k.flags.backoffBase)
		}
		return c.nextAt.Sub(now)
	}
	switch c.pullState {
	case pullNone:
		k.pulledMu.Lock()
		present := k.pulled[img]
		k.pulledMu.Unlock()
		if present && c.spec.ImagePullPolicy != corev1.PullAlways {
			k.events.emit(ref, corev1.EventTypeNormal, "Pulled",
				fmt.Sprintf("Container image %q already present on machine", img), "kubelet")
			c.pullState = pullDone
			break
		}
		k.events.emit(ref, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", img), "kubelet")
		c.pullState = pullInProgress
		c.pullStarted = now
		c.waitReason = "ContainerCreating"
		c.waitMsg = ""
		if c.image.PullSeconds > 0 {
			c.nextAt = now.Add(time.Duration(c.image.PullSeconds * float64(time.Second)))
			return c.nextAt.Sub(now)
		}
		fallthrough
	case pullInProgress:
		took := time.Since(c.pullStarted).Round(time.Millisecond)
		k.events.emit(ref, corev1.EventTypeNormal, "Pulled",
			fmt.Sprintf("Successfully pulled image %q in %v (%v including waiting). Image size: %d bytes.",
				img, took, took, 100<<20), "kubelet")
		k.pulledMu.Lock()
		k.pulled[img] = true
		k.pulledMu.Unlock()
		c.pullState = pullDone
	}
	k.startContainer(rt, pod, c)
	if c.proc == nil && c.final == nil && c.nextAt.After(now) {
		return c.nextAt.Sub(now)
	}
	return 0
}

func pullError(img string) string {
	return fmt.Sprintf("rpc error: code = NotFound desc = failed to pull and unpack image %q: "+
		"failed to resolve reference %q: not found", img, img)
}

func (k *kubelet) startContainer(rt *podRT, pod *corev1.Pod, c *ctrRT) {
	ref := podRef(pod, c.spec.Name)
	now := time.Now()
	ln, err := k.buildLaunch(rt, pod, c)
	if err != nil {
		var se *startError
		if asStartError(err, &se) {
			msg := fmt.Sprintf("failed to create containerd task: failed to create shim task: OCI "+
				"runtime create failed: runc create failed: unable to start container process: %v: unknown", se.err)
			k.events.emit(ref, corev1.EventTypeWarning, "Failed", "Error: "+msg, "kubelet")
			c.containerID = newContainerID()
			c.startedAt = now
			if c.everStarted {
				c.restartCount++
			}
			c.everStarted = true
			k.handleExit(rt, pod, c, &corev1.ContainerStateTerminated{ExitCode: 128,
				Reason: "StartError", Message: msg, StartedAt: metav1.NewTime(now),
				FinishedAt: metav1.NewTime(now), ContainerID: c.containerID})
			return
		}
		c.waitReason = "CreateContainerConfigError"
		c.waitMsg = err.Error()
		k.events.emit(ref, corev1.EventTypeWarning, "Failed", "Error: "+err.Error(), "kubelet")
		c.nextAt = now.Add(k.flags.backoffBase)
		return
	}
	logDir := filepath.Join(k.dir, "logs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), c.spec.Name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		klog.Errorf("log dir: %v", err)
	}
	restart := c.restartCount
	if c.everStarted {
		restart++
	}
	logf, err := os.OpenFile(filepath.Join(logDir, fmt.Sprintf("%d.log", restart)),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		klog.Errorf("log file: %v", err)
	}
	k.events.emit(ref, corev1.EventTypeNormal, "Created", fmt.Sprintf("Created container: %s", c.spec.Name), "kubelet")
	cmd := exec.Command(ln.argv[0], ln.argv[1:]...)
	cmd.Env = ln.env
	cmd.Dir = ln.cwd
	if logf != nil {
		cmd.Stdout = logf
		cmd.Stderr = logf
		fmt.Fprintf(logf, "kubetest: starting %q in %s\n", ln.argv, ln.cwd)
	}
	// Its own process group, so that the whole "container" can be signalled at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	if logf != nil {
		logf.Close()
	}
	c.containerID = newContainerID()
	c.startedAt = now
	if c.everStarted {
		c.restartCount++
	}
	c.everStarted = true
	if err != nil {
		msg := fmt.Sprintf("failed to start container %q: %v", c.spec.Name, err)
		k.events.emit(ref, corev1.EventTypeWarning, "Failed", "Error: "+msg, "kubelet")
		k.handleExit(rt, pod, c, &corev1.ContainerStateTerminated{ExitCode: 128,
			Reason: "StartError", Message: msg, StartedAt: metav1.NewTime(now),
			FinishedAt: metav1.NewTime(now), ContainerID: c.containerID})
		return
	}
	c.proc = cmd
	c.waitReason, c.waitMsg = "", ""
	c.ready = false
	c.startupDone = false
	c.killing = false
	pid := cmd.Process.Pid
	writePidFile(k.dir, pid, fmt.Sprintf("%s %s %s", rt.key, rt.uid, c.spec.Name))
	k.events.emit(ref, corev1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s", c.spec.Name), "kubelet")
	klog.Infof("pod %s container %s started: pid %d ip %s argv %q", rt.key, c.spec.Name, pid, rt.ip, ln.argv)
	c.probeStop = make(chan struct{})
	k.startProbes(rt, pod, c, c.probeStop, ln.env, ln.cwd)
	go k.waitProcess(rt, pod, c, cmd)
}

func newContainerID() string {
	tok, _ := randomToken()
	return "kubetest://" + tok
}

// waitProcess reaps the container's main process and kills what is left of its group (a
// container ends when its PID 1 does).
func (k *kubelet) waitProcess(rt *podRT, pod *corev1.Pod, c *ctrRT, cmd *exec.Cmd) {
	err := cmd.Wait()
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	removePidFile(k.dir, pid)
	now := time.Now()
	term := &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed",
		FinishedAt: metav1.NewTime(now), ContainerID: c.containerID}
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			term.Signal = int32(ws.Signal())
			term.ExitCode = 128 + int32(ws.Signal())
		} else {
			term.ExitCode = int32(ps.ExitCode())
		}
	} else if err != nil {
		term.ExitCode = 128
	}
	if term.ExitCode != 0 {
		term.Reason = "Error"
	}
	rt.mu.Lock()
	term.StartedAt = metav1.NewTime(c.startedAt)
	if c.proc == cmd {
		c.proc = nil
		k.handleExit(rt, pod, c, term)
	}
	rt.mu.Unlock()
	klog.Infof("pod %s container %s exited: code %d", rt.key, c.spec.Name, term.ExitCode)
	k.podQueue.Add(rt.key)
}

// handleExit records a container's end and decides, per restartPolicy, whether it restarts
// after a back-off. Called with rt.mu held.
func (k *kubelet) handleExit(rt *podRT, pod *corev1.Pod, c *ctrRT, term *corev1.ContainerStateTerminated) {
	if c.probeStop != nil {
		close(c.probeStop)
		c.probeStop = nil
	}
	c.ready = false
	c.startupDone = false
	if rt.terminating {
		c.final = term
		return
	}
	policy := pod.Spec.RestartPolicy
	restart := policy == corev1.RestartPolicyAlways ||
		(policy == corev1.RestartPolicyOnFailure && term.ExitCode != 0)
	if c.init {
		// An init container that succeeded is done; one that failed is retried unless the
		// pod never restarts.
		restart = term.ExitCode != 0 && policy != corev1.RestartPolicyNever
	}
	if !restart {
		c.final = term
		return
	}
	// A container that ran for a good while starts its back-off afresh.
	if time.Since(c.startedAt) >= 2*k.flags.backoffMax {
		c.crashes = 0
	}
	d := k.backoff(c.crashes)
	c.crashes++
	c.lastTerm = term
	c.pullState = pullNone
	c.waitReason = "CrashLoopBackOff"
	c.waitMsg = fmt.Sprintf("back-off %v restarting failed container=%s pod=%s_%s(%s)",
		d, c.spec.Name, pod.Name, pod.Namespace, pod.UID)
	c.nextAt = time.Now().Add(d)
	k.events.emit(podRef(pod, c.spec.Name), corev1.EventTypeWarning, "BackOff",
		fmt.Sprintf("Back-off restarting failed container %s in pod %s_%s(%s)",
			c.spec.Name, pod.Name, pod.Namespace, pod.UID), "kubelet")
	k.podQueue.AddAfter(rt.key, d)
}

// ---- status ---------------------------------------------------------------------------

func imageID(img string) string {
	sum := sha256.Sum256([]byte(imageRepository(img)))
	return imageRepository(img) + "@sha256:" + hex.EncodeToString(sum[:])
}

func (rt *podRT) cond(t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string,
	gen int64) corev1.PodCondition {
	cs, ok := rt.conds[t]
	if !ok || cs.status != s {
		cs = condState{status: s, since: metav1.Now()}
		rt.conds[t] = cs
	}
	return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg,
		LastTransitionTime: cs.since, ObservedGeneration: gen}
}

func (c *ctrRT) status(initRunning bool) corev1.ContainerStatus {
	started := c.proc != nil && c.startupDone
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, Ready: c.ready && c.proc != nil,
		RestartCount: c.restartCount, Started: &started, ContainerID: c.containerID,
	}
	if c.everStarted || c.pullState == pullDone {
		cs.ImageID = imageID(c.spec.Image)
	}
	switch {
	case c.proc != nil:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	case c.final != nil:
		cs.State.Terminated = c.final
	default:
		reason, msg := c.waitReason, c.waitMsg
		if reason == "" {
			reason = "ContainerCreating"
			if initRunning && !c.init {
				reason = "PodInitializing"
			}
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	}
	if c.lastTerm != nil {
		cs.LastTerminationState.Terminated = c.lastTerm
	}
	return cs
}

// podStatus computes the status we report. Called with rt.mu held.
func (rt *podRT) podStatus(pod *corev1.Pod) corev1.PodStatus {
	gen := pod.Generation
	st := corev1.PodStatus{
		HostIP: "127.0.0.1", HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP: rt.ip, PodIPs: []corev1.PodIP{{IP: rt.ip}},
		StartTime: &rt.startTime, ObservedGeneration: gen,
	}
	initDone, initFailed := true, false
	var pendingInit []string
	for _, c := range rt.ctrs {
		if !c.init {
			continue
		}
		if c.final == nil || c.final.ExitCode != 0 {
			initDone = false
			pendingInit = append(pendingInit, c.spec.Name)
			if c.final != nil {
				initFailed = true
			}
		}
	}
	allFinal, allZero, anyStarted, allReady := true, true, false, true
	var unready []string
	nMain := 0
	for _, c := range rt.ctrs {
		s := c.status(!initDone)
		if c.init {
			st.InitContainerStatuses = append(st.InitContainerStatuses, s)
			continue
		}
		nMain++
		st.ContainerStatuses = append(st.ContainerStatuses, s)
		if c.final == nil {
			allFinal = false
		} else if c.final.ExitCode != 0 {
			allZero = false
		}
		if c.proc != nil || c.lastTerm != nil || c.final != nil {
			anyStarted = true
		}
		if !s.Ready {
			allReady = false
			unready = append(unready, c.spec.Name)
		}
	}
	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case nMain > 0 && allFinal:
		st.Phase = corev1.PodSucceeded
		if !allZero {
			st.Phase = corev1.PodFailed
		}
	case initDone && anyStarted:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	T, F := corev1.ConditionTrue, corev1.ConditionFalse
	st.Conditions = append(st.Conditions, rt.cond("PodReadyToStartContainers", T, "", "", gen))
	if initDone {
		st.Conditions = append(st.Conditions, rt.cond(corev1.PodInitialized, T, "", "", gen))
	} else {
		st.Conditions = append(st.Conditions, rt.cond(corev1.PodInitialized, F, "ContainersNotInitialized",
			fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(pendingInit, " ")), gen))
	}
	if allReady && nMain > 0 && initDone {
		st.Conditions = append(st.Conditions, rt.cond(corev1.ContainersReady, T, "", "", gen),
			rt.cond(corev1.PodReady, T, "", "", gen))
	} else {
		reason := "ContainersNotReady"
		if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
			reason = "PodCompleted"
		}
		msg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
		st.Conditions = append(st.Conditions, rt.cond(corev1.ContainersReady, F, reason, msg, gen),
			rt.cond(corev1.PodReady, F, reason, msg, gen))
	}
	st.Conditions = append(st.Conditions, rt.cond(corev1.PodScheduled, T, "", "", gen))
	return st
}

// reportStatus merge-patches the status subresource when it changed. A merge patch leaves
// fields the apiserver set (qosClass) alone; the UID in the patch is a precondition so a
// new pod of the same name is never patched with an old pod's status.
func (k *kubelet) reportStatus(rt *podRT, pod *corev1.Pod) error {
	rt.mu.Lock()
	if rt.removed {
		rt.mu.Unlock()
		return nil
	}
	st := rt.podStatus(pod)
	body := map[string]interface{}{"status": st}
	data, err := json.Marshal(body)
	if err != nil {
		rt.mu.Unlock()
		return err
	}
	if string(data) == rt.lastPatch && pod.Status.PodIP == rt.ip && pod.Status.Phase == st.Phase {
		rt.mu.Unlock()
		return nil
	}
	rt.mu.Unlock()
	err = k.patchPodStatus(pod, body["status"])
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return err
	}
	rt.mu.Lock()
	rt.lastPatch = string(data)
	rt.mu.Unlock()
	return nil
}

func (k *kubelet) patchPodStatus(pod *corev1.Pod, status interface{}) error {
	body := map[string]interface{}{
		"metadata": map[string]interface{}{"uid": pod.UID},
		"status":   status,
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	_, err = k.cs.CoreV1().Pods(pod.Namespace).Patch(k.ctx, pod.Name, types.MergePatchType, data,
		metav1.PatchOptions{}, "status")
	return err
}

// ---- termination ----------------------------------------------------------------------

// startTermination handles a deletionTimestamp: SIGTERM every container's process group,
// wait the grace period, SIGKILL, then finish the deletion with gracePeriodSeconds=0.
func (k *kubelet) startTermination(pod *corev1.Pod) {
	k.mu.Lock()
	rt := k.pods[pod.UID]
	k.mu.Unlock()
	if rt == nil {
		// Nothing runs for it (never started here): just confirm the deletion.
		rt = &podRT{uid: pod.UID, key: pod.Namespace + "/" + pod.Name, ns: pod.Namespace,
			name: pod.Name, conds: map[corev1.PodConditionType]condState{}}
		k.mu.Lock()
		if _, raced := k.pods[pod.UID]; raced {
			k.mu.Unlock()
			return
		}
		k.pods[pod.UID] = rt
		k.mu.Unlock()
	}
	rt.mu.Lock()
	if rt.terminating {
		rt.mu.Unlock()
		return
	}
	rt.terminating = true
	rt.mu.Unlock()
	grace := int64(30)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	go func() {
		k.killPod(rt, pod, time.Duration(grace)*time.Second, true)
		k.confirmDeletion(rt)
		k.cleanup(rt)
	}()
}

// killPod stops every running container: SIGTERM to the process group, SIGKILL after grace.
func (k *kubelet) killPod(rt *podRT, pod *corev1.Pod, grace time.Duration, events bool) {
	rt.mu.Lock()
	var groups []int
	for _, c := range rt.ctrs {
		if c.probeStop != nil {
			close(c.probeStop)
			c.probeStop = nil
		}
		if c.proc != nil {
			groups = append(groups, c.proc.Process.Pid)
			if events && pod != nil {
				k.events.emit(podRef(pod, c.spec.Name), corev1.EventTypeNormal, "Killing",
					fmt.Sprintf("Stopping container %s", c.spec.Name), "kubelet")
			}
		}
	}
	rt.mu.Unlock()
	killGroups(groups, grace)
	// Wait (bounded) for the reapers so the final states are recorded.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rt.mu.Lock()
		running := 0
		for _, c := range rt.ctrs {
			if c.proc != nil {
				running++
			}
		}
		rt.mu.Unlock()
		if running == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// confirmDeletion removes the pod object (gracePeriodSeconds=0, UID precondition), retrying
// while the apiserver is away.
func (k *kubelet) confirmDeletion(rt *podRT) {
	zero := int64(0)
	uid := rt.uid
	for k.ctx.Err() == nil {
		err := k.cs.CoreV1().Pods(rt.ns).Delete(k.ctx, rt.name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return
		}
		klog.Warningf("deleting pod %s: %v (will retry)", rt.key, err)
		time.Sleep(time.Second)
	}
}

// forceRemove handles a pod object that vanished (force deletion) or was replaced while
// processes of the old instance may still run.
func (k *kubelet) forceRemove(rt *podRT) {
	rt.mu.Lock()
	if rt.terminating {
		rt.mu.Unlock()
		return
	}
	rt.terminating = true
	rt.mu.Unlock()
	go func() {
		k.killPod(rt, nil, 0, false)
		k.cleanup(rt)
	}()
}

// cleanup forgets the pod: frees its address and its scratch directories.
func (k *kubelet) cleanup(rt *podRT) {
	rt.mu.Lock()
	rt.removed = true
	rt.mu.Unlock()
	k.mu.Lock()
	if cur, ok := k.pods[rt.uid]; ok && cur == rt {
		delete(k.pods, rt.uid)
	}
	if rt.ipN != 0 && k.ipUsed[rt.ipN] == rt.uid {
		delete(k.ipUsed, rt.ipN)
	}
	k.mu.Unlock()
	if rt.dir != "" {
		if err := os.RemoveAll(rt.dir); err != nil {
			klog.Warningf("removing %s: %v", rt.dir, err)
		}
	}
	klog.Infof("pod %s (%s) cleaned up, address %s free", rt.key, rt.uid, rt.ip)
	k.requeueUnscheduled()
	k.requeueAllPVCs()
}

// ---- process groups -------------------------------------------------------------------

func pidFileDir(dir string) string { return filepath.Join(dir, "run", "pods") }

func writePidFile(dir string, pid int, what string) {
	p := filepath.Join(pidFileDir(dir), strconv.Itoa(pid))
	if err := os.WriteFile(p, []byte(what+"\n"), 0o644); err != nil {
		klog.Errorf("pid file: %v", err)
	}
}

func removePidFile(dir string, pid int) {
	_ = os.Remove(filepath.Join(pidFileDir(dir), strconv.Itoa(pid)))
}

// killGroups sends SIGTERM to each process group, waits up to grace for them to be gone,
// then SIGKILLs what is left.
func killGroups(groups []int, grace time.Duration) {
	if len(groups) == 0 {
		return
	}
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		alive := false
		for _, g := range groups {
			if groupAlive(g) {
				alive = true
				break
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
}

// groupAlive tells whether any non-zombie process is left in process group g.
func groupAlive(g int) bool {
	for _, pid := range groupMembers(g) {
		if !isZombie(pid) {
			return true
		}
	}
	return false
}

func groupMembers(g int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if procPgid(pid) == g {
			out = append(out, pid)
		}
	}
	return out
}

func procPgid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	// Fields after the name: state ppid pgrp ...
	if len(f) < 3 {
		return -1
	}
	g, err := strconv.Atoi(f[2])
	if err != nil {
		return -1
	}
	return g
}

// processHasMarker tells whether pid's environment carries KUBETEST_DIR=dir, which every
// container process we start has: a recycled PID without it is never signalled.
func processHasMarker(pid int, dir string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	want := "KUBETEST_DIR=" + dir
	for _, kv := range strings.Split(string(data), "\x00") {
		if kv == want {
			return true
		}
	}
	return false
}

// killLeftoverPods stops the process groups recorded in DIR/run/pods whose members still
// carry this cluster's marker (used by "down" and by the kubelet's own shutdown).
func killLeftoverPods(dir string) {
	ents, err := os.ReadDir(pidFileDir(dir))
	if err != nil {
		return
	}
	var groups []int
	for _, e := range ents {
		g, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ours := false
		for _, pid := range groupMembers(g) {
			if processHasMarker(pid, dir) {
				ours = true
				break
			}
		}
		if ours {
			groups = append(groups, g)
		} else {
			_ = os.Remove(filepath.Join(pidFileDir(dir), e.Name()))
		}
	}
	killGroups(groups, 5*time.Second)
	for _, g := range groups {
		for i := 0; i < 100 && groupAlive(g); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		removePidFile(dir, g)
	}
}

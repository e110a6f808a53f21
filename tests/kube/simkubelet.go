package main

// The simulated kubelet (plus the few controller duties nothing else performs here): it
// registers the Node sim-node, schedules Pending pods onto it, runs each pod's containers
// as local processes on the pod's own loopback address, reports pod status, and provisions
// and binds PersistentVolumeClaims. It works from list+watch informers and work queues,
// like the real components, never from per-pod polling loops.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// kubeletFlags are accepted by both "up" (which passes them on) and "kubelet".
type kubeletFlags struct {
	nodeName       string
	cpu, memory    string
	maxPods        int
	nodeLabels     string
	nodeTaints     string
	backoffBase    time.Duration
	backoffMax     time.Duration
	maxProbePeriod time.Duration
}

func (f *kubeletFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.nodeName, "node-name", "sim-node", "name of the simulated node")
	fs.StringVar(&f.cpu, "cpu", "4", "allocatable cpu of the node")
	fs.StringVar(&f.memory, "memory", "8Gi", "allocatable memory of the node")
	fs.IntVar(&f.maxPods, "max-pods", 110, "allocatable pod count of the node")
	fs.StringVar(&f.nodeLabels, "node-labels", "", "extra node labels k=v,k2=v2")
	fs.StringVar(&f.nodeTaints, "node-taints", "", "node taints k=v:Effect,k2:Effect")
	fs.DurationVar(&f.backoffBase, "backoff-base", time.Second, "first restart/pull back-off")
	fs.DurationVar(&f.backoffMax, "backoff-max", 10*time.Second, "back-off cap")
	fs.DurationVar(&f.maxProbePeriod, "max-probe-period", time.Second,
		"cap on probe periodSeconds, so tests need not wait the 10 s default")
}

func (f *kubeletFlags) args() []string {
	return []string{
		"--node-name", f.nodeName, "--cpu", f.cpu, "--memory", f.memory,
		"--max-pods", fmt.Sprint(f.maxPods), "--node-labels", f.nodeLabels,
		"--node-taints", f.nodeTaints, "--backoff-base", f.backoffBase.String(),
		"--backoff-max", f.backoffMax.String(), "--max-probe-period", f.maxProbePeriod.String(),
	}
}

type kubelet struct {
	flags      kubeletFlags
	dir        string
	state      *clusterState
	images     *imageMap
	cs         kubernetes.Interface
	ctx        context.Context
	podLister  corelisters.PodLister
	pvcLister  corelisters.PersistentVolumeClaimLister
	pvLister   corelisters.PersistentVolumeLister
	scLister   storagelisters.StorageClassLister
	nodeLister corelisters.NodeLister
	podQueue   workqueue.TypedRateLimitingInterface[string]
	pvcQueue   workqueue.TypedRateLimitingInterface[string]
	events     *eventSink

	mu       sync.Mutex
	pods     map[types.UID]*podRT // runtime state of every pod we run or tear down
	subnet   string               // "127.42.X": this cluster's pod addresses
	subnetF  *os.File             // holds the lock on the subnet while we live
	ipUsed   map[int]types.UID    // N of subnet.N -> pod
	ipNext   int
	pulledMu sync.Mutex
	pulled   map[string]bool // images "present on the machine"
	schedMu  sync.Mutex
	assumed  map[types.UID]corev1.ResourceList // bound by us, not yet seen bound
	schedMsg map[types.UID]string              // last FailedScheduling message
	pvcMsg   map[types.UID]string              // last provisioning event reason
}

func runKubelet(args []string) error {
	fs := flag.NewFlagSet("kubelet", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory")
	imagesFile := fs.String("images", "", "image map")
	k := &kubelet{}
	k.flags.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	k.dir = dir
	if k.state, err = loadState(dir); err != nil {
		return err
	}
	if k.images, err = loadImageMap(*imagesFile); err != nil {
		return err
	}
	cfg, err := adminRESTConfig(dir)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubetest-simkubelet"
	if k.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	for _, d := range []string{"run/pods", "pv", "pods", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := k.claimSubnet(); err != nil {
		return err
	}
	k.pods = map[types.UID]*podRT{}
	k.ipUsed = map[int]types.UID{}
	k.ipNext = 1
	k.pulled = map[string]bool{}
	k.assumed = map[types.UID]corev1.ResourceList{}
	k.schedMsg = map[types.UID]string{}
	k.pvcMsg = map[types.UID]string{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k.ctx = ctx
	k.events = newEventSink(ctx, k.cs, k.flags.nodeName)

	// Give client-go's own retry logging a home, and keep apiserver outages readable.
	runtime.ErrorHandlers = []runtime.ErrorHandler{func(_ context.Context, err error, msg string, kv ...interface{}) {
		klog.Errorf("%s: %v", msg, err)
	}}

	if err := k.ensureNode(ctx); err != nil {
		return fmt.Errorf("node: %w", err)
	}

	factory := informers.NewSharedInformerFactory(k.cs, 30*time.Second)
	podInf := factory.Core().V1().Pods()
	pvcInf := factory.Core().V1().PersistentVolumeClaims()
	pvInf := factory.Core().V1().PersistentVolumes()
	scInf := factory.Storage().V1().StorageClasses()
	nodeInf := factory.Core().V1().Nodes()
	k.podLister = podInf.Lister()
	k.pvcLister = pvcInf.Lister()
	k.pvLister = pvInf.Lister()
	k.scLister = scInf.Lister()
	k.nodeLister = nodeInf.Lister()
	limiter := func() workqueue.TypedRateLimiter[string] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 5*time.Second)
	}
	k.podQueue = workqueue.NewTypedRateLimitingQueue(limiter())
	k.pvcQueue = workqueue.NewTypedRateLimitingQueue(limiter())
	defer k.podQueue.ShutDown()
	defer k.pvcQueue.ShutDown()

	enqueuePod := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.podQueue.Add(key)
		}
	}
	enqueuePVC := func(obj interface{}) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.pvcQueue.Add(key)
		}
	}
	_, _ = podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueuePod,
		UpdateFunc: func(_, obj interface{}) { enqueuePod(obj) },
		DeleteFunc: func(obj interface{}) {
			enqueuePod(obj)
			// A pod that is gone frees node resources and may release a PVC that is
			// being deleted.
			k.requeueUnscheduled()
			k.requeueAllPVCs()
		},
	})
	_, _ = pvcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { enqueuePVC(obj); k.requeueUnscheduled() },
		UpdateFunc: func(_, obj interface{}) { enqueuePVC(obj); k.requeueUnscheduled() },
		DeleteFunc: func(obj interface{}) { enqueuePVC(obj); k.requeueUnscheduled() },
	})
	_, _ = scInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { k.requeueAllPVCs() },
		UpdateFunc: func(_, _ interface{}) { k.requeueAllPVCs() },
	})
	_, _ = pvInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, _ interface{}) { k.requeueUnscheduled() },
	})
	_, _ = nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, _ interface{}) { k.requeueUnscheduled() },
		DeleteFunc: func(obj interface{}) {
			// Someone deleted our node: register it again, as a kubelet would.
			go func() {
				if err := k.ensureNode(ctx); err != nil {
					klog.Errorf("re-registering node: %v", err)
				}
			}()
		},
	})
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer %v did not sync", typ)
		}
	}
	for i := 0; i < 4; i++ {
		go k.runWorker(k.podQueue, k.syncPod)
	}
	for i := 0; i < 2; i++ {
		go k.runWorker(k.pvcQueue, k.syncPVC)
	}

	if err := os.WriteFile(filepath.Join(dir, "run", "kubelet.ready"), []byte("ok\n"), 0o644); err != nil {
		return err
	}
	klog.Infof("simkubelet ready: node %s, image map %s", k.flags.nodeName, *imagesFile)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	klog.Infof("simkubelet: %v, stopping all pod processes", s)
	cancel()
	k.stopAllProcesses(5 * time.Second)
	return nil
}

func (k *kubelet) runWorker(q workqueue.TypedRateLimitingInterface[string], sync func(string) error) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		err := sync(key)
		if err != nil {
			klog.Warningf("sync %s: %v (will retry)", key, err)
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

func (k *kubelet) requeueUnscheduled() {
	pods, err := k.podLister.List(labelsEverything())
	if err != nil {
		return
	}
	for _, p := range pods {
		if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
			k.podQueue.Add(p.Namespace + "/" + p.Name)
		}
	}
}

func (k *kubelet) requeueAllPVCs() {
	pvcs, err := k.pvcLister.List(labelsEverything())
	if err != nil {
		return
	}
	for _, c := range pvcs {
		k.pvcQueue.Add(c.Namespace + "/" + c.Name)
	}
}

// claimSubnet picks this cluster's pod address range: 127.42.0.0/24 for the first cluster
// on the machine, 127.42.1.0/24 for a second one running at the same time (two test
// sessions), and so on. The choice is an flock on a file under /tmp held for the
// kubelet's lifetime, so it is released however the kubelet ends.
func (k *kubelet) claimSubnet() error {
	lockDir := filepath.Join(os.TempDir(), "kubetest-subnets")
	if err := os.MkdirAll(lockDir, 0o777); err != nil {
		return err
	}
	for x := 0; x < 256; x++ {
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("127.42.%d.lock", x)),
			os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		_ = f.Truncate(0)
		_, _ = fmt.Fprintf(f, "%s\n", k.dir)
		k.subnet = fmt.Sprintf("127.42.%d", x)
		k.subnetF = f
		return os.WriteFile(filepath.Join(k.dir, "run", "subnet"), []byte(k.subnet+".0/24\n"), 0o644)
	}
	return fmt.Errorf("all 256 subnets 127.42.X.0/24 are taken")
}

// ---- node ----------------------------------------------------------------------------

func parseKV(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

func parseTaints(s string) ([]corev1.Taint, error) {
	var out []corev1.Taint
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		kv, effect, ok := strings.Cut(t, ":")
		if !ok {
			return nil, fmt.Errorf("taint %q: want key[=value]:Effect", t)
		}
		key, val, _ := strings.Cut(kv, "=")
		out = append(out, corev1.Taint{Key: key, Value: val, Effect: corev1.TaintEffect(effect)})
	}
	return out, nil
}

// ensureNode registers the node (if missing) and reports it Ready. The apiserver's
// TaintNodesByCondition admission adds node.kubernetes.io/not-ready on create; the node
// lifecycle controller would lift it once the node is Ready, so we do.
func (k *kubelet) ensureNode(ctx context.Context) error {
	name := k.flags.nodeName
	cpu, err := resource.ParseQuantity(k.flags.cpu)
	if err != nil {
		return fmt.Errorf("--cpu: %w", err)
	}
	mem, err := resource.ParseQuantity(k.flags.memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	taints, err := parseTaints(k.flags.nodeTaints)
	if err != nil {
		return err
	}
	labels := map[string]string{
		"kubernetes.io/hostname":           name,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"beta.kubernetes.io/os":            "linux",
		"beta.kubernetes.io/arch":          "amd64",
		"node.kubernetes.io/instance-type": "kubetest",
	}
	for kk, v := range parseKV(k.flags.nodeLabels) {
		labels[kk] = v
	}
	var node *corev1.Node
	err = retryAPI(ctx, func() error {
		var gerr error
		node, gerr = k.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			node, gerr = k.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
				Spec:       corev1.NodeSpec{Taints: taints},
			}, metav1.CreateOptions{})
		}
		return gerr
	})
	if err != nil {
		return err
	}
	// Lift the admission-added not-ready taint, keep everyone else's taints.
	var keep []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Key != "node.kubernetes.io/not-ready" && t.Key != "node.kubernetes.io/unreachable" {
			keep = append(keep, t)
		}
	}
	if len(keep) != len(node.Spec.Taints) {
		node.Spec.Taints = keep
		if node, err = k.cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	now := metav1.Now()
	alloc := corev1.ResourceList{
		corev1.ResourceCPU:              cpu,
		corev1.ResourceMemory:           mem,
		corev1.ResourcePods:             *resource.NewQuantity(int64(k.flags.maxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
	}
	node.Status = corev1.NodeStatus{
		Capacity:    alloc,
		Allocatable: alloc,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status (simulated)"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.36.3-kubetest", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "kubetest://1", OSImage: "kubetest simulated node",
			KernelVersion: "", MachineID: "kubetest", SystemUUID: "kubetest", BootID: "kubetest",
		},
	}
	_, err = k.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// retryAPI retries fn for up to 30 s while the apiserver is unreachable or busy.
func retryAPI(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- scheduling -----------------------------------------------------------------------

// joinReasons lists the scheduler's reasons in a stable order, comma-separated.
func joinReasons(reasons []string) string {
	sort.Strings(reasons)
	return strings.Join(reasons, ", ")
}

// unschedulableReason returns "" when the pod fits the node, else the scheduler's message.
func (k *kubelet) unschedulableReason(pod *corev1.Pod) (string, error) {
	node, err := k.nodeLister.Get(k.flags.nodeName)
	if apierrors.IsNotFound(err) {
		return "no nodes available to schedule pods", nil
	}
	if err != nil {
		return "", err
	}
	// Volumes first: the scheduler reports these alone, before trying any node.
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		pvc, err := k.pvcLister.PersistentVolumeClaims(pod.Namespace).Get(v.PersistentVolumeClaim.ClaimName)
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("persistentvolumeclaim %q not found", v.PersistentVolumeClaim.ClaimName), nil
		}
		if err != nil {
			return "", err
		}
		if pvc.DeletionTimestamp != nil {
			return fmt.Sprintf("persistentvolumeclaim %q is being deleted", pvc.Name), nil
		}
		if pvc.Status.Phase != corev1.ClaimBound {
			return "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. " +
				"preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.", nil
		}
	}
	var reasons []string
	if node.Spec.Unschedulable {
		reasons = append(reasons, "1 node(s) were unschedulable")
	}
	if ok, err := requiredAffinityMatches(pod, node); err != nil || !ok {
		reasons = append(reasons, "1 node(s) didn't match Pod's node affinity/selector")
	}
	if t, bad := untoleratedTaint(pod, node); bad {
		reasons = append(reasons, fmt.Sprintf("1 node(s) had untolerated taint {%s: %s}", t.Key, t.Value))
	}
	reasons = append(reasons, k.insufficientResources(pod, node)...)
	if len(reasons) == 0 {
		return "", nil
	}
	return fmt.Sprintf("0/1 nodes are available: %s. preemption: 0/1 nodes are available: "+
		"1 Preemption is not helpful for scheduling.", joinReasons(reasons)), nil
}

// insufficientResources compares the pod's requests with what the pods already on the node
// (and those we bound but the cache has not seen bound yet) leave of its allocatable.
// Must be called with schedMu held.
func (k *kubelet) insufficientResources(pod *corev1.Pod, node *corev1.Node) []string {
	used := corev1.ResourceList{}
	count := int64(0)
	add := func(rl corev1.ResourceList) {
		for name, q := range rl {
			cur := used[name]
			cur.Add(q)
			used[name] = cur
		}
	}
	pods, _ := k.podLister.List(labelsEverything())
	seen := map[types.UID]bool{}
	for _, p := range pods {
		if p.Spec.NodeName != node.Name || p.UID == pod.UID ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		seen[p.UID] = true
		count++
		add(podRequests(p))
	}
	for uid, rl := range k.assumed {
		if !seen[uid] && uid != pod.UID {
			count++
			add(rl)
		}
	}
	var out []string
	if q, ok := node.Status.Allocatable[corev1.ResourcePods]; ok && count+1 > q.Value() {
		out = append(out, "1 Too many pods")
	}
	for name, want := range podRequests(pod) {
		alloc, ok := node.Status.Allocatable[name]
		if !ok {
			if !want.IsZero() {
				out = append(out, "1 Insufficient "+string(name))
			}
			continue
		}
		total := used[name]
		total.Add(want)
		if total.Cmp(alloc) > 0 {
			out = append(out, "1 Insufficient "+string(name))
		}
	}
	return out
}

// schedulePod binds an unbound pod to our node, or marks it Unschedulable.
func (k *kubelet) schedulePod(pod *corev1.Pod) error {
	if pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
		return nil
	}
	k.schedMu.Lock()
	defer k.schedMu.Unlock()
	// Forget assumptions the cache has caught up with.
	for uid := range k.assumed {
		if p := k.podByUID(uid); p == nil || p.Spec.NodeName != "" {
			delete(k.assumed, uid)
		}
	}
	if _, ok := k.assumed[pod.UID]; ok {
		return nil
	}
	msg, err := k.unschedulableReason(pod)
	if err != nil {
		return err
	}
	if msg != "" {
		return k.markUnschedulable(pod, msg)
	}
	err = k.cs.CoreV1().Pods(pod.Namespace).Bind(k.ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.flags.nodeName},
	}, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// Bound already (by an earlier attempt whose answer we lost) or gone.
		return nil
	}
	if err != nil {
		return err
	}
	k.assumed[pod.UID] = podRequests(pod)
	delete(k.schedMsg, pod.UID)
	k.events.emit(podRef(pod, ""), corev1.EventTypeNormal, "Scheduled",
		fmt.Sprintf("Successfully assigned %s/%s to %s", pod.Namespace, pod.Name, k.flags.nodeName),
		"default-scheduler")
	return nil
}

func (k *kubelet) markUnschedulable(pod *corev1.Pod, msg string) error {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message == msg &&
			k.schedMsg[pod.UID] == msg {
			return nil
		}
	}
	status := map[string]interface{}{
		"conditions": []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: msg,
			LastTransitionTime: metav1.Now(),
		}},
	}
	if err := k.patchPodStatus(pod, status); err != nil {
		return err
	}
	if k.schedMsg[pod.UID] != msg {
		k.schedMsg[pod.UID] = msg
		k.events.emit(podRef(pod, ""), corev1.EventTypeWarning, "FailedScheduling", msg,
			"default-scheduler")
	}
	return nil
}

func (k *kubelet) podByUID(uid types.UID) *corev1.Pod {
	pods, _ := k.podLister.List(labelsEverything())
	for _, p := range pods {
		if p.UID == uid {
			return p
		}
	}
	return nil
}

// stopAllProcesses is the kubelet's shutdown: every pod process group gets SIGTERM, then
// SIGKILL after grace. Pod objects are left alone (the apiserver may be gone already).
func (k *kubelet) stopAllProcesses(grace time.Duration) {
	k.mu.Lock()
	var groups []int
	for _, rt := range k.pods {
		rt.mu.Lock()
		for _, c := range rt.ctrs {
			if c.proc != nil {
				groups = append(groups, c.proc.Process.Pid)
			}
		}
		rt.mu.Unlock()
	}
	k.mu.Unlock()
	killGroups(groups, grace)
	killLeftoverPods(k.dir)
}

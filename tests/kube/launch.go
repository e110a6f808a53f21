package main

// How a container becomes a local process: its volumes as host directories, its
// environment (image ENV, service variables, envFrom, env with valueFrom and $(VAR)), its
// argv (Docker's ENTRYPOINT/CMD rules, then the image map), and two rewrites that stand in
// for the container's own filesystem and network namespace:
//
//   - a value that names a path under a volume mount (or the image's home) is rewritten to
//     the host directory behind it, so HOME=/home/coder becomes DIR/pv/pvc-... when the
//     claim is mounted at /home/coder;
//   - the wildcard address 0.0.0.0 becomes the pod's own 127.42.0.N, since pods here share
//     the host's network namespace and would otherwise collide on their ports.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

type launch struct {
	argv []string
	env  []string
	cwd  string
}

// startError is a failure the runtime would report when starting the process (the
// executable does not exist in the image): the container terminates with StartError.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }

func asStartError(err error, target **startError) bool { return errors.As(err, target) }

type mount struct{ ctr, host string }

// orderedEnv keeps first-set order (like a container's environment) with last-wins values.
type orderedEnv struct {
	names []string
	vals  map[string]string
}

func newOrderedEnv() *orderedEnv { return &orderedEnv{vals: map[string]string{}} }

func (e *orderedEnv) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.names = append(e.names, k)
	}
	e.vals[k] = v
}

func (e *orderedEnv) list(rewrite func(string) string) []string {
	out := make([]string, 0, len(e.names))
	for _, n := range e.names {
		out = append(out, n+"="+rewrite(e.vals[n]))
	}
	return out
}

func containerPort(c *corev1.Container, im *imageSpec) int32 {
	if len(c.Ports) > 0 {
		return c.Ports[0].ContainerPort
	}
	if im != nil && len(im.Ports) > 0 {
		return im.Ports[0]
	}
	return 8080
}

// buildLaunch resolves everything needed to exec the container. Called with rt.mu held.
func (k *kubelet) buildLaunch(rt *podRT, pod *corev1.Pod, c *ctrRT) (*launch, error) {
	im := c.image
	ctx, cancel := context.WithTimeout(k.ctx, 10*time.Second)
	defer cancel()
	env := newOrderedEnv()
	// The marker first: "down" recognises our processes by it.
	env.set("KUBETEST_DIR", k.dir)
	env.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	env.set("HOSTNAME", hostname)
	env.set("HOME", im.Home)
	for _, e := range im.Env {
		env.set(e.Name, e.Value)
	}
	port := strconv.Itoa(k.state.APIPort)
	// The kubernetes service variables every pod gets (whatever enableServiceLinks says),
	// pointing at our apiserver.
	env.set("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	env.set("KUBERNETES_SERVICE_PORT", port)
	env.set("KUBERNETES_SERVICE_PORT_HTTPS", port)
	env.set("KUBERNETES_PORT", "tcp://127.0.0.1:"+port)
	env.set("KUBETEST_POD", pod.Namespace+"/"+pod.Name)
	env.set("KUBETEST_POD_UID", string(pod.UID))
	env.set("KUBETEST_POD_IP", rt.ip)
	env.set("KUBETEST_PORT", strconv.Itoa(int(containerPort(&c.spec, im))))
	env.set("KUBETEST_CONTAINER", c.spec.Name)

	for _, ef := range c.spec.EnvFrom {
		data, err := k.envFromSource(ctx, pod.Namespace, ef)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(data))
		for kk := range data {
			keys = append(keys, kk)
		}
		sort.Strings(keys)
		for _, kk := range keys {
			env.set(ef.Prefix+kk, data[kk])
		}
	}
	for _, e := range c.spec.Env {
		if e.ValueFrom == nil {
			// $(VAR) refers to variables defined before this one (and service variables).
			env.set(e.Name, expansion.Expand(e.Value, expansion.MappingFuncFor(env.vals)))
			continue
		}
		v, err := k.envValueFrom(ctx, rt, pod, &c.spec, e)
		if err != nil {
			return nil, err
		}
		env.set(e.Name, v)
	}
	// Ours again, so a pod cannot hide its processes from "down".
	env.set("KUBETEST_DIR", k.dir)

	mounts, err := k.mountsFor(rt, c)
	if err != nil {
		return nil, err
	}
	// The image's home: the host directory of the mount that holds HOME, else a scratch
	// directory standing in for the image's own filesystem.
	ctrHome := env.vals["HOME"]
	rewrite := func(s string) string { return rewriteValue(s, mounts, rt.ip) }
	hostHome := rewritePath(ctrHome, mounts)
	if hostHome == ctrHome {
		hostHome = filepath.Join(rt.dir, "home", c.spec.Name)
		mounts = append(mounts, mount{ctr: filepath.Clean(ctrHome), host: hostHome})
		sortMounts(mounts)
	}
	if err := os.MkdirAll(hostHome, 0o755); err != nil {
		return nil, err
	}
	mapping := expansion.MappingFuncFor(env.vals)
	argv, err := resolveCommand(im, c.spec.Command, c.spec.Args, env.vals["PATH"], mapping, mounts, rewrite)
	if err != nil {
		return nil, err
	}
	cwd := hostHome
	wd := c.spec.WorkingDir
	if wd == "" {
		wd = im.WorkingDir
	}
	if wd != "" {
		if p := rewritePath(wd, mounts); p != wd {
			cwd = p
		}
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return nil, err
	}
	return &launch{argv: argv, env: env.list(rewrite), cwd: cwd}, nil
}

// resolveCommand turns the container's command into a local argv: $(VAR) expanded
// everywhere, argv[0] mapped to a local program (which is a host path and is not
// rewritten), every other argument rewritten from container to host terms.
func resolveCommand(im *imageSpec, command, args []string, pathEnv string, mapping func(string) string,
	mounts []mount, rewrite func(string) string) ([]string, error) {
	raw, err := im.containerArgv(command, args)
	if err != nil {
		return nil, &startError{err: err}
	}
	for i := range raw {
		raw[i] = expansion.Expand(raw[i], mapping)
	}
	argv0 := raw[0]
	if strings.HasPrefix(argv0, "/") && im.Executables[argv0] == nil {
		// A program on a mounted volume is found behind the mount.
		argv0 = rewritePath(argv0, mounts)
	}
	prefix, err := im.executable(argv0, pathEnv)
	if err != nil {
		return nil, &startError{err: fmt.Errorf("exec: %q: executable file not found in $PATH", raw[0])}
	}
	argv := []string{prefix[0]}
	for _, a := range prefix[1:] {
		argv = append(argv, rewrite(expansion.Expand(a, mapping)))
	}
	for _, a := range raw[1:] {
		argv = append(argv, rewrite(a))
	}
	return argv, nil
}

func (k *kubelet) envFromSource(ctx context.Context, ns string, ef corev1.EnvFromSource) (map[string]string, error) {
	switch {
	case ef.ConfigMapRef != nil:
		cm, err := k.cs.CoreV1().ConfigMaps(ns).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
				return nil, nil
			}
			return nil, fmt.Errorf("configmap %q not found", ef.ConfigMapRef.Name)
		}
		return cm.Data, nil
	case ef.SecretRef != nil:
		s, err := k.cs.CoreV1().Secrets(ns).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if ef.SecretRef.Optional != nil && *ef.SecretRef.Optional {
				return nil, nil
			}
			return nil, fmt.Errorf("secret %q not found", ef.SecretRef.Name)
		}
		out := map[string]string{}
		for kk, v := range s.Data {
			out[kk] = string(v)
		}
		return out, nil
	}
	return nil, nil
}

func (k *kubelet) envValueFrom(ctx context.Context, rt *podRT, pod *corev1.Pod, c *corev1.Container,
	e corev1.EnvVar) (string, error) {
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		switch vf.FieldRef.FieldPath {
		case "spec.nodeName":
			return pod.Spec.NodeName, nil
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName, nil
		case "status.hostIP", "status.hostIPs":
			return "127.0.0.1", nil
		case "status.podIP", "status.podIPs":
			return rt.ip, nil
		}
		v, err := fieldpath.ExtractFieldPathAsString(pod, vf.FieldRef.FieldPath)
		if err != nil {
			return "", fmt.Errorf("env %s: %v", e.Name, err)
		}
		return v, nil
	case vf.ResourceFieldRef != nil:
		alloc := corev1.ResourceList{}
		if node, err := k.nodeLister.Get(k.flags.nodeName); err == nil {
			alloc = node.Status.Allocatable
		}
		name := vf.ResourceFieldRef.ContainerName
		if name == "" {
			name = c.Name
		}
		v, err := resource.ExtractResourceValueByContainerNameAndNodeAllocatable(vf.ResourceFieldRef, pod, name, alloc)
		if err != nil {
			return "", fmt.Errorf("env %s: %v", e.Name, err)
		}
		return v, nil
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := k.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if optional {
				return "", nil
			}
			return "", fmt.Errorf("configmap %q not found", ref.Name)
		}
		v, ok := cm.Data[ref.Key]
		if !ok && !optional {
			return "", fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return v, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := k.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if optional {
				return "", nil
			}
			return "", fmt.Errorf("secret %q not found", ref.Name)
		}
		v, ok := s.Data[ref.Key]
		if !ok && !optional {
			return "", fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
		}
		return string(v), nil
	}
	return "", fmt.Errorf("env %s: unsupported valueFrom", e.Name)
}

func sortMounts(ms []mount) {
	// Longest container path first, so the most specific mount wins.
	sort.SliceStable(ms, func(i, j int) bool { return len(ms[i].ctr) > len(ms[j].ctr) })
}

func (k *kubelet) mountsFor(rt *podRT, c *ctrRT) ([]mount, error) {
	var ms []mount
	for _, vm := range c.spec.VolumeMounts {
		host, ok := rt.volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volume %q not found", vm.Name)
		}
		if vm.SubPath != "" {
			host = filepath.Join(host, vm.SubPath)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		}
		ms = append(ms, mount{ctr: filepath.Clean(vm.MountPath), host: host})
	}
	sortMounts(ms)
	return ms, nil
}

// rewritePath maps a container path to the host path behind the mount holding it, and
// returns anything else unchanged.
func rewritePath(p string, ms []mount) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	for _, m := range ms {
		if p == m.ctr {
			return m.host
		}
		if strings.HasPrefix(p, m.ctr+"/") || m.ctr == "/" {
			return filepath.Join(m.host, strings.TrimPrefix(p, m.ctr))
		}
	}
	return p
}

// rewriteValue applies both rewrites to one argument or environment value. Container paths
// are replaced wherever they stand as a path of their own inside the value: the whole
// value, after "--flag=", in a PATH-like list, or inside a shell script
// ("cp -r /etc/skel/. /home/coder" rewrites the second path when /home/coder is mounted).
func rewriteValue(s string, ms []mount, ip string) string {
	s = replaceWildcardAddr(s, ip)
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '/' && (i == 0 || isPathBoundary(s[i-1])) {
			if m, ok := mountAt(s[i:], ms); ok {
				b.WriteString(m.host)
				i += len(m.ctr)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// mountAt finds the most specific mount whose path starts s as a whole path component.
func mountAt(s string, ms []mount) (mount, bool) {
	for _, m := range ms {
		if m.ctr == "/" || !strings.HasPrefix(s, m.ctr) {
			continue
		}
		rest := s[len(m.ctr):]
		if rest == "" || rest[0] == '/' || isPathBoundary(rest[0]) {
			return m, true
		}
	}
	return mount{}, false
}

func isPathBoundary(c byte) bool {
	return strings.IndexByte(" \t\n\"'=:;,()<>|&`", c) >= 0
}

// replaceWildcardAddr turns every standalone "0.0.0.0" (not part of a longer address such
// as 10.0.0.0) into ip.
func replaceWildcardAddr(s, ip string) string {
	const w = "0.0.0.0"
	var b strings.Builder
	for {
		i := strings.Index(s, w)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		before := i == 0 || !isAddrChar(s[i-1])
		end := i + len(w)
		after := end == len(s) || !isAddrChar(s[end])
		b.WriteString(s[:i])
		if before && after {
			b.WriteString(ip)
		} else {
			b.WriteString(w)
		}
		s = s[end:]
	}
}

func isAddrChar(c byte) bool { return c == '.' || (c >= '0' && c <= '9') }

// prepareVolumes gives every pod volume a host directory: a PVC its PV's hostPath, a
// hostPath itself, and everything else (emptyDir, configMap, secret, projected, downward
// API) a directory under the pod's scratch dir, filled with the files it would hold.
func (k *kubelet) prepareVolumes(rt *podRT, pod *corev1.Pod) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(k.ctx, 10*time.Second)
	defer cancel()
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		scratch := filepath.Join(rt.dir, "volumes", v.Name)
		switch {
		case v.PersistentVolumeClaim != nil:
			pvc, err := k.cs.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx,
				v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			if pvc.Spec.VolumeName == "" {
				return nil, fmt.Errorf("persistentvolumeclaim %q is not bound", pvc.Name)
			}
			pv, err := k.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			if pv.Spec.HostPath == nil {
				return nil, fmt.Errorf("persistentvolume %q has no hostPath", pv.Name)
			}
			out[v.Name] = pv.Spec.HostPath.Path
		case v.HostPath != nil:
			out[v.Name] = v.HostPath.Path
		default:
			if err := os.MkdirAll(scratch, 0o755); err != nil {
				return nil, err
			}
			files, err := k.volumeFiles(ctx, rt, pod, v)
			if err != nil {
				return nil, err
			}
			for name, data := range files {
				p := filepath.Join(scratch, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return nil, err
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					return nil, err
				}
			}
			out[v.Name] = scratch
		}
	}
	return out, nil
}

// volumeFiles returns the files a configMap, secret, downwardAPI or projected volume holds.
func (k *kubelet) volumeFiles(ctx context.Context, rt *podRT, pod *corev1.Pod, v corev1.Volume) (map[string][]byte, error) {
	files := map[string][]byte{}
	addCM := func(name string, items []corev1.KeyToPath, optional *bool) error {
		cm, err := k.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if optional != nil && *optional {
				return nil
			}
			return fmt.Errorf("configmap %q not found", name)
		}
		data := map[string][]byte{}
		for kk, v := range cm.Data {
			data[kk] = []byte(v)
		}
		for kk, v := range cm.BinaryData {
			data[kk] = v
		}
		addItems(files, data, items)
		return nil
	}
	addSecret := func(name string, items []corev1.KeyToPath, optional *bool) error {
		s, err := k.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if optional != nil && *optional {
				return nil
			}
			return fmt.Errorf("secret %q not found", name)
		}
		addItems(files, s.Data, items)
		return nil
	}
	addDownward := func(items []corev1.DownwardAPIVolumeFile) error {
		for _, it := range items {
			if it.FieldRef == nil {
				continue
			}
			val, err := fieldpath.ExtractFieldPathAsString(pod, it.FieldRef.FieldPath)
			if err != nil {
				return err
			}
			files[it.Path] = []byte(val)
		}
		return nil
	}
	switch {
	case v.ConfigMap != nil:
		return files, addCM(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional)
	case v.Secret != nil:
		return files, addSecret(v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
	case v.DownwardAPI != nil:
		return files, addDownward(v.DownwardAPI.Items)
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			var err error
			switch {
			case src.ConfigMap != nil:
				err = addCM(src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
			case src.Secret != nil:
				err = addSecret(src.Secret.Name, src.Secret.Items, src.Secret.Optional)
			case src.DownwardAPI != nil:
				err = addDownward(src.DownwardAPI.Items)
			case src.ServiceAccountToken != nil:
				// A token bound to this pod, as the kubelet projects it.
				t := src.ServiceAccountToken
				secs := int64(3607)
				if t.ExpirationSeconds != nil {
					secs = *t.ExpirationSeconds
				}
				req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
					ExpirationSeconds: &secs,
					BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1",
						Name: pod.Name, UID: pod.UID},
				}}
				if t.Audience != "" {
					req.Spec.Audiences = []string{t.Audience}
				}
				sa := pod.Spec.ServiceAccountName
				if sa == "" {
					sa = "default"
				}
				tr, terr := k.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
				if terr != nil {
					err = fmt.Errorf("service account token: %v", terr)
				} else {
					files[t.Path] = []byte(tr.Status.Token)
				}
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

func addItems(files map[string][]byte, data map[string][]byte, items []corev1.KeyToPath) {
	if len(items) == 0 {
		for kk, v := range data {
			files[kk] = v
		}
		return
	}
	for _, it := range items {
		if v, ok := data[it.Key]; ok {
			files[it.Path] = v
		}
	}
}

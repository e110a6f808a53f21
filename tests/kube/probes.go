package main

// Startup, readiness and liveness probes, run against the pod's own address like the
// kubelet runs them against the pod IP. Probe periods are capped (--max-probe-period) so
// that tests need not wait out the API's 10 s default.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func resolveProbePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container ports", p.StrVal)
}

// loopbackOnly refuses any probe target outside 127.0.0.0/8: nothing else may be contacted.
func loopbackOnly(host string) error {
	ip := net.ParseIP(host)
	if host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("probe host %q refused: only 127.0.0.0/8 is reachable here", host)
}

// runProbe performs one probe; it returns nil on success.
func (k *kubelet) runProbe(rt *podRT, c *ctrRT, p *corev1.Probe, env []string, cwd string) error {
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		host := g.Host
		if host == "" {
			host = rt.ip
		}
		if err := loopbackOnly(host); err != nil {
			return err
		}
		port, err := resolveProbePort(g.Port, &c.spec)
		if err != nil {
			return err
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		u := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path)
		client := &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				// The kubelet does not verify probe certificates either.
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
				DisableKeepAlives: true,
				Proxy:             nil,
			},
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 10 {
					return http.ErrUseLastResponse
				}
				// Never follow a redirect off this machine.
				if loopbackOnly(req.URL.Hostname()) != nil {
					return http.ErrUseLastResponse
				}
				return nil
			},
		}
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.36")
		req.Header.Set("Accept", "*/*")
		for _, h := range g.HTTPHeaders {
			if strings.EqualFold(h.Name, "Host") {
				req.Host = h.Value
				continue
			}
			req.Header.Set(h.Name, h.Value)
		}
		resp, err := client.Do(req)
		if err != nil {
			// Already reads like the kubelet's: Get "http://...": dial tcp ...: connection refused
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil || p.GRPC != nil:
		// gRPC probes are approximated by a TCP connect to their port.
		host, port := rt.ip, 0
		var err error
		if p.TCPSocket != nil {
			if p.TCPSocket.Host != "" {
				host = p.TCPSocket.Host
			}
			port, err = resolveProbePort(p.TCPSocket.Port, &c.spec)
		} else {
			port = int(p.GRPC.Port)
		}
		if err != nil {
			return err
		}
		if err := loopbackOnly(host); err != nil {
			return err
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return fmt.Errorf("exec probe without command")
		}
		pathEnv := ""
		for _, kv := range env {
			if strings.HasPrefix(kv, "PATH=") {
				pathEnv = kv[len("PATH="):]
			}
		}
		prefix, err := c.image.executable(p.Exec.Command[0], pathEnv)
		if err != nil {
			return err
		}
		argv := append(prefix, p.Exec.Command[1:]...)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = env
		cmd.Dir = cwd
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("command %q exited: %v: %s", p.Exec.Command, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return nil
}

func probePeriod(p *corev1.Probe, max time.Duration) time.Duration {
	d := time.Duration(p.PeriodSeconds) * time.Second
	if d <= 0 {
		d = 10 * time.Second
	}
	if max > 0 && d > max {
		d = max
	}
	return d
}

// startProbes launches the probe loops for a container that just started. Called with
// rt.mu held. The loops end when stop is closed (the container exited).
func (k *kubelet) startProbes(rt *podRT, pod *corev1.Pod, c *ctrRT, stop chan struct{}, env []string, cwd string) {
	sp := c.spec
	if sp.StartupProbe == nil {
		c.startupDone = true
		if sp.ReadinessProbe == nil {
			c.ready = true
		}
		k.startSteadyProbes(rt, pod, c, stop, env, cwd)
		return
	}
	go k.probeLoop(rt, pod, c, sp.StartupProbe, "Startup", stop, env, cwd, func(ok bool, succ, fail int32) bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if c.probeStop != stop {
			return true
		}
		if ok && succ >= 1 {
			c.startupDone = true
			if sp.ReadinessProbe == nil {
				c.ready = true
			}
			k.startSteadyProbes(rt, pod, c, stop, env, cwd)
			k.podQueue.Add(rt.key)
			return true
		}
		if !ok && fail >= threshold(sp.StartupProbe.FailureThreshold, 3) {
			k.restartUnhealthy(rt, pod, c, "startup")
			return true
		}
		return false
	})
}

// startSteadyProbes starts readiness and liveness once the container counts as started.
// Called with rt.mu held.
func (k *kubelet) startSteadyProbes(rt *podRT, pod *corev1.Pod, c *ctrRT, stop chan struct{}, env []string, cwd string) {
	sp := c.spec
	if sp.ReadinessProbe != nil {
		p := sp.ReadinessProbe
		go k.probeLoop(rt, pod, c, p, "Readiness", stop, env, cwd, func(ok bool, succ, fail int32) bool {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if c.probeStop != stop {
				return true
			}
			was := c.ready
			if ok && succ >= threshold(p.SuccessThreshold, 1) {
				c.ready = true
			}
			if !ok && fail >= threshold(p.FailureThreshold, 3) {
				c.ready = false
			}
			if was != c.ready {
				k.podQueue.Add(rt.key)
			}
			return false
		})
	}
	if sp.LivenessProbe != nil {
		p := sp.LivenessProbe
		go k.probeLoop(rt, pod, c, p, "Liveness", stop, env, cwd, func(ok bool, succ, fail int32) bool {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			if c.probeStop != stop {
				return true
			}
			if !ok && fail >= threshold(p.FailureThreshold, 3) {
				k.restartUnhealthy(rt, pod, c, "liveness")
				return true
			}
			return false
		})
	}
}

func threshold(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// restartUnhealthy kills a container whose liveness or startup probe failed; its exit is
// then handled per restartPolicy. Called with rt.mu held.
func (k *kubelet) restartUnhealthy(rt *podRT, pod *corev1.Pod, c *ctrRT, kind string) {
	if c.proc == nil || c.killing {
		return
	}
	c.killing = true
	k.events.emit(podRef(pod, c.spec.Name), corev1.EventTypeNormal, "Killing",
		fmt.Sprintf("Container %s failed %s probe, will be restarted", c.spec.Name, kind), "kubelet")
	grace := 30 * time.Second
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	pid := c.proc.Process.Pid
	go killGroups([]int{pid}, grace)
}

// probeLoop runs one probe periodically until stop is closed or onResult asks to stop.
func (k *kubelet) probeLoop(rt *podRT, pod *corev1.Pod, c *ctrRT, p *corev1.Probe, kind string,
	stop chan struct{}, env []string, cwd string, onResult func(ok bool, succ, fail int32) bool) {
	delay := time.Duration(p.InitialDelaySeconds) * time.Second
	period := probePeriod(p, k.flags.maxProbePeriod)
	var succ, fail int32
	var lastEvent time.Time
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-k.ctx.Done():
			return
		case <-timer.C:
		}
		err := k.runProbe(rt, c, p, env, cwd)
		if err == nil {
			succ++
			fail = 0
		} else {
			fail++
			succ = 0
			// One Unhealthy event per few seconds: the real recorder aggregates repeats.
			if time.Since(lastEvent) > 5*time.Second {
				lastEvent = time.Now()
				k.events.emit(podRef(pod, c.spec.Name), corev1.EventTypeWarning, "Unhealthy",
					fmt.Sprintf("%s probe failed: %v", kind, err), "kubelet")
			}
		}
		if onResult(err == nil, succ, fail) {
			return
		}
		timer.Reset(period)
	}
}

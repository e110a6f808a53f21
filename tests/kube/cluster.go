package main

// Lifecycle of a test cluster directory: up, down, apiserver-stop/-start, status.
// Everything started is recorded by PID in DIR/state.json and stopped by that PID only
// after checking that the process still is the one we started (its command line names
// this cluster directory), so a recycled PID is never signalled.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clusterState is DIR/state.json. Field names are part of the test interface (the Python
// helpers read them).
type clusterState struct {
	Dir          string         `json:"dir"`
	Namespace    string         `json:"namespace"`
	Server       string         `json:"server"`
	APIPort      int            `json:"apiserver_port"`
	EtcdPort     int            `json:"etcd_port"`
	EtcdPeerPort int            `json:"etcd_peer_port"`
	Binary       string         `json:"binary"`
	Images       string         `json:"images"`
	KubeletArgs  []string       `json:"kubelet_args"`
	Pids         map[string]int `json:"pids"`
	NodeName     string         `json:"node_name"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func loadState(dir string) (*clusterState, error) {
	if dir == "" {
		return nil, errors.New("--dir is required")
	}
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st clusterState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	if st.Pids == nil {
		st.Pids = map[string]int{}
	}
	return &st, nil
}

// saveState replaces state.json atomically so a concurrent reader never sees half a file.
func saveState(st *clusterState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.Dir) + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(st.Dir))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func absDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("--dir is required")
	}
	return filepath.Abs(dir)
}

// processIsOurs tells whether pid is alive and is "kubetest ROLE --dir DIR".
func processIsOurs(pid int, role, dir string) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if len(argv) < 2 || argv[1] != role {
		return false
	}
	for i := 2; i+1 < len(argv); i++ {
		if argv[i] == "--dir" && argv[i+1] == dir {
			return !isZombie(pid)
		}
	}
	return false
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state letter follows the parenthesised command name, which may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] == 'Z'
}

// spawnDaemon starts "kubetest ROLE --dir DIR ARGS..." detached in its own session with its
// output appended to DIR/ROLE.log, and returns its PID. The child is not waited for: it
// outlives "up".
func spawnDaemon(st *clusterState, role string, extra []string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(st.Dir, role+".log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	args := append([]string{role, "--dir", st.Dir}, extra...)
	cmd := exec.Command(st.Binary, args...)
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = st.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	// Reap it in the background for as long as we live, so that an early death is seen
	// as "not ours" (not a zombie that still looks alive).
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// stopPid sends SIGTERM, waits up to grace, then SIGKILLs. Returns once it is gone.
func stopPid(pid int, role, dir string, grace time.Duration) {
	if !processIsOurs(pid, role, dir) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !processIsOurs(pid, role, dir) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && processIsOurs(pid, role, dir); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

func adminHTTPClient(dir string) (*http.Client, string, error) {
	p := pkiPaths(dir)
	ca, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", errors.New("bad CA file")
	}
	tok, err := os.ReadFile(p.AdminToken)
	if err != nil {
		return nil, "", err
	}
	c := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	return c, strings.TrimSpace(string(tok)), nil
}

// waitAPIServerReady polls /readyz (with TLS verified against our CA) until it answers 200.
func waitAPIServerReady(st *clusterState, timeout time.Duration) error {
	c, tok, err := adminHTTPClient(st.Dir)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		if !processIsOurs(st.Pids["apiserver"], "apiserver", st.Dir) {
			return fmt.Errorf("apiserver exited; see %s", filepath.Join(st.Dir, "apiserver.log"))
		}
		req, _ := http.NewRequest("GET", st.Server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, lastLines(body.String(), 3))
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("apiserver not ready after %v: %s", timeout, last)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func waitTCP(addr string, timeout time.Duration, alive func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive() {
			return errors.New("process exited")
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %v", addr, timeout)
}

func defaultImagesFile() string {
	exe, err := os.Executable()
	if err == nil {
		// The build script puts the binary at REPO/.deps/kube/bin/kubetest.
		cand := filepath.Join(filepath.Dir(exe), "..", "..", "..", "tests", "kube", "images.yaml")
		if _, err := os.Stat(cand); err == nil {
			return filepath.Clean(cand)
		}
	}
	return "tests/kube/images.yaml"
}

func cmdUp(args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory (created)")
	ns := fs.String("namespace", "codehub", "namespace prepared for the hub")
	images := fs.String("images", "", "image map (default: tests/kube/images.yaml of the repo)")
	timeout := fs.Duration("timeout", 120*time.Second, "how long to wait for readiness")
	var kf kubeletFlags
	kf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	if old, err := loadState(dir); err == nil {
		for role, pid := range old.Pids {
			if processIsOurs(pid, role, dir) {
				return fmt.Errorf("%s already runs in %s (pid %d); run down first", role, dir, pid)
			}
		}
	}
	if *images == "" {
		*images = defaultImagesFile()
	}
	imagesAbs, err := filepath.Abs(*images)
	if err != nil {
		return err
	}
	if _, err := loadImageMap(imagesAbs); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	st := &clusterState{Dir: dir, Namespace: *ns, Binary: exe, Images: imagesAbs,
		Pids: map[string]int{}, NodeName: kf.nodeName}
	for _, p := range []*int{&st.APIPort, &st.EtcdPort, &st.EtcdPeerPort} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	st.Server = fmt.Sprintf("https://127.0.0.1:%d", st.APIPort)
	st.KubeletArgs = append(kf.args(), "--images", imagesAbs)
	if _, err := generatePKI(dir); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	start := time.Now()
	err = bringUp(st, *timeout)
	if err != nil {
		// Leave nothing running behind a failed "up".
		fmt.Fprintf(os.Stderr, "kubetest up: %v; stopping what was started\n", err)
		downState(st)
		return err
	}
	fmt.Printf("kubetest: cluster up in %.1fs: %s (dir %s, namespace %s)\n",
		time.Since(start).Seconds(), st.Server, dir, st.Namespace)
	return nil
}

func bringUp(st *clusterState, timeout time.Duration) error {
	pid, err := spawnDaemon(st, "etcd", []string{"--port", strconv.Itoa(st.EtcdPort),
		"--peer-port", strconv.Itoa(st.EtcdPeerPort)})
	if err != nil {
		return err
	}
	st.Pids["etcd"] = pid
	if err := saveState(st); err != nil {
		return err
	}
	etcdAlive := func() bool { return processIsOurs(st.Pids["etcd"], "etcd", st.Dir) }
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", st.EtcdPort), 30*time.Second, etcdAlive); err != nil {
		return fmt.Errorf("etcd: %w; see %s", err, filepath.Join(st.Dir, "etcd.log"))
	}
	if err := startAPIServer(st, timeout); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := bootstrap(ctx, st); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	ready := filepath.Join(st.Dir, "run", "kubelet.ready")
	_ = os.Remove(ready)
	pid, err = spawnDaemon(st, "kubelet", st.KubeletArgs)
	if err != nil {
		return err
	}
	st.Pids["kubelet"] = pid
	if err := saveState(st); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if !processIsOurs(pid, "kubelet", st.Dir) {
			return fmt.Errorf("kubelet exited; see %s", filepath.Join(st.Dir, "kubelet.log"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kubelet not ready after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func startAPIServer(st *clusterState, timeout time.Duration) error {
	pid, err := spawnDaemon(st, "apiserver", nil)
	if err != nil {
		return err
	}
	st.Pids["apiserver"] = pid
	if err := saveState(st); err != nil {
		return err
	}
	return waitAPIServerReady(st, timeout)
}

// downState stops the kubelet (which stops its pods), any pod process group left behind,
// then the apiserver and etcd. Every step tolerates things that are already gone.
func downState(st *clusterState) {
	stopPid(st.Pids["kubelet"], "kubelet", st.Dir, 15*time.Second)
	killLeftoverPods(st.Dir)
	stopPid(st.Pids["apiserver"], "apiserver", st.Dir, 15*time.Second)
	stopPid(st.Pids["etcd"], "etcd", st.Dir, 10*time.Second)
}

func cmdDown(args []string) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	st, err := loadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		// Nothing was started here (or the directory is gone): still sweep pods that
		// carry this directory's marker, then report success so down is idempotent.
		killLeftoverPods(dir)
		return nil
	}
	if err != nil {
		return err
	}
	downState(st)
	return nil
}

func cmdAPIServerStop(args []string) error {
	fs := flag.NewFlagSet("apiserver-stop", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	stopPid(st.Pids["apiserver"], "apiserver", dir, 15*time.Second)
	// The port must really be closed when we return: callers time the outage from here.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", st.APIPort), 200*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	st.Pids["apiserver"] = 0
	return saveState(st)
}

func cmdAPIServerStart(args []string) error {
	fs := flag.NewFlagSet("apiserver-start", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory")
	timeout := fs.Duration("timeout", 120*time.Second, "how long to wait for readiness")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	if processIsOurs(st.Pids["apiserver"], "apiserver", dir) {
		return waitAPIServerReady(st, *timeout)
	}
	if !processIsOurs(st.Pids["etcd"], "etcd", dir) {
		return errors.New("etcd is not running; run up again")
	}
	return startAPIServer(st, *timeout)
}

func cmdStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := absDir(*dirFlag)
	if err != nil {
		return err
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	down := 0
	for _, role := range []string{"etcd", "apiserver", "kubelet"} {
		pid := st.Pids[role]
		state := "running"
		if !processIsOurs(pid, role, dir) {
			state = "stopped"
			down++
		}
		fmt.Printf("%-10s pid %-8d %s\n", role, pid, state)
	}
	if down > 0 {
		return fmt.Errorf("%d component(s) not running", down)
	}
	return nil
}

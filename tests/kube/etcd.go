package main

// The embedded etcd, run as its own process ("kubetest etcd"). Debian's etcd 3.4.23 is too
// old for the 1.36 apiserver (consistent watches need watch progress requests), so we
// embed the etcd server at the version the client in our build graph already uses.

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func runEtcd(args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dir := fs.String("dir", "", "cluster directory")
	port := fs.Int("port", 0, "client port on 127.0.0.1")
	peerPort := fs.Int("peer-port", 0, "peer port on 127.0.0.1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *port == 0 || *peerPort == 0 {
		return fmt.Errorf("etcd: --dir, --port and --peer-port are required")
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", *port)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", *peerPort)}

	cfg := embed.NewConfig()
	cfg.Name = "kubetest"
	cfg.Dir = filepath.Join(*dir, "etcd")
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peer.String())
	cfg.ListenMetricsUrls = nil
	// Test data is disposable: skipping fsync makes every write much faster.
	cfg.UnsafeNoFsync = true
	// The apiserver's consistent reads from the watch cache rely on progress notifies.
	cfg.WatchProgressNotifyInterval = 5 * time.Second
	cfg.LogLevel = "warn"
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: start: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd: not ready after 60 s")
	}
	fmt.Fprintf(os.Stderr, "kubetest etcd: ready on %s\n", client.String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "kubetest etcd: %v, stopping\n", s)
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

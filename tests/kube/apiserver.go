package main

// The real kube-apiserver, built from k8s.io/kubernetes/cmd/kube-apiserver/app and run in
// its own process ("kubetest apiserver --dir DIR"): it installs process-wide signal
// handlers and registries, so it cannot share a process with anything else.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// apiserverArgs is the whole command line; everything listens on 127.0.0.1 only.
func apiserverArgs(st *clusterState) []string {
	p := pkiPaths(st.Dir)
	return []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", st.EtcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(st.APIPort),
		"--cert-dir=" + filepath.Join(st.Dir, "pki", "apiserver-generated"),
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServKey,
		"--client-ca-file=" + p.CACert,
		"--token-auth-file=" + p.TokenFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub,
		"--service-account-signing-key-file=" + p.SAKey,
		"--authorization-mode=RBAC",
		"--anonymous-auth=false",
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.96.0.0/24",
		// No controller manager runs, so nothing would reconcile the endpoints of the
		// kubernetes service.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--storage-backend=etcd3",
		"--v=1",
	}
}

func runAPIServer(args []string) {
	fs := flag.NewFlagSet("apiserver", flag.ContinueOnError)
	dir := fs.String("dir", "", "cluster directory")
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	st, err := loadState(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest apiserver: %v\n", err)
		os.Exit(1)
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(apiserverArgs(st))
	os.Exit(cli.Run(cmd))
}

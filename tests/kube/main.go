// Command kubetest runs a real kube-apiserver (with an embedded etcd) and a simulated
// kubelet on 127.0.0.1 so that codehub's Kubernetes spawner can be tested without a
// container runtime. It is test tooling only; see README.md.
//
//	kubetest up --dir DIR [--namespace codehub] [--images FILE] [kubelet flags]
//	kubetest down --dir DIR
//	kubetest apiserver-stop --dir DIR | apiserver-start --dir DIR
//	kubetest rotate-token --dir DIR
//
// Each server runs in its own OS process: "up" re-executes this binary with the internal
// subcommands etcd, apiserver and kubelet, which keep running after "up" exits.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  kubetest up --dir DIR [--namespace NS] [--images FILE] [kubelet flags]
  kubetest down --dir DIR
  kubetest apiserver-stop --dir DIR
  kubetest apiserver-start --dir DIR
  kubetest rotate-token --dir DIR
  kubetest status --dir DIR
internal (started by up): etcd, apiserver, kubelet
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "up":
		err = cmdUp(args)
	case "down":
		err = cmdDown(args)
	case "apiserver-stop":
		err = cmdAPIServerStop(args)
	case "apiserver-start":
		err = cmdAPIServerStart(args)
	case "rotate-token":
		err = cmdRotateToken(args)
	case "status":
		err = cmdStatus(args)
	case "etcd":
		err = runEtcd(args)
	case "apiserver":
		// Does not return: the apiserver command exits the process itself.
		runAPIServer(args)
	case "kubelet":
		err = runKubelet(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "kubetest: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

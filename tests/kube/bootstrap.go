package main

// What "up" creates once the apiserver is ready: the namespace and its default
// ServiceAccount (no controller manager runs to create it), the hub's ServiceAccount with
// exactly the rights a spawner needs, the default StorageClass, and the credential files
// the hub and the tests use.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	hubServiceAccount = "codehub-hub"
	storageClassName  = "standard"
	provisionerName   = "kubetest.codehub.test/hostpath"
	// The hub's token is minted for a year: a test run must never see it expire.
	hubTokenSeconds = 365 * 24 * 3600
)

// hubRules is the hub's whole Role: what a spawner needs, and nothing more.
var hubRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"},
		Verbs: []string{"get", "list", "watch", "create", "delete"}},
	{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"},
		Verbs: []string{"get", "list", "watch", "create", "delete"}},
	{APIGroups: []string{""}, Resources: []string{"events"},
		Verbs: []string{"get", "list", "watch"}},
}

func adminRESTConfig(dir string) (*rest.Config, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	tok, err := os.ReadFile(pkiPaths(dir).AdminToken)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            st.Server,
		BearerToken:     string(tok),
		TLSClientConfig: rest.TLSClientConfig{CAFile: pkiPaths(dir).CACert},
		QPS:             200,
		Burst:           400,
		UserAgent:       "kubetest",
	}, nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func bootstrap(ctx context.Context, st *clusterState) error {
	cfg, err := adminRESTConfig(st.Dir)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns := st.Namespace
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
	}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	caPEM, err := os.ReadFile(pkiPaths(st.Dir).CACert)
	if err != nil {
		return err
	}
	for _, n := range []string{ns, "default"} {
		_, err = cs.CoreV1().ServiceAccounts(n).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
		}, metav1.CreateOptions{})
		if err := ignoreExists(err); err != nil {
			return fmt.Errorf("serviceaccount %s/default: %w", n, err)
		}
		// What the controller manager's root-CA publisher would create; the projected
		// kube-api-access volume of every pod reads it.
		_, err = cs.CoreV1().ConfigMaps(n).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
			Data:       map[string]string{"ca.crt": string(caPEM)},
		}, metav1.CreateOptions{})
		if err := ignoreExists(err); err != nil {
			return fmt.Errorf("configmap %s/kube-root-ca.crt: %w", n, err)
		}
	}
	labels := map[string]string{"app.kubernetes.io/name": "codehub", "app.kubernetes.io/component": "hub"}
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: hubServiceAccount, Labels: labels},
	}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("serviceaccount %s: %w", hubServiceAccount, err)
	}
	_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: hubServiceAccount, Labels: labels},
		Rules:      hubRules,
	}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("role: %w", err)
	}
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: hubServiceAccount, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: hubServiceAccount},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: hubServiceAccount,
			Namespace: ns}},
	}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("rolebinding: %w", err)
	}
	immediate := storagev1.VolumeBindingImmediate
	reclaim := corev1.PersistentVolumeReclaimDelete
	_, err = cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: storageClassName, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       provisionerName,
		ReclaimPolicy:     &reclaim,
		VolumeBindingMode: &immediate,
	}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("storageclass: %w", err)
	}

	if err := writeKubeconfig(filepath.Join(st.Dir, "admin.kubeconfig"), st, "kubetest-admin",
		cfg.BearerToken, "default"); err != nil {
		return err
	}
	return writeHubCredentials(ctx, cs, st)
}

// writeHubCredentials mints a token for the hub's ServiceAccount through TokenRequest and
// writes DIR/hub.kubeconfig and DIR/incluster/ (laid out like
// /var/run/secrets/kubernetes.io/serviceaccount). Files are replaced atomically so that a
// hub re-reading a rotated token never sees a partial one.
func writeHubCredentials(ctx context.Context, cs kubernetes.Interface, st *clusterState) error {
	secs := int64(hubTokenSeconds)
	tr, err := cs.CoreV1().ServiceAccounts(st.Namespace).CreateToken(ctx, hubServiceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}},
		metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token request: %w", err)
	}
	tok := tr.Status.Token
	if err := writeKubeconfig(filepath.Join(st.Dir, "hub.kubeconfig"), st, hubServiceAccount, tok,
		st.Namespace); err != nil {
		return err
	}
	in := filepath.Join(st.Dir, "incluster")
	if err := os.MkdirAll(in, 0o755); err != nil {
		return err
	}
	ca, err := os.ReadFile(pkiPaths(st.Dir).CACert)
	if err != nil {
		return err
	}
	env := fmt.Sprintf("KUBERNETES_SERVICE_HOST=127.0.0.1\nKUBERNETES_SERVICE_PORT=%d\n"+
		"KUBERNETES_SERVICE_PORT_HTTPS=%d\n", st.APIPort, st.APIPort)
	files := []struct {
		name string
		data []byte
	}{
		{"ca.crt", ca},
		{"namespace", []byte(st.Namespace)},
		{"token", []byte(tok)},
		{"env", []byte(env)},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(in, f.name), f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeKubeconfig(path string, st *clusterState, user, token, namespace string) error {
	ca, err := os.ReadFile(pkiPaths(st.Dir).CACert)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: st.Server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user,
		Namespace: namespace}
	cfg.CurrentContext = "kubetest"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

// cmdRotateToken mints a fresh hub token and replaces hub.kubeconfig and incluster/token,
// as the kubelet does when it refreshes a projected service-account token.
func cmdRotateToken(args []string) error {
	fs := flag.NewFlagSet("rotate-token", flag.ContinueOnError)
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
	cfg, err := adminRESTConfig(dir)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return writeHubCredentials(ctx, cs, st)
}

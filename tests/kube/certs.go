package main

// Key material for the test cluster: our own CA, a serving certificate for the apiserver
// with an IP SAN of 127.0.0.1 (the apiserver's self-signed fallback is not signed by a CA a
// client could pin), and the service-account signing key pair.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certPaths names the files written under DIR/pki.
type certPaths struct {
	CACert, CAKey         string
	ServingCert, ServKey  string
	SAKey, SAPub          string
	TokenFile, AdminToken string
}

func pkiPaths(dir string) certPaths {
	p := filepath.Join(dir, "pki")
	return certPaths{
		CACert:      filepath.Join(p, "ca.crt"),
		CAKey:       filepath.Join(p, "ca.key"),
		ServingCert: filepath.Join(p, "apiserver.crt"),
		ServKey:     filepath.Join(p, "apiserver.key"),
		SAKey:       filepath.Join(p, "sa.key"),
		SAPub:       filepath.Join(p, "sa.pub"),
		TokenFile:   filepath.Join(p, "tokens.csv"),
		AdminToken:  filepath.Join(p, "admin.token"),
	}
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	return os.WriteFile(path, data, mode)
}

func writeECKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// generatePKI writes a fresh CA, the apiserver's serving certificate, the service-account
// key pair and a static admin token. It is run once per cluster directory; an existing
// pki/ is reused so that a restarted apiserver keeps accepting issued tokens.
func generatePKI(dir string) (certPaths, error) {
	p := pkiPaths(dir)
	if _, err := os.Stat(p.AdminToken); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p.CACert), 0o700); err != nil {
		return p, err
	}
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	caSerial, err := serialNumber()
	if err != nil {
		return p, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "kubetest-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.CACert, "CERTIFICATE", caDER, 0o644); err != nil {
		return p, err
	}
	if err := writeECKey(p.CAKey, caKey); err != nil {
		return p, err
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	srvSerial, err := serialNumber()
	if err != nil {
		return p, err
	}
	// The names a client inside a real cluster would use, plus 127.0.0.1 which is the
	// only address anything here connects to.
	srvTmpl := &x509.Certificate{
		SerialNumber: srvSerial,
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.ServingCert, "CERTIFICATE", srvDER, 0o644); err != nil {
		return p, err
	}
	if err := writeECKey(p.ServKey, srvKey); err != nil {
		return p, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.SAKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey), 0o600); err != nil {
		return p, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.SAPub, "PUBLIC KEY", pubDER, 0o644); err != nil {
		return p, err
	}

	// A static token for the admin (group system:masters bypasses RBAC); the hub gets a
	// real service-account token instead so that its RBAC is exercised.
	tok, err := randomToken()
	if err != nil {
		return p, err
	}
	csv := fmt.Sprintf("%s,kubetest-admin,kubetest-admin,\"system:masters\"\n", tok)
	if err := os.WriteFile(p.TokenFile, []byte(csv), 0o600); err != nil {
		return p, err
	}
	// Written last: its presence marks a complete pki/.
	if err := os.WriteFile(p.AdminToken, []byte(tok), 0o600); err != nil {
		return p, err
	}
	return p, nil
}

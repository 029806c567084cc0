package helm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// serviceHost is the Service's DNS name in the test release: what the
// chart's clients use with TLS and check the certificate for.
const serviceHost = "stowage.cache.svc"

// tlsOn reports whether a values file switches tls on.
func tlsOn(t *testing.T, file string) bool {
	t.Helper()
	tls, _ := loadValues(t, file, nil)["tls"].(map[string]any)
	on, _ := tls["enabled"].(bool)
	return on
}

// caVolume checks that a pod mounts, as the volume "ca", only the CA key of
// the Secret or ConfigMap name (never tls.key), optional, as ca.crt.
func caVolume(t *testing.T, what string, pod corev1.PodSpec, kind, name, key string) {
	t.Helper()
	var v *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == "ca" {
			v = &pod.Volumes[i]
		}
	}
	if v == nil {
		t.Fatalf("%s: no ca volume", what)
	}
	var items []corev1.KeyToPath
	var gotName string
	var optional *bool
	switch {
	case kind == "Secret" && v.Secret != nil:
		items, gotName, optional = v.Secret.Items, v.Secret.SecretName, v.Secret.Optional
	case kind == "ConfigMap" && v.ConfigMap != nil:
		items, gotName, optional = v.ConfigMap.Items, v.ConfigMap.Name, v.ConfigMap.Optional
	default:
		t.Fatalf("%s: ca volume %+v, want a %s", what, v.VolumeSource, kind)
	}
	want := []corev1.KeyToPath{{Key: key, Path: "ca.crt"}}
	if gotName != name || !slices.Equal(items, want) || optional == nil || !*optional {
		t.Errorf("%s: ca volume %s %q items %+v optional %v; want %q with only %s as ca.crt, optional",
			what, kind, gotName, items, optional, name, key)
	}
}

// TestTLSServiceMonitor: with tls.enabled Prometheus scrapes https, checks
// the certificate for the Service's name, with the CA of tls.ca (from the
// TLS Secret, another Secret or a ConfigMap), the system roots, or, only
// when asked, no check.
func TestTLSServiceMonitor(t *testing.T) {
	t.Parallel()
	type caRef struct{ kind, name, key string }
	for name, tc := range map[string]struct {
		values     map[string]any
		serverName string
		ca         *caRef // nil: no ca in tlsConfig
		insecure   bool
	}{
		"the TLS Secret's ca.crt": {
			values:     map[string]any{"tls": map[string]any{"enabled": true, "secretName": "stowage-cert"}},
			serverName: serviceHost, ca: &caRef{"Secret", "stowage-cert", "ca.crt"},
		},
		"another Secret": {
			values: map[string]any{"tls": map[string]any{"enabled": true, "secretName": "stowage-cert",
				"ca": map[string]any{"source": "secret", "secretName": "corp-ca", "key": "root.pem"}}},
			serverName: serviceHost, ca: &caRef{"Secret", "corp-ca", "root.pem"},
		},
		"a ConfigMap (trust-manager)": {
			values: map[string]any{"tls": map[string]any{"enabled": true, "secretName": "stowage-cert",
				"ca": map[string]any{"source": "configMap", "configMapName": "corp-bundle", "key": "bundle.pem"}}},
			serverName: serviceHost, ca: &caRef{"ConfigMap", "corp-bundle", "bundle.pem"},
		},
		"a public CA": {
			values: map[string]any{"tls": map[string]any{"enabled": true, "secretName": "stowage-cert",
				"ca": map[string]any{"source": "system"}}},
			serverName: serviceHost,
		},
		"serverName and insecureSkipVerify set": {
			values: map[string]any{"tls": map[string]any{"enabled": true, "secretName": "stowage-cert"},
				"serviceMonitor": map[string]any{"serverName": "stowage.corp.example", "insecureSkipVerify": true}},
			serverName: "stowage.corp.example", insecure: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, "", mergeValues(tc.values, map[string]any{"serviceMonitor": map[string]any{"enabled": true}}))
			ep := decodeAs[*serviceMonitor](t, r.find(t, "ServiceMonitor", "stowage")).Spec.Endpoints[0]
			if ep.Scheme != "https" || ep.TLSConfig == nil {
				t.Fatalf("endpoint scheme %q tlsConfig %+v; want https with a tlsConfig", ep.Scheme, ep.TLSConfig)
			}
			tc2 := ep.TLSConfig
			if tc2.ServerName != tc.serverName || tc2.InsecureSkipVerify != tc.insecure {
				t.Errorf("tlsConfig serverName %q insecureSkipVerify %v; want %q %v",
					tc2.ServerName, tc2.InsecureSkipVerify, tc.serverName, tc.insecure)
			}
			var got *caRef
			if ca := tc2.CA; ca != nil {
				switch {
				case ca.Secret != nil && ca.ConfigMap == nil:
					got = &caRef{"Secret", ca.Secret.Name, ca.Secret.Key}
				case ca.ConfigMap != nil && ca.Secret == nil:
					got = &caRef{"ConfigMap", ca.ConfigMap.Name, ca.ConfigMap.Key}
				default:
					t.Fatalf("tlsConfig.ca %+v: want exactly one of secret, configMap", ca)
				}
			}
			if (got == nil) != (tc.ca == nil) || (got != nil && *got != *tc.ca) {
				t.Errorf("tlsConfig.ca %+v, want %+v", got, tc.ca)
			}
		})
	}

	// Without TLS: plain http, no tlsConfig.
	r := mustRender(t, "", map[string]any{"serviceMonitor": map[string]any{"enabled": true}})
	if ep := decodeAs[*serviceMonitor](t, r.find(t, "ServiceMonitor", "stowage")).Spec.Endpoints[0]; ep.Scheme != "" || ep.TLSConfig != nil {
		t.Errorf("without TLS: scheme %q tlsConfig %+v", ep.Scheme, ep.TLSConfig)
	}
}

// TestTLSPrefetch: the prefetch Job and CronJob talk https to the Service's
// name with --server-ca on the mounted CA key (none with a public CA), and
// the init container waits for /healthz over https.
func TestTLSPrefetch(t *testing.T) {
	t.Parallel()
	r := mustRender(t, tlsFile, nil)
	for _, kind := range []string{"Job", "CronJob"} {
		spec := prefetchPod(t, r, kind)
		c := container(t, spec, "prefetch")
		want := []string{"prefetch", "--server", "https://" + serviceHost + ":5000", "--server-ca", "/etc/stowage/ca/ca.crt", "-f", "/lists/images.txt"}
		if !slices.Equal(c.Args, want) {
			t.Errorf("%s args %q, want %q", kind, c.Args, want)
		}
		var mount *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].Name == "ca" {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil || mount.MountPath != "/etc/stowage/ca" || !mount.ReadOnly || mount.SubPath != "" {
			t.Errorf("%s: ca mount %+v; want /etc/stowage/ca read-only, no subPath", kind, mount)
		}
		caVolume(t, kind, spec, "Secret", "stowage-tls", "ca.crt")
		wait := strings.Join(spec.InitContainers[0].Command, " ")
		if !strings.Contains(wait, "https://"+serviceHost+":5000/healthz") || !strings.Contains(wait, "--no-check-certificate") {
			t.Errorf("%s: init container %q does not wait for /healthz over https", kind, wait)
		}
	}

	// A public CA: no --server-ca and nothing mounted; the system roots check it.
	r = mustRender(t, tlsFile, map[string]any{"tls": map[string]any{"ca": map[string]any{"source": "system"}}})
	spec := prefetchPod(t, r, "Job")
	if args := container(t, spec, "prefetch").Args; slices.Contains(args, "--server-ca") || !slices.Contains(args, "https://"+serviceHost+":5000") {
		t.Errorf("system CA: args %q", args)
	}
	for _, v := range spec.Volumes {
		if v.Name == "ca" {
			t.Errorf("system CA: a ca volume is mounted: %+v", v)
		}
	}
}

// writeCA writes a self-signed CA certificate as PEM to path and returns it.
func writeCA(t *testing.T, path, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// tlsNodeConfigurator renders the tls value set with overrides and returns
// the node configurator's DaemonSet and ConfigMap.
func tlsNodeConfigurator(t *testing.T, overrides map[string]any) (*appsv1.DaemonSet, *corev1.ConfigMap) {
	t.Helper()
	r := mustRender(t, tlsFile, overrides)
	return decodeAs[*appsv1.DaemonSet](t, r.find(t, "DaemonSet", "-node-configurator")),
		decodeAs[*corev1.ConfigMap](t, r.find(t, "ConfigMap", "-node-configurator"))
}

// TestTLSNodeConfigurator: with tls.enabled every node's hosts.toml names
// Stowage by https and a CA file on the node, which the configurator copies
// from the mounted CA key (and only that key) next to the hosts.toml before
// the hosts.toml names it; the copy follows a new CA, goes when TLS does or
// the registry is dropped, and a CA key without a certificate stops the
// configurator before it writes anything.
func TestTLSNodeConfigurator(t *testing.T) {
	t.Parallel()
	ds, cm := tlsNodeConfigurator(t, nil)
	pod := ds.Spec.Template.Spec
	caVolume(t, "node-configurator", pod, "Secret", "stowage-tls", "ca.crt")
	c := container(t, pod, "configure")
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == "ca" {
			mounted = m.MountPath == "/ca" && m.ReadOnly && m.SubPath == ""
		}
	}
	if !mounted {
		t.Errorf("ca mount: %+v; want /ca read-only without subPath", c.VolumeMounts)
	}

	certs, src := t.TempDir(), filepath.Join(t.TempDir(), "ca.crt")
	ca := writeCA(t, src, "stowage-ca")
	runConfigurator(t, cm, certs, "SVC_IP=10.96.0.50", "CA_SRC="+src)
	for _, host := range []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io"} {
		h := readHosts(t, filepath.Join(certs, host, "hosts.toml"))
		m, ok := h.Host["https://10.96.0.50:5000"]
		if !ok || len(h.Host) != 1 {
			t.Fatalf("%s: hosts %v, want only https://10.96.0.50:5000", host, h.Host)
		}
		// The path on the node (certsDir), where the copy lies in the mount.
		if want := "/etc/containerd/certs.d/" + host + "/stowage-ca.crt"; m.CA != want || m.SkipVerify {
			t.Errorf("%s: ca %q skip_verify %v; want %q, verified", host, m.CA, m.SkipVerify, want)
		}
		if b, err := os.ReadFile(filepath.Join(certs, host, "stowage-ca.crt")); err != nil || string(b) != string(ca) {
			t.Errorf("%s: CA copy %q %v; want the mounted CA", host, b, err)
		}
	}
	if out := runConfigurator(t, cm, certs, "SVC_IP=10.96.0.50", "CA_SRC="+src); strings.Contains(out, "wrote") {
		t.Errorf("second run rewrote files:\n%s", out)
	}
	// A renewed CA reaches every node at the next sync; the hosts.toml stays.
	ca = writeCA(t, src, "stowage-ca-2")
	out := runConfigurator(t, cm, certs, "SVC_IP=10.96.0.50", "CA_SRC="+src)
	if strings.Contains(out, "hosts.toml") {
		t.Errorf("a new CA rewrote hosts.toml:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(certs, "quay.io", "stowage-ca.crt")); string(b) != string(ca) {
		t.Errorf("CA copy not renewed: %q", b)
	}

	// A CA key without a certificate (an ACME issuer writes no ca.crt): the
	// configurator fails, naming the Secret, and writes no hosts.toml.
	empty, bad := filepath.Join(t.TempDir(), "ca.crt"), t.TempDir()
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := configuratorCmd(t, cm, bad, "SVC_IP=10.96.0.50", "CA_SRC="+empty).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "stowage-tls has no key ca.crt") {
		t.Errorf("empty CA: %v\n%s; want a failure naming the Secret and key", err, out)
	}
	if entries, _ := os.ReadDir(bad); len(entries) != 0 {
		t.Errorf("empty CA: wrote %v", entries)
	}

	// Dropping a registry removes its CA copy with its hosts.toml.
	_, cm2 := tlsNodeConfigurator(t, map[string]any{"nodeConfigurator": map[string]any{
		"registries": []any{map[string]any{"host": "docker.io", "server": "https://registry-1.docker.io"}},
	}})
	runConfigurator(t, cm2, certs, "SVC_IP=10.96.0.50", "CA_SRC="+src)
	if _, err := os.Stat(filepath.Join(certs, "ghcr.io")); !os.IsNotExist(err) {
		t.Errorf("ghcr.io kept after removal from the list: %v", err)
	}
	// TLS off: plain http, and the CA copy goes after the hosts.toml that named it.
	_, _, cm3 := nodeConfigurator(t, map[string]any{"nodeConfigurator": map[string]any{
		"endpoint":   map[string]any{"mode": "clusterIP"},
		"registries": []any{map[string]any{"host": "docker.io", "server": "https://registry-1.docker.io"}},
	}})
	runConfigurator(t, cm3, certs, "SVC_IP=10.96.0.50")
	if h := readHosts(t, filepath.Join(certs, "docker.io", "hosts.toml")); h.Host["http://10.96.0.50:5000"].Capabilities == nil || h.Host["http://10.96.0.50:5000"].CA != "" {
		t.Errorf("TLS off: hosts %v", h.Host)
	}
	if _, err := os.Stat(filepath.Join(certs, "docker.io", "stowage-ca.crt")); !os.IsNotExist(err) {
		t.Errorf("TLS off: CA copy kept: %v", err)
	}
}

// TestTLSNodeConfiguratorEndpoints: which endpoint and which trust each
// mode writes with tls.enabled.
func TestTLSNodeConfiguratorEndpoints(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		nc         map[string]any
		env        []string
		host       string // the [host] key of hosts.toml
		ca         string // its ca; "copy": the copied CA
		skipVerify bool
	}{
		"url, https": {
			nc:   map[string]any{"endpoint": map[string]any{"mode": "url", "url": "https://stowage.corp.example:5000"}},
			host: "https://stowage.corp.example:5000", ca: "copy",
		},
		"url, plain http (a proxy in front)": {
			nc:   map[string]any{"endpoint": map[string]any{"mode": "url", "url": "http://stowage-lb.corp.example"}},
			host: "http://stowage-lb.corp.example",
		},
		"a CA file already on the node": {
			nc:   map[string]any{"caFile": "/etc/pki/corp-ca.pem"},
			env:  []string{"SVC_IP=10.96.0.50"},
			host: "https://10.96.0.50:5000", ca: "/etc/pki/corp-ca.pem",
		},
		"nodePort, skipVerify": {
			nc:   map[string]any{"endpoint": map[string]any{"mode": "nodePort"}, "skipVerify": true},
			env:  []string{"NODE_IP=10.1.2.3"},
			host: "https://10.1.2.3:30500", skipVerify: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ds, cm := tlsNodeConfigurator(t, map[string]any{"nodeConfigurator": tc.nc})
			copied := slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "ca" })
			if copied != (tc.ca == "copy") {
				t.Errorf("ca volume mounted: %v, want %v", copied, tc.ca == "copy")
			}
			certs, src := t.TempDir(), filepath.Join(t.TempDir(), "ca.crt")
			writeCA(t, src, "stowage-ca")
			runConfigurator(t, cm, certs, append(tc.env, "CA_SRC="+src)...)
			h := readHosts(t, filepath.Join(certs, "ghcr.io", "hosts.toml"))
			m, ok := h.Host[tc.host]
			if !ok || len(h.Host) != 1 {
				t.Fatalf("hosts %v, want only %s", h.Host, tc.host)
			}
			want := tc.ca
			if want == "copy" {
				want = "/etc/containerd/certs.d/ghcr.io/stowage-ca.crt"
			}
			if m.CA != want || m.SkipVerify != tc.skipVerify {
				t.Errorf("%s: ca %q skip_verify %v; want %q %v", tc.host, m.CA, m.SkipVerify, want, tc.skipVerify)
			}
			_, err := os.Stat(filepath.Join(certs, "ghcr.io", "stowage-ca.crt"))
			if (err == nil) != (tc.ca == "copy") {
				t.Errorf("CA copy on the node: %v, want it only when hosts.toml names it", err)
			}
		})
	}
}

// TestTLSRefusals: combinations that would install a half-working TLS.
func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		overrides map[string]any
		want      string
	}{
		"nodePort: no certificate names every node's IP": {
			map[string]any{"nodeConfigurator": map[string]any{"endpoint": map[string]any{"mode": "nodePort"}}},
			"endpoint.mode=clusterIP",
		},
		"ca from a Secret without a name": {
			map[string]any{"tls": map[string]any{"ca": map[string]any{"source": "secret"}}},
			"tls.ca.secretName",
		},
		"ca from a ConfigMap without a name": {
			map[string]any{"tls": map[string]any{"ca": map[string]any{"source": "configMap"}}},
			"tls.ca.configMapName",
		},
		"unknown ca source": {
			map[string]any{"tls": map[string]any{"ca": map[string]any{"source": "file"}}},
			"source",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(loadValues(t, tlsFile, tc.overrides))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rendered: %v; want an error naming %q", err, tc.want)
			}
		})
	}
}

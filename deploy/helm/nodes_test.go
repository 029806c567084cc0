package helm

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// hostsFile is containerd's hosts.toml, as far as the chart writes it
// (containerd/core/remotes/docker/config/hosts.go).
type hostsFile struct {
	Server string                `toml:"server"`
	Host   map[string]hostConfig `toml:"host"`
}

type hostConfig struct {
	Capabilities []string `toml:"capabilities"`
	SkipVerify   bool     `toml:"skip_verify"`
	CA           string   `toml:"ca"`
}

// nodeConfigurator renders the chart and returns the DaemonSet and its ConfigMap.
func nodeConfigurator(t *testing.T, overrides map[string]any) (*rendered, *appsv1.DaemonSet, *corev1.ConfigMap) {
	t.Helper()
	r := mustRender(t, allFeaturesFile, overrides)
	ds := decodeAs[*appsv1.DaemonSet](t, r.find(t, "DaemonSet", "-node-configurator"))
	cm := decodeAs[*corev1.ConfigMap](t, r.find(t, "ConfigMap", "-node-configurator"))
	return r, ds, cm
}

// configuratorCmd is the command that runs the rendered script once, as
// the pod would, against certsDir (for a run that must fail, or through
// runConfigurator).
func configuratorCmd(t *testing.T, cm *corev1.ConfigMap, certsDir string, env ...string) *exec.Cmd {
	t.Helper()
	dir := t.TempDir()
	script, registries := filepath.Join(dir, "configure.sh"), filepath.Join(dir, "registries")
	if err := os.WriteFile(script, []byte(cm.Data["configure.sh"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(registries, []byte(cm.Data["registries"]), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", script)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "ONCE=1", "CERTS_DIR=" + certsDir, "REGISTRIES=" + registries}, env...)
	return cmd
}

// runConfigurator runs the rendered script once, as the pod would, against
// a temporary certs.d directory, and returns that directory.
func runConfigurator(t *testing.T, cm *corev1.ConfigMap, certsDir string, env ...string) string {
	t.Helper()
	out, err := configuratorCmd(t, cm, certsDir, env...).CombinedOutput()
	if err != nil {
		t.Fatalf("configure.sh: %v\n%s", err, out)
	}
	t.Logf("configure.sh:\n%s", out)
	return string(out)
}

func readHosts(t *testing.T, path string) hostsFile {
	t.Helper()
	var h hostsFile
	md, err := toml.DecodeFile(path, &h)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Errorf("%s: unexpected keys %v", path, u)
	}
	return h
}

func TestNodeConfiguratorWritesHostsToml(t *testing.T) {
	t.Parallel()
	r, ds, cm := nodeConfigurator(t, nil)

	// The pod: hostPath certs.d, node IP from the downward API, locked down.
	pod := ds.Spec.Template.Spec
	c := container(t, pod, "configure")
	checkRestricted(t, "node-configurator", pod.SecurityContext, c, 0)
	var hostPath string
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPath = v.HostPath.Path
		}
	}
	if hostPath != "/etc/containerd/certs.d" {
		t.Errorf("hostPath %q", hostPath)
	}
	if c.Env[0].Name != "NODE_IP" || c.Env[0].ValueFrom.FieldRef.FieldPath != "status.hostIP" {
		t.Errorf("NODE_IP env: %+v", c.Env)
	}
	// The NodePort Service the nodes reach.
	nodes := decodeAs[*corev1.Service](t, r.find(t, "Service", "-nodes"))
	if nodes.Spec.Type != corev1.ServiceTypeNodePort || nodes.Spec.Ports[0].NodePort != 30500 ||
		nodes.Spec.Selector["app.kubernetes.io/component"] != "server" {
		t.Errorf("nodes Service: %+v", nodes.Spec)
	}

	certs := t.TempDir()
	// A file someone else wrote is left alone.
	foreign := filepath.Join(certs, "quay.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte("server = \"https://quay.io\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runConfigurator(t, cm, certs, "NODE_IP=10.1.2.3")

	for host, server := range map[string]string{
		"docker.io":           "https://registry-1.docker.io",
		"ghcr.io":             "https://ghcr.io",
		"registry.k8s.io":     "https://registry.k8s.io",
		"harbor.corp.example": "https://harbor.corp.example",
	} {
		h := readHosts(t, filepath.Join(certs, host, "hosts.toml"))
		if h.Server != server {
			t.Errorf("%s: server %q, want %q", host, h.Server, server)
		}
		mirror, ok := h.Host["http://10.1.2.3:30500"]
		if !ok || len(h.Host) != 1 {
			t.Fatalf("%s: hosts %v, want the node's NodePort", host, h.Host)
		}
		if !slices.Equal(mirror.Capabilities, []string{"pull", "resolve"}) || mirror.SkipVerify {
			t.Errorf("%s: %+v", host, mirror)
		}
	}
	if b, _ := os.ReadFile(foreign); string(b) != "server = \"https://quay.io\"\n" {
		t.Errorf("foreign quay.io hosts.toml overwritten: %q", b)
	}

	// Idempotent: a second run rewrites nothing.
	if out := runConfigurator(t, cm, certs, "NODE_IP=10.1.2.3"); strings.Contains(out, "wrote") {
		t.Errorf("second run rewrote files:\n%s", out)
	}

	// A registry dropped from the list loses its file; IPv6 gets brackets.
	_, _, cm = nodeConfigurator(t, map[string]any{"nodeConfigurator": map[string]any{
		"registries": []any{map[string]any{"host": "docker.io", "server": "https://registry-1.docker.io"}},
	}})
	runConfigurator(t, cm, certs, "NODE_IP=fd00::7")
	if _, err := os.Stat(filepath.Join(certs, "ghcr.io", "hosts.toml")); !os.IsNotExist(err) {
		t.Errorf("ghcr.io hosts.toml kept after removal from the list: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}
	if h := readHosts(t, filepath.Join(certs, "docker.io", "hosts.toml")); h.Host["http://[fd00::7]:30500"].Capabilities == nil {
		t.Errorf("IPv6 node: hosts %v", h.Host)
	}
}

func TestNodeConfiguratorEndpointModes(t *testing.T) {
	t.Parallel()
	// clusterIP: the Service's ClusterIP from the kubelet's service env var.
	r, ds, cm := nodeConfigurator(t, map[string]any{"nodeConfigurator": map[string]any{
		"endpoint": map[string]any{"mode": "clusterIP"}, "skipVerify": true,
	}})
	if r.count("Service") != 2 { // main + headless; no NodePort Service
		t.Errorf("clusterIP mode renders %d Services", r.count("Service"))
	}
	env := container(t, ds.Spec.Template.Spec, "configure").Env
	if env[1].Name != "SVC_IP" || env[1].Value != "$(STOWAGE_SERVICE_HOST)" {
		t.Errorf("SVC_IP env: %+v", env)
	}
	certs := t.TempDir()
	runConfigurator(t, cm, certs, "SVC_IP=10.96.0.50")
	h := readHosts(t, filepath.Join(certs, "docker.io", "hosts.toml"))
	if m, ok := h.Host["http://10.96.0.50:5000"]; !ok || !m.SkipVerify {
		t.Errorf("clusterIP mode: hosts %v", h.Host)
	}

	// url: as given, with a CA on the node.
	_, _, cm = nodeConfigurator(t, map[string]any{"nodeConfigurator": map[string]any{
		"endpoint": map[string]any{"mode": "url", "url": "https://stowage.corp.example/"},
		"caFile":   "/etc/pki/corp-ca.pem",
	}})
	certs = t.TempDir()
	runConfigurator(t, cm, certs)
	h = readHosts(t, filepath.Join(certs, "ghcr.io", "hosts.toml"))
	if m := h.Host["https://stowage.corp.example"]; m.CA != "/etc/pki/corp-ca.pem" {
		t.Errorf("url mode: hosts %v", h.Host)
	}
}

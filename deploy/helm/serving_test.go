package helm

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestTLSAndClientAuthFromSecrets: tls and clientAuth values put the
// certificate and the htpasswd file into the config as paths inside the
// mounted Secrets (directory mounts, so rotations reach the pod), the
// chart's own htpasswd Secret holds the inline content, and the probes
// switch to HTTPS.
func TestTLSAndClientAuthFromSecrets(t *testing.T) {
	t.Parallel()
	const htpasswd = "alice:$2y$05$notarealhashnotarealhashnotarealhashnotarealhashnotar\n"
	r := mustRender(t, "", map[string]any{
		"tls":        map[string]any{"enabled": true, "secretName": "stowage-cert"},
		"clientAuth": map[string]any{"enabled": true, "htpasswd": htpasswd},
	})
	cfg := renderedConfig(t, r)
	pod := serverPod(t, r)
	c := container(t, pod.Spec, "stowage")
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
		if m.SubPath != "" && (m.Name == "tls" || m.Name == "htpasswd") {
			t.Errorf("%s mounted with subPath: Secret updates would not reach the pod", m.Name)
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes["tls"]; v.Secret == nil || v.Secret.SecretName != "stowage-cert" {
		t.Fatalf("tls volume %+v: want Secret stowage-cert", v)
	}
	dir := mounts["tls"].MountPath
	if cfg.TLS.CertFile != dir+"/tls.crt" || cfg.TLS.KeyFile != dir+"/tls.key" || dir == "" {
		t.Errorf("tls %+v: want tls.crt and tls.key under the mount %q", cfg.TLS, dir)
	}
	secret := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-htpasswd"))
	if v := volumes["htpasswd"]; v.Secret == nil || v.Secret.SecretName != secret.Name {
		t.Fatalf("htpasswd volume %+v: want Secret %s", v, secret.Name)
	}
	key, ok := strings.CutPrefix(cfg.Auth.Htpasswd, mounts["htpasswd"].MountPath+"/")
	if !ok || string(secret.Data[key]) != htpasswd {
		t.Errorf("auth.htpasswd %q: want a key of the mounted Secret holding the file", cfg.Auth.Htpasswd)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s probe scheme %q with TLS: want HTTPS", name, p.HTTPGet.Scheme)
		}
	}

	// An existing Secret instead of inline content: no Secret rendered.
	r = mustRender(t, "", map[string]any{"clientAuth": map[string]any{"enabled": true, "existingSecret": "corp-htpasswd", "secretKey": "users"}})
	cfg = renderedConfig(t, r)
	if !strings.HasSuffix(cfg.Auth.Htpasswd, "/users") || r.count("Secret") != 0 {
		t.Errorf("existingSecret: auth.htpasswd %q, %d Secrets rendered", cfg.Auth.Htpasswd, r.count("Secret"))
	}
}

func TestTLSAndClientAuthBrokenValues(t *testing.T) {
	t.Parallel()
	for name, overrides := range map[string]map[string]any{
		"tls without a Secret":         {"tls": map[string]any{"enabled": true}},
		"clientAuth without a file":    {"clientAuth": map[string]any{"enabled": true}},
		"typo in clientAuth":           {"clientAuth": map[string]any{"enabled": true, "htpassword": "x"}},
		"header cap below the minimum": {"config": map[string]any{"server": map[string]any{"max_header_bytes": 100}}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := renderChart(loadValues(t, "", overrides)); err == nil {
				t.Errorf("values %v rendered without error", overrides)
			}
		})
	}
}

package helm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// mountOf returns the mount path of volume name in c, or "".
func mountOf(c corev1.Container, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}

func volumeOf(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// TestS3Storage: with driver s3 the cache is the bucket: no PVC and no data
// volume, staging on a size-limited emptyDir at TMPDIR, and the access keys
// reach the binary as files of a mounted Secret, which the real config code
// resolves to the keys given.
func TestS3Storage(t *testing.T) {
	t.Parallel()
	r := mustRender(t, s3File, nil)
	if n := r.count("PersistentVolumeClaim") + r.count("StatefulSet"); n != 0 {
		t.Errorf("s3: %d PVCs or StatefulSets rendered", n)
	}
	pod := serverPod(t, r)
	c := container(t, pod.Spec, "stowage")
	if volumeOf(pod.Spec, "data") != nil || mountOf(c, "data") != "" {
		t.Error("s3: a data volume is mounted")
	}
	tmp := volumeOf(pod.Spec, "tmp")
	if tmp == nil || tmp.EmptyDir == nil || tmp.EmptyDir.SizeLimit == nil || tmp.EmptyDir.SizeLimit.String() != "40Gi" || mountOf(c, "tmp") != "/tmp" {
		t.Fatalf("s3: staging volume %+v: want a 40Gi emptyDir at /tmp (TMPDIR)", tmp)
	}
	cfg := renderedConfig(t, r)
	if cfg.Storage.Driver != "s3" || cfg.Storage.S3["bucket"] != "stowage" {
		t.Fatalf("storage %+v", cfg.Storage)
	}
	if cfg.Cache.MaxSize.String() == "" || int64(cfg.Cache.MaxSize) != 2<<40 {
		t.Errorf("cache.max_size %d: want the 2TiB given, not a share of persistence.size", int64(cfg.Cache.MaxSize))
	}

	// The keys: files below the Secret's mount, holding the values.
	secret := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-s3"))
	if v := volumeOf(pod.Spec, "s3-credentials"); v == nil || v.Secret == nil || v.Secret.SecretName != secret.Name {
		t.Fatalf("s3 credentials volume %+v: want Secret %s", v, secret.Name)
	}
	checkS3Keys(t, cfg.Storage.S3, mountOf(c, "s3-credentials"), secret.Data, "not-a-real-access-key", "not-a-real-secret-key")
	for _, e := range c.Env {
		if strings.Contains(e.Value, "not-a-real") {
			t.Errorf("an S3 key in env var %s", e.Name)
		}
	}
	cm := decodeAs[*corev1.ConfigMap](t, r.find(t, "ConfigMap", releaseName))
	if strings.Contains(cm.Data["config.yaml"], "not-a-real") {
		t.Error("an S3 key in the ConfigMap")
	}
	if pod.Annotations["checksum/s3"] == "" {
		t.Error("no checksum/s3: new keys would not restart the pods")
	}

	// Restricted egress lets the pods reach the endpoint's port (9000).
	np := decodeAs[*networkingv1.NetworkPolicy](t, r.find(t, "NetworkPolicy", releaseName))
	found := false
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			found = found || (p.Port.IntValue() == 9000 && len(e.To) == 0)
		}
	}
	if !found {
		t.Error("restricted egress: no rule for the S3 endpoint's port 9000")
	}
}

// checkS3Keys resolves the rendered s3 parameters with the binary's own
// code after copying the Secret's data where the paths point (a temporary
// directory standing in for the mount).
func checkS3Keys(t *testing.T, params map[string]any, mount string, data map[string][]byte, wantAccess, wantSecret string) {
	t.Helper()
	if mount == "" {
		t.Fatal("s3 credentials not mounted")
	}
	dir := t.TempDir()
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	moved := map[string]any{}
	for k, v := range params {
		if s, ok := v.(string); ok && strings.HasSuffix(k, "_file") {
			rest, ok := strings.CutPrefix(s, mount+"/")
			if !ok {
				t.Fatalf("storage.s3.%s %q is not below the Secret's mount %s", k, s, mount)
			}
			v = filepath.Join(dir, rest)
		}
		moved[k] = v
	}
	got, err := config.Storage{Driver: "s3", S3: moved}.S3DriverParameters()
	if err != nil {
		t.Fatalf("S3DriverParameters: %v", err)
	}
	if got["accesskey"] != wantAccess || got["secretkey"] != wantSecret {
		t.Errorf("the binary resolves accesskey %q, secretkey %q", got["accesskey"], got["secretkey"])
	}
}

// TestS3CredentialVariants: an existing Secret with its own key names; no
// keys at all (the AWS SDK's chain: IRSA, AWS_* variables).
func TestS3CredentialVariants(t *testing.T) {
	t.Parallel()
	r := mustRender(t, s3File, map[string]any{"s3": map[string]any{
		"accessKey": "", "secretKey": "", "existingSecret": "minio-creds", "accessKeyKey": "rootUser", "secretKeyKey": "rootPassword",
	}})
	if r.count("Secret") != 1 { // the generated cluster secret only
		t.Errorf("existingSecret: %d Secrets rendered, want only the cluster secret", r.count("Secret"))
	}
	pod := serverPod(t, r)
	v := volumeOf(pod.Spec, "s3-credentials")
	if v == nil || v.Secret == nil || v.Secret.SecretName != "minio-creds" {
		t.Fatalf("volume %+v: want Secret minio-creds", v)
	}
	cfg := renderedConfig(t, r)
	mount := mountOf(container(t, pod.Spec, "stowage"), "s3-credentials")
	checkS3Keys(t, cfg.Storage.S3, mount, map[string][]byte{"rootUser": []byte("user\n"), "rootPassword": []byte("pass")}, "user", "pass")

	r = mustRender(t, s3File, map[string]any{"s3": map[string]any{"accessKey": "", "secretKey": ""}})
	pod = serverPod(t, r)
	cfg = renderedConfig(t, r)
	if volumeOf(pod.Spec, "s3-credentials") != nil || cfg.Storage.S3["accesskey_file"] != nil || r.count("Secret") != 1 {
		t.Errorf("no keys: a credentials volume or accesskey_file (%v) rendered", cfg.Storage.S3["accesskey_file"])
	}
	if _, err := cfg.Storage.S3DriverParameters(); err != nil {
		t.Errorf("no keys: %v", err)
	}

	// A generic ephemeral volume instead of the emptyDir.
	eph := map[string]any{"ephemeral": map[string]any{"volumeClaimTemplate": map[string]any{"spec": map[string]any{
		"accessModes": []any{"ReadWriteOnce"}, "resources": map[string]any{"requests": map[string]any{"storage": "100Gi"}}}}}}
	r = mustRender(t, s3File, map[string]any{"s3": map[string]any{"staging": map[string]any{"volume": eph}}})
	if v := volumeOf(serverPod(t, r).Spec, "tmp"); v == nil || v.Ephemeral == nil || v.EmptyDir != nil {
		t.Errorf("staging volume %+v: want the ephemeral volume given", v)
	}
	// Rolling updates on a bucket: nothing to attach, a new pod first.
	dep := decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", releaseName))
	checkRollingSurge(t, "s3", dep)
}

// TestS3EndpointPortAlreadyAllowed: an endpoint on a port egressPorts has
// (or without one) gets no extra rule.
func TestS3EndpointPortAlreadyAllowed(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{"https://s3.corp.example:443", "https://s3.corp.example"} {
		r := mustRender(t, s3File, map[string]any{"config": map[string]any{"storage": map[string]any{"s3": map[string]any{"regionendpoint": ep}}}})
		np := decodeAs[*networkingv1.NetworkPolicy](t, r.find(t, "NetworkPolicy", releaseName))
		for _, e := range np.Spec.Egress {
			if len(e.To) == 0 && len(e.Ports) == 1 && e.Ports[0].Port.IntValue() == 443 {
				t.Errorf("%s: a second rule for port 443", ep)
			}
		}
	}
}

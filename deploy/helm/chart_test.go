package helm

import (
	"slices"
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// serverPod returns the Stowage pod template, from the Deployment or the
// StatefulSet, whichever was rendered.
func serverPod(t *testing.T, r *rendered) corev1.PodTemplateSpec {
	t.Helper()
	if r.count("StatefulSet") == 1 {
		return decodeAs[*appsv1.StatefulSet](t, r.find(t, "StatefulSet", "")).Spec.Template
	}
	return decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", releaseName)).Spec.Template
}

func container(t *testing.T, pod corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// renderedConfig loads the ConfigMap's config.yaml with the real loader:
// strict fields, defaults, validation.
func renderedConfig(t *testing.T, r *rendered) *config.Config {
	t.Helper()
	cm := decodeAs[*corev1.ConfigMap](t, r.find(t, "ConfigMap", releaseName))
	data, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatal("ConfigMap has no config.yaml")
	}
	cfg, err := config.Load(strings.NewReader(data))
	if err != nil {
		t.Fatalf("config.Load on the rendered config: %v\n%s", err, data)
	}
	return cfg
}

func TestConfigLoadsWithTheRealLoader(t *testing.T) {
	t.Parallel()
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, file, nil)
			cfg := renderedConfig(t, r)
			pod := serverPod(t, r)
			c := container(t, pod.Spec, "stowage")
			if cfg.Listen != ":5000" || c.Ports[0].ContainerPort != 5000 {
				t.Errorf("listen %q, containerPort %d: want :5000 and 5000", cfg.Listen, c.Ports[0].ContainerPort)
			}
			s3 := cfg.Storage.Driver == "s3"
			if !s3 && (cfg.Storage.Driver != "filesystem" || cfg.Storage.Root != "/var/lib/stowage") {
				t.Errorf("storage %+v: want filesystem at /var/lib/stowage", cfg.Storage)
			}
			if !slices.Equal(c.Args[:3], []string{"serve", "--config", "/etc/stowage/config.yaml"}) {
				t.Errorf("args %q", c.Args)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			if mounts["/etc/stowage/config.yaml"] != "config" {
				t.Errorf("mounts %v: want the config file", mounts)
			}
			if !s3 && mounts[cfg.Storage.Root] != "data" {
				t.Errorf("mounts %v: want data at storage.root", mounts)
			}
		})
	}
}

// TestCredentialsAreFiles checks that each upstream password and the admin
// token reach the config as a file path that the mounted Secret provides.
func TestCredentialsAreFiles(t *testing.T) {
	t.Parallel()
	r := mustRender(t, allFeaturesFile, nil)
	cfg := renderedConfig(t, r)
	secret := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-credentials"))
	pod := serverPod(t, r)
	c := container(t, pod.Spec, "stowage")
	dir := ""
	for _, m := range c.VolumeMounts {
		if m.Name == "credentials" {
			dir = m.MountPath
		}
	}
	if dir == "" {
		t.Fatal("credentials Secret not mounted")
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == "credentials" && (v.Secret == nil || v.Secret.SecretName != secret.Name) {
			t.Errorf("credentials volume does not use Secret %s", secret.Name)
		}
	}
	keyOf := func(path string) string {
		key, ok := strings.CutPrefix(path, dir+"/")
		if !ok {
			t.Errorf("%q is not below the Secret mount %s", path, dir)
		}
		return key
	}
	for host, want := range map[string]string{"ghcr.io": "ghp_notarealtoken", "harbor.corp.example": "not-a-real-password"} {
		u, ok := cfg.Upstream(host)
		if !ok {
			t.Fatalf("upstream %s missing", host)
		}
		if u.Auth.Password != "" || u.Auth.PasswordFile == "" {
			t.Errorf("%s: auth %v: want password_file only", host, u.Auth)
		}
		if got := string(secret.Data[keyOf(u.Auth.PasswordFile)]); got != want {
			t.Errorf("%s: Secret key for %s holds %q", host, u.Auth.PasswordFile, got)
		}
	}
	if got := cfg.Upstreams["harbor.corp.example"]; len(got.Endpoints) != 1 || !got.Internal {
		t.Errorf("values' upstream settings lost when credentials were merged: %+v", got)
	}
	if got := string(secret.Data[keyOf(cfg.Admin.TokenFile)]); got != "not-a-real-admin-token" {
		t.Errorf("admin token file %q holds %q", cfg.Admin.TokenFile, got)
	}
	for _, e := range c.Env {
		if strings.Contains(e.Value, "notareal") || strings.Contains(e.Value, "not-a-real") {
			t.Errorf("secret in env var %s", e.Name)
		}
	}

	// With an existing Secret the chart creates none and uses its keys.
	r = mustRender(t, "", map[string]any{"credentials": map[string]any{
		"existingSecret": "mine",
		"adminTokenKey":  "admin",
		"upstreams":      map[string]any{"quay.io": map[string]any{"username": "bot", "passwordKey": "quay"}},
	}})
	if n := r.count("Secret"); n != 0 {
		t.Errorf("existingSecret: %d Secrets rendered", n)
	}
	cfg = renderedConfig(t, r)
	if u := cfg.Upstreams["quay.io"]; u.Auth.PasswordFile != "/etc/stowage/secrets/quay" || u.Auth.Username != "bot" {
		t.Errorf("existingSecret: quay.io auth %v", u.Auth)
	}
	if cfg.Admin.TokenFile != "/etc/stowage/secrets/admin" {
		t.Errorf("existingSecret: admin token file %q", cfg.Admin.TokenFile)
	}
}

// checkRestricted checks the restricted profile of a container; uid > 0
// also wants it to run as that non-root user.
func checkRestricted(t *testing.T, what string, pod *corev1.PodSecurityContext, c corev1.Container, uid int64) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext", what)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem not set", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation not false", what)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v: want drop ALL", what, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile not RuntimeDefault", what)
	}
	if uid > 0 {
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil && pod != nil {
			nonRoot = pod.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: runAsNonRoot not set", what)
		}
		if sc.RunAsUser == nil || *sc.RunAsUser != uid {
			t.Errorf("%s: runAsUser %v: want %d", what, sc.RunAsUser, uid)
		}
	}
}

func TestSecurityContextAndProbes(t *testing.T) {
	t.Parallel()
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, file, nil)
			pod := serverPod(t, r)
			c := container(t, pod.Spec, "stowage")
			checkRestricted(t, "stowage", pod.Spec.SecurityContext, c, 65532)
			tmp := false
			for _, m := range c.VolumeMounts {
				if m.MountPath == "/tmp" {
					for _, v := range pod.Spec.Volumes {
						tmp = tmp || (v.Name == m.Name && v.EmptyDir != nil)
					}
				}
			}
			if !tmp || !slices.Contains(c.Env, corev1.EnvVar{Name: "TMPDIR", Value: "/tmp"}) {
				t.Error("TMPDIR is not an emptyDir at /tmp")
			}
			for what, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				want := "/healthz"
				if what == "readiness" {
					want = "/readyz" // draining and unwritable storage take the pod out
				}
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "http" {
					t.Errorf("%s probe: want GET %s on port http", what, want)
				}
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Error("memory requests/limits not set")
			}
			if r.count("Deployment") == 2 {
				redis := decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", "-redis")).Spec.Template.Spec
				checkRestricted(t, "redis", redis.SecurityContext, container(t, redis, "redis"), 999)
				if rc := container(t, redis, "redis"); rc.Resources.Limits.Memory().IsZero() || rc.ReadinessProbe == nil {
					t.Error("redis: no memory limit or no readiness probe")
				}
			}
			for _, kind := range []string{"Job", "CronJob"} {
				if r.count(kind) == 0 {
					continue
				}
				spec := prefetchPod(t, r, kind)
				checkRestricted(t, kind, spec.SecurityContext, container(t, spec, "prefetch"), 65532)
				checkRestricted(t, kind+" init", spec.SecurityContext, spec.InitContainers[0], 65532)
			}
		})
	}
}

func TestWorkloadShape(t *testing.T) {
	t.Parallel()
	// Default: one replica, a Deployment with one PVC, kept on uninstall,
	// Recreate so that the ReadWriteOnce volume is never needed twice.
	r := mustRender(t, "", nil)
	dep := decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", ""))
	if *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("default Deployment: replicas %d, strategy %s", *dep.Spec.Replicas, dep.Spec.Strategy.Type)
	}
	pvc := decodeAs[*corev1.PersistentVolumeClaim](t, r.find(t, "PersistentVolumeClaim", ""))
	if pvc.Annotations["helm.sh/resource-policy"] != "keep" || pvc.Spec.Resources.Requests.Storage().String() != "50Gi" {
		t.Errorf("default PVC: %v %v", pvc.Annotations, pvc.Spec.Resources.Requests)
	}
	for _, kind := range []string{"DaemonSet", "Job", "CronJob", "Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "PodDisruptionBudget", "Secret"} {
		if n := r.count(kind); n != 0 {
			t.Errorf("default values render %d %s", n, kind)
		}
	}

	// perReplica: a StatefulSet with a volumeClaimTemplate and its headless
	// Service; the HPA scales that StatefulSet.
	r = mustRender(t, allFeaturesFile, nil)
	sts := decodeAs[*appsv1.StatefulSet](t, r.find(t, "StatefulSet", ""))
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" ||
		*sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName != "fast-ssd" {
		t.Errorf("StatefulSet volumeClaimTemplates: %+v", sts.Spec.VolumeClaimTemplates)
	}
	headless := decodeAs[*corev1.Service](t, r.find(t, "Service", "-headless"))
	if sts.Spec.ServiceName != headless.Name || headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet serviceName %q, headless Service %q", sts.Spec.ServiceName, headless.Name)
	}
	if r.count("PersistentVolumeClaim") != 0 || r.count("Deployment") != 0 {
		t.Error("perReplica also rendered a Deployment or a shared PVC")
	}

	// Persistence off: an emptyDir.
	r = mustRender(t, "", map[string]any{"persistence": map[string]any{"enabled": false}, "tmpSizeLimit": ""})
	pod := serverPod(t, r)
	for _, v := range pod.Spec.Volumes {
		if v.Name == "data" && v.EmptyDir == nil {
			t.Error("persistence disabled but data is not an emptyDir")
		}
	}

	// The Service selects the server pods only, not prefetch or node pods.
	svc := decodeAs[*corev1.Service](t, r.find(t, "Service", releaseName))
	if svc.Spec.Selector["app.kubernetes.io/component"] != "server" {
		t.Errorf("Service selector %v", svc.Spec.Selector)
	}
}

func TestBrokenValuesAreRejected(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]any{
		"typo at the top":      {"persistance": map[string]any{"enabled": false}},
		"typo in a section":    {"service": map[string]any{"prot": 5000}},
		"typo in the config":   {"config": map[string]any{"cache": map[string]any{"tagttl": "5m"}}},
		"typo in an upstream":  {"config": map[string]any{"upstreams": map[string]any{"ghcr.io": map[string]any{"endpoint": "https://x"}}}},
		"integer duration":     {"config": map[string]any{"cache": map[string]any{"max_stale": 0}}},
		"two replicas one RWO": {"replicaCount": 2},
		"bad endpoint mode":    {"nodeConfigurator": map[string]any{"enabled": true, "endpoint": map[string]any{"mode": "hostPort"}}},
		"url mode without url": {"nodeConfigurator": map[string]any{"enabled": true, "endpoint": map[string]any{"mode": "url"}}},
		"password and existingSecret": {"credentials": map[string]any{"existingSecret": "s",
			"upstreams": map[string]any{"ghcr.io": map[string]any{"password": "x"}}}},
		"prefetch without an admin token": {"prefetch": map[string]any{"images": []any{"docker.io/library/alpine:3.20"}}},
	}
	for name, overrides := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := renderChart(loadValues(t, "", overrides)); err == nil {
				t.Errorf("values %v rendered without error", overrides)
			}
		})
	}
}

func prefetchPod(t *testing.T, r *rendered, kind string) corev1.PodSpec {
	t.Helper()
	if kind == "CronJob" {
		return decodeAs[*batchv1.CronJob](t, r.find(t, "CronJob", "-prefetch")).Spec.JobTemplate.Spec.Template.Spec
	}
	return decodeAs[*batchv1.Job](t, r.find(t, "Job", "-prefetch")).Spec.Template.Spec
}

func TestPrefetchHook(t *testing.T) {
	t.Parallel()
	r := mustRender(t, allFeaturesFile, nil)
	job := decodeAs[*batchv1.Job](t, r.find(t, "Job", "-prefetch"))
	if got := job.Annotations["helm.sh/hook"]; got != "post-install,post-upgrade" {
		t.Errorf("hook %q: the server must exist before the Job runs", got)
	}
	if job.Annotations["helm.sh/hook-delete-policy"] == "" || job.Annotations["helm.sh/hook-weight"] == "" {
		t.Errorf("hook annotations %v", job.Annotations)
	}
	for _, kind := range []string{"Job", "CronJob"} {
		spec := prefetchPod(t, r, kind)
		c := container(t, spec, "prefetch")
		want := []string{"prefetch", "--server", "http://stowage:5000", "-f", "/lists/images.txt"}
		if !slices.Equal(c.Args, want) {
			t.Errorf("%s args %q, want %q", kind, c.Args, want)
		}
		if !strings.Contains(strings.Join(spec.InitContainers[0].Command, " "), "http://stowage:5000/healthz") {
			t.Errorf("%s: init container does not wait for /healthz", kind)
		}
		var token *corev1.SecretKeySelector
		for _, e := range c.Env {
			if e.Name == "STOWAGE_ADMIN_TOKEN" && e.ValueFrom != nil {
				token = e.ValueFrom.SecretKeyRef
			}
		}
		if token == nil || token.Name != "stowage-credentials" || token.Key != "admin-token" {
			t.Errorf("%s: the admin token does not reach the prefetch container: %+v", kind, token)
		}
	}
	cm := decodeAs[*corev1.ConfigMap](t, r.find(t, "ConfigMap", "-prefetch"))
	lines := strings.Fields(cm.Data["images.txt"])
	if !slices.Equal(lines, []string{"docker.io/library/alpine:3.20", "registry.k8s.io/pause:3.10", "ghcr.io/stowage/stowage:0.1.0"}) {
		t.Errorf("images.txt: %q", lines)
	}
}

func TestNotesShowMirrorConfigs(t *testing.T) {
	t.Parallel()
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, file, nil)
			t.Log(r.notes) // go test -v -run Notes shows them
			scheme := "http"
			if tlsOn(t, file) {
				scheme = "https"
			}
			for _, want := range []string{
				`[host."` + scheme + `://MIRROR"]`, `capabilities = ["pull", "resolve"]`, // containerd
				`"registry-mirrors": ["` + scheme + `://MIRROR"]`,    // Docker
				"[[registry.mirror]]", `location = "MIRROR/ghcr.io"`, // podman
				scheme + "://stowage.cache.svc:5000/v2/",
			} {
				if !strings.Contains(r.notes, want) {
					t.Errorf("NOTES lack %q:\n%s", want, r.notes)
				}
			}
			if scheme == "https" && (strings.Contains(r.notes, "http://") || strings.Contains(r.notes, "insecure")) {
				t.Errorf("NOTES with TLS show plain http or insecure settings:\n%s", r.notes)
			}
		})
	}
}

package helm

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// selects reports whether a matchLabels selector selects a pod with labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false // an empty selector here would be a chart bug, not "all"
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// envFromSecret returns the Secret name and key an env var of c comes from.
func envFromSecret(c corev1.Container, name string) (secret, key string) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key
		}
	}
	return "", ""
}

func redisPod(t *testing.T, r *rendered) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	dep := decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", "-redis"))
	return dep, container(t, dep.Spec.Template.Spec, "redis")
}

// TestChartRedis: redis.enabled runs one Redis pod without persistence
// behind a Service, with a generated password that the Redis and every
// Stowage pod read from the same Secret key; the Stowage config points at
// it; only the release's server pods may reach it.
func TestChartRedis(t *testing.T) {
	t.Parallel()
	r := mustRender(t, multiReplicaFile, nil)
	dep, rc := redisPod(t, r)
	if *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("redis: replicas %d, strategy %s: want 1 and Recreate (never two Redis behind the Service)", *dep.Spec.Replicas, dep.Spec.Strategy.Type)
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.EmptyDir == nil {
			t.Errorf("redis volume %s is not an emptyDir: no persistence wanted", v.Name)
		}
	}
	args := rc.Args
	for _, want := range [][]string{{"--save", ""}, {"--appendonly", "no"}, {"--requirepass", "$(REDIS_PASSWORD)"}, {"--port", "6379"}} {
		i := slices.Index(args, want[0])
		if i < 0 || i+1 >= len(args) || args[i+1] != want[1] {
			t.Errorf("redis args %q lack %q", args, want)
		}
	}
	if len(rc.Command) != 0 {
		t.Errorf("redis command %q: want the image's entrypoint", rc.Command)
	}
	if rc.ReadinessProbe == nil || rc.ReadinessProbe.TCPSocket == nil {
		t.Error("redis: no TCP readiness probe")
	}

	secret := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-redis"))
	password := string(secret.Data["redis-password"])
	if len(password) < 32 {
		t.Fatalf("generated Redis password %q: too short", password)
	}
	if s, k := envFromSecret(rc, "REDIS_PASSWORD"); s != secret.Name || k != "redis-password" {
		t.Errorf("redis reads its password from %s/%s", s, k)
	}

	cfg := renderedConfig(t, r)
	svc := decodeAs[*corev1.Service](t, r.find(t, "Service", "-redis"))
	if cfg.Redis.Addr != svc.Name+":6379" || svc.Spec.Ports[0].Port != 6379 {
		t.Errorf("config redis.addr %q, Service %s port %d", cfg.Redis.Addr, svc.Name, svc.Spec.Ports[0].Port)
	}
	pod := serverPod(t, r)
	stowage := container(t, pod.Spec, "stowage")
	if s, k := envFromSecret(stowage, cfg.Redis.PasswordEnv); cfg.Redis.PasswordEnv == "" || s != secret.Name || k != "redis-password" {
		t.Errorf("config redis.password_env %q comes from %s/%s: want the Redis' own Secret key", cfg.Redis.PasswordEnv, s, k)
	}
	// A changed password restarts both, with the same value.
	sum := sha256.Sum256([]byte(password))
	for what, ann := range map[string]map[string]string{"redis": dep.Spec.Template.Annotations, "stowage": pod.Annotations} {
		if ann["checksum/redis-password"] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: checksum/redis-password %q is not the Secret's password", what, ann["checksum/redis-password"])
		}
	}

	redisLabels := dep.Spec.Template.Labels
	if !selects(svc.Spec.Selector, redisLabels) || selects(svc.Spec.Selector, pod.Labels) {
		t.Errorf("redis Service selector %v: must select the Redis pod only", svc.Spec.Selector)
	}
	main := decodeAs[*corev1.Service](t, r.find(t, "Service", releaseName))
	if selects(main.Spec.Selector, redisLabels) {
		t.Error("the registry Service selects the Redis pod")
	}

	np := decodeAs[*networkingv1.NetworkPolicy](t, r.find(t, "NetworkPolicy", "-redis"))
	if !selects(np.Spec.PodSelector.MatchLabels, redisLabels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || len(np.Spec.Egress) != 0 {
		t.Errorf("redis NetworkPolicy %+v: want it on the Redis pod, with no egress", np.Spec)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil {
		t.Fatalf("redis NetworkPolicy ingress %+v: want one rule from a pod selector", np.Spec.Ingress)
	}
	from := np.Spec.Ingress[0].From[0]
	if from.NamespaceSelector != nil || !selects(from.PodSelector.MatchLabels, pod.Labels) || selects(from.PodSelector.MatchLabels, redisLabels) {
		t.Errorf("redis NetworkPolicy lets in %v: want the release's server pods", from.PodSelector.MatchLabels)
	}
	if pf := map[string]string{"app.kubernetes.io/name": "stowage", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "prefetch"}; selects(from.PodSelector.MatchLabels, pf) {
		t.Error("redis NetworkPolicy lets the prefetch pods in")
	}
	// With restricted egress the server pods may still reach it.
	snp := decodeAs[*networkingv1.NetworkPolicy](t, r.find(t, "NetworkPolicy", releaseName))
	reach := false
	for _, e := range snp.Spec.Egress {
		for _, to := range e.To {
			if to.PodSelector != nil && selects(to.PodSelector.MatchLabels, redisLabels) && len(e.Ports) == 1 && e.Ports[0].Port.IntValue() == 6379 {
				reach = true
			}
		}
	}
	if !reach {
		t.Error("restricted egress: the server pods cannot reach the Redis")
	}
}

// TestChartRedisOptions: password given or from an existing Secret, auth
// off, image digest, no NetworkPolicy; a single replica may have it too.
func TestChartRedisOptions(t *testing.T) {
	t.Parallel()
	on := func(extra map[string]any) map[string]any {
		return mergeValues(map[string]any{"redis": map[string]any{"enabled": true}}, extra)
	}

	r := mustRender(t, "", on(map[string]any{"redis": map[string]any{"auth": map[string]any{"password": "given-password-0123"}}}))
	if got := string(decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-redis")).Data["redis-password"]); got != "given-password-0123" {
		t.Errorf("given password: Secret holds %q", got)
	}
	if r.count("PodDisruptionBudget") != 0 || serverPod(t, r).Spec.Affinity != nil {
		t.Error("one replica with Redis got a PDB or anti-affinity")
	}

	r = mustRender(t, "", on(map[string]any{"redis": map[string]any{"auth": map[string]any{"existingSecret": "corp-redis", "secretKey": "pw"}}}))
	if r.count("Secret") != 0 {
		t.Errorf("existingSecret: %d Secrets rendered", r.count("Secret"))
	}
	_, rc := redisPod(t, r)
	cfg := renderedConfig(t, r)
	if s, k := envFromSecret(rc, "REDIS_PASSWORD"); s != "corp-redis" || k != "pw" {
		t.Errorf("redis password from %s/%s", s, k)
	}
	if s, k := envFromSecret(container(t, serverPod(t, r).Spec, "stowage"), cfg.Redis.PasswordEnv); s != "corp-redis" || k != "pw" {
		t.Errorf("stowage's redis password from %s/%s", s, k)
	}
	// A render cannot read the existing Secret: the checksum must not
	// change from one render to the next (an upgrade would restart every
	// pod for nothing).
	again := mustRender(t, "", on(map[string]any{"redis": map[string]any{"auth": map[string]any{"existingSecret": "corp-redis", "secretKey": "pw"}}}))
	if a, b := serverPod(t, r).Annotations["checksum/redis-password"], serverPod(t, again).Annotations["checksum/redis-password"]; a != b {
		t.Errorf("existingSecret: checksum/redis-password changes between renders: %s, %s", a, b)
	}

	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	r = mustRender(t, "", on(map[string]any{"redis": map[string]any{
		"auth":          map[string]any{"enabled": false},
		"networkPolicy": map[string]any{"enabled": false},
		"image":         map[string]any{"repository": "valkey/valkey", "digest": digest},
		"maxmemory":     "",
	}}))
	_, rc = redisPod(t, r)
	cfg = renderedConfig(t, r)
	if cfg.Redis.PasswordEnv != "" || slices.Contains(rc.Args, "--requirepass") || slices.Contains(rc.Args, "--maxmemory") || len(rc.Env) != 0 {
		t.Errorf("auth off: password_env %q, args %q, env %v", cfg.Redis.PasswordEnv, rc.Args, rc.Env)
	}
	if rc.Image != "valkey/valkey@"+digest {
		t.Errorf("image %q", rc.Image)
	}
	if r.count("NetworkPolicy") != 0 || r.count("Secret") != 0 {
		t.Error("auth and NetworkPolicy off still render a Secret or a NetworkPolicy")
	}
	if cfg.Redis.Addr == "" {
		t.Error("redis.addr not set")
	}
}

// TestRedisNamespacePerCache: on a shared volume the chart names each
// cache's Redis keys after its claim, because the binary's default (a hash
// of the mount path) is the same in every release: two releases on their
// own volumes sharing one Redis must not share keys, two on one claim must.
func TestRedisNamespacePerCache(t *testing.T) {
	t.Parallel()
	ns := func(vals map[string]any) string {
		base := map[string]any{"replicaCount": 2, "persistence": map[string]any{"accessModes": []any{"ReadWriteMany"}},
			"config": map[string]any{"redis": map[string]any{"addr": "redis.shared.svc:6379"}}}
		cfg := renderedConfig(t, mustRender(t, "", mergeValues(base, vals)))
		return cfg.RedisNamespace()
	}
	a, b := ns(nil), ns(map[string]any{"fullnameOverride": "other-stowage"})
	if a == b {
		t.Errorf("two releases on their own claims share the Redis namespace %q", a)
	}
	c1 := ns(map[string]any{"persistence": map[string]any{"existingClaim": "cache"}})
	c2 := ns(map[string]any{"fullnameOverride": "other-stowage", "persistence": map[string]any{"existingClaim": "cache"}})
	if c1 != c2 || c1 != namespace+".cache" {
		t.Errorf("two releases on claim \"cache\": namespaces %q and %q, want both %q", c1, c2, namespace+".cache")
	}
	if got := ns(map[string]any{"config": map[string]any{"redis": map[string]any{"namespace": "mine"}}}); got != "mine" {
		t.Errorf("explicit namespace: %q", got)
	}
	long := ns(map[string]any{"persistence": map[string]any{"existingClaim": "a-very-long-claim-name-that-goes-on-and-on-and-on-and-on-for-ever-x"}})
	if len(long) > 64 || long == "" {
		t.Errorf("long claim name: namespace %q", long)
	}
	// S3: the binary's default already tells buckets apart.
	cfg := renderedConfig(t, mustRender(t, s3File, nil))
	if cfg.Redis.Namespace != "" {
		t.Errorf("s3: namespace %q set by the chart", cfg.Redis.Namespace)
	}
}

// TestChartRedisScheduling: the Redis pod takes its own scheduling values,
// extra arguments and annotations; the NOTES say how the replicas share.
func TestChartRedisScheduling(t *testing.T) {
	t.Parallel()
	r := mustRender(t, multiReplicaFile, map[string]any{"redis": map[string]any{
		"nodeSelector":      map[string]any{"pool": "system"},
		"tolerations":       []any{map[string]any{"key": "system", "operator": "Exists"}},
		"priorityClassName": "system-cluster-critical",
		"podAnnotations":    map[string]any{"example.com/team": "platform"},
		"extraArgs":         []any{"--loglevel", "warning"},
	}})
	dep, rc := redisPod(t, r)
	spec := dep.Spec.Template.Spec
	if spec.NodeSelector["pool"] != "system" || len(spec.Tolerations) != 1 || spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("redis scheduling: nodeSelector %v, tolerations %v, priority %q", spec.NodeSelector, spec.Tolerations, spec.PriorityClassName)
	}
	if dep.Spec.Template.Annotations["example.com/team"] != "platform" || dep.Spec.Template.Annotations["checksum/redis-password"] == "" {
		t.Errorf("redis annotations %v", dep.Spec.Template.Annotations)
	}
	if n := len(rc.Args); n < 2 || rc.Args[n-2] != "--loglevel" || rc.Args[n-1] != "warning" {
		t.Errorf("redis args %q: want the extra arguments last", rc.Args)
	}
	if sp := serverPod(t, r).Spec; sp.NodeSelector["pool"] == "system" || sp.PriorityClassName != "" {
		t.Error("the Redis' scheduling values reached the Stowage pods")
	}
	for _, want := range []string{"Replicas: 3, one cache, coordinated through Redis at stowage-redis:6379 (in this release), streaming running downloads"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	r = mustRender(t, s3File, nil)
	if want := "Storage: the S3 bucket stowage at http://minio.minio.svc:9000"; !strings.Contains(r.notes, want) {
		t.Errorf("NOTES lack %q:\n%s", want, r.notes)
	}
}

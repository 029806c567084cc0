package helm

import (
	"math"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// checkRollingSurge wants a rolling update that starts a new pod before an
// old one goes.
func checkRollingSurge(t *testing.T, what string, dep *appsv1.Deployment) {
	t.Helper()
	s := dep.Spec.Strategy
	if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 ||
		s.RollingUpdate.MaxSurge == nil || s.RollingUpdate.MaxSurge.IntValue() != 1 {
		t.Errorf("%s: strategy %+v: want RollingUpdate, maxUnavailable 0, maxSurge 1", what, s)
	}
}

// preStopSleep is the pod's pre-stop sleep in seconds, 0 without one.
func preStopSleep(c corev1.Container) int64 {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return c.Lifecycle.PreStop.Sleep.Seconds
}

// TestRollingUpdateLetsDownloadsFinish: on shared storage a new pod is
// ready before an old one drains; the old one first pauses (pre-stop sleep)
// while it leaves the endpoints and still accepts, then gets SIGTERM, and
// the kubelet waits at least the pause plus server.shutdown_timeout as the
// real config loader reads it, so running downloads are never killed by
// the kubelet before Stowage's own deadline.
func TestRollingUpdateLetsDownloadsFinish(t *testing.T) {
	t.Parallel()
	r := mustRender(t, multiReplicaFile, nil)
	dep := decodeAs[*appsv1.Deployment](t, r.find(t, "Deployment", releaseName))
	checkRollingSurge(t, "RWX", dep)
	pod := dep.Spec.Template.Spec
	c := container(t, pod, "stowage")
	cfg := renderedConfig(t, r)
	if cfg.Server.ShutdownTimeout != 5*time.Minute {
		t.Fatalf("shutdown_timeout %s: the value file says 5m", cfg.Server.ShutdownTimeout)
	}
	if got := preStopSleep(c); got != 10 {
		t.Errorf("pre-stop sleep %d s, want 10", got)
	}
	if got := *pod.TerminationGracePeriodSeconds; got != 10+300+10 {
		t.Errorf("terminationGracePeriodSeconds %d, want 320 (pause + shutdown_timeout + 10)", got)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Error("readiness is not /readyz: a draining pod would stay in the Service")
	}

	// The grace period follows shutdown_timeout as Go parses it.
	for _, d := range []string{"45s", "1m30s", "1.5s", "500ms", "0s", "2h", "1h2m3.5s"} {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, "", map[string]any{"config": map[string]any{"server": map[string]any{"shutdown_timeout": d}}})
			cfg := renderedConfig(t, r)
			want := 10 + int64(math.Ceil(cfg.Server.ShutdownTimeout.Seconds())) + 10
			if got := *serverPod(t, r).Spec.TerminationGracePeriodSeconds; got != want {
				t.Errorf("shutdown_timeout %s (%s): grace %d, want %d", d, cfg.Server.ShutdownTimeout, got, want)
			}
		})
	}

	// Defaults: the binary's 30s.
	r = mustRender(t, "", nil)
	cfg = renderedConfig(t, r)
	if got, want := *serverPod(t, r).Spec.TerminationGracePeriodSeconds, 10+int64(cfg.Server.ShutdownTimeout.Seconds())+10; got != want || want != 50 {
		t.Errorf("default grace %d, want %d", got, want)
	}
	// An explicit grace period long enough is kept.
	r = mustRender(t, "", map[string]any{"terminationGracePeriodSeconds": 90})
	if got := *serverPod(t, r).Spec.TerminationGracePeriodSeconds; got != 90 {
		t.Errorf("explicit grace %d, want 90", got)
	}
	// No pause: no lifecycle hook, and the grace period shrinks with it.
	r = mustRender(t, "", map[string]any{"preStopSleepSeconds": 0})
	pod = serverPod(t, r).Spec
	if c := container(t, pod, "stowage"); c.Lifecycle != nil || *pod.TerminationGracePeriodSeconds != 40 {
		t.Errorf("preStopSleepSeconds 0: lifecycle %+v, grace %d", c.Lifecycle, *pod.TerminationGracePeriodSeconds)
	}
}

// TestPreStopNeedsKubernetes130: the sleep action exists from Kubernetes
// 1.30 (on by default); the chart still installs on 1.25-1.29, without it,
// and says so.
func TestPreStopNeedsKubernetes130(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		kube  string
		sleep int64
		grace int64
	}{{"v1.29.9", 0, 30 + 10}, {"v1.30.0", 10, 10 + 30 + 10}, {"v1.25.0", 0, 30 + 10}} {
		r, err := renderChartFor(c.kube, loadValues(t, multiReplicaFile, map[string]any{"config": map[string]any{"server": map[string]any{"shutdown_timeout": "30s"}}}))
		if err != nil {
			t.Fatalf("kube %s: %v", c.kube, err)
		}
		pod := serverPod(t, r).Spec
		if got := preStopSleep(container(t, pod, "stowage")); got != c.sleep {
			t.Errorf("kube %s: pre-stop sleep %d, want %d", c.kube, got, c.sleep)
		}
		if got := *pod.TerminationGracePeriodSeconds; got != c.grace {
			t.Errorf("kube %s: grace %d, want %d", c.kube, got, c.grace)
		}
		if warned := strings.Contains(r.notes, "no pre-stop sleep action"); warned != (c.sleep == 0) {
			t.Errorf("kube %s: NOTES warn about the missing pause: %v", c.kube, warned)
		}
	}
}

// TestAntiAffinityAndPDBFollowReplicas: with more than one pod the chart
// spreads them over nodes (preferred by default) and keeps a PDB; with one
// pod it adds neither; explicit values win.
func TestAntiAffinityAndPDBFollowReplicas(t *testing.T) {
	t.Parallel()
	r := mustRender(t, "", nil)
	if serverPod(t, r).Spec.Affinity != nil || r.count("PodDisruptionBudget") != 0 {
		t.Error("one replica: anti-affinity or a PDB rendered")
	}

	// The chart's defaults with three replicas sharing a volume.
	r = mustRender(t, "", map[string]any{"replicaCount": 3, "persistence": map[string]any{"accessModes": []any{"ReadWriteMany"}},
		"redis": map[string]any{"enabled": true}})
	pod := serverPod(t, r)
	aa := pod.Spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Fatalf("3 replicas: affinity %+v: want one preferred anti-affinity term", aa)
	}
	term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || term.LabelSelector == nil || !selects(term.LabelSelector.MatchLabels, pod.Labels) ||
		selects(term.LabelSelector.MatchLabels, map[string]string{"app.kubernetes.io/name": "stowage", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "redis"}) {
		t.Errorf("anti-affinity term %+v: want the server pods, by hostname", term)
	}
	pdb := decodeAs[*policyv1.PodDisruptionBudget](t, r.find(t, "PodDisruptionBudget", releaseName))
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !selects(pdb.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("PDB %+v: want maxUnavailable 1 over the server pods", pdb.Spec)
	}

	r = mustRender(t, multiReplicaFile, map[string]any{"podAntiAffinity": "hard"})
	if aa := serverPod(t, r).Spec.Affinity.PodAntiAffinity; len(aa.RequiredDuringSchedulingIgnoredDuringExecution) != 1 || len(aa.PreferredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("hard: %+v", aa)
	}
	r = mustRender(t, multiReplicaFile, map[string]any{"podAntiAffinity": "none", "podDisruptionBudget": map[string]any{"enabled": false}})
	if serverPod(t, r).Spec.Affinity != nil || r.count("PodDisruptionBudget") != 0 {
		t.Error("none / enabled false: anti-affinity or a PDB rendered")
	}
	own := map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
		"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "cache", "operator": "Exists"}}}}}}}
	r = mustRender(t, multiReplicaFile, map[string]any{"affinity": own})
	if aa := serverPod(t, r).Spec.Affinity; aa.PodAntiAffinity != nil || aa.NodeAffinity == nil {
		t.Errorf("affinity given: %+v, want it verbatim", aa)
	}
	// The HPA: anti-affinity from maxReplicas, the PDB from minReplicas.
	r = mustRender(t, s3File, map[string]any{"autoscaling": map[string]any{"minReplicas": 1}})
	if serverPod(t, r).Spec.Affinity == nil || r.count("PodDisruptionBudget") != 0 {
		t.Error("HPA 1..6: want anti-affinity and no PDB (it could block every drain at one pod)")
	}
	r = mustRender(t, "", map[string]any{"podDisruptionBudget": map[string]any{"enabled": true}})
	if r.count("PodDisruptionBudget") != 1 {
		t.Error("enabled true with one replica: no PDB")
	}
}

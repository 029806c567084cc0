package helm

import (
	"encoding/base64"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// peerValues: three replicas on one ReadWriteMany volume with Redis and
// peer streaming.
func peerValues(extra map[string]any) map[string]any {
	v := map[string]any{
		"replicaCount":  3,
		"persistence":   map[string]any{"accessModes": []any{"ReadWriteMany"}},
		"config":        map[string]any{"redis": map[string]any{"addr": "redis:6379"}},
		"cluster":       map[string]any{"enabled": true},
		"networkPolicy": map[string]any{"enabled": true, "restrictEgress": true},
	}
	return mergeValues(v, extra)
}

// TestClusterPeerStreaming: cluster.enabled opens the internal port on the
// pods only (not on the Service), writes cluster.listen/advertise/secret_file
// into the config, mounts a generated secret there, and lets only the
// release's pods reach the port.
func TestClusterPeerStreaming(t *testing.T) {
	t.Parallel()
	r := mustRender(t, "", peerValues(nil))
	cfg := renderedConfig(t, r)
	if cfg.Cluster.Listen != ":5001" || cfg.Cluster.Advertise != "http://${POD_IP}:5001" ||
		cfg.Cluster.SecretFile != "/etc/stowage/cluster/cluster-secret" {
		t.Fatalf("config cluster section %+v", cfg.Cluster)
	}
	pod := serverPod(t, r)
	c := container(t, pod.Spec, "stowage")
	var peerPort int32
	for _, p := range c.Ports {
		if p.Name == "peer" {
			peerPort = p.ContainerPort
		}
	}
	if peerPort != 5001 {
		t.Fatalf("container ports %+v: want peer 5001", c.Ports)
	}
	podIP := false
	for _, e := range c.Env {
		if e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
			podIP = true
		}
	}
	if !podIP {
		t.Fatal("no POD_IP from the downward API")
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/stowage/cluster" && m.Name == "cluster-secret" {
			mounted = true
		}
	}
	if !mounted {
		t.Fatal("cluster secret not mounted at /etc/stowage/cluster")
	}
	sec := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-cluster"))
	if v := sec.Data["cluster-secret"]; len(v) < 16 {
		t.Fatalf("generated secret %q too short", v)
	}
	svc := decodeAs[*corev1.Service](t, r.find(t, "Service", releaseName))
	for _, p := range svc.Spec.Ports {
		if p.Port == 5001 || p.TargetPort.String() == "peer" || p.TargetPort.IntValue() == 5001 {
			t.Fatalf("the Service exposes the internal port: %+v", p)
		}
	}
	np := decodeAs[*networkingv1.NetworkPolicy](t, r.find(t, "NetworkPolicy", releaseName))
	found := false
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.String() == "peer" {
				found = len(rule.From) == 1 && rule.From[0].PodSelector != nil
			}
		}
	}
	if !found {
		t.Fatal("network policy: the peer port is not limited to the release's pods")
	}
}

func TestClusterValues(t *testing.T) {
	t.Parallel()
	r := mustRender(t, "", peerValues(map[string]any{"cluster": map[string]any{"secret": "given-secret-0123456789"}}))
	sec := decodeAs[*corev1.Secret](t, r.find(t, "Secret", "-cluster"))
	if string(sec.Data["cluster-secret"]) != "given-secret-0123456789" {
		t.Fatalf("secret %q", base64.StdEncoding.EncodeToString(sec.Data["cluster-secret"]))
	}
	r = mustRender(t, "", peerValues(map[string]any{"cluster": map[string]any{"existingSecret": "mine", "secretKey": "peer"}}))
	for _, d := range r.docs {
		if d.kind == "Secret" && strings.HasSuffix(d.name, "-cluster") {
			t.Fatal("a cluster Secret was rendered with existingSecret")
		}
	}
	cfg := renderedConfig(t, r)
	if cfg.Cluster.SecretFile != "/etc/stowage/cluster/peer" {
		t.Fatalf("secret_file %q", cfg.Cluster.SecretFile)
	}
	for name, vals := range map[string]map[string]any{
		"no redis":      {"config": map[string]any{"redis": map[string]any{"addr": ""}}},
		"same port":     {"cluster": map[string]any{"port": 5000}},
		"short secret":  {"cluster": map[string]any{"secret": "short"}},
		"unknown field": {"cluster": map[string]any{"listen": ":5001"}},
	} {
		if _, err := renderChart(loadValues(t, "", peerValues(vals))); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

// TestClusterOnWithSharedReplicas: peer streaming is on by default when
// several pods share one cache through Redis (else their clients would
// wait for each other's commits), off for one pod or per-replica caches,
// and cluster.enabled=false turns it off.
func TestClusterOnWithSharedReplicas(t *testing.T) {
	t.Parallel()
	shared := map[string]any{"replicaCount": 3, "persistence": map[string]any{"accessModes": []any{"ReadWriteMany"}}, "redis": map[string]any{"enabled": true}}
	for name, c := range map[string]struct {
		vals map[string]any
		on   bool
	}{
		"three on RWX with Redis": {shared, true},
		"three on S3 with Redis":  {mergeValues(shared, map[string]any{"config": onS3}), true},
		"turned off":              {mergeValues(shared, map[string]any{"cluster": map[string]any{"enabled": false}}), false},
		"one with Redis":          {map[string]any{"redis": map[string]any{"enabled": true}}, false},
		"three with own volumes":  {map[string]any{"replicaCount": 3, "persistence": map[string]any{"perReplica": true}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, "", c.vals)
			cfg := renderedConfig(t, r)
			if on := cfg.Cluster.Listen != ""; on != c.on {
				t.Fatalf("cluster.listen %q: want peer streaming %v", cfg.Cluster.Listen, c.on)
			}
			ports := container(t, serverPod(t, r).Spec, "stowage").Ports
			if peer := len(ports) == 2 && ports[1].Name == "peer"; peer != c.on {
				t.Errorf("container ports %+v: want the peer port %v", ports, c.on)
			}
			secrets := 0
			for _, d := range r.docs {
				if d.kind == "Secret" && strings.HasSuffix(d.name, "-cluster") {
					secrets++
				}
			}
			if (secrets == 1) != c.on {
				t.Errorf("%d cluster Secrets", secrets)
			}
		})
	}
}

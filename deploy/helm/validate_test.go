package helm

import (
	"strings"
	"testing"
)

var (
	rwx      = map[string]any{"accessModes": []any{"ReadWriteMany"}}
	extRedis = map[string]any{"redis": map[string]any{"addr": "redis.example.svc:6379"}}
	s3Params = map[string]any{"driver": "s3", "s3": map[string]any{"bucket": "cache", "region": "eu-west-1"}}
	onS3     = map[string]any{"storage": s3Params}
)

// TestUnsafeCombinationsAreRefused: helm template fails, with a message
// that names the fix, for combinations that would lose downloads, share a
// cache without coordination, coordinate caches that are not shared, or put
// keys where they do not belong.
func TestUnsafeCombinationsAreRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		vals map[string]any
		want string // in the error
	}{
		{"two replicas on one RWO volume", map[string]any{"replicaCount": 2}, "ReadWriteOnce"},
		{"two replicas on an existing claim said RWO", map[string]any{"replicaCount": 2, "persistence": map[string]any{"existingClaim": "c"}, "config": extRedis}, "ReadWriteOnce"},
		{"HPA on one RWO volume", map[string]any{"autoscaling": map[string]any{"enabled": true}}, "ReadWriteOnce"},
		{"replicas on RWX without Redis", map[string]any{"replicaCount": 3, "persistence": rwx}, "replicaCount 3 on shared storage needs Redis"},
		{"replicas on S3 without Redis", map[string]any{"replicaCount": 2, "config": onS3}, "needs Redis"},
		{"HPA on RWX without Redis", map[string]any{"persistence": rwx, "autoscaling": map[string]any{"enabled": true}}, "autoscaling.enabled on shared storage needs Redis"},
		{"HPA on S3 without Redis", map[string]any{"config": onS3, "autoscaling": map[string]any{"enabled": true}}, "autoscaling.enabled on shared storage needs Redis"},
		{"Redis with per-replica caches", map[string]any{"replicaCount": 2, "persistence": map[string]any{"perReplica": true}, "redis": map[string]any{"enabled": true}}, "each replica has its own"},
		{"external Redis with per-replica caches and the HPA", map[string]any{"persistence": map[string]any{"perReplica": true}, "config": extRedis, "autoscaling": map[string]any{"enabled": true}}, "each replica has its own"},
		{"Redis with emptyDir caches", map[string]any{"replicaCount": 2, "persistence": map[string]any{"enabled": false}, "config": extRedis}, "each replica has its own"},
		{"chart Redis and an address", map[string]any{"redis": map[string]any{"enabled": true}, "config": extRedis}, "leave config.redis.addr empty"},
		{"chart Redis and password_env", map[string]any{"redis": map[string]any{"enabled": true}, "config": map[string]any{"redis": map[string]any{"password_env": "X"}}}, "config.redis.password_env"},
		{"Redis password and existing Secret", map[string]any{"redis": map[string]any{"enabled": true, "auth": map[string]any{"existingSecret": "s", "password": "p"}}}, "redis.auth.password is ignored"},
		{"peer streaming without Redis", map[string]any{"cluster": map[string]any{"enabled": true}}, "cluster.enabled needs Redis"},
		{"S3 with perReplica", map[string]any{"config": onS3, "persistence": map[string]any{"perReplica": true}}, "perReplica has no meaning"},
		{"S3 with an existing claim", map[string]any{"config": onS3, "persistence": map[string]any{"existingClaim": "c"}}, "existingClaim is not used"},
		{"S3 keys in the ConfigMap", map[string]any{"config": map[string]any{"storage": mergeValues(s3Params, map[string]any{"s3": map[string]any{"accesskey": "AK", "secretkey": "SK"}})}}, "would put the keys in a ConfigMap"},
		{"S3 keys twice", map[string]any{"config": map[string]any{"storage": mergeValues(s3Params, map[string]any{"s3": map[string]any{"secretkey_env": "SK"}})},
			"s3": map[string]any{"existingSecret": "s"}}, "set twice"},
		{"S3 and min_free", map[string]any{"config": mergeValues(onS3, map[string]any{"cache": map[string]any{"min_free": "10%"}})}, "min_free"},
		{"S3 keys without S3", map[string]any{"s3": map[string]any{"existingSecret": "s"}}, "are for config.storage.driver=s3"},
		{"S3 access key alone", map[string]any{"config": onS3, "s3": map[string]any{"accessKey": "AK"}}, "go together"},
		{"S3 keys and an existing Secret", map[string]any{"config": onS3, "s3": map[string]any{"existingSecret": "s", "accessKey": "AK", "secretKey": "SK"}}, "ignored with s3.existingSecret"},
		{"grace period below shutdown", map[string]any{"terminationGracePeriodSeconds": 30}, "shorter than preStopSleepSeconds plus config.server.shutdown_timeout (40s)"},
		{"grace period below a long shutdown", map[string]any{"terminationGracePeriodSeconds": 120, "config": map[string]any{"server": map[string]any{"shutdown_timeout": "2m"}}}, "(130s)"},
		{"unknown anti-affinity", map[string]any{"podAntiAffinity": "sometimes"}, "podAntiAffinity"},
		{"unknown Redis eviction policy", map[string]any{"redis": map[string]any{"maxmemoryPolicy": "lru"}}, "maxmemoryPolicy"},
		{"typo in the redis section", map[string]any{"redis": map[string]any{"enable": true}}, "enable"},
		{"typo in the s3 section", map[string]any{"s3": map[string]any{"existingSecrets": "x"}}, "existingSecrets"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(loadValues(t, "", c.vals))
			if err == nil {
				t.Fatalf("values %v rendered without error", c.vals)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// TestSafeCombinationsRender: what the rules above must still allow.
func TestSafeCombinationsRender(t *testing.T) {
	t.Parallel()
	for name, vals := range map[string]map[string]any{
		"replicas with their own volumes":        {"replicaCount": 3, "persistence": map[string]any{"perReplica": true}},
		"replicas with emptyDirs":                {"replicaCount": 2, "persistence": map[string]any{"enabled": false}},
		"HPA with their own volumes":             {"persistence": map[string]any{"perReplica": true}, "autoscaling": map[string]any{"enabled": true}},
		"replicas on RWX with an external Redis": {"replicaCount": 3, "persistence": rwx, "config": extRedis},
		"replicas on an RWX existing claim":      {"replicaCount": 2, "persistence": mergeValues(rwx, map[string]any{"existingClaim": "c"}), "redis": map[string]any{"enabled": true}},
		"HPA on S3 with the chart Redis":         {"config": onS3, "redis": map[string]any{"enabled": true}, "autoscaling": map[string]any{"enabled": true}},
		"one replica with the chart Redis":       {"redis": map[string]any{"enabled": true}},
		"one replica on S3, no Redis":            {"config": onS3},
		"S3 keys from the environment":           {"config": map[string]any{"storage": mergeValues(s3Params, map[string]any{"s3": map[string]any{"accesskey_env": "AK", "secretkey_env": "SK"}})}},
		"a long enough grace period":             {"terminationGracePeriodSeconds": 40},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, "", vals)
			renderedConfig(t, r) // and the binary accepts the config
		})
	}
}

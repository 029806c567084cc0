package helm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kinds maps every apiVersion/kind the chart may render to a constructor of
// its Go type. Anything else fails the tests: a new kind must be added here.
var kinds = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                       func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                            func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                        func() any { return &batchv1.CronJob{} },
	"networking.k8s.io/v1/Ingress":            func() any { return &networkingv1.Ingress{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &serviceMonitor{} },
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) that the chart renders. A local type, because
// the operator's Go module would pull its whole dependency tree into this
// module for one struct; strict decoding into it still catches a field the
// chart misspells or adds without adding it here.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Scheme        string `json:"scheme"`
			TLSConfig     *struct {
				ServerName         string `json:"serverName"`
				InsecureSkipVerify bool   `json:"insecureSkipVerify"`
				CA                 *struct {
					Secret    *corev1.SecretKeySelector    `json:"secret"`
					ConfigMap *corev1.ConfigMapKeySelector `json:"configMap"`
				} `json:"ca"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// decodeStrict decodes a rendered object into its API type, rejecting
// unknown kinds, unknown fields and trailing data.
func decodeStrict(d doc) (any, error) {
	newObj, ok := kinds[d.apiVersion+"/"+d.kind]
	if !ok {
		return nil, fmt.Errorf("%s: unknown kind %s/%s", d.source, d.apiVersion, d.kind)
	}
	obj := newObj()
	dec := json.NewDecoder(bytes.NewReader(d.json))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %s %q: %w", d.source, d.kind, d.name, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data", d.source)
	}
	return obj, nil
}

// decodeAs decodes d strictly into T, failing the test on error.
func decodeAs[T any](t *testing.T, d doc) T {
	t.Helper()
	obj, err := decodeStrict(d)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := obj.(T)
	if !ok {
		t.Fatalf("%s %q decodes to %T", d.kind, d.name, obj)
	}
	return v
}

// TestEveryObjectDecodesStrictly is the core check: every object of every
// value set is a valid object of a known Kubernetes kind with no unknown
// fields, and names are unique per kind.
func TestEveryObjectDecodesStrictly(t *testing.T) {
	t.Parallel()
	for name, file := range valueSets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := mustRender(t, file, nil)
			if len(r.docs) == 0 {
				t.Fatal("nothing rendered")
			}
			seen := map[string]bool{}
			for _, d := range r.docs {
				if _, err := decodeStrict(d); err != nil {
					t.Error(err)
				}
				key := d.kind + "/" + d.name
				if seen[key] {
					t.Errorf("%s rendered twice", key)
				}
				seen[key] = true
				if d.name == "" {
					t.Errorf("%s: %s without a name", d.source, d.kind)
				}
			}
		})
	}
}

package upstream

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/stowage/stowage/upstream/internal/testregistry"
)

// internalRealm starts a registry whose token service is announced on
// another internal address (127.0.0.1:<other port>) than the endpoint the
// client uses (localhost:<port>), and counts the registry's requests.
func internalRealm(t *testing.T) (reg *testregistry.Registry, endpoint string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	var handler http.Handler
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(tokens.Close)
	reg = testregistry.Start(t,
		testregistry.WithTokenAuth(testregistry.TokenAuth{Realm: tokens.URL + "/token"}),
		testregistry.WithHandler(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				h.ServeHTTP(w, r)
			})
		}))
	handler = reg.Server.Config.Handler
	reg.SeedImage(t, "team/app", "v1", 1, 256)
	return reg, strings.Replace(reg.URL, "127.0.0.1", "localhost", 1), requests
}

// TestInternalRealm: with internal: true a token realm on another internal
// address is used; without it, it is refused as a configuration error
// (ErrForbiddenAddress: not temporary, not retried), never as UNAVAILABLE.
func TestInternalRealm(t *testing.T) {
	t.Parallel()
	reg, endpoint, _ := internalRealm(t)
	cfg := testConfig(endpoint)
	cfg.Internal = true
	if _, err := newClient(t, cfg).GetManifest(t.Context(), "team/app", "v1", nil); err != nil {
		t.Fatalf("internal: true, realm on another internal address: %v", err)
	}
	if n := reg.TokenRequests("repository:team/app:pull"); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}

	reg, endpoint, requests := internalRealm(t)
	cfg = testConfig(endpoint)
	cfg.Internal = false
	_, err := newClient(t, cfg).GetManifest(t.Context(), "team/app", "v1", nil)
	if !errors.Is(err, ErrForbiddenAddress) || Temporary(err) || Retryable(err) || errors.Is(err, ErrInvalid) {
		t.Fatalf("internal: false: %v, want ErrForbiddenAddress only", err)
	}
	if !strings.Contains(err.Error(), "internal: true") || !strings.Contains(err.Error(), "token realm") {
		t.Fatalf("the error must name the realm and the setting: %v", err)
	}
	if n := reg.TokenRequests("repository:team/app:pull"); n != 0 {
		t.Fatalf("token requests = %d, want 0", n)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("registry saw %d requests, want 1 (the ping; not retried)", n)
	}
}

func TestParseIPLiteral(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1": "127.0.0.1", "[::1]": "::1", "::ffff:10.0.0.1": "10.0.0.1", "fe80::1%eth0": "fe80::1",
		"127.1": "127.0.0.1", "2130706433": "127.0.0.1", "0x7f.1": "127.0.0.1", "0177.0.0.1": "127.0.0.1",
		"10.1.515":         "10.1.2.3",
		"registry.example": "", "deadbeef": "", "1.2.3.4.5": "", "256.1.1.1": "", "1_0.0.0.1": "", "": "",
	} {
		ip, ok := parseIPLiteral(in)
		if got := map[bool]string{true: ip.String(), false: ""}[ok]; got != want {
			t.Errorf("parseIPLiteral(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRealmAlias(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"10.0.0.5:8443", "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:5001", "127.0.0.1"} {
		alias, err := aliasHost(host)
		if err != nil || !strings.HasSuffix(alias, aliasSuffix) {
			t.Fatalf("aliasHost(%s) = %q, %v", host, alias, err)
		}
		var got string
		rt := &realmAliases{inner: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			got = r.URL.Host
			return nil, errors.New("stop")
		})}
		req, _ := http.NewRequest(http.MethodGet, "https://"+alias+"/token?scope=x", nil)
		_, _ = rt.RoundTrip(req)
		if got != host {
			t.Errorf("alias of %s went to %q", host, got)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRealmChallenge is the realm rule in a table: which realms are used
// as announced, which through an alias, which are refused.
func TestRealmChallenge(t *testing.T) {
	t.Parallel()
	const (
		asIs = iota
		alias
		refused
	)
	for _, tc := range []struct {
		endpoint, realm string
		internal        bool
		want            int
	}{
		{"https://registry.example", "https://auth.example/token", false, asIs},
		{"https://registry.example", "https://10.0.0.7/token", false, refused},
		{"https://registry.example", "https://169.254.169.254/latest", false, refused},
		{"https://registry.example", "https://2130706433/token", false, refused},
		{"https://registry.example", "https://localhost:5001/token", false, refused},
		{"https://registry.example", "https://10.0.0.7/token", true, alias},
		{"https://registry.example", "https://localhost:5001/token", true, asIs},
		{"http://10.0.0.5:5000", "http://10.0.0.5:5000/token", false, asIs},  // the endpoint itself
		{"http://10.0.0.5:5000", "http://10.0.0.5:5001/token", false, alias}, // the endpoint's host
		{"http://10.0.0.5:5000", "http://10.0.0.6:5001/token", false, refused},
	} {
		ep, err := parseEndpoint(tc.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		a := &authTransport{internal: tc.internal}
		ch := &transport.Challenge{Scheme: "Bearer", Parameters: map[string]string{"realm": tc.realm, "service": "s"}}
		out, err := a.realmChallenge(ep, ch)
		got := asIs
		switch {
		case err != nil:
			got = refused
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("%s -> %s: %v", tc.endpoint, tc.realm, err)
			}
		case out.Parameters["realm"] != tc.realm:
			got = alias
			if !strings.Contains(out.Parameters["realm"], aliasSuffix+"/") || ch.Parameters["realm"] != tc.realm {
				t.Errorf("%s -> %s: alias %q (shared challenge changed: %v)", tc.endpoint, tc.realm, out.Parameters["realm"], ch.Parameters["realm"] != tc.realm)
			}
		}
		if got != tc.want {
			t.Errorf("%s -> %s (internal %v): got %d, want %d", tc.endpoint, tc.realm, tc.internal, got, tc.want)
		}
	}
}

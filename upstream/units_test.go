package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/config"
)

func TestRedactor(t *testing.T) {
	t.Parallel()
	r := redactor{secrets: func() []string { return []string{"hunter2-pw", "p@ss word"} }}
	for _, tc := range []struct{ in, mustNot string }{
		{`Get "https://cdn.example/blob?X-Amz-Signature=abcdef&X-Amz-Credential=key": EOF`, "abcdef"},
		{`proxyconnect tcp: http://user:hunter2-pw@proxy:3128`, "hunter2-pw"},
		{`proxy http://user:p%40ss+word@proxy:3128 failed`, "p%40ss+word"},
		{`header Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig`, "eyJhbGciOiJSUzI1NiJ9"},
		{`Basic dXNlcjpodW50ZXIyLXB3`, "dXNlcjpodW50ZXIyLXB3"},
		{`token server said hunter2-pw is wrong`, "hunter2-pw"},
	} {
		if got := r.String(tc.in); strings.Contains(got, tc.mustNot) {
			t.Errorf("String(%q) = %q still contains %q", tc.in, got, tc.mustNot)
		}
	}
	err := r.Error(errors.Join(errors.New("login hunter2-pw"), &StatusError{Status: 401, Err: ErrUnauthorized, Message: "bad hunter2-pw"}))
	if strings.Contains(err.Error(), "hunter2-pw") || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Error = %v", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || strings.Contains(se.Message, "hunter2-pw") {
		t.Fatalf("StatusError through redaction = %+v", se)
	}
	if !errors.Is(r.Error(context.Canceled), context.Canceled) {
		t.Fatal("context.Canceled lost")
	}
}

func TestNoProxy(t *testing.T) {
	t.Parallel()
	np, err := newNoProxy([]string{"internal.corp", ".svc.cluster.local", "10.0.0.0/8", "harbor:5000"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"internal.corp": true, "a.internal.corp": true, "xinternal.corp": false,
		"svc.cluster.local": true, "reg.ns.svc.cluster.local": true,
		"10.1.2.3": true, "11.1.2.3": false, "harbor": true, "docker.io": false,
	} {
		if got := np.match(host); got != want {
			t.Errorf("match(%q) = %v, want %v", host, got, want)
		}
	}
	if _, err := newNoProxy([]string{"10.0.0.0/99"}); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestProxyFunc(t *testing.T) {
	t.Parallel()
	pf, err := newProxyFunc("http://u:secret-px@proxy.corp:3128", []string{".corp"})
	if err != nil {
		t.Fatal(err)
	}
	req := func(u string) *http.Request { r, _ := http.NewRequest(http.MethodGet, u, nil); return r }
	if u, _ := pf(req("https://registry-1.docker.io/v2/")); u == nil || u.Host != "proxy.corp:3128" {
		t.Fatalf("proxy for docker.io = %v", u)
	}
	if u, _ := pf(req("https://harbor.corp/v2/")); u != nil {
		t.Fatalf("no_proxy host proxied via %v", u)
	}
	direct, _ := newProxyFunc("direct", nil)
	if u, _ := direct(req("https://ghcr.io/v2/")); u != nil {
		t.Fatal("direct used a proxy")
	}
	_, err = newProxyFunc("socks5://u:leak-me@x:1", nil)
	if err == nil || strings.Contains(err.Error(), "leak-me") {
		t.Fatalf("bad proxy: %v", err)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "token")
	if err := os.WriteFile(pwFile, []byte("ghp_filetoken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dc := filepath.Join(dir, "config.json")
	hubAuth := base64.StdEncoding.EncodeToString([]byte("hubuser:hubpass"))
	if err := os.WriteFile(dc, []byte(`{"auths":{
		"https://index.docker.io/v1/":{"auth":"`+hubAuth+`"},
		"quay.io":{"username":"q","password":"qp"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// t.Setenv rules out t.Parallel; PATH is always set.
	envName, envValue := "PATH", os.Getenv("PATH")

	for _, tc := range []struct {
		name, host string
		auth       config.Auth
		user, pass string
		wantErr    bool
	}{
		{"literal", "r.io", config.Auth{Username: "a", Password: "b"}, "a", "b", false},
		{"env", "r.io", config.Auth{Username: "a", PasswordEnv: envName}, "a", envValue, false},
		{"env missing", "r.io", config.Auth{Username: "a", PasswordEnv: "STOWAGE_TEST_UNSET_VARIABLE"}, "", "", true},
		{"file", "ghcr.io", config.Auth{Username: "me", PasswordFile: pwFile}, "me", "ghp_filetoken", false},
		{"file missing", "ghcr.io", config.Auth{Username: "me", PasswordFile: pwFile + ".nope"}, "", "", true},
		{"docker hub url key", "docker.io", config.Auth{DockerConfig: dc}, "hubuser", "hubpass", false},
		{"docker config user/pass", "quay.io", config.Auth{DockerConfig: dc}, "q", "qp", false},
		{"docker config no entry", "ghcr.io", config.Auth{DockerConfig: dc}, "", "", true},
		{"password without user", "r.io", config.Auth{Password: "x"}, "", "", true},
	} {
		c, err := newCredentials(tc.host, tc.auth)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		ac, _ := c.Authorization()
		if ac.Username != tc.user || ac.Password != tc.pass {
			t.Errorf("%s: got %q/%q", tc.name, ac.Username, ac.Password)
		}
	}
	if c, err := newCredentials("x", config.Auth{}); c != nil || err != nil {
		t.Error("empty auth is not anonymous")
	}
}

func TestParsers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 10-99/*", 10, -1, true},
		{"bytes 10-99/50", 0, 0, false},
		{"bytes 99-10/100", 0, 0, false},
		{"items 0-1/2", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || s != tc.start || tot != tc.total {
			t.Errorf("parseContentRange(%q) = %d %d %v", tc.in, s, tot, err)
		}
	}
	for in, want := range map[string]string{
		`</v2/a/tags/list?last=v9&n=10>; rel="next"`:                "v9",
		`<https://r.io/v2/a/tags/list?n=10&last=a%2Bb>; rel="next"`: "a+b",
		`</v2/a/tags/list?last=x>; rel="prev"`:                      "",
		``:                                                          "",
	} {
		if got := nextLast(in); got != want {
			t.Errorf("nextLast(%q) = %q, want %q", in, got, want)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"7": 7 * time.Second, now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
	} {
		if got, ok := parseRetryAfter(in, now); !ok || got != want {
			t.Errorf("parseRetryAfter(%q) = %v %v", in, got, ok)
		}
	}
	if _, ok := parseRetryAfter("soon", now); ok {
		t.Error("bad Retry-After accepted")
	}
	if n, ok := rateLimitValue("100;w=21600"); !ok || n != 100 {
		t.Errorf("rateLimitValue = %d %v", n, ok)
	}
	if repoFromPath("/v2/a/b/c/manifests/latest") != "a/b/c" || repoFromPath("/v2/") != "" {
		t.Error("repoFromPath")
	}
}

func TestRedirectPolicy(t *testing.T) {
	t.Parallel()
	direct, _ := newProxyFunc("direct", nil)
	viaProxy, _ := newProxyFunc("http://proxy:3128", nil)
	resolver := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in this test")
	}}
	for _, tc := range []struct {
		target   string
		proxy    proxyFunc
		internal bool
		ok       bool
	}{
		{"https://203.0.113.9/blob", direct, false, true},
		{"https://127.0.0.1/blob", direct, false, false},
		{"https://10.1.2.3/blob", viaProxy, false, false},
		{"https://169.254.169.254/latest/meta-data", direct, false, false},
		{"https://[::1]/blob", direct, false, false},
		{"https://0.0.0.0/blob", direct, false, false},
		{"https://localhost/blob", viaProxy, false, false},
		{"https://cdn.example/blob", viaProxy, false, true}, // the proxy resolves
		{"https://127.0.0.1/blob", direct, true, true},
		{"ftp://cdn.example/blob", direct, true, false},
	} {
		p := &redirectPolicy{max: 3, internal: tc.internal, proxy: tc.proxy, resolver: resolver}
		u, _ := url.Parse(tc.target)
		err := p.check(&http.Request{URL: u}, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%s (internal=%v): %v", tc.target, tc.internal, err)
		}
	}
	p := &redirectPolicy{max: 1, internal: true, proxy: direct}
	u, _ := url.Parse("https://cdn.example/")
	if err := p.check(&http.Request{URL: u}, make([]*http.Request, 2)); err == nil {
		t.Error("hop limit not enforced")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]config.Upstream{
		"no endpoints":  {},
		"bad endpoint":  {Endpoints: []string{"ftp://x"}},
		"creds in url":  {Endpoints: []string{"https://u:p@x"}},
		"bad proxy":     {Endpoints: []string{"https://x"}, Proxy: "socks5://x"},
		"missing CA":    {Endpoints: []string{"https://x"}, TLS: config.TLS{CAFile: "/nonexistent/ca.pem"}},
		"half mTLS":     {Endpoints: []string{"https://x"}, TLS: config.TLS{CertFile: "c.pem"}},
		"bad auth file": {Endpoints: []string{"https://x"}, Auth: config.Auth{Username: "u", PasswordFile: "/nonexistent"}},
	} {
		if _, err := New("x", cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New("x", config.Upstream{Endpoints: []string{"https://x"}}, WithMaxManifestSize(1)); err == nil {
		t.Error("tiny manifest cap accepted")
	}
}

// TestDialGuard: without a proxy, connections to hosts other than the
// endpoints are checked at connect time (a name that resolved to a public
// address during the redirect check and to an internal one now is refused);
// the endpoints themselves are dialed as configured.
func TestDialGuard(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	g := newDialGuard(&net.Dialer{Timeout: time.Second}, []string{"http://" + ln.Addr().String()})
	c, err := g.DialContext(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("endpoint dial refused: %v", err)
	}
	c.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if _, err := g.DialContext(t.Context(), "tcp", net.JoinHostPort("localhost", port)); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("dial of a non-endpoint loopback host: %v, want a refusal", err)
	}
	for _, addr := range []string{"10.1.2.3:443", "[fe80::1]:443", "169.254.169.254:80"} {
		if err := g.control(t.Context(), "tcp", addr, nil); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("control %s: %v", addr, err)
		}
	}
	if err := g.control(t.Context(), "tcp", "93.184.216.34:443", nil); err != nil {
		t.Errorf("public address refused: %v", err)
	}
}

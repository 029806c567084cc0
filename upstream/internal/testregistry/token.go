package testregistry

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// TokenAuth configures the bearer-token layer.
type TokenAuth struct {
	// Username and Password are the credentials the token endpoint
	// demands; both empty: anonymous tokens are issued.
	Username, Password string
	// Expiry is the token lifetime (expires_in); default 5 minutes.
	Expiry time.Duration
	// Realm overrides the token endpoint URL announced in challenges;
	// default: the request's own scheme and Host with path /token.
	Realm string
}

// tokenServer serves /token and demands a valid, unexpired bearer token
// with the repository's pull scope on every /v2/ request.
type tokenServer struct {
	cfg  TokenAuth
	next http.Handler

	mu     sync.Mutex
	tokens map[string]grant
	issued map[string]int // by scope
}

type grant struct {
	scopes  map[string]bool
	expires time.Time
}

func newTokenServer(cfg TokenAuth, next http.Handler) *tokenServer {
	if cfg.Expiry == 0 {
		cfg.Expiry = 5 * time.Minute
	}
	return &tokenServer{cfg: cfg, next: next, tokens: map[string]grant{}, issued: map[string]int{}}
}

func (s *tokenServer) count(scope string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued[scope]
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		s.serveToken(w, r)
		return
	}
	scope := ""
	if repo := repoOf(r.URL.Path); repo != "" {
		scope = "repository:" + repo + ":pull"
	}
	if s.valid(r.Header.Get("Authorization"), scope) {
		s.next.ServeHTTP(w, r)
		return
	}
	realm := s.cfg.Realm
	if realm == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		realm = scheme + "://" + r.Host + "/token"
	}
	ch := fmt.Sprintf(`Bearer realm=%q,service="testregistry"`, realm)
	if scope != "" {
		ch += fmt.Sprintf(`,scope=%q`, scope)
	}
	w.Header().Set("WWW-Authenticate", ch)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
}

func (s *tokenServer) valid(authz, scope string) bool {
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.tokens[tok]
	if !ok || time.Now().After(g.expires) {
		return false
	}
	return scope == "" || g.scopes[scope]
}

// serveToken implements the token endpoint: GET with optional Basic
// credentials, or POST with an OAuth2 form (grant_type password or
// refresh_token).
func (s *tokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	var user, pass string
	var scopes []string
	switch r.Method {
	case http.MethodGet:
		user, pass, _ = r.BasicAuth()
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		switch r.PostForm.Get("grant_type") {
		case "password":
			user, pass = r.PostForm.Get("username"), r.PostForm.Get("password")
		case "refresh_token":
			user, pass = s.cfg.Username, s.cfg.Password
			if r.PostForm.Get("refresh_token") != "refresh-"+s.cfg.Password {
				pass = ""
			}
		}
		scopes = strings.Fields(r.PostForm.Get("scope"))
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	if !s.authorized(user, pass) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`))
		return
	}
	tok := randomToken()
	g := grant{scopes: map[string]bool{}, expires: time.Now().Add(s.cfg.Expiry)}
	s.mu.Lock()
	for _, sc := range scopes {
		for one := range strings.FieldsSeq(sc) {
			g.scopes[one] = true
			s.issued[one]++
		}
	}
	s.tokens[tok] = g
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":         tok,
		"access_token":  tok,
		"expires_in":    int(s.cfg.Expiry / time.Second),
		"refresh_token": "",
		"issued_at":     time.Now().UTC().Format(time.RFC3339),
	})
}

func (s *tokenServer) authorized(user, pass string) bool {
	if s.cfg.Username == "" && s.cfg.Password == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password)) == 1
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// repoOf extracts the repository of /v2/<repo>/{manifests,blobs,tags,referrers}/...
func repoOf(p string) string {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return ""
	}
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

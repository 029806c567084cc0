package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
)

// Htpasswd checks HTTP Basic credentials against a file of bcrypt entries
// ("user:$2y$..." lines, as htpasswd -B writes them). The file is re-read
// when its content changes (checked at most every reloadEvery), so a
// rotated Kubernetes Secret takes effect without a restart. Verified
// credentials are remembered for a short while, so a pull of many blobs
// costs one bcrypt check, not one per request.
type Htpasswd struct {
	path        string
	realm       string
	log         *slog.Logger
	reloadEvery time.Duration
	now         func() time.Time
	// compare is bcrypt's check (a counting one in tests).
	compare func(hash, password []byte) error

	mu      sync.Mutex
	raw     []byte
	users   map[string][]byte
	checked time.Time
	// verified maps sha256(user, password, stored hash) to the outcome of
	// bcrypt; the stored hash in the key makes a changed entry miss.
	// (A plain LRU with a time per entry: the expirable one runs a
	// goroutine that nothing stops.)
	verified *lru.Cache[[32]byte, verdict]
}

type verdict struct {
	ok bool
	at time.Time
}

// Htpasswd defaults.
const (
	htpasswdReloadEvery = 2 * time.Second
	authCacheEntries    = 1024
	authCacheTTL        = time.Minute
)

// dummyHash is compared against for unknown users, so that a wrong user
// name costs as much as a wrong password (no user enumeration by timing).
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("stowage-no-such-user"), bcrypt.DefaultCost)

// NewHtpasswd reads path (which must exist and hold at least one valid
// bcrypt entry) and returns the checker; realm is announced in
// WWW-Authenticate.
func NewHtpasswd(path, realm string, log *slog.Logger) (*Htpasswd, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Htpasswd{path: path, realm: realm, log: log, reloadEvery: htpasswdReloadEvery, now: time.Now,
		compare: bcrypt.CompareHashAndPassword,
	}
	var err error
	if h.verified, err = lru.New[[32]byte, verdict](authCacheEntries); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth.htpasswd: %w", err)
	}
	users, err := parseHtpasswd(raw, log)
	if err != nil {
		return nil, fmt.Errorf("auth.htpasswd %s: %w", path, err)
	}
	h.raw, h.users, h.checked = raw, users, h.now()
	return h, nil
}

// parseHtpasswd reads "user:hash" lines; blank lines and # comments are
// skipped, and entries that are not bcrypt are logged and ignored.
func parseHtpasswd(raw []byte, log *slog.Logger) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			log.Warn("auth.htpasswd: malformed line ignored", "line", n)
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			log.Warn("auth.htpasswd: entry is not bcrypt (use htpasswd -B); ignored", "line", n, "user", user)
			continue
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New("no bcrypt entries")
	}
	return users, nil
}

// entry returns user's stored hash, re-reading the file first when the
// last check is older than reloadEvery. A file that became unreadable or
// empty keeps the previous entries (a Secret being swapped), logged.
func (h *Htpasswd) entry(user string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// (A clock that went back also triggers a check.)
	if now := h.now(); now.Sub(h.checked) >= h.reloadEvery || now.Before(h.checked) {
		h.checked = now
		h.reloadLocked()
	}
	hash, ok := h.users[user]
	return hash, ok
}

func (h *Htpasswd) reloadLocked() {
	raw, err := os.ReadFile(h.path)
	if err != nil {
		h.log.Warn("auth.htpasswd: re-reading failed; keeping the previous entries", "path", h.path, "err", err)
		return
	}
	if bytes.Equal(raw, h.raw) {
		return
	}
	users, err := parseHtpasswd(raw, h.log)
	if err != nil {
		h.log.Warn("auth.htpasswd: new content unusable; keeping the previous entries", "path", h.path, "err", err)
		return
	}
	h.raw, h.users = raw, users
	h.verified.Purge()
	h.log.Info("auth.htpasswd reloaded", "path", h.path, "users", len(users))
}

// Check reports whether user and password match an entry.
func (h *Htpasswd) Check(user, password string) bool {
	hash, known := h.entry(user)
	if !known {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	key := credentialKey(user, password, hash)
	now := h.now()
	if v, hit := h.verified.Get(key); hit && now.Sub(v.at) < authCacheTTL {
		return v.ok
	}
	ok := h.compare(hash, []byte(password)) == nil
	h.verified.Add(key, verdict{ok: ok, at: now})
	return ok
}

func credentialKey(user, password string, hash []byte) [32]byte {
	s := sha256.New()
	for _, b := range [][]byte{[]byte(user), []byte(password), hash} {
		var l [8]byte
		n := len(b)
		for i := range l {
			l[i] = byte(n >> (8 * i))
		}
		s.Write(l[:])
		s.Write(b)
	}
	var k [32]byte
	copy(k[:], s.Sum(nil))
	return k
}

// Wrap returns next behind Basic authentication. A request without
// credentials, or with wrong ones, is answered 401 UNAUTHORIZED with
// WWW-Authenticate: Basic realm="...", as the distribution registry's
// htpasswd access controller does, so docker login, containerd and podman
// send their configured credentials.
func (h *Htpasswd) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		if ok && h.Check(user, password) {
			next.ServeHTTP(w, r)
			return
		}
		if ok {
			h.log.Warn("client authentication failed", "user", user, "remote", r.RemoteAddr, "path", r.URL.Path)
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", h.realm))
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		_ = errcode.ServeJSON(w, errcode.ErrorCodeUnauthorized.WithMessage("authentication required"))
	})
}

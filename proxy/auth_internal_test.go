package proxy

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestHtpasswdCachesVerifications: 50 requests with the same credentials
// (a pull of 50 blobs) cost one bcrypt check, wrong ones too; the cache
// expires, and a changed file is read again (its old verdicts dropped).
func TestHtpasswdCachesVerifications(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	write := func(user, password string) {
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(user+":"+string(h)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice", "one")
	h, err := NewHtpasswd(path, "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	h.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	calls := 0
	h.compare = func(hash, pw []byte) error { calls++; return bcrypt.CompareHashAndPassword(hash, pw) }

	for range 50 {
		if !h.Check("alice", "one") {
			t.Fatal("right password refused")
		}
		if h.Check("alice", "two") {
			t.Fatal("wrong password accepted")
		}
	}
	if calls != 2 {
		t.Fatalf("100 checks of two credentials cost %d bcrypt comparisons, want 2", calls)
	}
	advance(authCacheTTL + time.Second)
	if !h.Check("alice", "one") || calls != 3 {
		t.Fatalf("after the cache's lifetime: %d comparisons, want 3", calls)
	}
	write("alice", "two")
	advance(htpasswdReloadEvery)
	if h.Check("alice", "one") || !h.Check("alice", "two") {
		t.Fatal("the changed file was not picked up")
	}
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	advance(htpasswdReloadEvery)
	if !h.Check("alice", "two") {
		t.Fatal("an unusable file replaced the previous entries")
	}
}

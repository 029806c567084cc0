package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// TestTagsListName: the answer names the repository as the client did, not
// as the upstream knows it (the OCI spec's "name" is the one requested).
func TestTagsListName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	e.up.Push(t, "library/tn:a", testenv.DockerImage(t, 1, 64))
	paths := []string{"tn", "library/tn", "docker.io/library/tn"}
	check := func(state string) {
		t.Helper()
		for _, path := range paths {
			resp := e.get(context.Background(), http.MethodGet, "/v2/"+path+"/tags/list", nil)
			var body struct{ Name string }
			err := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil || body.Name != path {
				t.Fatalf("%s, %s: %d name %q, want %q (%v)", path, state, resp.StatusCode, body.Name, path, err)
			}
		}
	}
	check("upstream up")
	resp := e.get(context.Background(), http.MethodGet, "/v2/tn/manifests/a", nil)
	resp.Body.Close()
	e.up.Close()
	check("cached tags, upstream down")
}

// TestReferrersUnchangedNotRewritten: an unchanged referrers answer is not
// written again (no write and fsync per signature lookup).
func TestReferrersUnchangedNotRewritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	img := testenv.DockerImage(t, 1, 64)
	e.up.Push(t, "library/ru:v1", img)
	d, _ := img.Digest()
	get := func() {
		resp := e.get(context.Background(), http.MethodGet, "/v2/library/ru/referrers/"+d.String(), nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("referrers: %d", resp.StatusCode)
		}
	}
	get()
	files := referrerFiles(t, e.root)
	if len(files) != 1 {
		t.Fatalf("cached referrers files: %v", files)
	}
	old := time.Unix(1_000_000_000, 0)
	for p := range files {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	get()
	for p, mt := range referrerFiles(t, e.root) {
		if !mt.Equal(old) {
			t.Fatalf("%s rewritten at %v although the answer did not change", p, mt)
		}
	}
}

func referrerFiles(t *testing.T, root string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || !strings.Contains(p, "referrers") {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		out[p] = fi.ModTime()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
)

// upstreamWith runs go-containerregistry's in-process registry holding
// team/app:v1 and returns its URL and the image digest.
func upstreamWith(t *testing.T) (string, string) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return srv.URL, pushRandom(t, srv, 4096, 2)
}

// pushRandom pushes a random image as team/app:v1 to the registry srv
// serves (plain HTTP or TLS) and returns its digest.
func pushRandom(t *testing.T, srv *httptest.Server, size int64, layers int64) string {
	t.Helper()
	img := pushImage(t, srv.URL, "team/app:v1", size, layers, remote.WithTransport(srv.Client().Transport))
	d, _ := img.Digest()
	return d.String()
}

// pushImage pushes a random image of the given number of layers of size
// bytes as repoTag to the registry at url (http:// or https://) and
// returns it.
func pushImage(t *testing.T, url, repoTag string, size, layers int64, opts ...remote.Option) v1.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	host, tlsServer := strings.CutPrefix(url, "https://")
	var nameOpts []name.Option
	if !tlsServer {
		host, nameOpts = strings.TrimPrefix(url, "http://"), []name.Option{name.Insecure}
	}
	ref, err := name.ParseReference(host+"/"+repoTag, nameOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPrefetchCommand runs "prefetch" on a temporary cache directory: the
// JSON report names the image, the cache holds it and its pin, and a
// failed image makes exit status 2.
func TestPrefetchCommand(t *testing.T) {
	t.Parallel()
	url, dgst := upstreamWith(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "cache")
	listFile := filepath.Join(dir, "images-list.txt")
	if err := os.WriteFile(listFile, []byte("##apps\nteam/app:v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"prefetch", "--root", root, "--upstream", "docker.io=" + url, "--log-level", "error",
		"-f", listFile, "-o", "json", "--concurrency", "2"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("prefetch: %v\n%s", err, out.String())
	}
	var rep prefetch.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(rep.Images) != 1 || rep.Images[0].Ref != "docker.io/team/app:v1" || string(rep.Images[0].Digest) != dgst ||
		rep.Totals.Blobs != 3 || rep.Totals.UpstreamBytes == 0 {
		t.Fatalf("report: %+v", rep)
	}
	store, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if tag, err := store.GetTag(t.Context(), "docker.io/team/app", "v1"); err != nil || tag.Digest.String() != dgst {
		t.Fatalf("cached tag: %v %v", tag, err)
	}
	if pin, err := store.GetPin(t.Context(), "images-list.txt"); err != nil || len(pin.Images) != 1 {
		t.Fatalf("pin: %v %+v", err, pin)
	}

	// A missing image: text report, exit status 2.
	if err := os.WriteFile(listFile, []byte("team/app:v1\nteam/missing:v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	cmd = newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"prefetch", "--root", root, "--upstream", "docker.io=" + url, "--log-level", "error", "-f", listFile})
	err = cmd.ExecuteContext(t.Context())
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("want exit status 2, got %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "FAILED") || !strings.Contains(out.String(), "2 images (1 failed)") {
		t.Fatalf("text report:\n%s", out.String())
	}
}

func TestPrefetchCommandErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	list := filepath.Join(root, "l.txt")
	_ = os.WriteFile(list, []byte("unknown.example/x:1\n"), 0o644)
	for _, args := range [][]string{
		{"prefetch", "--root", root},                                // nothing to prefetch
		{"prefetch", "--root", root, "-f", "/does/not/exist"},       // unreadable list
		{"prefetch", "--root", root, "-f", list},                    // unknown registry
		{"prefetch", "--root", root, "-f", list, "-o", "yaml"},      // bad output
		{"prefetch", "--server", "ftp://x", "-f", list},             // bad server URL
		{"prefetch", "--root", root, "-f", list, "--platform", "/"}, // bad platform
	} {
		if err := run(t.Context(), args); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestExportImportCommands: export writes a bundle, import loads it into
// another cache directory, twice without change.
func TestExportImportCommands(t *testing.T) {
	t.Parallel()
	url, dgst := upstreamWith(t)
	dir := t.TempDir()
	listFile := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(listFile, []byte("team/app:v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bundle.tar")
	var stderr bytes.Buffer
	cmd := newRootCmd()
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"export", "--root", filepath.Join(dir, "a"), "--upstream", "docker.io=" + url,
		"--log-level", "error", "-f", listFile, "-o", out})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("export: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "exported 4 blobs") {
		t.Fatalf("export output:\n%s", stderr.String())
	}
	for i, want := range []string{"imported 4 blobs", "imported 0 blobs (0 B), 4 already present, 0 links, 0 tags"} {
		var stdout bytes.Buffer
		cmd = newRootCmd()
		cmd.SetOut(&stdout)
		cmd.SetArgs([]string{"import", "--root", filepath.Join(dir, "b"), out})
		if err := cmd.ExecuteContext(t.Context()); err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		if !strings.Contains(stdout.String(), want) {
			t.Fatalf("import %d: %s", i, stdout.String())
		}
	}
	store := newStoreAt(t, filepath.Join(dir, "b"))
	if tag, err := store.GetTag(t.Context(), "docker.io/team/app", "v1"); err != nil || tag.Digest.String() != dgst {
		t.Fatalf("imported tag: %v %v", tag, err)
	}
}

func newStoreAt(t *testing.T, root string) *storage.Store {
	t.Helper()
	s, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestPrefetchSkopeoSyncCertDir: a skopeo-sync file's cert-dir supplies the
// CA of a TLS upstream the config does not trust; without it the image fails.
func TestPrefetchSkopeoSyncCertDir(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	want := pushRandom(t, srv, 2048, 1)

	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs.d")
	if err := os.Mkdir(certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	prefetchYAML := func(extra string) []string {
		list := filepath.Join(dir, "sync.yaml")
		doc := "docker.io:\n  images:\n    team/app: [v1]\n" + extra
		if err := os.WriteFile(list, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"prefetch", "--root", filepath.Join(dir, "cache"), "--upstream", "docker.io=" + srv.URL,
			"--log-level", "error", "-f", list, "-o", "json"}
	}

	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs(prefetchYAML(""))
	var ee exitError
	if err := cmd.ExecuteContext(t.Context()); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("without cert-dir: want exit status 2, got %v\n%s", err, out.String())
	}
	var failed prefetch.Report
	if err := json.Unmarshal(out.Bytes(), &failed); err != nil || len(failed.Images) != 1 {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	// An unknown CA is not a passing fault: the image is tried once.
	if im := failed.Images[0]; im.Attempts != 1 || !strings.Contains(im.Error, "certificate") {
		t.Fatalf("without cert-dir: %d attempts, error %q", im.Attempts, im.Error)
	}

	out.Reset()
	cmd = newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs(prefetchYAML("  cert-dir: " + certDir + "\n"))
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("with cert-dir: %v\n%s", err, out.String())
	}
	var rep prefetch.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(rep.Images) != 1 || rep.Images[0].Digest.String() != want || rep.Images[0].Error != "" {
		t.Fatalf("report: %+v", rep.Images)
	}
}

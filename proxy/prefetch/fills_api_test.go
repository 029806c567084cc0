package prefetch_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/proxy/prefetch"
	"github.com/stowage/stowage/storage"
)

// TestAdminCancelFill: GET /api/v1/fills lists a running fill and DELETE
// /api/v1/fills/{digest} cancels it, behind the admin token: the client is
// cut short and nothing is committed.
func TestAdminCancelFill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, "")
	img, layer := testenv.RawBlobImage(t, 4<<20, 51)
	e.up.Push(t, "library/cancel:v1", img)
	ld, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d := digest.Digest(ld.String())
	e.up.SetFault(testenv.SlowBlobs(64<<10, 50*time.Millisecond))

	jobs, err := prefetch.NewJobs(e.engine(), 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	h, err := prefetch.NewAdminHandler(jobs, prefetch.AdminOptions{Token: testToken, Fills: e.proxy.FillsHandler()})
	if err != nil {
		t.Fatal(err)
	}
	admin := httptest.NewServer(h)
	pull := httptest.NewServer(e.proxy)
	t.Cleanup(func() {
		admin.Close()
		pull.Close()
		jobs.Close()
	})

	client := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, pull.URL+"/v2/library/cancel/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			client <- err
			return
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		if err == nil && resp.StatusCode == http.StatusOK {
			err = errors.New("complete 200")
		}
		client <- err
	}()

	if resp := call(t, http.MethodGet, admin.URL+"/api/v1/fills", "", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", resp.StatusCode)
	}
	if resp := call(t, http.MethodDelete, admin.URL+"/api/v1/fills/"+d.String(), "wrong", "", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("DELETE with a wrong token: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var fills []proxy.FillInfo
		call(t, http.MethodGet, admin.URL+"/api/v1/fills", testToken, "", "", &fills)
		if len(fills) == 1 && fills[0].Digest == d && fills[0].Repo == "library/cancel" && fills[0].Clients == 1 && fills[0].Written > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fill not listed: %+v", fills)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp := call(t, http.MethodDelete, admin.URL+"/api/v1/fills/"+d.String(), testToken, "", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if err := <-client; err != nil && err.Error() == "complete 200" {
		t.Fatal("the client of a cancelled fill got a complete body")
	}
	if _, err := e.store.StatBlob(context.Background(), d); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("cancelled fill committed (or store error): %v", err)
	}
	if resp := call(t, http.MethodDelete, admin.URL+"/api/v1/fills/"+d.String(), testToken, "", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("DELETE of no fill: %d", resp.StatusCode)
	}
}

package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// WeedEnv names the environment variable holding the path of a SeaweedFS
// `weed` binary; .ci/test.sh builds one (.ci/lib.sh need_weed) and sets it.
const WeedEnv = "STOWAGE_WEED"

// S3Server is a real S3-compatible server (SeaweedFS) on loopback, for the
// object-storage tests. Its S3 API accepts anonymous requests.
type S3Server struct {
	// Endpoint is the S3 API's URL, e.g. http://127.0.0.1:41234.
	Endpoint string
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

// StartS3 starts SeaweedFS (`weed server` with its S3 gateway) in a
// temporary directory, on free loopback ports, and stops it when t ends.
// Without STOWAGE_WEED it skips t (a developer machine), except in CI
// (CI set) where the object-storage tests must run: then it fails.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := os.Getenv(WeedEnv)
	if bin == "" {
		msg := WeedEnv + " is not set: the object-storage tests need a SeaweedFS weed binary " +
			"(`. .ci/lib.sh && need_weed` builds one; .ci/test.sh sets it)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	ports := freePorts(t, 8)
	s3Port := ports[6]
	args := []string{
		"server",
		"-dir=" + dir,
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port=" + ports[0], "-master.port.grpc=" + ports[1],
		"-volume.port=" + ports[2], "-volume.port.grpc=" + ports[3],
		"-filer", "-filer.port=" + ports[4], "-filer.port.grpc=" + ports[5],
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + s3Port, "-s3.port.grpc=" + ports[7],
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-master.telemetry=false",
		"-master.volumeSizeLimitMB=256",
		"-volume.max=0",
	}
	logPath := filepath.Join(dir, "weed.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	// Its own process group, so that stopping it stops every child.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	s := &S3Server{Endpoint: "http://127.0.0.1:" + s3Port, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(s.exited) }()
	t.Cleanup(s.stop)
	// A bucket can be created once master, volume, filer and gateway are
	// up: try for at most 90 s (a loaded CI machine).
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := s.createBucket("stowage-ready")
		if err == nil {
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("weed exited during start-up: %v\n%s", err, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("SeaweedFS S3 not ready after 90s: %v\n%s", err, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// NewBucket creates a fresh bucket and returns its name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	var id [6]byte
	_, _ = rand.Read(id[:])
	name := "stowage-" + hex.EncodeToString(id[:])
	if err := s.createBucket(name); err != nil {
		t.Fatal(err)
	}
	return name
}

// DriverParameters returns parameters of the s3 driver for bucket on this
// server (anonymous, path style, plain HTTP), as a storage.s3 config
// section would hold them.
func (s *S3Server) DriverParameters(bucket, rootDirectory string) map[string]any {
	return map[string]any{
		"bucket":         bucket,
		"region":         "us-east-1",
		"regionendpoint": s.Endpoint,
		"forcepathstyle": true,
		"secure":         false,
		"rootdirectory":  rootDirectory,
		// Anonymous on SeaweedFS; the driver signs with these anyway.
		"accesskey": "stowage",
		"secretkey": "stowage-secret",
	}
}

func (s *S3Server) createBucket(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.Endpoint+"/"+name, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("create bucket %s: %s", name, resp.Status)
	}
	return nil
}

func (s *S3Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

func (s *S3Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePorts returns n distinct free loopback ports.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}

package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// WeedEnv names the environment variable holding the path of a SeaweedFS
// `weed` binary; .ci/test.sh builds one (.ci/lib.sh need_weed) and sets it.
const WeedEnv = "STOWAGE_WEED"

// The credentials of the one identity an S3Server knows.
const (
	S3AccessKey = "stowage"
	S3SecretKey = "stowage-secret"
)

// S3Server is a real S3-compatible server (SeaweedFS) on loopback, for the
// object-storage tests. Its S3 API takes requests signed with S3AccessKey
// and S3SecretKey.
type S3Server struct {
	// Endpoint is the S3 API's URL, e.g. http://127.0.0.1:41234.
	Endpoint string
	client   *s3.S3
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

// StartS3 starts SeaweedFS (`weed server` with its S3 gateway) in a
// temporary directory, on free loopback ports, and stops it when t ends.
// Without STOWAGE_WEED it skips t (a developer machine), except in CI
// (CI set) where the object-storage tests must run: then it fails. t must
// not be parallel (it sets AWS_CA_BUNDLE).
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
	// With AWS_CA_BUNDLE set, the AWS SDK installs its CA bundle into
	// http.DefaultClient's transport whenever a driver is created (a
	// process-wide write that races with any test client using it). The
	// server is plain HTTP: no bundle. (t.Setenv: not in parallel tests.)
	t.Setenv("AWS_CA_BUNDLE", "")
	dir := t.TempDir()
	// One identity: signed requests are checked, as on a real store (an
	// unknown key would be retried by the SDK for seconds).
	ident := fmt.Sprintf(`{"identities":[{"name":"stowage","credentials":[{"accessKey":%q,"secretKey":%q}],`+
		`"actions":["Admin","Read","Write","List","Tagging"]}]}`, S3AccessKey, S3SecretKey)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(ident), 0o600); err != nil {
		t.Fatal(err)
	}
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
		"-s3.config=" + filepath.Join(dir, "s3.json"),
		"-master.telemetry=false",
		"-master.volumeSizeLimitMB=256",
		"-volume.max=0",
	}
	logPath := filepath.Join(dir, "weed.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// Stopped by the cleanup (TERM to its group, then KILL), not by a context.
	cmd := exec.CommandContext(context.Background(), bin, args...)
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
	s.client = s3.New(session.Must(session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(S3AccessKey, S3SecretKey, "")).
		WithEndpoint(s.Endpoint).WithRegion("us-east-1").
		WithS3ForcePathStyle(true).WithDisableSSL(true).WithMaxRetries(0))))
	// Ready once master, volume, filer and gateway take a bucket and an
	// object (the first write of a fresh server takes seconds): try for
	// at most 90 s (a loaded CI machine).
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := s.createBucket("stowage-ready")
		if err == nil {
			err = s.put("stowage-ready", "warm-up")
		}
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
// server (path style, plain HTTP), as a storage.s3 config section would
// hold them.
func (s *S3Server) DriverParameters(bucket, rootDirectory string) map[string]any {
	return map[string]any{
		"bucket":         bucket,
		"region":         "us-east-1",
		"regionendpoint": s.Endpoint,
		"forcepathstyle": true,
		"secure":         false,
		"rootdirectory":  rootDirectory,
		"accesskey":      S3AccessKey,
		"secretkey":      S3SecretKey,
	}
}

func (s *S3Server) createBucket(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.client.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	var ae awserr.Error
	if errors.As(err, &ae) && (ae.Code() == s3.ErrCodeBucketAlreadyOwnedByYou || ae.Code() == s3.ErrCodeBucketAlreadyExists) {
		return nil
	}
	return err
}

func (s *S3Server) put(bucket, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := s.client.PutObjectWithContext(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(key),
	})
	return err
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
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}

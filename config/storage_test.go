package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A distribution registry's storage.s3 section carries over unchanged.
func TestLoadS3DistributionParameters(t *testing.T) {
	cfg, err := Load(strings.NewReader(`
storage:
  driver: s3
  redirect: true
  s3:
    accesskey: AKIA
    secretkey: secret
    region: us-east-1
    regionendpoint: http://127.0.0.1:8333
    forcepathstyle: true
    bucket: registry
    encrypt: false
    secure: false
    skipverify: true
    v4auth: true
    chunksize: 5242880
    rootdirectory: /cache
    storageclass: STANDARD
`))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Storage.Redirect || cfg.Storage.Driver != "s3" {
		t.Fatalf("storage %+v", cfg.Storage)
	}
	p, err := cfg.Storage.S3DriverParameters()
	if err != nil {
		t.Fatal(err)
	}
	if p["bucket"] != "registry" || p["forcepathstyle"] != true || p["chunksize"] != 5242880 || p["secretkey"] != "secret" {
		t.Fatalf("parameters %v", p)
	}
}

func TestLoadS3Invalid(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown parameter":   "storage: {driver: s3, s3: {bucket: b, region: us-east-1, regionEndpoint: x}}",
		"no bucket":           "storage: {driver: s3, s3: {region: us-east-1}}",
		"no region":           "storage: {driver: s3, s3: {bucket: b}}",
		"two secrets":         "storage: {driver: s3, s3: {bucket: b, region: r, secretkey: a, secretkey_env: B}}",
		"redirect on a disk":  "storage: {driver: filesystem, root: /x, redirect: true}",
		"unknown driver":      "storage: {driver: gcs}",
		"negative redis time": "redis: {timeout: -1s}",
	} {
		if _, err := Load(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: accepted %s", name, doc)
		}
	}
}

func TestS3SecretsFromFileAndEnv(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STOWAGE_TEST_S3_AK", "from-env")
	s := Storage{Driver: "s3", S3: map[string]any{
		"bucket": "b", "region": "us-east-1",
		"accesskey_env": "STOWAGE_TEST_S3_AK", "secretkey_file": f,
	}}
	p, err := s.S3DriverParameters()
	if err != nil {
		t.Fatal(err)
	}
	if p["accesskey"] != "from-env" || p["secretkey"] != "from-file" {
		t.Fatalf("parameters %v", p)
	}
	if _, ok := p["secretkey_file"]; ok {
		t.Error("secretkey_file passed on to the driver")
	}
	s.S3["accesskey_env"] = "STOWAGE_TEST_S3_UNSET"
	if _, err := s.S3DriverParameters(); err == nil {
		t.Error("an unset environment variable accepted")
	}
	s.S3["accesskey_env"] = "STOWAGE_TEST_S3_AK"
	s.S3["secretkey_file"] = filepath.Join(t.TempDir(), "missing")
	if _, err := s.S3DriverParameters(); err == nil {
		t.Error("a missing secret file accepted")
	}
}

func TestRedisTimeoutDefault(t *testing.T) {
	cfg, err := Load(strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Timeout != 500*time.Millisecond {
		t.Fatalf("redis.timeout default %v", cfg.Redis.Timeout)
	}
}

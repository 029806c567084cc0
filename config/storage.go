package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
)

// s3DriverKeys are the parameters distribution's s3-aws driver (v3.1)
// reads, under its own names.
var s3DriverKeys = []string{
	"accelerate", "accesskey", "bucket", "chunksize", "encrypt", "forcepathstyle",
	"keyid", "loglevel", "multipartcopychunksize", "multipartcopymaxconcurrency",
	"multipartcopythresholdsize", "objectacl", "redirectendpoint", "region",
	"regionendpoint", "rootdirectory", "secretkey", "secure", "skipverify",
	"storageclass", "usedualstack", "usefipsendpoint", "useragent", "v4auth",
}

// s3Secrets are the parameters that may also come from a file (<name>_file)
// or an environment variable (<name>_env).
var s3Secrets = []string{"accesskey", "secretkey"}

func knownS3Key(k string) bool {
	if slices.Contains(s3DriverKeys, k) {
		return true
	}
	for _, s := range s3Secrets {
		if k == s+"_file" || k == s+"_env" {
			return true
		}
	}
	return false
}

func validateS3(p map[string]any) []error {
	var errs []error
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !knownS3Key(k) {
			errs = append(errs, fmt.Errorf("storage.s3.%s: unknown parameter of the s3 driver", k))
		}
	}
	if b, _ := p["bucket"].(string); b == "" {
		errs = append(errs, errors.New("storage.s3.bucket is required for the s3 driver"))
	}
	if p["region"] == nil && p["regionendpoint"] == nil {
		errs = append(errs, errors.New("storage.s3 needs a region (AWS) or a regionendpoint (another S3-compatible store)"))
	}
	for _, s := range s3Secrets {
		n := 0
		for _, k := range []string{s, s + "_file", s + "_env"} {
			if v, ok := p[k]; ok && v != nil && fmt.Sprint(v) != "" {
				n++
			}
		}
		if n > 1 {
			errs = append(errs, fmt.Errorf("storage.s3: set only one of %s, %s_file and %s_env", s, s, s))
		}
	}
	return errs
}

// S3DriverParameters returns the s3 driver's parameters with the secrets
// given as <name>_file or <name>_env resolved (file contents without the
// trailing newline; an environment variable that is unset or empty is an
// error). Parameters left out keep the driver's defaults; without access
// keys the AWS SDK's standard credential chain applies.
func (s Storage) S3DriverParameters() (map[string]any, error) {
	out := make(map[string]any, len(s.S3))
	for k, v := range s.S3 {
		if slices.Contains(s3DriverKeys, k) {
			out[k] = v
		}
	}
	for _, name := range s3Secrets {
		if f, _ := s.S3[name+"_file"].(string); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("storage.s3.%s_file: %w", name, err)
			}
			v := strings.TrimRight(string(b), "\r\n")
			if v == "" {
				return nil, fmt.Errorf("storage.s3.%s_file: %s is empty", name, f)
			}
			out[name] = v
		}
		if e, _ := s.S3[name+"_env"].(string); e != "" {
			v := os.Getenv(e)
			if v == "" {
				return nil, fmt.Errorf("storage.s3.%s_env: environment variable %s is not set", name, e)
			}
			out[name] = v
		}
	}
	return out, nil
}

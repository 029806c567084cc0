package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes written with a unit: "200GiB", "512MiB"
// (binary, powers of 1024) or "20GB", "500MB" (decimal, powers of 1000);
// a plain number is bytes. It marshals back in binary units when exact.
type ByteSize int64

// UnmarshalText parses a size with go-units: a unit with an "i" (KiB,
// MiB, GiB, TiB) is binary, any other (KB, MB, G, B) decimal, so "20GB"
// means what a disk vendor means and "20GiB" what df -h shows.
func (b *ByteSize) UnmarshalText(text []byte) error {
	n, err := parseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

// MarshalText writes the size in the largest exact binary unit.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String is the size in the largest binary unit that divides it exactly.
func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"TiB", units.TiB}, {"GiB", units.GiB}, {"MiB", units.MiB}, {"KiB", units.KiB}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	var (
		n   int64
		err error
	)
	if strings.ContainsAny(s, "iI") {
		n, err = units.RAMInBytes(s)
	} else {
		n, err = units.FromHumanSize(s)
	}
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with a unit such as 200GiB or 20GB", s)
	}
	return n, nil
}

// FreeSpace is the free space to keep on the cache's filesystem: a share
// of its size ("10%") or an absolute size ("20GiB"). The zero value keeps
// nothing free.
type FreeSpace struct {
	// Percent is the share of the filesystem's size, 0-100, when set.
	Percent float64
	// Bytes is the absolute amount, when Percent is 0.
	Bytes int64
}

// UnmarshalText parses "10%", "2.5%" or a ByteSize.
func (f *FreeSpace) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v >= 100 {
			return fmt.Errorf("min_free %q: a percentage must be a number from 0 to below 100", s)
		}
		*f = FreeSpace{Percent: v}
		return nil
	}
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*f = FreeSpace{Bytes: n}
	return nil
}

// MarshalText writes "10%" or a ByteSize.
func (f FreeSpace) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

func (f FreeSpace) String() string {
	if f.Percent > 0 {
		return strconv.FormatFloat(f.Percent, 'f', -1, 64) + "%"
	}
	return ByteSize(f.Bytes).String()
}

// Of returns the bytes to keep free on a filesystem of total bytes.
func (f FreeSpace) Of(total uint64) uint64 {
	if f.Percent > 0 {
		return uint64(float64(total) * f.Percent / 100)
	}
	return uint64(max(f.Bytes, 0))
}

// DefaultEvictGrace is cache.evict_grace's default.
const DefaultEvictGrace = 10 * time.Minute

// validateEviction checks the size-cap and eviction settings.
func (c Cache) validateEviction() []error {
	var errs []error
	if c.VerifySample < 0 || c.VerifySample > 1 {
		errs = append(errs, fmt.Errorf("cache.verify_sample must be between 0 and 1, not %v", c.VerifySample))
	}
	if c.MaxSize < 0 {
		errs = append(errs, errors.New("cache.max_size must not be negative"))
	}
	if c.MinFree.Bytes < 0 || c.MinFree.Percent < 0 || c.MinFree.Percent >= 100 {
		errs = append(errs, errors.New("cache.min_free must be a size or a percentage below 100%"))
	}
	if c.EvictAfter < 0 {
		errs = append(errs, errors.New("cache.evict_after must not be negative"))
	}
	if c.EvictGrace < time.Minute {
		// The grace period is also what makes gc safe beside a running
		// server: it must outlast the access-time persistence interval.
		errs = append(errs, errors.New("cache.evict_grace must be at least 1m"))
	}
	if c.EvictAfter > 0 && c.EvictAfter.Std() < c.EvictGrace {
		errs = append(errs, errors.New("cache.evict_after must be 0 or at least cache.evict_grace"))
	}
	return errs
}

// Duration is a time.Duration that YAML may also write as a bare 0
// ("evict_after: 0"), which time.Duration's decoding refuses.
type Duration time.Duration

// UnmarshalYAML accepts a Go duration ("720h", "30m") or the number 0.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 720h", n.Line)
	}
	if v := strings.TrimSpace(n.Value); v == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("line %d: %q: want a duration such as 720h, or 0", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as Go prints it.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

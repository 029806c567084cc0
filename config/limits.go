package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits caps what Stowage takes from one upstream. Zero values mean no
// limit. Bandwidth holds for the cluster when Redis is configured (the
// replicas share one budget), else for each process; Connections always
// holds per process.
type Limits struct {
	// Bandwidth caps the bytes per second received from this upstream
	// (response bodies: blobs, manifests, tag lists), e.g. "4MB/s",
	// "10MiB/s" or "50Mbit/s". 0 means no cap.
	Bandwidth Bandwidth `yaml:"bandwidth"`
	// Connections caps the concurrent requests to this upstream: a request
	// holds its slot from its start until its body is closed. Prefetch
	// requests never take the last free slot (when Connections > 1). 0
	// means no cap.
	Connections int `yaml:"connections"`
}

// Link is the budget of the network path that several upstreams share:
// every upstream reached through the same forward proxy (the same proxy
// host and port after the upstream's proxy and no_proxy settings) draws
// from one budget of Bandwidth. Each distinct proxy is its own link.
// Traffic sent without a proxy is not a link unless Direct is true.
type Link struct {
	// Bandwidth caps the bytes per second received through one forward
	// proxy, summed over all upstreams, e.g. "10MB/s". 0 means no cap.
	// With Redis configured the replicas share the budget; without, each
	// process has its own.
	Bandwidth Bandwidth `yaml:"bandwidth"`
	// PrefetchShare is the most prefetch traffic may take of a capped
	// budget (the link's, and an upstream's limits.bandwidth) while a
	// client is waiting on an upstream fetch, e.g. "30%". Client traffic
	// gets the rest; when no client is waiting, prefetch may use the whole
	// budget. "0%" stops prefetch while clients wait. Default 30%.
	PrefetchShare Percent `yaml:"prefetch_share"`
	// Direct makes the traffic sent without a forward proxy one more link
	// with the same Bandwidth (for a site whose internet uplink is the
	// shared path). Default false: direct traffic, such as an internal
	// mirror listed in no_proxy, is capped only by its upstream's limits.
	Direct bool `yaml:"direct"`
}

// Bandwidth is a rate in bytes per second. In YAML it is written with a
// unit: "4MB/s" (decimal: B, KB, MB, GB), "10MiB/s" (binary: KiB, MiB,
// GiB) or "50Mbit/s" (bits: kbit, Mbit, Gbit); "/s" may be left out, and a
// bare number is bytes per second. 0 means no limit.
type Bandwidth int64

var bandwidthUnits = []struct {
	suffix string
	factor float64
}{
	// Longest suffixes first, so "MiB" is not read as "B".
	{"kbit", 1e3 / 8}, {"Kbit", 1e3 / 8}, {"Mbit", 1e6 / 8}, {"Gbit", 1e9 / 8},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"B", 1},
}

// ParseBandwidth parses a bandwidth such as "4MB/s" (see Bandwidth).
func ParseBandwidth(s string) (Bandwidth, error) {
	v := strings.TrimSpace(s)
	v = strings.TrimSpace(strings.TrimSuffix(v, "/s"))
	if v == "" {
		return 0, fmt.Errorf("bandwidth %q: empty", s)
	}
	factor := 1.0
	for _, u := range bandwidthUnits {
		if strings.HasSuffix(v, u.suffix) {
			factor = u.factor
			v = strings.TrimSpace(strings.TrimSuffix(v, u.suffix))
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("bandwidth %q: want a number with a unit such as 4MB/s, 10MiB/s or 50Mbit/s", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("bandwidth %q: must not be negative", s)
	}
	b := f * factor
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("bandwidth %q: too large", s)
	}
	return Bandwidth(math.Round(b)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (YAML scalars).
func (b *Bandwidth) UnmarshalText(text []byte) error {
	v, err := ParseBandwidth(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText writes the largest unit that divides the value exactly.
func (b Bandwidth) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String is the value with a unit, e.g. "4MB/s"; "0" for no limit.
func (b Bandwidth) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		f    int64
	}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if int64(b)%u.f == 0 {
			return strconv.FormatInt(int64(b)/u.f, 10) + u.name + "/s"
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B/s"
}

// Percent is a share between 0 and 100, written "30%" (or 30) in YAML.
type Percent float64

// ParsePercent parses "30%", "12.5%" or "30".
func ParsePercent(s string) (Percent, error) {
	v := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) {
		return 0, fmt.Errorf("percentage %q: want a number such as 30%%", s)
	}
	return Percent(f), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (YAML scalars).
func (p *Percent) UnmarshalText(text []byte) error {
	v, err := ParsePercent(string(text))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText writes "30%".
func (p Percent) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// String is the value with a percent sign.
func (p Percent) String() string {
	return strconv.FormatFloat(float64(p), 'f', -1, 64) + "%"
}

// Fraction is the share as a number between 0 and 1.
func (p Percent) Fraction() float64 { return float64(p) / 100 }

func validateLimits(host string, l Limits) []error {
	var errs []error
	if l.Bandwidth < 0 {
		errs = append(errs, fmt.Errorf("upstreams.%s: limits.bandwidth must not be negative", host))
	}
	if l.Connections < 0 {
		errs = append(errs, fmt.Errorf("upstreams.%s: limits.connections must not be negative", host))
	}
	return errs
}

func validateLink(l Link) []error {
	var errs []error
	if l.Bandwidth < 0 {
		errs = append(errs, errors.New("link.bandwidth must not be negative"))
	}
	if l.PrefetchShare < 0 || l.PrefetchShare > 100 {
		errs = append(errs, fmt.Errorf("link.prefetch_share %s: want between 0%% and 100%%", l.PrefetchShare))
	}
	return errs
}

package config

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Cluster configures how replicas that share one cache (one storage
// backend, one Redis) talk to each other.
type Cluster struct {
	// Listen is the address of the internal listener from which other
	// replicas stream this replica's running fills (peer streaming), e.g.
	// ":5001". Empty turns peer streaming off: a replica then waits for
	// another replica's commit before its clients get a byte. It must
	// differ from listen: the internal endpoint is never served on the
	// client API. Requires redis.addr and a secret.
	Listen string `yaml:"listen"`
	// Advertise is the URL other replicas reach this replica's internal
	// listener at, e.g. "http://10.1.2.3:5001"; ${VAR} is expanded from the
	// environment (e.g. ${POD_IP} from the Kubernetes downward API). It is
	// stored with every fill lease this replica holds. Default:
	// http://<first non-loopback IP of this host>:<port of listen>.
	Advertise string `yaml:"advertise"`
	// SecretEnv names an environment variable holding the shared secret
	// the replicas authenticate each other with (the same on every
	// replica, at least 16 bytes).
	SecretEnv string `yaml:"secret_env"`
	// SecretFile is a file holding the secret (e.g. a mounted Kubernetes
	// Secret), used when SecretEnv is empty or the variable unset.
	SecretFile string `yaml:"secret_file"`
	// StallTimeout ends a peer stream that delivered nothing for this long
	// (a hung owner); the replica resumes it, or waits for the commit.
	// Default 10s.
	StallTimeout time.Duration `yaml:"stall_timeout"`
}

// defaultClusterStall is Cluster.StallTimeout when left at zero.
const defaultClusterStall = 10 * time.Second

// PeerStall is the effective stall timeout of a peer stream.
func (c Cluster) PeerStall() time.Duration {
	if c.StallTimeout <= 0 {
		return defaultClusterStall
	}
	return c.StallTimeout
}

// validateCluster checks the cluster section against the rest.
func (c *Config) validateCluster() []error {
	cl := c.Cluster
	if cl.Listen == "" {
		return nil
	}
	var errs []error
	if _, _, err := net.SplitHostPort(cl.Listen); err != nil {
		errs = append(errs, fmt.Errorf("cluster.listen %q: %w", cl.Listen, err))
	}
	if cl.Listen == c.Listen {
		errs = append(errs, errors.New("cluster.listen must differ from listen: the internal endpoint is never served on the client API"))
	}
	if c.Redis.Addr == "" {
		errs = append(errs, errors.New("cluster.listen needs redis.addr: the owner of a fill is found through its Redis lease"))
	}
	if cl.SecretEnv == "" && cl.SecretFile == "" {
		errs = append(errs, errors.New("cluster.listen needs cluster.secret_env or cluster.secret_file"))
	}
	if cl.StallTimeout < 0 {
		errs = append(errs, errors.New("cluster.stall_timeout must not be negative"))
	}
	return errs
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy"
	"github.com/stowage/stowage/proxy/cluster"
)

// clusterSecret reads the peer streaming secret: cluster.secret_env first,
// then cluster.secret_file.
func clusterSecret(c config.Cluster) ([]byte, error) {
	var s string
	if c.SecretEnv != "" {
		s = strings.TrimSpace(os.Getenv(c.SecretEnv))
	}
	if s == "" && c.SecretFile != "" {
		b, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.secret_file: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	if len(s) < 16 {
		return nil, errors.New("cluster: the secret (cluster.secret_env or cluster.secret_file) must be at least 16 bytes")
	}
	return []byte(s), nil
}

// advertiseURL is cluster.advertise with ${VAR} expanded, or
// http://<first non-loopback IP>:<port of cluster.listen>.
func advertiseURL(c config.Cluster) (string, error) {
	if c.Advertise != "" {
		return os.ExpandEnv(c.Advertise), nil
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("cluster.listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return "http://" + net.JoinHostPort(host, port), nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("cluster.advertise: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() && n.IP.To4() != nil {
			return "http://" + net.JoinHostPort(n.IP.String(), port), nil
		}
	}
	return "", errors.New("cluster.advertise: no non-loopback address found; set it")
}

// peerOptions turns peer streaming on when cluster.listen is set: the leases
// carry this replica's internal URL, the proxy authenticates with the
// secret.
func peerOptions(cfg *config.Config, leases *cluster.RedisLeases) ([]proxy.Option, error) {
	if cfg.Cluster.Listen == "" {
		return nil, nil
	}
	secret, err := clusterSecret(cfg.Cluster)
	if err != nil {
		return nil, err
	}
	u, err := advertiseURL(cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if err := leases.Advertise(u); err != nil {
		return nil, fmt.Errorf("cluster.advertise: %w", err)
	}
	return []proxy.Option{proxy.WithPeers(proxy.PeerConfig{Secret: secret, Stall: cfg.Cluster.PeerStall()})}, nil
}

// internalServer is the internal listener (cluster.listen) serving only
// the peer streaming endpoint; nil when off.
type internalServer struct {
	ln  net.Listener
	srv *http.Server
}

func listenInternal(ctx context.Context, cfg *config.Config, p *proxy.Proxy, log *slog.Logger) (*internalServer, error) {
	if cfg.Cluster.Listen == "" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Cluster.Listen)
	if err != nil {
		return nil, fmt.Errorf("cluster.listen: %w", err)
	}
	log.Info("serving peer streaming", "listen", ln.Addr().String())
	return &internalServer{ln: ln, srv: &http.Server{
		Handler:           p.PeerHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

func (s *internalServer) serve() error {
	if s == nil {
		return nil
	}
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *internalServer) shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

// close cuts the internal listener and its streams (the shutdown deadline
// passed).
func (s *internalServer) close() error {
	if s == nil {
		return nil
	}
	return s.srv.Close()
}

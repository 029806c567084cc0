package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/proxy/internal/peer"
	"github.com/stowage/stowage/upstream"
)

// PeerConfig enables peer streaming: a replica that waits for another
// replica's fill streams its bytes through that replica's internal
// endpoint (Proxy.PeerHandler, served on a separate listener) instead of
// waiting for the commit. The coordinator must record the owner's
// internal URL with the lease (LeaseOwners).
type PeerConfig struct {
	// Secret authenticates replicas to each other (a bearer token,
	// compared in constant time). At least 16 bytes.
	Secret []byte
	// Client makes the requests to other replicas (default: a client with
	// dial and response-header timeouts and no overall timeout).
	Client *http.Client
	// Stall ends a peer stream that delivered nothing for this long
	// (default 10s); the waiting replica then resumes, or waits for the
	// commit.
	Stall time.Duration
}

// LeaseOwners is implemented by coordinators that record who holds a lease:
// the owner's id and the URL of its internal endpoint ("" when nobody holds
// key, or the owner advertises none).
type LeaseOwners interface {
	LeaseOwner(ctx context.Context, key string) (id, url string, err error)
}

// WithPeers enables peer streaming between replicas (see PeerConfig).
func WithPeers(c PeerConfig) Option {
	return func(o *options) { o.peers = &c }
}

// peering is the state of peer streaming of one Proxy.
type peering struct {
	token  string
	secret [sha256.Size]byte
	client *http.Client
	stall  time.Duration
	owners LeaseOwners // nil: streaming from others is off (serving stays on)
	// streams counts follows by outcome; received counts streamed bytes.
	streams  *prometheus.CounterVec
	received prometheus.Counter

	mu          sync.Mutex
	downloading map[digest.Digest]*fill.Fill // the fills this replica downloads under a lease
}

func newPeering(c *PeerConfig, coord Coordinator, reg prometheus.Registerer, log *slog.Logger) (*peering, error) {
	if len(c.Secret) < 16 {
		return nil, errors.New("proxy: the peer streaming secret must be at least 16 bytes")
	}
	pr := &peering{token: string(c.Secret), secret: sha256.Sum256(c.Secret), client: c.Client, stall: c.Stall,
		downloading: map[digest.Digest]*fill.Fill{}}
	if pr.client == nil {
		pr.client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // replicas talk directly
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: time.Minute, // the owner answers once its upstream gave the size
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       time.Minute,
		}}
	}
	if pr.stall <= 0 {
		pr.stall = 10 * time.Second
	}
	pr.owners, _ = coord.(LeaseOwners)
	if pr.owners == nil {
		log.Warn("peer streaming: the fill coordinator records no lease owners; this replica serves its fills but waits for other replicas' commits")
	}
	pr.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stowage_peer_streams_total",
		Help: "Fills streamed from another replica, by outcome: complete, owner_gone (waited for the commit or took over), failed.",
	}, []string{"outcome"})
	pr.received = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "stowage_peer_bytes_total",
		Help: "Bytes streamed from other replicas' running fills.",
	})
	for _, c := range []prometheus.Collector{pr.streams, pr.received} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: metrics: %w", err)
		}
	}
	return pr, nil
}

// owned records f as downloaded by this replica under the lease (served to
// other replicas) until the returned function is called.
func (pr *peering) owned(f *fill.Fill) func() {
	if pr == nil {
		return func() {}
	}
	pr.mu.Lock()
	pr.downloading[f.Digest()] = f
	pr.mu.Unlock()
	return func() {
		pr.mu.Lock()
		if pr.downloading[f.Digest()] == f {
			delete(pr.downloading, f.Digest())
		}
		pr.mu.Unlock()
	}
}

func (pr *peering) lookup(d digest.Digest) (*fill.Fill, bool) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	f, ok := pr.downloading[d]
	return f, ok
}

// authorized compares the bearer token with the secret in constant time
// (both hashed first, so the length leaks nothing either).
func (pr *peering) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(got[:], pr.secret[:]) == 1
}

// PeerHandler serves the internal endpoint other replicas stream running
// fills from. It is never routed on the client API (ServeHTTP): serve it on
// its own listener (cluster.listen). Without WithPeers it refuses every
// request.
func (p *Proxy) PeerHandler() http.Handler {
	return http.HandlerFunc(p.servePeer)
}

func (p *Proxy) servePeer(w http.ResponseWriter, r *http.Request) {
	pr := p.peer
	if pr == nil || !pr.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="stowage-cluster"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	d, err := digest.Parse(strings.TrimPrefix(r.URL.Path, peer.PathPrefix))
	if err != nil || !strings.HasPrefix(r.URL.Path, peer.PathPrefix) {
		http.Error(w, "bad digest", http.StatusBadRequest)
		return
	}
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if r.URL.Query().Get("offset") == "" {
		off, err = 0, nil
	}
	if err != nil || off < 0 {
		http.Error(w, "bad offset", http.StatusBadRequest)
		return
	}
	f, ok := pr.lookup(d)
	var h *fill.Hold
	if ok {
		h, ok = f.Join()
	}
	if !ok {
		http.Error(w, "no running fill", http.StatusNotFound)
		return
	}
	held := true
	defer func() {
		if held {
			h.Release()
		}
	}()
	ctx := r.Context()
	size, cached, err := f.WaitSize(ctx)
	if err != nil || cached || size < 0 {
		// Ended, or no length from the upstream: the follower waits for
		// the commit.
		http.Error(w, "no stream", http.StatusNotFound)
		return
	}
	gen := f.Generation()
	if want := r.URL.Query().Get("gen"); want != "" && want != strconv.Itoa(gen) {
		http.Error(w, "the fill restarted", http.StatusConflict)
		return
	}
	if off > size {
		http.Error(w, "offset beyond the blob", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	rd := h.PeerReader(ctx, size, off, gen)
	held = false
	defer func() { _ = rd.Close() }()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Trailer", peer.TrailerEnd)
	hdr.Set(peer.HeaderSize, strconv.FormatInt(size, 10))
	hdr.Set(peer.HeaderOffset, strconv.FormatInt(off, 10))
	hdr.Set(peer.HeaderGeneration, strconv.Itoa(gen))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	end := p.copyPeer(w, rc, rd)
	if end != "" {
		hdr.Set(peer.TrailerEnd, end)
	}
}

// copyPeer streams a fill reader to another replica, flushing as bytes
// arrive, and returns the trailer to send ("" : none, a broken stream).
func (p *Proxy) copyPeer(w io.Writer, rc *http.ResponseController, rd *fill.Reader) string {
	buf := make([]byte, 64<<10)
	for {
		n, err := rd.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return ""
			}
			_ = rc.Flush()
		}
		switch {
		case errors.Is(err, io.EOF):
			return peer.EndOK
		case err == nil:
			continue
		case errors.Is(err, fill.ErrRestarted):
			return peer.EndRestarted
		case errors.Is(err, upstream.ErrDigestMismatch):
			return peer.EndDigest
		case errors.Is(err, fill.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			// Shutting down or the follower left: cut the stream, the
			// follower resumes elsewhere.
			return ""
		default:
			return peer.EndGone
		}
	}
}

// httpSource is peer.Source over the owner's internal endpoint.
type httpSource struct {
	pr  *peering
	url string
	d   digest.Digest
}

func (s *httpSource) Open(ctx context.Context, offset int64, gen string) (*peer.Stream, error) {
	u := strings.TrimSuffix(s.url, "/") + peer.PathPrefix + s.d.String() + "?offset=" + strconv.FormatInt(offset, 10)
	if gen != "" {
		u += "&gen=" + gen
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.pr.token)
	resp, err := s.pr.client.Do(req) //nolint:bodyclose // the body goes to the Stream, which the follower closes
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusNotFound:
			return nil, peer.ErrNoStream
		case http.StatusConflict:
			return nil, peer.ErrGeneration
		case http.StatusUnauthorized:
			return nil, peer.ErrUnauthorized
		}
		return nil, fmt.Errorf("owner answered %s", resp.Status)
	}
	size, err1 := strconv.ParseInt(resp.Header.Get(peer.HeaderSize), 10, 64)
	off, err2 := strconv.ParseInt(resp.Header.Get(peer.HeaderOffset), 10, 64)
	if err := errors.Join(err1, err2); err != nil || size < 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("owner answered without a size or offset: %w", err)
	}
	return &peer.Stream{Size: size, Offset: off, Gen: resp.Header.Get(peer.HeaderGeneration), Body: resp.Body,
		End: func() string { return resp.Trailer.Get(peer.TrailerEnd) }}, nil
}

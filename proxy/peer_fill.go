package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"

	"github.com/stowage/stowage/proxy/internal/fill"
	"github.com/stowage/stowage/proxy/internal/peer"
	"github.com/stowage/stowage/storage"
	"github.com/stowage/stowage/upstream"
)

// staged is a fill's staging file and the hash of its bytes. A fill creates
// it when it first writes: streaming from another replica, or downloading;
// a download that takes over from a stream goes on with the same file and
// hash.
type staged struct {
	st        *storage.Staging
	h         hash.Hash
	committed bool
	// confirmed: the upstream was asked whether the fill's repository has
	// the blob (confirmOwn).
	confirmed bool
	// sawOwner: another replica held the fill's lease before this one
	// took it; takeover: this fill took over from it or from a dead
	// owner's staging (takeoverMetrics).
	sawOwner, takeover bool
	// handedOver: the staging file was left for a taker (Proxy.handOver).
	handedOver bool
}

// confirmOwn asks the upstream, once per fill, whether the fill's own
// repository has the blob before this replica serves bytes that another
// replica downloaded, perhaps through another repository (a digest is no
// password). A repository-specific refusal fails the fill; an upstream
// that cannot be asked leaves the blob served but its repository unlinked.
func (p *Proxy) confirmOwn(ctx context.Context, f *fill.Fill, sg *staged, cacheRepo string) error {
	if sg.confirmed {
		return nil
	}
	link, err := p.confirmRepo(ctx, &request{host: f.Host(), repo: f.Repo(), cacheRepo: cacheRepo, dgst: f.Digest()})
	if err != nil {
		return err
	}
	sg.confirmed = true
	if !link {
		f.MarkUnlinked()
	}
	return nil
}

// linkFill links cacheRepo to a fill's blob unless the upstream could not
// confirm the repository.
func (p *Proxy) linkFill(ctx context.Context, f *fill.Fill, cacheRepo string) {
	if !f.Linkable() {
		return
	}
	if err := p.store.LinkBlob(ctx, cacheRepo, f.Digest()); err != nil {
		p.log.Warn("link blob", "repo", cacheRepo, "digest", f.Digest(), "err", err)
	}
}

// ensure creates and attaches the staging file on first use.
func (sg *staged) ensure(store *storage.Store, f *fill.Fill) (*storage.Staging, error) {
	if sg.st != nil {
		return sg.st, nil
	}
	st, err := store.NewStaging(f.Digest())
	if err != nil {
		return nil, err
	}
	f.Attach(st.IO()) // behind the Store's staging wrapper, if any (fault injection)
	sg.st, sg.h = st, f.Digest().Algorithm().Hash()
	return st, nil
}

// discard removes an uncommitted staging file.
func (sg *staged) discard(log *slog.Logger, f *fill.Fill) {
	if sg.st == nil || sg.committed || sg.handedOver {
		return
	}
	if err := sg.st.Discard(); err != nil {
		log.Error("remove staging file", "digest", f.Digest(), "err", err)
	}
}

// fillSink is peer.Sink over a local fill: what the owner streams is
// written, hashed and served to this replica's clients like a download.
type fillSink struct {
	p  *Proxy
	f  *fill.Fill
	sg *staged
}

func (s *fillSink) Progress() (int64, int64) { return s.f.Progress() }

func (s *fillSink) SetSize(n int64) error {
	if _, err := s.sg.ensure(s.p.store, s.f); err != nil {
		return err
	}
	return s.f.SetSize(n)
}

func (s *fillSink) Append(b []byte) error {
	if unwanted, since := s.f.Unwanted(); unwanted && since >= s.p.cfg.Cache.Fill.AbandonAfter {
		return fmt.Errorf("%w: unwanted for %s", fill.ErrAbandoned, since)
	}
	if err := s.f.Append(b); err != nil {
		return fmt.Errorf("write staging file: %w", err)
	}
	s.sg.h.Write(b)
	if s.p.peer != nil {
		s.p.peer.received.Add(float64(len(b)))
	}
	return nil
}

func (s *fillSink) Restart() error {
	if _, err := s.sg.ensure(s.p.store, s.f); err != nil {
		return err
	}
	s.sg.h.Reset()
	return s.f.Restart()
}

func (s *fillSink) Matches() bool {
	return fmt.Sprintf("%s:%x", s.f.Digest().Algorithm(), s.sg.h.Sum(nil)) == s.f.Digest().String()
}

// followPeer streams the owner's running fill into f. nil: f holds the
// verified blob; the owner has committed it (it releases the last byte
// after its commit), else this replica commits its own verified copy.
func (p *Proxy) followPeer(ctx context.Context, f *fill.Fill, sg *staged, fl *peer.Follower, cacheRepo string) error {
	if err := fl.Follow(ctx); err != nil {
		return err
	}
	f.MarkVerified()
	return p.commitStreamed(ctx, f, sg, cacheRepo)
}

// commitStreamed makes sure a verified streamed blob is in the store: the
// owner's commit, or this replica's own copy when that commit failed.
func (p *Proxy) commitStreamed(ctx context.Context, f *fill.Fill, sg *staged, cacheRepo string) error {
	if _, err := p.store.StatBlob(ctx, f.Digest()); err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync staging file: %w", err)
		}
		if err := p.store.CommitBlob(ctx, f.Digest(), sg.st); err != nil {
			return err
		}
		sg.committed = true
	}
	p.linkFill(ctx, f, cacheRepo)
	return nil
}

// finishFromStore completes a fill that streamed part of the blob from
// another replica which has committed it since: the rest comes from the
// store, and the whole is verified again. A fill that published nothing is
// left alone (the caller sends its readers to the store).
func (p *Proxy) finishFromStore(ctx context.Context, f *fill.Fill, sg *staged, cacheRepo string) error {
	size, written := f.Progress()
	if size < 0 || sg.st == nil {
		return nil
	}
	if err := p.confirmOwn(ctx, f, sg, cacheRepo); err != nil {
		return err
	}
	rs, info, err := p.store.OpenBlob(ctx, f.Digest())
	if err != nil {
		return err
	}
	defer rs.Close()
	if info.Size != size {
		return fmt.Errorf("%w: committed blob has %d bytes, the stream announced %d", upstream.ErrDigestMismatch, info.Size, size)
	}
	sink := &fillSink{p: p, f: f, sg: sg}
	for range 2 {
		if _, err := rs.Seek(written, io.SeekStart); err != nil {
			return err
		}
		if err := copyInto(sink, rs); err != nil {
			return err
		}
		if sink.Matches() {
			f.MarkVerified()
			p.linkFill(ctx, f, cacheRepo)
			return nil
		}
		// The streamed prefix was not the committed blob's: start over
		// from the store (readers that had bytes of it fail).
		if err := sink.Restart(); err != nil {
			return err
		}
		written = 0
	}
	return fmt.Errorf("%w: the committed blob does not hash to %s", upstream.ErrDigestMismatch, f.Digest())
}

func copyInto(s peer.Sink, r io.Reader) error {
	buf := make([]byte, chunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if aerr := s.Append(buf[:n]); aerr != nil {
				return aerr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

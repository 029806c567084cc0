package upstream

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// stallReader wraps a response body whose request runs under a context
// that cancel ends: if no byte arrives for d, it cancels the request, and
// the pending Read fails with ErrUnavailable. A body that keeps moving is
// never cut, and time the caller spends between Reads does not count.
// Close stops the timer and releases the request.
type stallReader struct {
	body    io.ReadCloser
	d       time.Duration
	timer   *time.Timer
	cancel  context.CancelFunc
	stalled atomic.Bool
	once    sync.Once
}

func newStallReader(body io.ReadCloser, d time.Duration, cancel context.CancelFunc) *stallReader {
	s := &stallReader{body: body, d: d, cancel: cancel}
	s.timer = time.AfterFunc(d, func() {
		s.stalled.Store(true)
		cancel()
	})
	s.timer.Stop()
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.stalled.Load() {
		return 0, fmt.Errorf("%w: body stalled: no data for %s", ErrUnavailable, s.d)
	}
	s.timer.Reset(s.d)
	n, err := s.body.Read(p)
	s.timer.Stop()
	if err != nil && err != io.EOF && s.stalled.Load() {
		return n, fmt.Errorf("%w: body stalled: no data for %s", ErrUnavailable, s.d)
	}
	if err != nil && err != io.EOF {
		return n, networkError(err)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.once.Do(func() { s.timer.Stop() })
	err := s.body.Close()
	s.cancel()
	return err
}

package fill

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/opencontainers/go-digest"
)

// TestReadAfterClose: net/http serves a multi-range request from a
// goroutine of its own, which can still call Read after the handler
// returned and closed the reader (a client write failed first). Such a
// Read, and one blocked in Read when Close comes, must end with an error:
// not crash the process on a released reader, not read a file that may be
// closed, and not race with Close or Err.
func TestReadAfterClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		defer reg.Close()
		more := make(chan struct{})
		h, _, err := reg.Join(Start{Digest: digest.FromString("x"), Run: func(ctx context.Context, f *Fill) error {
			f.Attach(&memFile{})
			if err := f.SetSize(100); err != nil {
				return err
			}
			if err := f.Append(make([]byte, 10)); err != nil {
				return err
			}
			select {
			case <-more:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if err := f.Append(make([]byte, 10)); err != nil {
				return err
			}
			<-ctx.Done()
			return context.Cause(ctx)
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.Fill().WaitSize(t.Context()); err != nil {
			t.Fatal(err)
		}
		rd := h.Reader(t.Context(), 100, false)
		p := make([]byte, 100)
		if n, err := rd.Read(p); n != 10 || err != nil {
			t.Fatalf("first read: %d %v", n, err)
		}
		// A Read blocked for more bytes when the handler closes the reader.
		type res struct {
			n   int
			err error
		}
		blocked := make(chan res, 1)
		go func() {
			n, err := rd.Read(p)
			blocked <- res{n, err}
		}()
		synctest.Wait()
		if err := rd.Close(); err != nil {
			t.Fatal(err)
		}
		close(more)
		synctest.Wait()
		if r := <-blocked; r.err == nil || r.n != 0 {
			t.Fatalf("read blocked across Close: %d bytes, %v; want an error", r.n, r.err)
		}
		// And a Read that starts after Close.
		n, err := rd.Read(p)
		if err == nil || n != 0 {
			t.Fatalf("read after Close: %d bytes, %v; want an error", n, err)
		}
		if !errors.Is(rd.Err(), ErrReaderClosed) {
			t.Fatalf("Err after Close: %v", rd.Err())
		}
		if err := rd.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

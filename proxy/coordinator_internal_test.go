package proxy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/proxy/internal/peer"
)

// TestAskFresh runs the asks of an owner seen for the first time step by
// step in a synctest bubble (fake time): which answers are asked again,
// how often, and after how long.
func TestAskFresh(t *testing.T) {
	noStream := fmt.Errorf("%w: %w", peer.ErrOwnerGone, peer.ErrNoStream)
	broken := fmt.Errorf("%w: connection refused", peer.ErrOwnerGone)
	for _, tc := range []struct {
		name    string
		answers []error // one per ask; past the end: nil
		cancel  time.Duration
		want    error
		asks    int
		elapsed time.Duration
	}{
		{name: "streams at once", answers: nil, asks: 1},
		{name: "no fill yet, then streams", answers: []error{noStream, noStream}, asks: 3, elapsed: 60 * time.Millisecond},
		{name: "no fill ever: bounded", answers: []error{noStream, noStream, noStream, noStream, noStream, noStream, noStream}, want: peer.ErrNoStream, asks: freshOwnerTries, elapsed: 300 * time.Millisecond},
		{name: "unreachable owner: not asked again", answers: []error{broken}, want: broken, asks: 1},
		{name: "failed verification: not asked again", answers: []error{peer.ErrOwnerFailed}, want: peer.ErrOwnerFailed, asks: 1},
		{name: "committed meanwhile ends the asks", answers: []error{noStream, errCommittedMeanwhile}, want: errCommittedMeanwhile, asks: 2, elapsed: 20 * time.Millisecond},
		{name: "the fill's end stops the waits", answers: []error{noStream, noStream, noStream}, cancel: 50 * time.Millisecond, want: context.Canceled, asks: 2, elapsed: 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tc.cancel > 0 {
					time.AfterFunc(tc.cancel, cancel)
				}
				asks := 0
				start := time.Now()
				err := askFresh(ctx, func() error {
					asks++
					if asks <= len(tc.answers) {
						return tc.answers[asks-1]
					}
					return nil
				})
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("err %v, want %v", err, tc.want)
				}
				if asks != tc.asks {
					t.Errorf("%d asks, want %d", asks, tc.asks)
				}
				if el := time.Since(start); el != tc.elapsed {
					t.Errorf("took %s (fake time), want %s", el, tc.elapsed)
				}
			})
		})
	}
}

package upstream

import (
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/stowage/stowage/config"
)

func TestMain(m *testing.M) {
	// distribution's handlers log through logrus' standard logger.
	logrus.SetOutput(io.Discard)
	goleak.VerifyTestMain(m,
		// distribution's App starts an events broadcaster it never stops.
		goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"),
	)
}

// testConfig is an upstream config for tests: fast retries, small
// timeouts, the given endpoints, no proxy from the environment.
func testConfig(endpoints ...string) config.Upstream {
	return config.Upstream{
		Endpoints: endpoints,
		Proxy:     "direct",
		Internal:  true,
		Timeouts: config.Timeouts{
			Dial: 2 * time.Second, TLSHandshake: 2 * time.Second,
			ResponseHeader: 5 * time.Second, Stall: 5 * time.Second,
		},
		Retry: config.Retry{Attempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
	}
}

func newClient(t testing.TB, cfg config.Upstream, opts ...Option) *Client {
	t.Helper()
	c, err := New("registry.test", cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

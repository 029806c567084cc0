package testenv

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs a package's tests and then fails the run if they left
// goroutines behind (a fill that never ends, a reader that never wakes).
// Idle keep-alive connections of the shared HTTP client are closed first;
// distribution's event broadcaster (in the upstream test registry) is never
// stopped by distribution itself. Call it from TestMain.
func VerifyNoLeaks(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

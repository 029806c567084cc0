package jobclaim

import (
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// Heartbeats and claim loops must all end with their tests.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

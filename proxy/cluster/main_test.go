package cluster

import (
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

// Renewal goroutines and fault servers must all end with their tests.
func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

package dashboard_test

import (
	"testing"

	"github.com/stowage/stowage/proxy/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(m) }

//go:build !linux

package testenv

import "testing"

// SmallFS needs Linux tmpfs; elsewhere the test is skipped.
func SmallFS(t testing.TB, _ int64) string {
	t.Helper()
	t.Skip("a small tmpfs needs Linux")
	return ""
}

// ResizeFS needs Linux tmpfs.
func ResizeFS(t testing.TB, _ string, _ int64) { t.Helper(); t.Skip("needs Linux") }

// FillFS needs Linux tmpfs.
func FillFS(t testing.TB, _ string) string { t.Helper(); t.Skip("needs Linux"); return "" }

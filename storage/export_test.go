package storage

// Crash drops s's staging lock the way the kernel does when the process
// dies: the staging directory stays behind, unowned.
func Crash(s *Store) {
	if s.lock != nil {
		_ = s.lock.f.Close()
	}
}

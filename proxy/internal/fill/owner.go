package fill

// SetOwner records the lease owner id of the other replica whose download
// the fill follows ("" once this process downloads itself), for Info.
func (f *Fill) SetOwner(id string) {
	f.mu.Lock()
	f.owner = id
	f.mu.Unlock()
}

package proxy

// CacheRepository returns the repository name under which t is cached
// ("docker.io/library/alpine", "localhost_5000/app"), after the same
// resolution and validation as a client request. Prefetch uses it to link
// shared blobs into every repository that references them and to record
// pins; export uses it to name repositories in a bundle.
func (p *Proxy) CacheRepository(t Target) (string, error) {
	q, err := p.target(t)
	if err != nil {
		return "", err
	}
	return q.cacheRepo, nil
}

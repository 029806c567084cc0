package imagelist

// RegistryOptions are the per-registry settings of a skopeo-sync file.
type RegistryOptions struct {
	// Username for basic authentication; "" for anonymous access.
	Username string
	// Password for basic authentication. It never prints.
	Password Secret
	// Insecure is true when the file says "tls-verify: false": skip TLS
	// certificate verification (and allow plain HTTP).
	Insecure bool
	// CertDir is a directory of client certificates and CA files, as in
	// containers-certs.d(5); "" for none.
	CertDir string
	// Source is where the registry's settings start.
	Source Source
}

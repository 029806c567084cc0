package testenv

import (
	"net/http"
	"strings"
)

func isManifest(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/manifests/")
}

// StripHeaderOnManifestHead removes header from every manifest HEAD answer
// (a registry or proxy that drops Docker-Content-Digest).
func StripHeaderOnManifestHead(header string) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.Method != http.MethodHead || !isManifest(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&stripWriter{ResponseWriter: w, header: header}, r)
	}
}

// InterstitialPage is what a TLS-inspecting corporate proxy sends instead of
// the registry's answer until someone accepts its usage policy.
const InterstitialPage = `<!DOCTYPE html><html><head><title>Usage policy</title></head>` +
	`<body><h1>Please accept the acceptable use policy</h1><form method="post"><button>Accept</button></form></body></html>`

// ManifestInterstitial answers every manifest request (GET and HEAD) with
// 200 text/html InterstitialPage, without Docker-Content-Digest.
func ManifestInterstitial() Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(InterstitialPage))
		}
	}
}

// ManifestProxyAuthRequired answers every manifest request with the 407 a
// forward proxy sends when its credentials expired.
func ManifestProxyAuthRequired() Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Proxy-Authenticate", `Basic realm="corporate proxy"`)
		w.Header().Set("Via", "1.1 squid")
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusProxyAuthRequired)
	}
}

// ManifestContentType replaces the Content-Type of manifest GET and HEAD
// answers (an old registry sending application/json).
func ManifestContentType(ct string) Fault {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if !isManifest(r) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&setTypeWriter{ResponseWriter: w, ct: ct}, r)
	}
}

type stripWriter struct {
	http.ResponseWriter
	header string
	done   bool
}

func (w *stripWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		w.Header().Del(w.header)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *stripWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

type setTypeWriter struct {
	http.ResponseWriter
	ct   string
	done bool
}

func (w *setTypeWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		if code == http.StatusOK {
			w.Header().Set("Content-Type", w.ct)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *setTypeWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

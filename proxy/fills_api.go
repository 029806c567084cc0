package proxy

import (
	"encoding/json"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/stowage/stowage/proxy/internal/fill"
)

// FillInfo describes a running blob fill: what it downloads, from where,
// how far it is, and how many clients (and prefetches) want it.
type FillInfo = fill.Info

// Fills lists the running blob fills, oldest first.
func (p *Proxy) Fills() []FillInfo { return p.fills.List() }

// CancelFill cancels the running fill of a blob: its clients are cut short
// and nothing is committed. A fill that has verified every byte is past
// cutting: the cancel can only interrupt its commit, and its clients get
// the verified blob (a file system move may also complete regardless). It
// reports whether one ran.
func (p *Proxy) CancelFill(d digest.Digest) bool { return p.fills.Cancel(d) }

// FillsHandler serves the fill part of the admin API, to be mounted behind
// the admin API's authentication:
//
//	GET    /api/v1/fills            the running fills (JSON array of FillInfo)
//	DELETE /api/v1/fills/{digest}   cancel one: 204, or 404 when none runs
func (p *Proxy) FillsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/fills", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Fills())
	})
	mux.HandleFunc("DELETE /api/v1/fills/{digest}", func(w http.ResponseWriter, r *http.Request) {
		d, err := digest.Parse(r.PathValue("digest"))
		if err != nil {
			http.Error(w, `{"error":"invalid digest"}`, http.StatusBadRequest)
			return
		}
		if !p.CancelFill(d) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no fill runs for this digest"}`))
			return
		}
		p.log.Warn("blob fill cancelled through the admin API", "digest", d)
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

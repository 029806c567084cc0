package prefetch

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/stowage/stowage/config/imagelist"
)

// jobName is the grammar of job and pin names (storage's pin names).
var jobName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ErrNoToken is returned by NewAdminHandler without a token: the admin API
// is then disabled.
var ErrNoToken = errors.New("prefetch: admin API needs a token")

// AdminOptions configure the admin handler.
type AdminOptions struct {
	// Token is the bearer token every request must present.
	Token string
	// Check vets the lists of a request before it is queued (e.g.
	// CheckRegistries bound to the config); nil accepts everything.
	Check func([]NamedList) error
	// Platforms are used when a request names none (prefetch.platforms).
	Platforms []string
	// Fills, if set, serves /api/v1/fills (proxy.FillsHandler) behind the
	// same authentication.
	Fills http.Handler
}

// JobRequest is the JSON form of POST /api/v1/prefetch.
type JobRequest struct {
	// Name names the job and the pin of its images (default "api").
	Name string `json:"name,omitempty"`
	// Images are references, as in a text list.
	Images []string `json:"images"`
	// Platforms filters indexes ("linux/amd64").
	Platforms []string `json:"platforms,omitempty"`
}

// NewAdminHandler serves the prefetch admin API:
//
//	POST /api/v1/prefetch        body: an image list (text, skopeo-sync
//	                             YAML, Kubernetes YAML or JSON as for
//	                             "proxy prefetch -f") or JSON JobRequest; ?name= and
//	                             ?platform= (repeatable) apply to list
//	                             bodies. 202 with the job.
//	GET  /api/v1/prefetch/{id}   the job: state, progress, report.
//	DELETE /api/v1/prefetch/{id} cancel a queued or running job (202 with
//	                             the job; 409 when it already ended).
//	GET  /api/v1/prefetch        every remembered job, newest first
//	                             ("warning" when the cluster's shared job
//	                             list cannot be reached).
//	GET  /api/v1/fills           running blob fills (with AdminOptions.Fills)
//	DELETE /api/v1/fills/{digest} cancel a running fill
//
// Every request needs "Authorization: Bearer <token>" (compared in
// constant time); anything else is 401 with a WWW-Authenticate challenge.
func NewAdminHandler(jobs *Jobs, o AdminOptions) (http.Handler, error) {
	if o.Token == "" {
		return nil, ErrNoToken
	}
	if jobs == nil {
		return nil, errors.New("prefetch: admin API needs jobs")
	}
	a := &admin{jobs: jobs, o: o, tokenSum: sha256.Sum256([]byte(o.Token))}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/prefetch", a.submit)
	mux.HandleFunc("GET /api/v1/prefetch", a.list)
	mux.HandleFunc("GET /api/v1/prefetch/{id}", a.get)
	mux.HandleFunc("DELETE /api/v1/prefetch/{id}", a.cancel)
	if o.Fills != nil {
		mux.Handle("/api/v1/fills", o.Fills)
		mux.Handle("/api/v1/fills/", o.Fills)
	}
	return a.auth(mux), nil
}

type admin struct {
	jobs     *Jobs
	o        AdminOptions
	tokenSum [32]byte
}

// auth requires the bearer token. Hashing both sides first makes the
// comparison constant-time in the token's length too.
func (a *admin) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="stowage-admin"`)
			writeJSONError(w, http.StatusUnauthorized, "a valid bearer token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *admin) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, imagelist.MaxInputSize+1))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(body) > imagelist.MaxInputSize {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	name, req, err := a.parse(r, body)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := platformMatcher(req.Platforms); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	if a.o.Check != nil {
		lists := req.Lists
		if len(req.Images) > 0 {
			l, _ := imagelist.ParseText(name, strings.NewReader(strings.Join(req.Images, "\n")))
			lists = append(lists, NamedList{Name: name, List: l})
		}
		if err := a.o.Check(lists); err != nil {
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	job, err := a.jobs.Submit(name, req)
	if errors.Is(err, ErrQueueFull) {
		w.Header().Set("Retry-After", "30")
		writeJSONError(w, http.StatusTooManyRequests, err.Error()+"; retry later, or cancel a job (DELETE /api/v1/prefetch/{id})")
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	w.Header().Set("Location", "/api/v1/prefetch/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
}

// parse reads a JSON JobRequest or a list body.
func (a *admin) parse(r *http.Request, body []byte) (string, Request, error) {
	q := r.URL.Query()
	name := q.Get("name")
	req := Request{Platforms: q["platform"]}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if isJobRequest(mt, body) {
		var jr JobRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&jr); err != nil {
			return "", req, fmt.Errorf("JSON body: %w", err)
		}
		if len(jr.Images) == 0 {
			return "", req, errors.New("JSON body: images is empty")
		}
		if jr.Name != "" {
			name = jr.Name
		}
		req.Images, req.Platforms = jr.Images, append(req.Platforms, jr.Platforms...)
	} else {
		if name == "" {
			name = "api"
		}
		l, _ := imagelist.Parse(name, bytes.NewReader(body))
		if len(l.Refs) == 0 && len(l.Rules) == 0 {
			return "", req, fmt.Errorf("the list names no image: %w", l.Err())
		}
		req.Lists = []NamedList{{Name: name, List: l}}
	}
	if name == "" {
		name = "api"
	}
	if !jobName.MatchString(name) {
		return "", req, fmt.Errorf("name %q: want letters, digits, '.', '_' or '-'", name)
	}
	if len(req.Platforms) == 0 {
		req.Platforms = a.o.Platforms
	}
	req.InlinePin = name
	return name, req, nil
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	job, ok, err := a.jobs.Lookup(r.PathValue("id"))
	if err != nil {
		writeUnavailable(w, err)
		return
	}
	if !ok {
		writeJSONError(w, http.StatusNotFound, "no such job")
		return
	}
	writeJSON(w, http.StatusOK, job)
}

func (a *admin) cancel(w http.ResponseWriter, r *http.Request) {
	job, found, ended, err := a.jobs.CancelJob(r.PathValue("id"))
	switch {
	case err != nil:
		writeUnavailable(w, err)
	case !found:
		writeJSONError(w, http.StatusNotFound, "no such job")
	case ended:
		writeJSONError(w, http.StatusConflict, "the job has already ended ("+string(job.State)+")")
	default:
		writeJSON(w, http.StatusAccepted, job)
	}
}

func (a *admin) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, ListAnswer(a.jobs))
}

// ListAnswer is the body of GET /api/v1/prefetch: {"jobs": [...]}, with a
// "warning" when the cluster's shared job list cannot be reached (the
// jobs are then this replica's only).
func ListAnswer(js *Jobs) map[string]any {
	jobs, err := js.ListAll()
	out := map[string]any{"jobs": jobs}
	if err != nil {
		out["warning"] = err.Error()
	}
	return out
}

// writeUnavailable answers 503 when the shared job list cannot be reached.
func writeUnavailable(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "5")
	writeJSONError(w, http.StatusServiceUnavailable, err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

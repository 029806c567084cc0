package prefetch

import "sync"

// Image states in ImageProgress.
const (
	ImageQueued  = "queued"
	ImageRunning = "running"
	ImageDone    = "done"
	ImageFailed  = "failed"
)

// MaxImageStates bounds the per-image list of a progress snapshot: a job
// of more images lists its first MaxImageStates (ImagesTruncated).
const MaxImageStates = 1000

// ImageProgress is where one image of a running job is.
type ImageProgress struct {
	Ref   string `json:"ref"`
	State string `json:"state"` // ImageQueued, ImageRunning, ImageDone or ImageFailed
	// BytesPlanned are its blobs' sizes, known once its manifests are
	// resolved; BytesDone are in the cache, BytesUpstream of them came
	// from the upstream.
	BytesPlanned  int64  `json:"bytes_planned"`
	BytesDone     int64  `json:"bytes_done"`
	BytesUpstream int64  `json:"bytes_upstream"`
	Error         string `json:"error,omitempty"`
}

// refsPlanner is implemented by observers that want the planned images'
// references (in order) as well as their number.
type refsPlanner interface {
	PlannedRefs(refs []string)
}

// imageStates keeps an ImageProgress per image; the zero value is ready.
type imageStates struct {
	mu    sync.Mutex
	order []*ImageProgress
	byRef map[string]*ImageProgress
}

// get returns ref's entry, adding it (in state) when it is new; nil when
// the list is full. Call with mu held.
func (s *imageStates) getLocked(ref, state string) *ImageProgress {
	if p, ok := s.byRef[ref]; ok {
		return p
	}
	if s.byRef == nil {
		s.byRef = map[string]*ImageProgress{}
	}
	p := &ImageProgress{Ref: ref, State: state}
	s.byRef[ref] = p
	s.order = append(s.order, p)
	return p
}

func (s *imageStates) update(ref, state string, f func(p *ImageProgress)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.getLocked(ref, state))
}

func (s *imageStates) snapshot() (out []ImageProgress, truncated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.order), MaxImageStates)
	out = make([]ImageProgress, n)
	for i := range n {
		out[i] = *s.order[i]
	}
	return out, len(s.order) > n
}

// PlannedRefs lists the planned images as queued (Engine.Run calls it on
// observers that have it, right after Planned).
func (p *Progress) PlannedRefs(refs []string) {
	p.per.mu.Lock()
	defer p.per.mu.Unlock()
	for _, r := range refs {
		p.per.getLocked(r, ImageQueued)
	}
}

// PlannedRefs implements refsPlanner for the observers that have it.
func (o Observers) PlannedRefs(refs []string) {
	for _, x := range o {
		if pl, ok := x.(refsPlanner); ok {
			pl.PlannedRefs(refs)
		}
	}
}

func itemKeys(items []*item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.key()
	}
	return out
}

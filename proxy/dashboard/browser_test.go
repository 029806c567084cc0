package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/stowage/stowage/config"
	"github.com/stowage/stowage/proxy/dashboard"
	"github.com/stowage/stowage/proxy/internal/testenv"
	"github.com/stowage/stowage/storage/evict"
	"github.com/stowage/stowage/storage/usage"
)

// The browser tests drive Debian's chromium headless through chromedp.
// They skip when chromium is missing, except in CI (CI=true), where a
// missing browser fails them. Screenshots go to $STOWAGE_UI_SCREENSHOTS
// (default: a temporary directory, logged).

// chromiumPath finds the browser: $STOWAGE_CHROMIUM, /usr/bin/chromium,
// or chromium on PATH.
func chromiumPath() string {
	if p := os.Getenv("STOWAGE_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	p, _ := exec.LookPath("chromium")
	return p
}

// page is one browser tab on a dashboard.
type page struct {
	t    *testing.T
	ctx  context.Context
	shot string // screenshot directory
}

func newPage(t *testing.T) *page {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (.ci/install.sh installs it); CI=true forbids skipping the browser tests")
		}
		t.Skip("chromium is not installed; run .ci/install.sh")
	}
	dir := os.Getenv("STOWAGE_UI_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 860),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelAlloc()
	})
	// Start the browser with the unbounded context; each step is bounded.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &page{t: t, ctx: ctx, shot: dir}
}

// do runs steps, bounded.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.screenshot("failed-" + p.t.Name())
		p.t.Fatalf("%s: %v", what, err)
	}
}

// wait polls a JavaScript predicate until it is truthy.
func (p *page) wait(what, js string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		p.screenshot("failed-" + filepath.Base(p.t.Name()))
		p.t.Fatalf("waiting for %s (%s): %v", what, js, err)
	}
}

// soon polls a JavaScript predicate for a few seconds and reports
// whether it became truthy, without failing the test.
func (p *page) soon(js string) bool {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(4*time.Second)))
	if err != nil {
		p.t.Logf("not yet (%s): %v", js, err)
	}
	return err == nil
}

// eval evaluates an expression.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (p *page) screenshot(name string) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	f := filepath.Join(p.shot, name+".png")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		p.t.Errorf("screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot: %s", f)
}

// dark emulates prefers-color-scheme: dark (or turns that off).
func (p *page) dark(on bool) {
	p.t.Helper()
	params := emulation.SetEmulatedMediaParams{}
	if on {
		params.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, params); err != nil {
		p.t.Fatal(err)
	}
}

// signIn answers the sign-in dialog.
func (p *page) signIn(token string) {
	p.t.Helper()
	p.do("sign in",
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SetValue(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin-submit")))
}

// TestBrowserOverviewAndContents: a wrong token is refused; after a cold
// and a warm pull the overview shows the proxy's numbers; the contents
// view lists the image with its tag, pull commands and layers.
func TestBrowserOverviewAndContents(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 3, 96<<10))
	e.up.ResetCounts()
	pulls, err := usage.NewPulls(e.store, nil) // as serve wires it
	if err != nil {
		t.Fatal(err)
	}
	e.proxy.SetPullCounter(pulls)
	e.dash.SetPulls(pulls)
	blobs, size := e.pull("team/app:v1")
	e.pull("team/app:v1")

	p := newPage(t)
	p.do("open", chromedp.Navigate(e.srv.URL+"/ui/"))
	p.signIn("wrong-token")
	p.wait("the refusal", `document.getElementById("signin-error").textContent.includes("refused")`)
	p.screenshot("signin-refused")
	if got := eval[bool](p, `document.getElementById("ov-hits").dataset.value === undefined`); !got {
		t.Error("numbers shown with a wrong token")
	}
	p.signIn(testToken)
	p.wait("the overview numbers", fmt.Sprintf(`document.getElementById("ov-upstream").dataset.value === "%d"`, size))
	// The last pull's access-log accounting has run by now.
	var o dashboard.Overview
	e.getJSON("/api/v1/overview", &o)
	for id, want := range map[string]float64{
		"ov-hits": o.Traffic.Hits, "ov-misses": o.Traffic.Misses, "ov-served": o.Traffic.ServedBytes,
		"ov-upstream": float64(size), "ov-saved": o.Traffic.SavedBytes, "ov-fills": 0,
	} {
		got := eval[string](p, `document.getElementById("`+id+`").dataset.value`)
		if v, err := strconv.ParseFloat(got, 64); err != nil || v != want {
			t.Errorf("#%s shows %q, want %v", id, got, want)
		}
	}
	if got, want := eval[string](p, `document.getElementById("ov-hitratio").textContent`), fmt.Sprintf("%.1f %%", o.Traffic.HitRatio*100); got != want {
		t.Errorf("hit ratio shows %q, want %q", got, want)
	}
	if got := eval[string](p, `document.getElementById("ov-usage").textContent`); got != "not tracked" {
		t.Errorf("usage without an index: %q", got)
	}
	// With the eviction engine's usage index plugged in (as serve does),
	// the overview shows usage against the cap.
	eng := newEngine(t, e, evict.Policy{MaxSize: 1 << 20})
	used, _ := eng.Index().Usage()
	e.dash.SetUsage(engineUsage{eng: eng, capa: 1 << 20, root: e.store.Root()})
	p.wait("the usage against the cap", fmt.Sprintf(`document.getElementById("ov-usage").dataset.value === "%d"`, used))
	if got, want := eval[string](p, `document.getElementById("ov-usage").textContent`), " of 1.00 MiB"; !strings.HasSuffix(got, want) {
		t.Errorf("usage: %q, want the cap (%q)", got, want)
	}
	p.wait("the upstream row", `document.querySelector('#upstreams tr[data-host="docker.io"] .state-healthy') !== null`)
	p.wait("the bytes plot", `document.querySelector("#plot-bytes .fetched") !== null`)
	p.screenshot("overview")
	t.Logf("first contentful paint: %.0f ms", eval[float64](p,
		`(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`))

	// Dark mode follows prefers-color-scheme.
	p.dark(true)
	if got := eval[string](p, `getComputedStyle(document.body).backgroundColor`); got != "rgb(13, 17, 23)" {
		t.Errorf("dark mode background: %s", got)
	}
	p.screenshot("overview-dark")
	p.dark(false)

	p.do("contents", chromedp.Click(chromedp.ID("nav-contents")))
	p.wait("the repository", `document.querySelector('.repo-link[data-repo="docker.io/team/app"]') !== null`)
	p.do("open the repository", chromedp.Click(chromedp.CSS(`.repo-link[data-repo="docker.io/team/app"]`)))
	p.wait("the tag", `document.querySelector('#tags tr[data-tag="v1"]') !== null`)
	// Two pulls, each one manifest GET by tag.
	if got := eval[string](p, `document.getElementById("repo-pulls").dataset.pulls`); got != "2" {
		t.Errorf("the repository shows %s pulls, want 2", got)
	}
	if got := eval[string](p, `document.querySelector("#repos tbody tr td:last-child").textContent`); got != "2" {
		t.Errorf("the repository list shows %s pulls, want 2", got)
	}
	if got := eval[string](p, `document.querySelector('code[data-client="docker"]').textContent`); got != "docker pull "+e.host+"/docker.io/team/app:<tag>" {
		t.Errorf("docker command: %q", got)
	}
	p.do("open the manifest", chromedp.Click(chromedp.CSS(`#tags tr[data-tag="v1"] button`)))
	p.wait("the layers", fmt.Sprintf(`document.querySelectorAll("#layers tbody tr").length === %d`, blobs))
	sum := eval[float64](p, `[...document.querySelectorAll("#layers .layer-size")].reduce((s, e) => s + Number(e.dataset.size), 0)`)
	if int64(sum) != size {
		t.Errorf("layers sum to %v, want %d", sum, size)
	}
	p.do("search for nothing", chromedp.SetValue(chromedp.ID("search"), "nosuchimage"), chromedp.SendKeys(chromedp.ID("search"), " "))
	p.wait("an empty search", `!document.getElementById("repos-empty").hidden`)
	p.do("search", chromedp.SetValue(chromedp.ID("search"), "team"), chromedp.SendKeys(chromedp.ID("search"), "/"))
	p.wait("the search result", `document.querySelectorAll("#repos tbody tr").length === 1`)
	p.screenshot("contents")
}

// TestBrowserFillProgress: a slow blob's fill shows in the live activity
// with a progress bar that moves, beside the recent stale serves (of an
// upstream that went down) and evictions.
func TestBrowserFillProgress(t *testing.T) {
	quay := testenv.Start(t, testenv.Options{})
	quay.Push(t, "team/tool:v1", testenv.OCIImage(t, 1, 4<<10))
	e := newEnv(t, envOptions{configure: func(c *config.Config) {
		u := c.Upstreams["docker.io"]
		u.Endpoints = []string{quay.URL}
		c.Upstreams["quay.io"] = u
		c.Cache.TagTTL = time.Nanosecond // every tag pull revalidates
	}})
	// quay.io goes down after a pull: its tags are then served stale.
	e.pull("quay.io/team/tool:v1")
	quay.Close()
	for range 2 {
		if code, b := e.call(http.MethodHead, "/v2/quay.io/team/tool/manifests/v1", "", "", ""); code != http.StatusOK {
			t.Fatalf("stale HEAD: %d %s", code, b)
		}
	}
	// An image pulled and evicted.
	e.up.Push(t, "team/old:v1", testenv.OCIImage(t, 2, 64<<10))
	e.pull("team/old:v1")
	eng := newEngine(t, e, evict.Policy{MaxSize: 1})
	res, err := eng.Pass(t.Context())
	if err != nil || res.Objects == 0 {
		t.Fatalf("eviction pass: %+v, %v", res, err)
	}
	e.dash.SetUsage(engineUsage{eng: eng, capa: 64 << 20, root: e.store.Root()})

	img, layer := testenv.RawBlobImage(t, 4<<20, 11)
	e.up.Push(t, "team/slow:v1", img)
	d, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	e.up.SetFault(testenv.SlowBlobs(32<<10, 40*time.Millisecond)) // 128 pauses: about 5 s

	p := newPage(t)
	p.do("open", chromedp.Navigate(e.srv.URL+"/ui/#activity"))
	p.signIn(testToken)
	p.wait("the activity view", `!document.getElementById("view-activity").hidden && !document.getElementById("signin").open`)
	p.wait("the recent stale serves", `document.querySelectorAll("#stale-recent tbody tr").length === 2`)
	p.wait("the recent evictions", fmt.Sprintf(`document.querySelectorAll("#evictions tbody tr").length === %d`, res.Objects))
	if got := eval[string](p, `document.querySelector("#stale-recent tbody tr td:nth-child(2)").textContent`); got != "quay.io/team/tool" {
		t.Errorf("stale serve row: %q", got)
	}

	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, e.srv.URL+"/v2/team/slow/blobs/"+d.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	sel := fmt.Sprintf(`document.querySelector('#fills tr[data-digest="%s"] progress')`, d)
	p.wait("the fill's progress bar", sel+` !== null && `+sel+`.value > 0`)
	first := eval[float64](p, sel+`.value`)
	p.wait("the progress bar to move", fmt.Sprintf(`%s !== null && %s.value > %v`, sel, sel, first))
	p.screenshot("activity")
	if got := eval[string](p, fmt.Sprintf(`document.querySelector('#fills tr[data-digest="%s"] td:nth-child(8)').textContent`, d)); got != "replica-a" {
		t.Errorf("replica column: %q", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the slow pull did not finish")
	}
	p.wait("the fill to leave the list", `!document.getElementById("fills-empty").hidden`)
}

// TestBrowserPrefetch: a prefetch started from the form (a pasted
// images-list.txt) completes and its report appears.
func TestBrowserPrefetch(t *testing.T) {
	e := newEnv(t, envOptions{public: true})
	e.up.Push(t, "team/app:v1", testenv.OCIImage(t, 2, 32<<10))
	p := newPage(t)
	p.do("open", chromedp.Navigate(e.srv.URL+"/ui/#prefetch"))
	// Public read-only: the page reads without a token, the form is off.
	p.wait("the read-only view", `document.getElementById("auth-state").textContent === "Read-only view" && document.getElementById("pf-submit").disabled`)
	p.do("sign in", chromedp.Click(chromedp.ID("signin-open")))
	p.signIn(testToken)
	p.wait("the form", `!document.getElementById("pf-submit").disabled`)
	p.do("submit", chromedp.SetValue(chromedp.ID("pf-name"), "tonight"),
		chromedp.SetValue(chromedp.ID("pf-list"), "# rollout\nteam/app:v1\n"),
		chromedp.Click(chromedp.ID("pf-submit")))
	p.wait("the job", `document.getElementById("pf-status").textContent.includes("started")`)
	p.wait("the job to succeed", `document.querySelector('article.job[data-state="succeeded"]') !== null`)
	p.wait("the report", `document.querySelector('.report-images tr[data-ref]') !== null`)
	if got := eval[string](p, `document.querySelector('.report-images tr[data-ref] td:last-child').textContent`); got != "ok" {
		t.Errorf("report row: %q", got)
	}

	// A second job whose new image stalls part way shows where each of
	// its images is while it runs.
	e.up.Push(t, "team/big:v1", testenv.OCIImage(t, 3, 256<<10))
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	e.up.SetFault(testenv.StallBlobs(96<<10, release))
	p.do("submit another", chromedp.SetValue(chromedp.ID("pf-name"), "rollout"),
		chromedp.SetValue(chromedp.ID("pf-list"), "team/app:v1\nteam/big:v1\n"),
		chromedp.Click(chromedp.ID("pf-submit")))
	p.wait("the running job's images", `document.querySelector('article.job[data-state="running"] .job-images tr[data-ref="docker.io/team/app:v1"][data-state="done"]') !== null &&
		document.querySelector('article.job[data-state="running"] .job-images tr[data-ref="docker.io/team/big:v1"][data-state="running"]') !== null`)
	// For the screenshot only: give the stalled image's first bytes a
	// moment to show (not asserted: the state is what is tested).
	p.soon(`document.querySelector('.job-images tr[data-ref="docker.io/team/big:v1"] progress').value > 0`)
	p.screenshot("prefetch")
	close(release)
	p.wait("the second job to succeed", `document.querySelectorAll('article.job[data-state="succeeded"]').length === 2`)

	// A wrong token is refused by the admin API behind the form.
	p.do("wrong token", chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem("stowage-token", "wrong")`),
		chromedp.Click(chromedp.ID("pf-submit")))
	p.wait("the refusal", `document.getElementById("signin").open || document.getElementById("pf-status").textContent.includes("Refused")`)
	if errors.Is(p.ctx.Err(), context.Canceled) {
		t.Fatal("browser gone")
	}
}

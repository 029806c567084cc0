package jobclaim_test

import (
	"fmt"

	"github.com/stowage/stowage/proxy/internal/jobclaim"
)

// The claim rule: a job whose runner's lease expired is resumed by a
// replica with a free slot; one cancelled meanwhile is ended, not run.
func ExampleDecide() {
	fmt.Println(jobclaim.Decide(jobclaim.Candidate{ID: "j1"}, false, true))
	fmt.Println(jobclaim.Decide(jobclaim.Candidate{ID: "j1", Leased: true}, false, true))
	fmt.Println(jobclaim.Decide(jobclaim.Candidate{ID: "j1", Cancel: true}, false, false))
	// Output:
	// claim
	// skip
	// end-cancelled
}

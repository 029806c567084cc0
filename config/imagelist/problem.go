package imagelist

import "errors"

// Sentinel errors wrapped by every [Problem]; test with errors.Is.
var (
	// ErrInvalidReference marks an image reference or repository name that
	// does not follow the reference grammar (including bad digests).
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrLineTooLong marks a text line longer than MaxLineLength bytes.
	ErrLineTooLong = errors.New("line too long")
	// ErrInputTooLarge marks input larger than MaxInputSize bytes.
	ErrInputTooLarge = errors.New("input too large")
	// ErrSyntax marks input that is not well-formed YAML.
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownKey marks a YAML key skopeo-sync does not define.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInvalidValue marks a YAML value of the wrong type, a bad regular
	// expression or semver constraint, or a duplicated key.
	ErrInvalidValue = errors.New("invalid value")
	// ErrRead marks a failure reading the input.
	ErrRead = errors.New("read error")
)

// Limits applied while parsing.
const (
	// MaxLineLength is the longest text line accepted, in bytes.
	MaxLineLength = 4096
	// MaxInputSize is the largest input accepted, in bytes.
	MaxInputSize = 16 << 20
	// maxProblems caps the problems recorded for one input; garbage input
	// would otherwise yield one per line.
	maxProblems = 1000
)

// Problem is one bad entry: where it is and what is wrong. Problem is an
// error; it unwraps to one of the sentinel errors of this package.
type Problem struct {
	// Source is the file and line of the bad entry.
	Source Source
	// Err says what is wrong; it wraps a sentinel error.
	Err error
}

// Error returns "file:line: message".
func (p Problem) Error() string {
	if p.Err == nil {
		return p.Source.String() + ": problem"
	}
	return p.Source.String() + ": " + p.Err.Error()
}

// Unwrap returns the underlying error.
func (p Problem) Unwrap() error {
	return p.Err
}

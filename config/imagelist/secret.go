package imagelist

import (
	"fmt"
	"log/slog"
)

// redacted is what a Secret prints as.
const redacted = "[REDACTED]"

// Secret is a string that never shows its value when formatted (any fmt
// verb, including %#v and %x), logged with slog, or marshalled to JSON or
// text. Use Reveal to get the value.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string {
	return string(s)
}

// String returns "[REDACTED]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns the redacted form quoted, for %#v.
func (s Secret) GoString() string {
	return fmt.Sprintf("%q", s.String())
}

// Format implements fmt.Formatter so that every verb prints the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		_, _ = fmt.Fprintf(f, "%q", s.String()) // fmt.Formatter cannot report errors
	case 'v':
		if f.Flag('#') {
			_, _ = fmt.Fprint(f, s.GoString())
			return
		}
		_, _ = fmt.Fprint(f, s.String())
	default:
		_, _ = fmt.Fprint(f, s.String())
	}
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value {
	return slog.StringValue(s.String())
}

// MarshalText implements encoding.TextMarshaler with the redacted form, so
// JSON and YAML encoders never write the value.
func (s Secret) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

package imagelist

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-s3cret"
	opts := RegistryOptions{Username: "john", Password: Secret(pw)}
	l := newList()
	l.Registries["r.example.com"] = opts
	values := map[string]any{
		"secret":  Secret(pw),
		"options": opts,
		"pointer": &opts,
		"list":    l,
		"map":     l.Registries,
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s", "%T %[1]v"}
	for name, v := range values {
		for _, verb := range verbs {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) {
				t.Errorf("Sprintf(%q, %s) leaks the password: %s", verb, name, out)
			}
		}
		if out := fmt.Sprint(v); strings.Contains(out, pw) {
			t.Errorf("Sprint(%s) leaks the password: %s", name, out)
		}
	}
	checkMarshalled(t, pw, opts)
	if got := opts.Password.Reveal(); got != pw {
		t.Errorf("Reveal() = %q, want %q", got, pw)
	}
}

// checkMarshalled asserts that JSON and slog output do not contain pw.
func checkMarshalled(t *testing.T, pw string, opts RegistryOptions) {
	t.Helper()
	b, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "password", opts.Password, "opts", opts)
	log = slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("x", "password", opts.Password, "opts", opts)
	for _, out := range []string{string(b), buf.String()} {
		if strings.Contains(out, pw) {
			t.Errorf("output leaks the password: %s", out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("output lacks %s: %s", redacted, out)
		}
	}
}

func TestSecretForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format string
		secret Secret
		want   string
	}{
		{"%v", "x", redacted},
		{"%s", "x", redacted},
		{"%q", "x", `"` + redacted + `"`},
		{"%#v", "x", `"` + redacted + `"`},
		{"%v", "", ""},
		{"%q", "", `""`},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf(tt.format, tt.secret); got != tt.want {
			t.Errorf("Sprintf(%q) = %q, want %q", tt.format, got, tt.want)
		}
	}
}

func TestPasswordNotInProblems(t *testing.T) {
	t.Parallel()
	const pw = "hunter2-s3cret"
	tests := []string{
		"r.example.com:\n  credentials:\n    password: [" + pw + "]\n",
		"r.example.com:\n  credentials:\n    password: {" + pw + ": 1}\n",
		"r.example.com:\n  credentials:\n    password: " + pw + "\n    password: " + pw + "\n",
		"r.example.com:\n  credentials:\n    password: " + pw + "\n  bogus: 1\n  images: [x]\n",
		"r.example.com:\n  credentials:\n    password: \"" + pw + "\n",
	}
	for _, in := range tests {
		l, err := ParseSkopeoSync("s.yaml", strings.NewReader(in))
		if err == nil {
			t.Errorf("no problem reported for %q", in)
			continue
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(fmt.Sprintf("%+v %#v", l, l), pw) {
			t.Errorf("password leaked for %q: %v", in, err)
		}
	}
}

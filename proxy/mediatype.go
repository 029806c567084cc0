package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3"
	// The three imports register distribution's manifest parsers (OCI
	// manifest and index, Docker schema 2, Docker manifest list) with
	// distribution.UnmarshalManifest; the registration is the library's.
	_ "github.com/distribution/distribution/v3/manifest/manifestlist"
	_ "github.com/distribution/distribution/v3/manifest/ocischema"
	_ "github.com/distribution/distribution/v3/manifest/schema2"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types (the OCI ones come from image-spec).
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// manifestTypes are the only media types Stowage stores and serves as
// manifests. Docker schema 1 is refused: distribution v3 dropped it, and
// no maintained registry serves it any more.
var manifestTypes = map[string]bool{
	v1.MediaTypeImageManifest:   true,
	v1.MediaTypeImageIndex:      true,
	mediaTypeDockerManifest:     true,
	mediaTypeDockerManifestList: true,
}

// errNotManifest: bytes that do not parse as a manifest of a known type.
var errNotManifest = errors.New("not a manifest of a supported media type")

// detectMediaType reads a manifest's media type from its bytes, as a stock
// registry does: the mediaType field, else the shape (an OCI manifest may
// omit the field).
func detectMediaType(body []byte) string {
	var probe struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        json.RawMessage   `json:"config"`
		Layers        json.RawMessage   `json:"layers"`
		Manifests     json.RawMessage   `json:"manifests"`
		Signatures    []json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return "application/octet-stream"
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.SchemaVersion == 1:
		return mediaTypeDockerSchema1
	case probe.Manifests != nil:
		return v1.MediaTypeImageIndex
	case probe.Config != nil:
		return v1.MediaTypeImageManifest
	}
	return "application/octet-stream"
}

// manifestMediaType validates manifest bytes and returns their media type.
// The type is derived from the bytes alone (the mediaType field, else the
// shape, as distribution does), so the same stored bytes are served with the
// same type before and after a restart, and by a stock registry on the same
// root. The bytes must parse, with distribution's parser, as one of
// manifestTypes with schemaVersion 2.
func manifestMediaType(body []byte) (string, error) {
	mt := detectMediaType(body)
	if !manifestTypes[mt] {
		if mt == "application/octet-stream" {
			return "", fmt.Errorf("%w: body is not a JSON manifest", errNotManifest)
		}
		return "", fmt.Errorf("%w: media type %q", errNotManifest, mt)
	}
	var v specs.Versioned
	if err := json.Unmarshal(body, &v); err != nil || v.SchemaVersion != 2 {
		return "", fmt.Errorf("%w: %s with schemaVersion %d", errNotManifest, mt, v.SchemaVersion)
	}
	if _, _, err := distribution.UnmarshalManifest(mt, body); err != nil {
		return "", fmt.Errorf("%w: %s: %w", errNotManifest, mt, err)
	}
	return mt, nil
}

// plausibleManifestHeader reports whether an upstream Content-Type may carry
// a manifest: a manifest type, or a generic one old registries send
// (checked then by parsing the body). Anything else (text/html from an
// intercepting proxy's policy page) is refused before parsing.
func plausibleManifestHeader(ct string) bool {
	switch ct {
	case "", "application/json", "application/octet-stream", "text/plain":
		return true
	}
	return manifestTypes[ct]
}

// acceptsManifest decides whether a client's Accept header allows the
// stored type (docs/accept.md). Stowage serves the stored type to every
// client, except that an OCI image manifest is refused (404, as
// distribution v3 does) to a client that lists manifest types in Accept but
// neither the OCI image manifest type nor a wildcard. A request without
// manifest types in Accept gets the stored type.
func acceptsManifest(h http.Header, stored string) bool {
	if stored != v1.MediaTypeImageManifest {
		return true
	}
	listsManifests := false
	for _, line := range h.Values("Accept") {
		for part := range strings.SplitSeq(line, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch {
			case mt == stored, mt == "*/*", mt == "application/*":
				return true
			case manifestTypes[mt], mt == mediaTypeDockerSchema1, mt == "application/vnd.docker.distribution.manifest.v1+json":
				listsManifests = true
			}
		}
	}
	return !listsManifests
}

func specsVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

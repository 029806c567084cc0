package proxy

import (
	"encoding/json"

	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker media types (the OCI ones come from image-spec).
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

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

func specsVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

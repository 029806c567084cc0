package prefetch

import (
	"bytes"

	"github.com/stowage/stowage/config/imagelist"
)

// isJobRequest reports whether a POST /api/v1/prefetch body is a JSON
// JobRequest rather than an image list: JSON (by media type, or by content
// without one) that is not Kubernetes objects. Kubernetes JSON ("kubectl
// get -o json") is an image list like its YAML form, with the same format
// detection as "proxy prefetch -f".
func isJobRequest(mediaType string, body []byte) bool {
	if mediaType != "application/json" && (mediaType != "" || !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{"))) {
		return false
	}
	return imagelist.DetectFormat("", body) != imagelist.FormatKubernetes
}

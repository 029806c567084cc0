package prefetch

import "github.com/stowage/stowage/storage/bundle"

// BundleImages lists the successful images of a report for bundle.Export.
func BundleImages(r *Report) []bundle.Image {
	var out []bundle.Image
	for _, im := range r.Images {
		if im.Error != "" || im.Digest == "" {
			continue
		}
		out = append(out, bundle.Image{Repository: im.Repository, Tag: im.Tag, Digest: im.Digest,
			Manifests: im.Manifests, Blobs: im.Blobs})
	}
	return out
}

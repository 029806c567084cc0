// Package imagelist parses the image lists users feed to Stowage's prefetch.
//
// Three formats are understood:
//
//   - The plain text form (images-list.txt): one image reference per line,
//     blank lines and "#" comments ignored, "##name" lines starting a named
//     section. See [ParseText].
//   - The skopeo-sync YAML form: top-level keys are registry hosts, each with
//     "images", "images-by-tag-regex", "images-by-semver", "credentials",
//     "tls-verify" and "cert-dir". See [ParseSkopeoSync].
//   - Kubernetes objects in YAML or JSON (single objects, "---" streams as
//     "helm template" writes them, Lists as "kubectl get -o yaml" writes
//     them): the images of the pods' containers, init containers and
//     ephemeral containers. See [ParseKubernetes].
//
// [Parse] and [ParseFile] pick the format from the content or file name
// ([DetectFormat]).
//
// Every parser returns a [List]: concrete references ([Ref]) normalised the
// way Docker does it (docker.io, library/ for single-segment Docker Hub
// names, the tag "latest" when neither tag nor digest is given) and
// deduplicated; [Rule] values that need an upstream tag listing to expand
// (all tags, a tag regex, or a semver constraint; see [Rule.Match]); and
// per-registry [RegistryOptions]. A bad line never stops the parse: it is
// recorded as a [Problem] naming file and line, and the rest is kept.
// [List.Err] joins the problems into one error.
//
// Passwords are held as [Secret], which never prints its value.
package imagelist

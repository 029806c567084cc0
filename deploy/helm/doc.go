// Package helm holds the tests of the Stowage Helm chart (./stowage). It is a
// separate Go module so that the Helm SDK and the Kubernetes API libraries
// never enter the main module.
//
// The tests render the chart with the Helm SDK (a client-only dry-run
// install, as `helm install --dry-run=client` does), decode every rendered
// object strictly into its Kubernetes API type, load the rendered Stowage
// config with github.com/stowage/stowage/config, and run the node
// configurator's shell script against a temporary directory.
//
// Run them with .ci/helm-check.sh, or `go test ./...` in this directory.
package helm

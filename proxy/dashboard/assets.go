package dashboard

import "embed"

// assets are the page: plain HTML, CSS and JavaScript, no build step.
//
//go:embed assets
var assets embed.FS

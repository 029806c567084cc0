// Package testregistry runs a real OCI registry in-process for tests:
// distribution's own handlers on the inmemory storage driver, served by
// httptest, optionally behind a small bearer-token server that issues
// scoped, expiring tokens (the Docker token flow: GET with Basic
// credentials, and the OAuth2 POST form), and seeded with random images by
// go-containerregistry.
//
//	reg := testregistry.Start(t, testregistry.WithTokenAuth(testregistry.TokenAuth{
//		Username: "alice", Password: "s3cret", Expiry: time.Minute,
//	}))
//	img := reg.SeedImage(t, "library/alpine", "3.20")
//
// Everything is torn down by t.Cleanup.
package testregistry

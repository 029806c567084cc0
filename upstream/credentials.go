package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/stowage/stowage/config"
)

// errNoCredentials is returned when the configured source has nothing for
// this host.
var errNoCredentials = errors.New("upstream: no credentials")

// credentials is an authn.Authenticator over config.Auth. Environment
// variables and files are read at every token exchange, so a rotated
// Kubernetes Secret is picked up without a restart.
type credentials struct {
	host string
	cfg  config.Auth
}

var _ authn.ContextAuthenticator = (*credentials)(nil)

// newCredentials validates cfg by resolving it once; it returns nil for
// anonymous access.
func newCredentials(host string, cfg config.Auth) (*credentials, error) {
	if cfg == (config.Auth{}) {
		return nil, nil
	}
	c := &credentials{host: host, cfg: cfg}
	if _, err := c.resolve(); err != nil {
		return nil, err
	}
	return c, nil
}

// Authorization implements authn.Authenticator.
func (c *credentials) Authorization() (*authn.AuthConfig, error) {
	return c.resolve()
}

// AuthorizationContext implements authn.ContextAuthenticator.
func (c *credentials) AuthorizationContext(context.Context) (*authn.AuthConfig, error) {
	return c.resolve()
}

// resolve reads the credentials. Errors name the source (variable or file)
// but never a value.
func (c *credentials) resolve() (*authn.AuthConfig, error) {
	a := c.cfg
	user, pass := a.Username, a.Password
	if a.UsernameEnv != "" {
		v, ok := os.LookupEnv(a.UsernameEnv)
		if !ok {
			return nil, fmt.Errorf("upstream %s: auth.username_env: variable %s is not set", c.host, a.UsernameEnv)
		}
		user = v
	}
	if a.PasswordEnv != "" {
		v, ok := os.LookupEnv(a.PasswordEnv)
		if !ok {
			return nil, fmt.Errorf("upstream %s: auth.password_env: variable %s is not set", c.host, a.PasswordEnv)
		}
		pass = v
	}
	if a.PasswordFile != "" {
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: auth.password_file: %w", c.host, err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if user != "" || pass != "" {
		if user == "" || pass == "" {
			return nil, fmt.Errorf("upstream %s: auth needs both a username and a password (or token)", c.host)
		}
		return &authn.AuthConfig{Username: user, Password: pass}, nil
	}
	if a.DockerConfig != "" {
		return dockerConfigAuth(a.DockerConfig, c.host)
	}
	return nil, fmt.Errorf("upstream %s: %w", c.host, errNoCredentials)
}

// secrets lists the current secret strings, for redaction.
func (c *credentials) secrets() []string {
	if c == nil {
		return nil
	}
	ac, err := c.resolve()
	if err != nil || ac == nil {
		return nil
	}
	var out []string
	for _, s := range []string{ac.Password, ac.Auth, ac.IdentityToken, ac.RegistryToken} {
		if s != "" {
			out = append(out, s)
		}
	}
	if ac.Username != "" && ac.Password != "" {
		out = append(out, base64.StdEncoding.EncodeToString([]byte(ac.Username+":"+ac.Password)))
	}
	return out
}

// dockerConfig is the part of a Docker config.json we read.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// dockerConfigAuth finds host's entry in a Docker config.json. Keys may be
// URLs ("https://index.docker.io/v1/") or Docker Hub aliases.
func dockerConfigAuth(path, host string) (*authn.AuthConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: auth.docker_config: %w", host, err)
	}
	var dc dockerConfig
	if err := json.Unmarshal(b, &dc); err != nil {
		// json errors may quote file content: do not wrap them.
		return nil, fmt.Errorf("upstream %s: auth.docker_config %s: not a valid config.json", host, path)
	}
	for key, e := range dc.Auths {
		if dockerConfigHost(key) != host {
			continue
		}
		ac := &authn.AuthConfig{
			Username: e.Username, Password: e.Password,
			IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken,
		}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("upstream %s: auth.docker_config: entry %q: auth is not base64", host, key)
			}
			u, p, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("upstream %s: auth.docker_config: entry %q: auth is not user:password", host, key)
			}
			ac.Username, ac.Password = u, p
		}
		return ac, nil
	}
	return nil, fmt.Errorf("upstream %s: auth.docker_config %s has no entry for this host: %w", host, path, errNoCredentials)
}

// dockerConfigHost turns a config.json auths key into a canonical host.
func dockerConfigHost(key string) string {
	h := key
	if strings.Contains(h, "://") {
		if u, err := url.Parse(h); err == nil {
			h = u.Host
		}
	}
	h, _, _ = strings.Cut(h, "/")
	return config.CanonicalHost(strings.ToLower(h))
}

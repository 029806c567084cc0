package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/config"
)

// configFlags are the settings people change in a one-liner; they override
// the config file and the environment.
type configFlags struct {
	file            string
	listen          string
	root            string
	upstreams       []string
	defaultUpstream string
	logFormat       string
	logLevel        string
}

func (f *configFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "config", "c", "", "config file (YAML); without it the embedded defaults apply")
	fl.StringVar(&f.listen, "listen", "", "listen address (default :5000; env STOWAGE_LISTEN)")
	fl.StringVar(&f.root, "root", "", "cache directory (default ./data; env STOWAGE_ROOT)")
	fl.StringArrayVar(&f.upstreams, "upstream", nil, "upstream as HOST=URL, repeatable (e.g. docker.io=https://harbor.internal; http:// means plain HTTP)")
	fl.StringVar(&f.defaultUpstream, "default-upstream", "", "registry host for requests that name none (default docker.io; env STOWAGE_DEFAULT_UPSTREAM)")
	fl.StringVar(&f.logFormat, "log-format", "", "log format: json or text (env STOWAGE_LOG_FORMAT)")
	fl.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn, error (env STOWAGE_LOG_LEVEL)")
}

// load builds the effective configuration: defaults, then the file, then
// environment variables, then flags; validated last.
func (f *configFlags) load() (*config.Config, error) {
	cfg := config.Default()
	if f.file != "" {
		c, err := config.LoadFile(f.file)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	overlay := func(dst *string, env, flag string) {
		if v := os.Getenv(env); v != "" {
			*dst = v
		}
		if flag != "" {
			*dst = flag
		}
	}
	overlay(&cfg.Listen, "STOWAGE_LISTEN", f.listen)
	overlay(&cfg.Storage.Root, "STOWAGE_ROOT", f.root)
	overlay(&cfg.DefaultUpstream, "STOWAGE_DEFAULT_UPSTREAM", f.defaultUpstream)
	overlay(&cfg.Log.Format, "STOWAGE_LOG_FORMAT", f.logFormat)
	overlay(&cfg.Log.Level, "STOWAGE_LOG_LEVEL", f.logLevel)
	for _, spec := range f.upstreams {
		host, url, ok := strings.Cut(spec, "=")
		if !ok || host == "" || url == "" {
			return nil, fmt.Errorf("--upstream %q: want HOST=URL", spec)
		}
		host = config.CanonicalHost(host)
		if cfg.Upstreams == nil {
			cfg.Upstreams = map[string]config.Upstream{}
		}
		u := cfg.Upstreams[host]
		u.Endpoints = []string{url}
		cfg.Upstreams[host] = u
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

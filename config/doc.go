// Package config holds Stowage's one typed configuration tree: the embedded
// defaults (Default), YAML loading with strict field checking (Load,
// LoadFile), and validation (Validate) that runs before anything starts.
//
// Upstream registries are keyed by their registry host. Built-in presets
// (docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io, mcr.microsoft.com,
// ...) need no configuration; a host that is neither configured nor preset is
// never contacted.
package config

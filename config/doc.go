// Package config holds Stowage's one typed configuration tree: the embedded
// defaults (Default), YAML loading with strict field checking (Load,
// LoadFile), and validation (Validate) that runs before anything starts.
//
// Upstream registries are keyed by their registry host. Built-in presets
// (docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io, mcr.microsoft.com,
// public.ecr.aws, docker.elastic.co, nvcr.io, registry.gitlab.com) need no
// configuration; presets: false turns them all off and disabled: true one
// upstream. A host that is neither configured nor an enabled preset is never
// contacted.
package config

# syntax=docker/dockerfile:1
#
# Stowage container image: a static Go binary on a distroless, non-root base.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t stowage .
#   docker run -p 5000:5000 -v stowage-cache:/var/lib/stowage stowage
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 .
# The builder runs on the build machine's platform and cross-compiles
# (CGO_ENABLED=0), so no emulation is needed.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Module downloads in their own layer: they change less often than the code.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/stowage ./cmd/proxy
# The cache directory must exist, owned by the runtime user, before VOLUME
# declares it: a fresh named volume copies this ownership.
RUN mkdir -p /out/var/lib/stowage

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="stowage" \
      org.opencontainers.image.description="Pull-through caching container registry proxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=65532:65532 /out/var/lib/stowage /var/lib/stowage
COPY --from=build /out/stowage /stowage
# Read-only root filesystem: the process writes only below /var/lib/stowage
# (the cache, a volume) and TMPDIR. The base image's /tmp is writable, but
# with readOnlyRootFilesystem in Kubernetes mount an emptyDir at /tmp (the
# Helm chart does) so that TMPDIR stays writable.
ENV TMPDIR=/tmp
# 65532 is distroless' "nonroot" user; numeric so that runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
VOLUME /var/lib/stowage
# Registry API (/v2/), /healthz and /metrics share one port.
EXPOSE 5000
ENTRYPOINT ["/stowage"]
CMD ["serve", "--root", "/var/lib/stowage"]

# syntax=docker/dockerfile:1
# directus-ws-broker as a container image: one static binary (CGO_ENABLED=0)
# on an empty base, running as an unprivileged numeric user.
#
#   docker build -t directus-ws-broker \
#     --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg COMMIT=$(git rev-parse HEAD) .
#   docker run -p 8080:8080 -e DIRECTUS_URL=https://cms.example.com -e WEBHOOK_SECRET=... directus-ws-broker
#
# Every setting is an environment variable as for the binary (see docs/operating.md);
# the image only changes LISTEN_ADDR's default to 0.0.0.0:8080, since a
# container is reached through its network interface. There is no shell, curl
# or wget in it: HEALTHCHECK runs the binary's own `healthcheck` command.
#
# The final stage copies two files out of the "build" stage. e2e/deploy builds
# exactly that stage with podman, replacing "build" by a directory holding a
# binary it compiled itself (`--build-context build=DIR`), because no base
# image can be pulled there.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
# The layout the final stage copies from: /out/directus-ws-broker and the CA
# bundle (for an https DIRECTUS_URL or rediss:// REDIS_URL).
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/directus-ws-broker . \
 && mkdir -p /out/etc/ssl/certs \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && /out/directus-ws-broker version

FROM scratch
COPY --from=build /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/directus-ws-broker /directus-ws-broker
ENV LISTEN_ADDR=0.0.0.0:8080
# 65532: the "nonroot" user of distroless images; no passwd file needed.
USER 65532:65532
EXPOSE 8080
# /healthz answers 200 while the process serves HTTP. (/readyz also needs
# Directus and the bus; orchestrators that distinguish readiness can use it.)
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/directus-ws-broker", "healthcheck"]
ENTRYPOINT ["/directus-ws-broker"]
CMD ["serve"]

# The session-sidecar image (README "Container image"): `docker build -t session-sidecar .` or
# `podman build -t session-sidecar .`, with access to docker.io.
#
# Stage 1 builds a statically linked binary (glibc, +crt-static: the crate set, aws-lc included,
# links statically on x86_64-unknown-linux-gnu) and lays out the image's whole file tree in
# /out. The final stage is `FROM scratch`: the binary, the CA bundle (rustls reads the system
# roots for https:// JWKS and rediss://), and /etc/passwd and /etc/group naming the non-root
# user 65532; no shell, no package manager, nothing else.
#
# The final stage is byte for byte the one of Containerfile.host, which builds the same image
# from a binary built on the host (scripts/image-check, where no base image can be pulled);
# scripts/image-check checks that they stay identical.

FROM docker.io/library/rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' \
      cargo build --locked --release --target x86_64-unknown-linux-gnu --bin session-sidecar \
 && mkdir -p /out/usr/local/bin /out/etc/ssl/certs \
 && strip -o /out/usr/local/bin/session-sidecar target/x86_64-unknown-linux-gnu/release/session-sidecar \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
 && printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >/out/etc/passwd \
 && printf 'nonroot:x:65532:\n' >/out/etc/group

# --- final stage (identical in Containerfile.host) ---
FROM scratch
COPY --from=builder /out/ /
USER 65532:65532
# --listen (keep it on loopback in a pod) and --metrics-listen (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/session-sidecar"]
CMD ["serve"]

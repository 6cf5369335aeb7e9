# pgbackup with the PostgreSQL client binaries of every major version it may
# meet: pgbackup picks /usr/lib/postgresql/<N>/bin with the smallest N that is
# at least the server's major version.
#
#   docker build -t pgbackup:local .
#   docker run --env-file pgbackup.env -p 9854:9854 pgbackup:local          # the daemon
#   docker run --env-file pgbackup.env pgbackup:local backup                 # one backup
#
# Build arguments, for machines that reach no image registry or no
# apt.postgresql.org (scripts/test-containers builds this way; the runtime
# stage below, its user, entry point and health check are the same):
#
#   RUST_IMAGE, RUNTIME_IMAGE   base images (rust:1-bookworm, debian:bookworm-slim)
#   PG_CLIENTS=debian           the client packages of Debian itself (bookworm
#                               ships postgresql-client-15 only) instead of
#                               PGDG's 13 to 18; PG_MAJORS then defaults to 15
#   PGBACKUP_FROM=prebuilt      no compiling: copy the binary PGBACKUP_BINARY
#                               (default target/docker/pgbackup, the only
#                               path of target/ in the build context)
#
#   cargo build --release && install -D target/release/pgbackup target/docker/pgbackup
#   docker build --build-arg PGBACKUP_FROM=prebuilt -t pgbackup:local .

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# pgdg or debian: where the PostgreSQL client packages come from.
ARG PG_CLIENTS=pgdg
# build or prebuilt: where the pgbackup binary comes from.
ARG PGBACKUP_FROM=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names tests/it as a target.
COPY tests ./tests
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/pgbackup /out/pgbackup

# A binary built outside (the same Debian release, so the same glibc).
FROM scratch AS prebuilt
ARG PGBACKUP_BINARY=target/docker/pgbackup
COPY ${PGBACKUP_BINARY} /out/pgbackup

FROM ${PGBACKUP_FROM} AS pgbackup-binary

# The signing key of apt.postgresql.org (PGDG), checked against its fingerprint.
FROM ${RUST_IMAGE} AS pgdg-key
ARG PGDG_KEY_FINGERPRINT=B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN curl -fsSL --retry 3 -o /pgdg.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && gpg --show-keys --with-colons /pgdg.asc | grep -q "^fpr:*${PGDG_KEY_FINGERPRINT}:"

# The clients from PGDG: every supported major.
FROM ${RUNTIME_IMAGE} AS clients-pgdg
# Client majors to install; drop one here if PGDG stops shipping it.
ARG PG_MAJORS="13 14 15 16 17 18"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=pgdg-key /pgdg.asc /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && packages=() \
 && for major in $PG_MAJORS; do packages+=("postgresql-client-$major"); done \
 && apt-get install -y --no-install-recommends "${packages[@]}" \
 && rm -rf /var/lib/apt/lists/* \
 && for major in $PG_MAJORS; do /usr/lib/postgresql/"$major"/bin/pg_dump --version; done

# The clients from Debian's own archive (PG_CLIENTS=debian).
FROM ${RUNTIME_IMAGE} AS clients-debian
ARG PG_MAJORS="15"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && packages=() \
 && for major in $PG_MAJORS; do packages+=("postgresql-client-$major"); done \
 && apt-get install -y --no-install-recommends ca-certificates "${packages[@]}" \
 && rm -rf /var/lib/apt/lists/* \
 && for major in $PG_MAJORS; do /usr/lib/postgresql/"$major"/bin/pg_dump --version; done

# The runtime, on top of the clients chosen by PG_CLIENTS.
# hadolint ignore=DL3006
FROM clients-${PG_CLIENTS} AS runtime
RUN groupadd --system --gid 10001 pgbackup \
 && useradd --system --uid 10001 --gid pgbackup --home-dir /var/lib/pgbackup --create-home \
      --shell /usr/sbin/nologin pgbackup

COPY --from=pgbackup-binary /out/pgbackup /usr/local/bin/pgbackup

USER 10001:10001
WORKDIR /var/lib/pgbackup
EXPOSE 9854
# GET /healthz on this host, with TLS and credentials when
# BACKUP_WEB_CONFIG_FILE asks for them (docs/security.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["pgbackup", "healthcheck"]
ENTRYPOINT ["pgbackup"]
CMD ["run"]

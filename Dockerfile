# syntax=docker/dockerfile:1
#
# pgbackup with the PostgreSQL client binaries of every major version it may
# meet: pgbackup picks /usr/lib/postgresql/<N>/bin with the smallest N that is
# at least the server's major version.
#
#   docker build -t pgbackup .
#   docker run --env-file pgbackup.env -p 9854:9854 pgbackup          # the daemon
#   docker run --env-file pgbackup.env pgbackup backup                 # one backup

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names tests/it as a target.
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/pgbackup /out/pgbackup

# The signing key of apt.postgresql.org (PGDG), checked against its fingerprint.
FROM rust:1-bookworm AS pgdg-key
ARG PGDG_KEY_FINGERPRINT=B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN curl -fsSL --retry 3 -o /pgdg.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && gpg --show-keys --with-colons /pgdg.asc | grep -q "^fpr:*${PGDG_KEY_FINGERPRINT}:"

FROM debian:bookworm-slim
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

RUN groupadd --system --gid 10001 pgbackup \
 && useradd --system --uid 10001 --gid pgbackup --home-dir /var/lib/pgbackup --create-home \
      --shell /usr/sbin/nologin pgbackup

COPY --from=build /out/pgbackup /usr/local/bin/pgbackup
COPY docker/healthcheck /usr/local/bin/pgbackup-healthcheck

USER 10001:10001
WORKDIR /var/lib/pgbackup
EXPOSE 9854
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/pgbackup-healthcheck"]
ENTRYPOINT ["pgbackup"]
CMD ["run"]

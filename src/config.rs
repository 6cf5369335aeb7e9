//! Configuration from the environment (envy + serde), validated once.
//!
//! One type per concern, each validated by its own constructor from a
//! variable list ([`StoreConfig`], [`DumpConfig`], [`ScheduleConfig`],
//! [`RetentionSettings`], [`NotifyConfig`], [`DaemonConfig`],
//! [`VerifyConfig`], [`EncryptionConfig`]...), so that a command reads only what it uses: `list`
//! needs the store, not the database. [`Config`] composes them for the
//! commands that back up. Everything below the commands takes only validated
//! types.
//!
//! Names are the Railway `postgres-s3-backups` template's (so switching is a
//! change of image), plus the docker-compose `POSTGRES_*` names as a fallback.
//! Defaults live in [`DEFAULTS`]; a test holds docs/configuration.md's table to it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::crypto::{Identities, Recipients};
use crate::error::{one_line, ConfigError};
use crate::webconfig::{self, tls::ClientIdentity, WebConfig};

/// Default HTTP port of `pgbackup run`: not claimed by any well-known exporter.
pub const DEFAULT_PORT: u16 = 9854;

/// Every variable the configuration reads.
pub const VARIABLES: &[&str] = &[
    "BACKUP_DATABASE_URL",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "BACKUP_CRON_SCHEDULE",
    "RUN_ON_STARTUP",
    "SINGLE_SHOT_MODE",
    "BACKUP_VERIFY_CRON_SCHEDULE",
    "BACKUP_FILE_PREFIX",
    "BUCKET_SUBFOLDER",
    "SUPPORT_OBJECT_LOCK",
    "AWS_S3_BUCKET",
    "AWS_S3_ENDPOINT",
    "AWS_S3_REGION",
    "AWS_S3_FORCE_PATH_STYLE",
    "BACKUP_LOCAL_DIR",
    "BACKUP_OPTIONS",
    "BACKUP_FORMAT",
    "BACKUP_COMPRESSION",
    "BACKUP_COMPRESSION_LEVEL",
    "PG_BIN_DIR",
    "BACKUP_RETENTION_DAYS",
    "BACKUP_RETENTION_MIN_COUNT",
    "BACKUP_KEEP_DAILY",
    "BACKUP_KEEP_WEEKLY",
    "BACKUP_KEEP_MONTHLY",
    "BACKUP_RETENTION_INCLUDE_IMPORTED",
    "BACKUP_WEBHOOK_URL",
    "BACKUP_WEBHOOK_RETRIES",
    "BACKUP_WEBHOOK_BACKOFF_SECONDS",
    "BACKUP_WEBHOOK_FORMAT",
    "BACKUP_NOTIFY_ON",
    "BACKUP_HEARTBEAT_URL",
    "BACKUP_LISTEN_ADDRESS",
    "BACKUP_MAX_AGE_HOURS",
    "BACKUP_VERIFY_DATABASE_URL",
    "BACKUP_VERIFY_SQL",
    "BACKUP_PUSHGATEWAY_URL",
    "BACKUP_PUSHGATEWAY_JOB",
    "BACKUP_INSTANCE",
    "BACKUP_TEXTFILE_DIR",
    "BACKUP_DATABASE_URL_FILE",
    "POSTGRES_PASSWORD_FILE",
    "AWS_ACCESS_KEY_ID_FILE",
    "AWS_SECRET_ACCESS_KEY_FILE",
    "AWS_SESSION_TOKEN",
    "AWS_SESSION_TOKEN_FILE",
    "BACKUP_WEBHOOK_URL_FILE",
    "BACKUP_HEARTBEAT_URL_FILE",
    "BACKUP_PUSHGATEWAY_URL_FILE",
    "BACKUP_VERIFY_DATABASE_URL_FILE",
    "BACKUP_DATABASES",
    "BACKUP_EXCLUDE_DATABASES",
    "BACKUP_GLOBALS",
    "BACKUP_PARALLEL",
    "BACKUP_ENCRYPTION_RECIPIENTS",
    "BACKUP_ENCRYPTION_RECIPIENTS_FILE",
    "BACKUP_ENCRYPTION_IDENTITY_FILE",
    "BACKUP_WEB_CONFIG_FILE",
    "BACKUP_HEALTHCHECK_USER",
    "BACKUP_HEALTHCHECK_PASSWORD",
    "BACKUP_HEALTHCHECK_PASSWORD_FILE",
    "BACKUP_HEALTHCHECK_CERT_FILE",
    "BACKUP_HEALTHCHECK_KEY_FILE",
    "BACKUP_WAL_ARCHIVE",
    "BACKUP_WAL_SLOT",
    "BACKUP_WAL_FLUSH_SECONDS",
    "BACKUP_WAL_SPOOL_DIR",
    "BACKUP_WAL_SPOOL_MAX_SEGMENTS",
    "BACKUP_WAL_PREFETCH_SEGMENTS",
    "BACKUP_BASEBACKUP_CRON_SCHEDULE",
];

/// What `pgbackup wal-fetch` needs to read WAL back: the store, the names,
/// and the identity of encrypted backups.
pub const WAL_FETCH_VARIABLES: &[&str] = &[
    "AWS_S3_BUCKET",
    "AWS_S3_ENDPOINT",
    "AWS_S3_REGION",
    "AWS_S3_FORCE_PATH_STYLE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "BACKUP_LOCAL_DIR",
    "BACKUP_FILE_PREFIX",
    "BUCKET_SUBFOLDER",
    "BACKUP_ENCRYPTION_IDENTITY_FILE",
    "BACKUP_WAL_PREFETCH_SEGMENTS",
];

/// The variables that hold secrets: each also comes from a file, named by
/// `<NAME>_FILE` (the convention of the official postgres and MinIO images,
/// Docker secrets and Kubernetes secret volumes).
pub const SECRETS: &[(&str, &str)] = &[
    ("BACKUP_DATABASE_URL", "BACKUP_DATABASE_URL_FILE"),
    ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE"),
    ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID_FILE"),
    ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY_FILE"),
    ("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN_FILE"),
    ("BACKUP_WEBHOOK_URL", "BACKUP_WEBHOOK_URL_FILE"),
    ("BACKUP_HEARTBEAT_URL", "BACKUP_HEARTBEAT_URL_FILE"),
    ("BACKUP_PUSHGATEWAY_URL", "BACKUP_PUSHGATEWAY_URL_FILE"),
    (
        "BACKUP_VERIFY_DATABASE_URL",
        "BACKUP_VERIFY_DATABASE_URL_FILE",
    ),
    (
        "BACKUP_HEALTHCHECK_PASSWORD",
        "BACKUP_HEALTHCHECK_PASSWORD_FILE",
    ),
];

/// The value a variable takes when it is unset or empty, parsed by the same
/// code as a value the user gives. Variables without an entry have no single
/// default (required, optional, or derived from another one).
/// docs/configuration.md shows the same values; a unit test compares the two.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("POSTGRES_PORT", "5432"),
    ("POSTGRES_USER", "postgres"),
    ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
    ("RUN_ON_STARTUP", "false"),
    ("SINGLE_SHOT_MODE", "false"),
    ("BACKUP_FILE_PREFIX", "backup_"),
    ("SUPPORT_OBJECT_LOCK", "false"),
    ("AWS_S3_REGION", "us-east-1"),
    ("AWS_S3_FORCE_PATH_STYLE", "false"),
    ("BACKUP_FORMAT", "custom"),
    ("BACKUP_COMPRESSION", "zstd"),
    ("BACKUP_RETENTION_DAYS", "30"),
    ("BACKUP_RETENTION_MIN_COUNT", "3"),
    ("BACKUP_RETENTION_INCLUDE_IMPORTED", "false"),
    ("BACKUP_PARALLEL", "1"),
    ("BACKUP_WEBHOOK_RETRIES", "3"),
    ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "2"),
    ("BACKUP_WEBHOOK_FORMAT", "slack"),
    ("BACKUP_NOTIFY_ON", "failure"),
    ("BACKUP_LISTEN_ADDRESS", "0.0.0.0:9854"),
    ("BACKUP_MAX_AGE_HOURS", "25"),
    ("BACKUP_PUSHGATEWAY_JOB", "backup"),
    ("BACKUP_WAL_ARCHIVE", "false"),
    ("BACKUP_WAL_SLOT", "pgbackup"),
    ("BACKUP_WAL_FLUSH_SECONDS", "60"),
    ("BACKUP_WAL_SPOOL_DIR", "/var/lib/pgbackup/wal"),
    ("BACKUP_WAL_SPOOL_MAX_SEGMENTS", "64"),
    ("BACKUP_WAL_PREFETCH_SEGMENTS", "8"),
];

/// BACKUP_COMPRESSION_LEVEL's default depends on BACKUP_COMPRESSION.
/// zstd 1 is the fastest level that meets the size goal; see [`Compression::DEFAULT`].
pub const ZSTD_DEFAULT_LEVEL: i32 = 1;
pub const GZIP_DEFAULT_LEVEL: u32 = 6;

/// Upper bounds: beyond them durations and dates overflow, and no
/// real setting comes near them.
const MAX_RETENTION_DAYS: u32 = 1_000_000;
const MAX_WEBHOOK_RETRIES: u32 = 100;
const MAX_WEBHOOK_BACKOFF_SECONDS: f64 = 3600.0;
const MAX_AGE_HOURS: f64 = 87_600.0;

/// The default of `var`, if it has one.
pub fn default_of(var: &str) -> Option<&'static str> {
    DEFAULTS.iter().find(|(k, _)| *k == var).map(|(_, v)| *v)
}

/// The variables as given. Empty values count as unset, and names match
/// whatever their case, as with envy.
#[derive(Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
    /// Lowercased names whose value is not UTF-8.
    not_unicode: BTreeSet<String>,
}

impl Vars {
    /// The process environment. A value that is not UTF-8 is an error once
    /// its variable is read, not before.
    pub fn from_env() -> Result<Vars, ConfigError> {
        let mut vars = Vec::new();
        let mut not_unicode = BTreeSet::new();
        for (k, v) in std::env::vars_os() {
            // A name that is not UTF-8 is none of ours.
            let Ok(k) = k.into_string() else { continue };
            match v.into_string() {
                Ok(v) => vars.push((k, v)),
                Err(_) => {
                    not_unicode.insert(k.to_lowercase());
                }
            }
        }
        Self::build(vars, not_unicode)
    }

    /// The environment, with a file's `NAME=value` lines over it (`#`
    /// comments and blank lines skipped).
    pub fn from_env_and_file(path: &Path) -> Result<Vars, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--env-file", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut all: BTreeMap<String, String> = std::env::vars().collect();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::new(
                    "--env-file",
                    format!("{}: a line without NAME=value", path.display()),
                ));
            };
            all.insert(k.trim().to_string(), v.to_string());
        }
        Self::new(all)
    }

    /// The values of `names` that are set, under those names; `_FILE`
    /// secrets come as their values.
    pub fn export(&self, names: &[&'static str]) -> Vec<(String, String)> {
        names
            .iter()
            .filter_map(|n| Some((n.to_string(), self.get(n).ok()??.to_string())))
            .collect()
    }

    /// Any list of variables (tests, or a caller's own).
    pub fn new<I>(vars: I) -> Result<Vars, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Self::build(vars, BTreeSet::new())
    }

    fn build<I>(vars: I, not_unicode: BTreeSet<String>) -> Result<Vars, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Empty means unset: compose files and templates often write `VAR=`.
        let set = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
        let mut values: BTreeMap<String, String> =
            envy::from_iter(set).map_err(|e| ConfigError::new("environment", e.to_string()))?;
        for (var, file_var) in SECRETS {
            let Some(path) = values.remove(&file_var.to_lowercase()) else {
                continue;
            };
            if values.contains_key(&var.to_lowercase()) {
                return Err(ConfigError::new(
                    file_var,
                    format!("{var} is set too; set one of the two"),
                ));
            }
            values.insert(var.to_lowercase(), read_secret(file_var, path.trim())?);
        }
        Ok(Vars {
            values,
            not_unicode,
        })
    }

    /// The value of `var`; None when unset or empty.
    pub fn get(&self, var: &'static str) -> Result<Option<&str>, ConfigError> {
        let key = var.to_lowercase();
        if self.not_unicode.contains(&key) {
            return Err(ConfigError::new(var, "the value is not valid UTF-8"));
        }
        Ok(self.values.get(&key).map(String::as_str))
    }

    /// The value of `var`, or its entry in [`DEFAULTS`].
    fn or_default(&self, var: &'static str) -> Result<&str, ConfigError> {
        match self.get(var)? {
            Some(v) => Ok(v),
            None => default_of(var).ok_or_else(|| ConfigError::new(var, "not set")),
        }
    }
}

/// A secret's value from its file, read once at start-up; one trailing
/// newline (as `echo` and editors leave) is not part of it. The error names
/// the variable and the path, never the content.
fn read_secret(file_var: &'static str, path: &str) -> Result<String, ConfigError> {
    let raw =
        std::fs::read(path).map_err(|e| invalid(file_var, format!("cannot read {path:?}: {e}")))?;
    let mut value = String::from_utf8(raw)
        .map_err(|_| invalid(file_var, format!("{path:?} is not UTF-8 text")))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.trim().is_empty() {
        return Err(invalid(file_var, format!("{path:?} is empty")));
    }
    Ok(value)
}

/// A configuration error whose message is one line, whatever the input held.
fn invalid(var: &'static str, message: impl AsRef<str>) -> ConfigError {
    ConfigError::new(var, one_line(message.as_ref()))
}

/// `from_env` and `from_vars` for each configuration type, over its `read`.
macro_rules! from_vars {
    ($($t:ty),* $(,)?) => {$(
        impl $t {
            /// Reads and validates the process environment.
            pub fn from_env() -> Result<Self, ConfigError> {
                Self::read(&Vars::from_env()?)
            }

            /// Same, from any list of variables (tests).
            pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
            where
                I: IntoIterator<Item = (String, String)>,
            {
                Self::read(&Vars::new(vars)?)
            }
        }
    )*};
}

from_vars!(
    Config,
    StoreConfig,
    DumpConfig,
    ScheduleConfig,
    RetentionSettings,
    NotifyConfig,
    DaemonConfig,
    HealthcheckConfig,
    VerifyConfig,
    DrillConfig,
    BatchConfig,
    EncryptionConfig,
    DatabasesConfig,
);

/// A value that must never reach a log line, an error or Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where to connect: the URL without its password, and the password apart,
/// so the URL can go on pg_dump's command line and the password cannot.
#[derive(Clone)]
pub struct Database {
    url: Url,
    password: Option<Secret>,
    name: String,
}

impl Database {
    /// Parses a postgres:// URL. The error never echoes the URL (it may hold a password).
    pub fn parse(var: &'static str, raw: &str) -> Result<Database, ConfigError> {
        let mut url = Url::parse(raw.trim()).map_err(|e| {
            ConfigError::new(
                var,
                format!("not a URL ({e}); expected postgres://user:password@host:5432/dbname"),
            )
        })?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(ConfigError::new(
                var,
                format!(
                    "scheme is {:?}; expected postgres:// or postgresql://",
                    url.scheme()
                ),
            ));
        }
        let password = url
            .password()
            .map(|p| Secret::new(percent_decode(p).unwrap_or_else(|| p.to_string())));
        let _ = url.set_password(None);
        let name = url.path().trim_start_matches('/').to_string();
        let name = percent_decode(&name).unwrap_or(name);
        let user = url.username().to_string();
        let name = if name.is_empty() {
            // libpq's rule: the database defaults to the user name.
            if user.is_empty() {
                "postgres".to_string()
            } else {
                percent_decode(&user).unwrap_or(user)
            }
        } else {
            name
        };
        Ok(Database {
            url,
            password,
            name,
        })
    }

    /// The URL with the password removed: safe for argv and logs.
    pub fn url_without_password(&self) -> &Url {
        &self.url
    }
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// Database name, the `database` label of every metric.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `host:port` as libpq reads the URL (a `host` or `port` query
    /// parameter wins), for messages and to tell databases apart.
    pub fn server(&self) -> String {
        let param = |key: &str| {
            self.url
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let host =
            param("host").unwrap_or_else(|| self.url.host_str().unwrap_or("localhost").to_string());
        let port = param("port")
            .and_then(|p| p.parse::<u16>().ok())
            .or(self.url.port())
            .unwrap_or(5432);
        format!("{host}:{port}")
    }
    /// Whether both name the same database on the same server.
    pub fn same_database(&self, other: &Database) -> bool {
        self.name == other.name && self.server() == other.server()
    }
    /// The same server and credentials, another database.
    pub fn with_database(&self, name: &str) -> Database {
        let mut d = self.clone();
        d.url.set_path(&format!("/{}", urlencode(name)));
        d.name = name.to_string();
        d
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url.as_str())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pg_dump -Fc, restored with pg_restore.
    Custom,
    /// pg_dump -Fp, restored with psql.
    Plain,
    /// pg_dump -Ft: only the Railway template's imported backups; pgbackup
    /// never writes it (BACKUP_FORMAT does not accept it).
    Tar,
}

impl Format {
    pub fn ext(self) -> &'static str {
        match self {
            Format::Custom => "dump",
            Format::Plain => "sql",
            Format::Tar => "tar",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Custom => "custom",
            Format::Plain => "plain",
            Format::Tar => "tar",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd { level: i32 },
    Gzip { level: u32 },
    None,
}

impl Compression {
    /// The fastest setting that meets the size goal (at most 1.1x what
    /// `pg_dump -Fc` stores): on the benchmark dump zstd 1 costs 7.2 CPU s
    /// per 2 GB against 9.1 s for zstd 3, and stores 0.87x of `pg_dump -Fc`
    /// (bench/results/backup-levels.md). On two cores the backup is CPU-bound.
    pub const DEFAULT: Compression = Compression::Zstd {
        level: ZSTD_DEFAULT_LEVEL,
    };

    pub fn ext(self) -> &'static str {
        match self {
            Compression::Zstd { .. } => ".zst",
            Compression::Gzip { .. } => ".gz",
            Compression::None => "",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "zstd",
            Compression::Gzip { .. } => "gzip",
            Compression::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    S3 {
        bucket: String,
        /// None: AWS itself.
        endpoint: Option<String>,
        region: String,
        force_path_style: bool,
        /// Access key id, secret and session token, when configured
        /// (directly or from `_FILE`s); None: the AWS default chain
        /// (profile, web identity, instance role).
        credentials: Option<(Secret, Secret, Option<Secret>)>,
        /// SUPPORT_OBJECT_LOCK: every upload carries Content-MD5, and a
        /// delete refused because the object is locked counts as kept.
        object_lock: bool,
    },
    Local {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// 0 keeps everything.
    pub days: u32,
    pub min_count: u32,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// The Railway template's imported backups take part too
    /// (BACKUP_RETENTION_INCLUDE_IMPORTED); off, they are never deleted.
    pub include_imported: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Slack,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOn {
    Failure,
    Always,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: Secret,
    pub retries: u32,
    pub backoff: Duration,
    pub format: WebhookFormat,
}

/// A cron expression as the user wrote it, parsed once at validation.
#[derive(Clone)]
pub struct Cron {
    expr: String,
    schedule: crate::schedule::Schedule,
}

impl Cron {
    /// Parses a 5- or 6-field expression ([`crate::schedule::parse`]) and
    /// refuses one that never fires (e.g. 30 February).
    pub fn parse(var: &'static str, expr: &str) -> Result<Cron, ConfigError> {
        let schedule = crate::schedule::parse(expr).map_err(|e| invalid(var, e))?;
        if crate::schedule::next_after(&schedule, chrono::Utc::now()).is_none() {
            return Err(invalid(var, format!("{expr:?} never fires")));
        }
        Ok(Cron {
            expr: expr.trim().to_string(),
            schedule,
        })
    }
    pub fn schedule(&self) -> &crate::schedule::Schedule {
        &self.schedule
    }
    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.expr
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.expr)
    }
}

/// Where backups live and under which name prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: StorageConfig,
    pub prefix: String,
}

impl StoreConfig {
    pub fn read(v: &Vars) -> Result<StoreConfig, ConfigError> {
        let mut prefix = v.or_default("BACKUP_FILE_PREFIX")?.to_string();
        if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
            return Err(invalid(
                "BACKUP_FILE_PREFIX",
                "must be relative: no leading '/' and no '..'",
            ));
        }
        // The Railway template's folder: objects go under `<subfolder>/`.
        if let Some(sub) = v.get("BUCKET_SUBFOLDER")? {
            let sub = sub.trim().trim_matches('/');
            if sub.split('/').any(|s| s == ".." || s.is_empty()) {
                return Err(invalid(
                    "BUCKET_SUBFOLDER",
                    format!("{sub:?} is not a folder: no empty parts and no '..'"),
                ));
            }
            prefix = format!("{sub}/{prefix}");
        }
        let object_lock = parse_bool(v, "SUPPORT_OBJECT_LOCK")?;
        let backend = match (v.get("AWS_S3_BUCKET")?, v.get("BACKUP_LOCAL_DIR")?) {
            (Some(bucket), _) => StorageConfig::S3 {
                bucket: bucket_name(bucket)?,
                endpoint: v.get("AWS_S3_ENDPOINT")?.map(endpoint).transpose()?,
                region: region(v.or_default("AWS_S3_REGION")?)?,
                force_path_style: parse_bool(v, "AWS_S3_FORCE_PATH_STYLE")?,
                object_lock,
                credentials: match (v.get("AWS_ACCESS_KEY_ID")?, v.get("AWS_SECRET_ACCESS_KEY")?) {
                    (Some(id), Some(secret)) => Some((
                        Secret::new(id.trim()),
                        Secret::new(secret.trim()),
                        v.get("AWS_SESSION_TOKEN")?.map(|t| Secret::new(t.trim())),
                    )),
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(invalid(
                            "AWS_SECRET_ACCESS_KEY",
                            "not set, but AWS_ACCESS_KEY_ID is: set both (or their _FILE forms)",
                        ))
                    }
                    (None, Some(_)) => return Err(invalid(
                        "AWS_ACCESS_KEY_ID",
                        "not set, but AWS_SECRET_ACCESS_KEY is: set both (or their _FILE forms)",
                    )),
                },
            },
            // Refused rather than ignored: a directory has no Object Lock.
            (None, Some(_)) if object_lock => {
                return Err(invalid(
                    "SUPPORT_OBJECT_LOCK",
                    "true applies to S3 buckets only (AWS_S3_BUCKET), not to BACKUP_LOCAL_DIR; unset it",
                ))
            }
            (None, Some(dir)) => StorageConfig::Local {
                dir: PathBuf::from(dir),
            },
            (None, None) => return Err(invalid(
                "AWS_S3_BUCKET",
                "not set, and neither is BACKUP_LOCAL_DIR: set one of them to say where backups go",
            )),
        };
        Ok(StoreConfig { backend, prefix })
    }
}

/// What `pg_dump` dumps and how it is stored.
#[derive(Debug, Clone)]
pub struct DumpConfig {
    pub database: Database,
    pub pg_bin_dir: Option<PathBuf>,
    pub pg_dump_options: Vec<String>,
    pub format: Format,
    pub compression: Compression,
}

impl DumpConfig {
    pub fn read(v: &Vars) -> Result<DumpConfig, ConfigError> {
        let database = Self::read_database(v)?.ok_or_else(|| {
            invalid(
                "BACKUP_DATABASE_URL",
                "not set (nor POSTGRES_HOST): set it to postgres://user:password@host:5432/dbname",
            )
        })?;
        let pg_dump_options = match v.get("BACKUP_OPTIONS")? {
            None => Vec::new(),
            Some(s) => {
                let opts = shell_words::split(s).map_err(|e| {
                    invalid(
                        "BACKUP_OPTIONS",
                        format!("cannot split into arguments: {e}"),
                    )
                })?;
                check_pg_dump_options(&opts)?;
                opts
            }
        };
        Ok(DumpConfig {
            database,
            pg_bin_dir: Self::read_pg_bin_dir(v)?,
            pg_dump_options,
            format: read_format(v)?,
            compression: read_compression(v)?,
        })
    }

    /// The database to back up: BACKUP_DATABASE_URL, else the `POSTGRES_*`
    /// names; None when neither BACKUP_DATABASE_URL nor POSTGRES_HOST is set.
    pub fn read_database(v: &Vars) -> Result<Option<Database>, ConfigError> {
        match v.get("BACKUP_DATABASE_URL")? {
            Some(u) => Database::parse("BACKUP_DATABASE_URL", u).map(Some),
            None => database_from_parts(v),
        }
    }

    /// PG_BIN_DIR alone: restoring and verifying need the client tools, not
    /// the database.
    pub fn read_pg_bin_dir(v: &Vars) -> Result<Option<PathBuf>, ConfigError> {
        Ok(v.get("PG_BIN_DIR")?.map(PathBuf::from))
    }
}

/// When `pgbackup run` backs up and drills.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: Cron,
    pub run_on_startup: bool,
    pub single_shot: bool,
    /// Restore drills (BACKUP_VERIFY_CRON_SCHEDULE); None: no scheduled drills.
    pub verify_cron: Option<Cron>,
}

impl ScheduleConfig {
    pub fn read(v: &Vars) -> Result<ScheduleConfig, ConfigError> {
        Ok(ScheduleConfig {
            cron: Cron::parse(
                "BACKUP_CRON_SCHEDULE",
                v.or_default("BACKUP_CRON_SCHEDULE")?,
            )?,
            run_on_startup: parse_bool(v, "RUN_ON_STARTUP")?,
            single_shot: parse_bool(v, "SINGLE_SHOT_MODE")?,
            verify_cron: v
                .get("BACKUP_VERIFY_CRON_SCHEDULE")?
                .map(|s| Cron::parse("BACKUP_VERIFY_CRON_SCHEDULE", s))
                .transpose()?,
        })
    }
}

impl RetentionSettings {
    pub fn read(v: &Vars) -> Result<RetentionSettings, ConfigError> {
        let days = "BACKUP_RETENTION_DAYS";
        let min_count = "BACKUP_RETENTION_MIN_COUNT";
        Ok(RetentionSettings {
            days: parse_u32(days, v.or_default(days)?, MAX_RETENTION_DAYS)?,
            min_count: parse_u32(min_count, v.or_default(min_count)?, u32::MAX)?,
            keep_daily: opt_u32(v, "BACKUP_KEEP_DAILY")?,
            keep_weekly: opt_u32(v, "BACKUP_KEEP_WEEKLY")?,
            keep_monthly: opt_u32(v, "BACKUP_KEEP_MONTHLY")?,
            include_imported: parse_bool(v, "BACKUP_RETENTION_INCLUDE_IMPORTED")?,
        })
    }
}

/// Webhook and heartbeat after each attempt.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// None without BACKUP_WEBHOOK_URL.
    pub webhook: Option<Webhook>,
    pub notify_on: NotifyOn,
    pub heartbeat_url: Option<Secret>,
}

impl NotifyConfig {
    pub fn read(v: &Vars) -> Result<NotifyConfig, ConfigError> {
        // Checked even without a URL: a bad value is a mistake either way.
        let retries = "BACKUP_WEBHOOK_RETRIES";
        let retries = parse_u32(retries, v.or_default(retries)?, MAX_WEBHOOK_RETRIES)?;
        let backoff = "BACKUP_WEBHOOK_BACKOFF_SECONDS";
        let backoff = parse_seconds(backoff, v.or_default(backoff)?, MAX_WEBHOOK_BACKOFF_SECONDS)?;
        let format = match v.or_default("BACKUP_WEBHOOK_FORMAT")? {
            "slack" => WebhookFormat::Slack,
            "json" => WebhookFormat::Json,
            o => {
                return Err(invalid(
                    "BACKUP_WEBHOOK_FORMAT",
                    format!("{o:?} is not a format; use slack or json"),
                ))
            }
        };
        // Neither URL is ever echoed: each is a credential.
        let webhook = v
            .get("BACKUP_WEBHOOK_URL")?
            .map(|u| {
                http_url("BACKUP_WEBHOOK_URL", u).map(|url| Webhook {
                    url,
                    retries,
                    backoff,
                    format,
                })
            })
            .transpose()?;
        let notify_on = match v.or_default("BACKUP_NOTIFY_ON")? {
            "failure" => NotifyOn::Failure,
            "always" => NotifyOn::Always,
            o => {
                return Err(invalid(
                    "BACKUP_NOTIFY_ON",
                    format!("{o:?} is not valid; use failure or always"),
                ))
            }
        };
        let heartbeat_url = v
            .get("BACKUP_HEARTBEAT_URL")?
            .map(|u| http_url("BACKUP_HEARTBEAT_URL", u))
            .transpose()?;
        Ok(NotifyConfig {
            webhook,
            notify_on,
            heartbeat_url,
        })
    }
}

/// The HTTP server and health of `pgbackup run`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    /// `/health` turns 503 when the last success is older.
    pub max_age: Duration,
    /// TLS and basic auth (BACKUP_WEB_CONFIG_FILE), read and checked here so
    /// that a bad file stops start-up; None: plain HTTP, no auth.
    pub web: Option<WebConfig>,
}

impl DaemonConfig {
    pub fn read(v: &Vars) -> Result<DaemonConfig, ConfigError> {
        let listen = v.or_default("BACKUP_LISTEN_ADDRESS")?;
        let listen = listen.trim().parse().map_err(|_| {
            invalid(
                "BACKUP_LISTEN_ADDRESS",
                format!("{listen:?} is not host:port, e.g. 0.0.0.0:{DEFAULT_PORT}"),
            )
        })?;
        let var = "BACKUP_MAX_AGE_HOURS";
        let hours = parse_number(var, v.or_default(var)?, MAX_AGE_HOURS)?;
        let max_age = Duration::try_from_secs_f64(hours * 3600.0)
            .map_err(|e| invalid(var, format!("{hours} hours: {e}")))?;
        let web = match v.get(webconfig::VAR)? {
            None => None,
            Some(path) => Some(WebConfig::load(Path::new(path.trim()))?),
        };
        Ok(DaemonConfig {
            listen,
            max_age,
            web,
        })
    }
}

/// `pgbackup healthcheck`: the daemon's address and web configuration, and
/// what the check presents when that configuration asks for credentials.
#[derive(Debug, Clone)]
pub struct HealthcheckConfig {
    pub daemon: DaemonConfig,
    /// User and password for basic auth.
    pub credentials: Option<(String, Secret)>,
    /// A client certificate, for `RequireAndVerifyClientCert`.
    pub identity: Option<ClientIdentity>,
}

impl HealthcheckConfig {
    pub fn read(v: &Vars) -> Result<HealthcheckConfig, ConfigError> {
        let daemon = DaemonConfig::read(v)?;
        let (user_var, pw_var) = ("BACKUP_HEALTHCHECK_USER", "BACKUP_HEALTHCHECK_PASSWORD");
        let credentials = match (v.get(user_var)?, v.get(pw_var)?) {
            (Some(u), Some(_)) if u.contains(':') => {
                return Err(invalid(user_var, "a basic auth user name has no ':'"));
            }
            (Some(u), Some(p)) => Some((u.to_string(), Secret::new(p))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    user_var,
                    format!("set, but {pw_var} is not: set both (or {pw_var}_FILE)"),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    pw_var,
                    format!("set, but {user_var} is not: set both"),
                ))
            }
        };
        let (cert_var, key_var) = (
            "BACKUP_HEALTHCHECK_CERT_FILE",
            "BACKUP_HEALTHCHECK_KEY_FILE",
        );
        let identity = match (v.get(cert_var)?, v.get(key_var)?) {
            (Some(c), Some(k)) => Some(
                ClientIdentity::load(Path::new(c.trim()), Path::new(k.trim())).map_err(
                    |(is_cert, m)| {
                        let (var, file) = if is_cert { (cert_var, c) } else { (key_var, k) };
                        invalid(var, format!("{file:?}: {m}"))
                    },
                )?,
            ),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    cert_var,
                    format!("set, but {key_var} is not: set both"),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    key_var,
                    format!("set, but {cert_var} is not: set both"),
                ))
            }
        };
        // What the server asks for, the check must have: say so here rather
        // than as a 401 or a failed handshake at every check.
        if let Some(web) = &daemon.web {
            if !web.users.is_empty() && credentials.is_none() {
                return Err(invalid(
                    user_var,
                    format!(
                        "not set, but {} has basic_auth_users: set {user_var} and {pw_var} \
                         (or {pw_var}_FILE) to a user of that file",
                        webconfig::VAR
                    ),
                ));
            }
            let required = web.tls.as_ref().is_some_and(|t| {
                t.client_auth == webconfig::ClientAuth::RequireAndVerifyClientCert
            });
            if required && identity.is_none() {
                return Err(invalid(
                    cert_var,
                    format!(
                        "not set, but {} requires client certificates: set {cert_var} and \
                         {key_var} to a certificate from its client_ca_file",
                        webconfig::VAR
                    ),
                ));
            }
        }
        Ok(HealthcheckConfig {
            daemon,
            credentials,
            identity,
        })
    }
}

/// Restore drills (`verify --restore`): where they restore and what they check.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The scratch database; None: a temporary one on the backed-up server.
    pub verify_database: Option<Database>,
    /// Must return true in the restored database.
    pub verify_sql: Option<String>,
}

/// Where a one-shot run (`backup`, `SINGLE_SHOT_MODE`, `prune`, `verify
/// --restore`) publishes its metrics: a Pushgateway, a textfile for
/// node_exporter, both or neither.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The Pushgateway's base URL; user and password in it are sent as
    /// basic auth and never logged.
    pub pushgateway: Option<Secret>,
    /// The `job` of the pushed group and of the textfile's series.
    pub job: String,
    /// The `instance`: stable across runs (a CronJob's host name is not).
    pub instance: String,
    pub textfile_dir: Option<PathBuf>,
}

impl BatchConfig {
    pub fn read(v: &Vars) -> Result<BatchConfig, ConfigError> {
        let pushgateway = v
            .get("BACKUP_PUSHGATEWAY_URL")?
            .map(|u| http_url("BACKUP_PUSHGATEWAY_URL", u))
            .transpose()?;
        let label = |var: &'static str, s: &str| -> Result<String, ConfigError> {
            let s = s.trim();
            if s.is_empty() || s.chars().any(|c| c.is_control()) {
                return Err(invalid(var, format!("{s:?} is not a label value")));
            }
            Ok(s.to_string())
        };
        let job = label(
            "BACKUP_PUSHGATEWAY_JOB",
            v.or_default("BACKUP_PUSHGATEWAY_JOB")?,
        )?;
        let instance = match v.get("BACKUP_INSTANCE")? {
            Some(i) => label("BACKUP_INSTANCE", i)?,
            None => host_name(),
        };
        let textfile_dir = v
            .get("BACKUP_TEXTFILE_DIR")?
            .map(|d| PathBuf::from(d.trim()));
        Ok(BatchConfig {
            pushgateway,
            job,
            instance,
            textfile_dir,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.pushgateway.is_some() || self.textfile_dir.is_some()
    }
}

/// The machine's name: the default `instance`, and "which host sent this"
/// in notifications.
pub fn host_name() -> String {
    // gethostname(3) on Linux is uname(2)'s nodename.
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "unknown-host".to_string()
    } else {
        name
    }
}

impl VerifyConfig {
    pub fn read(v: &Vars) -> Result<VerifyConfig, ConfigError> {
        Ok(VerifyConfig {
            verify_database: v
                .get("BACKUP_VERIFY_DATABASE_URL")?
                .map(|u| Database::parse("BACKUP_VERIFY_DATABASE_URL", u))
                .transpose()?,
            verify_sql: v.get("BACKUP_VERIFY_SQL")?.map(str::to_string),
        })
    }

    /// Whether a drill has somewhere to restore that is not `source`, the
    /// database being backed up (None when it is not configured).
    pub fn check_scratch(&self, source: Option<&Database>) -> Result<(), ConfigError> {
        match (&self.verify_database, source) {
            (None, None) => Err(invalid(
                "BACKUP_DATABASE_URL",
                "not set: verify --restore creates its scratch database on that server (or set BACKUP_VERIFY_DATABASE_URL)",
            )),
            (Some(scratch), Some(src)) if scratch.same_database(src) => Err(invalid(
                "BACKUP_VERIFY_DATABASE_URL",
                format!(
                    "names the database being backed up ({:?} at {}); it must name a scratch database",
                    src.name(),
                    src.server()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// What a restore drill reads: where the backups are, the database they
/// come from (to create a scratch database next to it), the client tools
/// and the drill's own settings. Validated like the rest.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    pub prefix: String,
    /// None when only BACKUP_VERIFY_DATABASE_URL is configured.
    pub source: Option<Database>,
    pub pg_bin_dir: Option<PathBuf>,
    pub verify: VerifyConfig,
    /// Decrypts encrypted backups; a drill of one fails without it.
    pub identity: Option<Arc<Identities>>,
}

impl DrillConfig {
    pub fn read(v: &Vars) -> Result<DrillConfig, ConfigError> {
        let store = StoreConfig::read(v)?;
        let verify = VerifyConfig::read(v)?;
        let source = DumpConfig::read_database(v)?;
        verify.check_scratch(source.as_ref())?;
        Ok(DrillConfig {
            prefix: store.prefix,
            source,
            pg_bin_dir: DumpConfig::read_pg_bin_dir(v)?,
            verify,
            identity: EncryptionConfig::read(v)?.identity,
        })
    }
}

/// Which databases a run backs up (BACKUP_DATABASES).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Unset: the URL's database alone, under today's names.
    Single,
    /// `all`: every database that allows connections and is not a
    /// template, found at each run, minus the excluded ones.
    All { exclude: Vec<String> },
    /// The names given, in their order.
    List(Vec<String>),
}

/// Whether a run also stores roles and tablespaces (BACKUP_GLOBALS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Globals {
    Off,
    On,
    /// `pg_dumpall --globals-only --no-role-passwords`: for managed
    /// servers where pg_authid cannot be read.
    NoPasswords,
}

/// Several databases of one server: which, how many at once, and globals.
#[derive(Debug, Clone)]
pub struct DatabasesConfig {
    pub selection: Selection,
    pub globals: Globals,
    /// Dumps running at once (BACKUP_PARALLEL).
    pub parallel: usize,
}

/// Upper bound of BACKUP_PARALLEL: each dump is a pg_dump and a server
/// backend; beyond this a server is better served by fewer at once.
const MAX_PARALLEL: u32 = 32;

impl DatabasesConfig {
    pub fn read(v: &Vars) -> Result<DatabasesConfig, ConfigError> {
        let names = |var: &'static str, s: &str| -> Result<Vec<String>, ConfigError> {
            let mut out: Vec<String> = Vec::new();
            for n in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if n.contains('\0') {
                    return Err(invalid(var, "a database name cannot hold a NUL byte"));
                }
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
            if out.is_empty() {
                return Err(invalid(var, "names no database"));
            }
            Ok(out)
        };
        let exclude = v
            .get("BACKUP_EXCLUDE_DATABASES")?
            .map(|s| names("BACKUP_EXCLUDE_DATABASES", s))
            .transpose()?;
        let selection = match v.get("BACKUP_DATABASES")? {
            None => Selection::Single,
            Some(s) if s.trim().eq_ignore_ascii_case("all") => Selection::All {
                exclude: exclude.clone().unwrap_or_default(),
            },
            Some(s) => Selection::List(names("BACKUP_DATABASES", s)?),
        };
        if exclude.is_some() && !matches!(selection, Selection::All { .. }) {
            return Err(invalid(
                "BACKUP_EXCLUDE_DATABASES",
                "applies only to BACKUP_DATABASES=all; leave the names out of the list instead",
            ));
        }
        let globals = match v
            .get("BACKUP_GLOBALS")?
            .map(|g| g.trim().to_ascii_lowercase())
        {
            None if selection == Selection::Single => Globals::Off,
            None => Globals::On,
            Some(g) => match g.as_str() {
                "true" | "1" | "yes" | "on" => Globals::On,
                "false" | "0" | "no" | "off" => Globals::Off,
                "no-passwords" => Globals::NoPasswords,
                o => {
                    return Err(invalid(
                        "BACKUP_GLOBALS",
                        format!("{o:?} is not true, false or no-passwords"),
                    ))
                }
            },
        };
        let parallel = parse_u32(
            "BACKUP_PARALLEL",
            v.or_default("BACKUP_PARALLEL")?,
            MAX_PARALLEL,
        )?;
        if parallel == 0 {
            return Err(invalid("BACKUP_PARALLEL", "must be at least 1"));
        }
        Ok(DatabasesConfig {
            selection,
            globals,
            parallel: parallel as usize,
        })
    }

    /// Several databases, each under a prefix of its own.
    pub fn is_multi(&self) -> bool {
        self.selection != Selection::Single
    }
}

/// Encryption of what is stored, and the identity that reads it back.
#[derive(Debug, Clone, Default)]
pub struct EncryptionConfig {
    /// Every new object is encrypted to these; None: stored unencrypted.
    pub recipients: Option<Arc<Recipients>>,
    /// Decrypts for restores, drills and deep verifies. Read once here, so
    /// a bad file stops start-up rather than the first restore.
    pub identity: Option<Arc<Identities>>,
}

impl EncryptionConfig {
    /// `age` or `none`: the `encryption` metadata of new objects.
    pub fn label(&self) -> &'static str {
        if self.recipients.is_some() {
            "age"
        } else {
            "none"
        }
    }

    pub fn read(v: &Vars) -> Result<EncryptionConfig, ConfigError> {
        const INLINE: &str = "BACKUP_ENCRYPTION_RECIPIENTS";
        const FILE: &str = "BACKUP_ENCRYPTION_RECIPIENTS_FILE";
        let recipients = match (v.get(INLINE)?, v.get(FILE)?) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    FILE,
                    format!("{INLINE} is set too; set one of the two"),
                ))
            }
            (Some(text), None) => Some(Recipients::parse(INLINE, text)?),
            (None, Some(path)) => Some(Recipients::from_file(FILE, Path::new(path.trim()))?),
            (None, None) => None,
        };
        let identity = v
            .get("BACKUP_ENCRYPTION_IDENTITY_FILE")?
            .map(|p| Identities::from_file("BACKUP_ENCRYPTION_IDENTITY_FILE", Path::new(p.trim())))
            .transpose()?;
        Ok(EncryptionConfig {
            recipients: recipients.map(Arc::new),
            identity: identity.map(Arc::new),
        })
    }
}

/// Point-in-time recovery: WAL streaming and base backups.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// `run` streams WAL into the store (BACKUP_WAL_ARCHIVE).
    pub archive: bool,
    /// The physical replication slot.
    pub slot: String,
    /// The segment in progress is stored at least this often.
    pub flush: Duration,
    /// Where pg_receivewal writes until a segment is stored: a volume that
    /// outlives the process, since the slot is told "flushed" once WAL is here.
    pub spool: PathBuf,
    /// pg_receivewal is paused while the spool holds this many segments
    /// (the slot keeps the rest on the server).
    pub spool_max_segments: u32,
    /// When `run` takes base backups.
    pub basebackup_cron: Cron,
}

/// Slot names: what PostgreSQL accepts (lower case, digits, underscore).
fn slot_name(s: &str) -> Result<String, ConfigError> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 63
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid(
            "BACKUP_WAL_SLOT",
            format!("{s:?} is not a replication slot name (lower-case letters, digits and _, at most 63)"),
        ));
    }
    Ok(s.to_string())
}

impl WalConfig {
    pub fn read(v: &Vars) -> Result<WalConfig, ConfigError> {
        let flush = parse_seconds(
            "BACKUP_WAL_FLUSH_SECONDS",
            v.or_default("BACKUP_WAL_FLUSH_SECONDS")?,
            86_400.0,
        )?;
        if flush < Duration::from_secs(1) {
            return Err(invalid("BACKUP_WAL_FLUSH_SECONDS", "must be at least 1"));
        }
        let max = parse_u32(
            "BACKUP_WAL_SPOOL_MAX_SEGMENTS",
            v.or_default("BACKUP_WAL_SPOOL_MAX_SEGMENTS")?,
            1_000_000,
        )?;
        if max < 2 {
            return Err(invalid(
                "BACKUP_WAL_SPOOL_MAX_SEGMENTS",
                "must be at least 2",
            ));
        }
        let basebackup_cron = match v.get("BACKUP_BASEBACKUP_CRON_SCHEDULE")? {
            Some(s) => Cron::parse("BACKUP_BASEBACKUP_CRON_SCHEDULE", s)?,
            None => Cron::parse(
                "BACKUP_CRON_SCHEDULE",
                v.or_default("BACKUP_CRON_SCHEDULE")?,
            )?,
        };
        Ok(WalConfig {
            archive: parse_bool(v, "BACKUP_WAL_ARCHIVE")?,
            slot: slot_name(v.or_default("BACKUP_WAL_SLOT")?)?,
            flush,
            spool: PathBuf::from(v.or_default("BACKUP_WAL_SPOOL_DIR")?.trim()),
            spool_max_segments: max,
            basebackup_cron,
        })
    }
}

/// BACKUP_WAL_PREFETCH_SEGMENTS: how many completed segments `wal-fetch`
/// reads ahead of recovery (0: none). 16 MiB of disk each, in `pg_wal/`.
pub fn wal_prefetch_segments(v: &Vars) -> Result<u32, ConfigError> {
    parse_u32(
        "BACKUP_WAL_PREFETCH_SEGMENTS",
        v.or_default("BACKUP_WAL_PREFETCH_SEGMENTS")?,
        256,
    )
}

/// The whole configuration, for the commands that back up (`run`,
/// `backup`, `check`).
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub dump: DumpConfig,
    pub schedule: ScheduleConfig,
    pub retention: RetentionSettings,
    pub notify: NotifyConfig,
    pub daemon: DaemonConfig,
    pub verify: VerifyConfig,
    pub batch: BatchConfig,
    pub encryption: EncryptionConfig,
    pub databases: DatabasesConfig,
    pub wal: WalConfig,
}

impl Config {
    pub fn read(v: &Vars) -> Result<Config, ConfigError> {
        let dump = DumpConfig::read(v)?;
        let schedule = ScheduleConfig::read(v)?;
        let store = StoreConfig::read(v)?;
        let retention = RetentionSettings::read(v)?;
        let notify = NotifyConfig::read(v)?;
        let daemon = DaemonConfig::read(v)?;
        let verify = VerifyConfig::read(v)?;
        verify.check_scratch(Some(&dump.database))?;
        let batch = BatchConfig::read(v)?;
        let encryption = EncryptionConfig::read(v)?;
        let databases = DatabasesConfig::read(v)?;
        let wal = WalConfig::read(v)?;
        Ok(Config {
            store,
            dump,
            schedule,
            retention,
            notify,
            daemon,
            verify,
            batch,
            encryption,
            databases,
            wal,
        })
    }

    /// What the daemon's restore drills read.
    pub fn drill(&self) -> DrillConfig {
        DrillConfig {
            prefix: self.store.prefix.clone(),
            source: Some(self.dump.database.clone()),
            pg_bin_dir: self.dump.pg_bin_dir.clone(),
            verify: self.verify.clone(),
            identity: self.encryption.identity.clone(),
        }
    }
}

/// The docker-compose + MinIO setup's names, used when BACKUP_DATABASE_URL is unset.
fn database_from_parts(v: &Vars) -> Result<Option<Database>, ConfigError> {
    let Some(host) = v.get("POSTGRES_HOST")? else {
        return Ok(None);
    };
    let port = v.or_default("POSTGRES_PORT")?;
    let port = port
        .trim()
        .parse::<u16>()
        .map_err(|_| invalid("POSTGRES_PORT", format!("{port:?} is not a port number")))?;
    let user = v.or_default("POSTGRES_USER")?;
    let db = v.get("POSTGRES_DB")?.unwrap_or(user);
    let mut url =
        Url::parse("postgres://localhost/").map_err(|e| invalid("POSTGRES_HOST", e.to_string()))?;
    url.set_host(Some(host))
        .map_err(|_| invalid("POSTGRES_HOST", format!("{host:?} is not a host name")))?;
    let _ = url.set_port(Some(port));
    let _ = url.set_username(&urlencode(user));
    url.set_path(&format!("/{}", urlencode(db)));
    let mut d = Database::parse("POSTGRES_HOST", url.as_str())?;
    d.password = v.get("POSTGRES_PASSWORD")?.map(Secret::new);
    Ok(Some(d))
}

fn read_format(v: &Vars) -> Result<Format, ConfigError> {
    match v.or_default("BACKUP_FORMAT")?.to_ascii_lowercase().as_str() {
        "custom" | "c" => Ok(Format::Custom),
        "plain" | "p" | "sql" => Ok(Format::Plain),
        other => Err(invalid(
            "BACKUP_FORMAT",
            format!("{other:?} is not a format; use custom or plain"),
        )),
    }
}

fn read_compression(v: &Vars) -> Result<Compression, ConfigError> {
    let var = "BACKUP_COMPRESSION_LEVEL";
    let level = v.get(var)?;
    match v
        .or_default("BACKUP_COMPRESSION")?
        .to_ascii_lowercase()
        .as_str()
    {
        "zstd" => Ok(Compression::Zstd {
            level: match level {
                None => ZSTD_DEFAULT_LEVEL,
                Some(l) => i32::from(parse_range(var, l, 1, 19)?),
            },
        }),
        "gzip" | "gz" => Ok(Compression::Gzip {
            level: match level {
                None => GZIP_DEFAULT_LEVEL,
                Some(l) => u32::from(parse_range(var, l, 1, 9)?),
            },
        }),
        "none" => Ok(Compression::None),
        other => Err(invalid(
            "BACKUP_COMPRESSION",
            format!("{other:?} is not supported; use zstd, gzip or none"),
        )),
    }
}

/// The flag part of a short option: `-Fd` -> `-F`. Whole characters, so
/// `-é` is `-é`, not half of it.
fn short_flag(o: &str) -> Option<&str> {
    if !o.starts_with('-') || o.starts_with("--") {
        return None;
    }
    let mut ends = o.char_indices().map(|(i, c)| i + c.len_utf8());
    ends.nth(1).map(|end| &o[..end])
}

/// Options that would break the stream or its naming are ours to set.
fn check_pg_dump_options(opts: &[String]) -> Result<(), ConfigError> {
    const OURS: [&str; 8] = [
        "-f",
        "--file",
        "-F",
        "--format",
        "-Z",
        "--compress",
        "-d",
        "--dbname",
    ];
    for o in opts {
        let flag = o.split('=').next().unwrap_or(o);
        let short = short_flag(o);
        if OURS.contains(&flag) || short.is_some_and(|s| OURS.contains(&s)) {
            return Err(invalid(
                "BACKUP_OPTIONS",
                format!(
                    "{flag} is set by pgbackup (use BACKUP_FORMAT, BACKUP_COMPRESSION or BACKUP_DATABASE_URL)"
                ),
            ));
        }
        // pg_dump's options are ASCII: anything else cannot be one.
        let name = match short {
            Some(s) => s.strip_prefix('-'),
            None => flag.strip_prefix("--").filter(|n| !n.is_empty()),
        };
        if name.is_some_and(|n| !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
            return Err(invalid(
                "BACKUP_OPTIONS",
                format!("{flag:?} is not a pg_dump option"),
            ));
        }
        if flag == "--jobs" || short == Some("-j") {
            return Err(invalid(
                "BACKUP_OPTIONS",
                "--jobs needs the directory format, which cannot be streamed",
            ));
        }
    }
    Ok(())
}

/// Accepts `https://host`, or a bare host as some templates document it.
fn endpoint(s: &str) -> Result<String, ConfigError> {
    let s = s.trim().trim_end_matches('/');
    let e = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    match Url::parse(&e) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(e),
        _ => Err(invalid(
            "AWS_S3_ENDPOINT",
            format!("{s:?} is not an http(s) URL or host name"),
        )),
    }
}

/// Letters, digits and '-': AWS's own regions and the names other stores
/// use (`auto`, `garage`). The SDK signs with it, and a stray character
/// would make every request invalid.
fn region(s: &str) -> Result<String, ConfigError> {
    let s = s.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid(
            "AWS_S3_REGION",
            format!("{s:?} is not a region name: letters, digits and '-' only, e.g. us-east-1"),
        ));
    }
    Ok(s.to_string())
}

/// No whitespace, control characters or '/': no store accepts those.
fn bucket_name(s: &str) -> Result<String, ConfigError> {
    let s = s.trim();
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            "AWS_S3_BUCKET",
            format!("{s:?} is not a bucket name"),
        ));
    }
    Ok(s.to_string())
}

/// An http(s) URL that is a credential: the error never echoes it.
fn http_url(var: &'static str, u: &str) -> Result<Secret, ConfigError> {
    let u = u.trim();
    match Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") => Ok(Secret::new(u)),
        Ok(_) => Err(invalid(var, "must start with http:// or https://")),
        Err(_) => Err(invalid(var, "not a valid http(s) URL")),
    }
}

fn parse_bool(v: &Vars, var: &'static str) -> Result<bool, ConfigError> {
    match v.or_default(var)?.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        o => Err(invalid(var, format!("{o:?} is not true or false"))),
    }
}

fn parse_u32(var: &'static str, s: &str, max: u32) -> Result<u32, ConfigError> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| invalid(var, format!("{s:?} is not a whole number >= 0")))?;
    if n > max {
        return Err(invalid(var, format!("{n} is more than {max}")));
    }
    Ok(n)
}

fn opt_u32(v: &Vars, var: &'static str) -> Result<Option<u32>, ConfigError> {
    v.get(var)?.map(|s| parse_u32(var, s, u32::MAX)).transpose()
}

fn parse_range(var: &'static str, s: &str, lo: u8, hi: u8) -> Result<u8, ConfigError> {
    let n = parse_u32(var, s, u32::MAX)?;
    match u8::try_from(n) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid(var, format!("{n} is outside {lo}..={hi}"))),
    }
}

/// A finite number in 0..=max.
fn parse_number(var: &'static str, s: &str, max: f64) -> Result<f64, ConfigError> {
    let n = s
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| invalid(var, format!("{s:?} is not a number >= 0")))?;
    if n > max {
        return Err(invalid(var, format!("{s:?} is more than {max}")));
    }
    Ok(n)
}

fn parse_seconds(var: &'static str, s: &str, max: f64) -> Result<Duration, ConfigError> {
    let n = parse_number(var, s, max)?;
    Duration::try_from_secs_f64(n).map_err(|e| invalid(var, format!("{s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars(pairs))
    }

    const URL: (&str, &str) = (
        "BACKUP_DATABASE_URL",
        "postgres://app:s%40cret@db:5432/shop",
    );
    const BUCKET: (&str, &str) = ("AWS_S3_BUCKET", "backups");

    #[test]
    fn railway_template_names_work() {
        let c = cfg(&[
            URL,
            BUCKET,
            ("AWS_S3_ENDPOINT", "https://acc.r2.cloudflarestorage.com"),
            ("AWS_S3_REGION", "auto"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("BACKUP_CRON_SCHEDULE", "0 3 * * *"),
            ("RUN_ON_STARTUP", "false"),
            ("SINGLE_SHOT_MODE", "true"),
            ("BACKUP_FILE_PREFIX", "prod/backup_"),
            ("BACKUP_OPTIONS", "--exclude-table=audit_log --no-owner"),
        ])
        .unwrap();
        assert_eq!(c.dump.database.name(), "shop");
        assert_eq!(c.dump.database.password().unwrap().expose(), "s@cret");
        assert_eq!(
            c.dump.database.url_without_password().as_str(),
            "postgres://app@db:5432/shop"
        );
        assert!(c.schedule.single_shot && !c.schedule.run_on_startup);
        assert_eq!(c.store.prefix, "prod/backup_");
        assert_eq!(
            c.dump.pg_dump_options,
            vec!["--exclude-table=audit_log", "--no-owner"]
        );
        assert_eq!(
            c.store.backend,
            StorageConfig::S3 {
                bucket: "backups".into(),
                endpoint: Some("https://acc.r2.cloudflarestorage.com".into()),
                region: "auto".into(),
                force_path_style: true,
                credentials: None,
                object_lock: false,
            }
        );
        assert_eq!(c.dump.compression, Compression::DEFAULT);
        assert_eq!(c.retention.days, 30);
        assert_eq!(c.retention.min_count, 3);
        assert_eq!(c.daemon.listen.port(), DEFAULT_PORT);
        assert_eq!(c.daemon.max_age, Duration::from_secs(25 * 3600));
    }

    #[test]
    fn compose_names_are_a_fallback() {
        let c = cfg(&[
            ("POSTGRES_HOST", "postgres"),
            ("POSTGRES_DB", "app db"),
            ("POSTGRES_USER", "me"),
            ("POSTGRES_PASSWORD", "pw:/@x"),
            ("BACKUP_LOCAL_DIR", "/backups"),
        ])
        .unwrap();
        assert_eq!(c.dump.database.name(), "app db");
        assert_eq!(c.dump.database.password().unwrap().expose(), "pw:/@x");
        assert_eq!(
            c.dump.database.url_without_password().as_str(),
            "postgres://me@postgres:5432/app%20db"
        );
        assert_eq!(
            c.store.backend,
            StorageConfig::Local {
                dir: "/backups".into()
            }
        );
    }

    #[test]
    fn empty_values_mean_unset() {
        let c = cfg(&[
            URL,
            BUCKET,
            ("BACKUP_RETENTION_DAYS", ""),
            ("AWS_S3_ENDPOINT", " "),
        ])
        .unwrap();
        assert_eq!(c.retention.days, 30);
        assert!(matches!(
            c.store.backend,
            StorageConfig::S3 { endpoint: None, .. }
        ));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[BUCKET], "BACKUP_DATABASE_URL"),
            (&[URL], "AWS_S3_BUCKET"),
            (
                &[URL, BUCKET, ("BACKUP_RETENTION_DAYS", "thirty")],
                "BACKUP_RETENTION_DAYS",
            ),
            (
                &[URL, BUCKET, ("RUN_ON_STARTUP", "maybe")],
                "RUN_ON_STARTUP",
            ),
            (&[URL, BUCKET, ("BACKUP_FORMAT", "tar")], "BACKUP_FORMAT"),
            (
                &[URL, BUCKET, ("BACKUP_COMPRESSION", "lz4")],
                "BACKUP_COMPRESSION",
            ),
            (
                &[URL, BUCKET, ("BACKUP_COMPRESSION_LEVEL", "99")],
                "BACKUP_COMPRESSION_LEVEL",
            ),
            (
                &[URL, BUCKET, ("BACKUP_CRON_SCHEDULE", "every day")],
                "BACKUP_CRON_SCHEDULE",
            ),
            (&[URL, BUCKET, ("BACKUP_OPTIONS", "-Fd")], "BACKUP_OPTIONS"),
            (
                &[URL, BUCKET, ("BACKUP_OPTIONS", "--file=/tmp/x")],
                "BACKUP_OPTIONS",
            ),
            (
                &[URL, BUCKET, ("BACKUP_LISTEN_ADDRESS", "9000")],
                "BACKUP_LISTEN_ADDRESS",
            ),
            (
                &[URL, BUCKET, ("BACKUP_WEBHOOK_URL", "hooks.slack.com/x")],
                "BACKUP_WEBHOOK_URL",
            ),
            (
                &[URL, BUCKET, ("BACKUP_FILE_PREFIX", "/abs")],
                "BACKUP_FILE_PREFIX",
            ),
            (
                &[("BACKUP_DATABASE_URL", "mysql://a:b@c/d"), BUCKET],
                "BACKUP_DATABASE_URL",
            ),
        ];
        for (vars, var) in cases {
            let e = cfg(vars).unwrap_err();
            assert_eq!(e.var, *var, "{e}");
            assert!(
                e.to_string().starts_with(&format!("invalid {var}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = cfg(&[
            ("BACKUP_DATABASE_URL", "postgres://u:hunter2@h/db"),
            BUCKET,
            (
                "BACKUP_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/XYZSECRET",
            ),
        ])
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("XYZSECRET"),
            "{dbg}"
        );
        let e = cfg(&[
            ("BACKUP_DATABASE_URL", "postgres://u:hunter2@h:notaport/db"),
            BUCKET,
        ])
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn heartbeat_url_must_be_http_and_is_never_echoed() {
        let c = cfg(&[
            URL,
            BUCKET,
            ("BACKUP_HEARTBEAT_URL", "https://hc-ping.com/uuid-1"),
        ])
        .unwrap();
        assert_eq!(
            c.notify.heartbeat_url.unwrap().expose(),
            "https://hc-ping.com/uuid-1"
        );
        let e = cfg(&[URL, BUCKET, ("BACKUP_HEARTBEAT_URL", "ftp://h/uuid-2")]).unwrap_err();
        assert_eq!(e.var, "BACKUP_HEARTBEAT_URL");
        assert!(!e.to_string().contains("uuid-2"), "{e}");
    }

    #[test]
    fn database_defaults_to_user_name() {
        let d = Database::parse("X", "postgresql://alice@host").unwrap();
        assert_eq!(d.name(), "alice");
        assert!(d.password().is_none());
        assert_eq!(
            d.with_database("other db").url_without_password().path(),
            "/other%20db"
        );
    }

    fn one_line_naming(e: &ConfigError, var: &str) {
        assert_eq!(e.var, var, "{e}");
        let line = e.to_string();
        assert!(line.starts_with(&format!("invalid {var}: ")), "{line}");
        assert!(!line.contains(['\n', '\r']), "{line:?}");
    }

    #[test]
    fn inputs_that_used_to_panic_are_config_errors() {
        const HOOK: (&str, &str) = ("BACKUP_WEBHOOK_URL", "https://hooks.example/x");
        for (var, value) in [
            ("BACKUP_OPTIONS", "-é"),
            ("BACKUP_OPTIONS", "--exclude-tablé=x"),
            ("AWS_S3_REGION", "us-east-1\nx"),
            ("AWS_S3_REGION", "eu west"),
            ("BACKUP_MAX_AGE_HOURS", "99999999999999999999"),
            ("BACKUP_MAX_AGE_HOURS", "87601"),
            ("BACKUP_MAX_AGE_HOURS", "NaN"),
            ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "1e300"),
            ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "3601"),
            ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "inf"),
            ("BACKUP_WEBHOOK_RETRIES", "4294967295"),
            ("BACKUP_RETENTION_DAYS", "4294967295"),
            ("BACKUP_COMPRESSION_LEVEL", "4294967297"),
            ("BACKUP_CRON_SCHEDULE", "0 0 30 2 *"),
            ("AWS_S3_ENDPOINT", "ftp://host"),
            ("AWS_S3_BUCKET", "my bucket"),
        ] {
            let e = cfg(&[URL, BUCKET, HOOK, (var, value)]).unwrap_err();
            one_line_naming(&e, var);
        }
        // The webhook's timing is checked even before a URL is set.
        let e = cfg(&[URL, BUCKET, ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "1e300")]).unwrap_err();
        one_line_naming(&e, "BACKUP_WEBHOOK_BACKOFF_SECONDS");
    }

    #[test]
    fn bounds_are_inclusive_and_conversions_exact() {
        let c = cfg(&[
            URL,
            BUCKET,
            ("BACKUP_MAX_AGE_HOURS", "87600"),
            ("BACKUP_WEBHOOK_URL", "https://hooks.example/x"),
            ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "0.5"),
            ("BACKUP_RETENTION_DAYS", "1000000"),
            ("AWS_S3_REGION", " eu-west-3 "),
        ])
        .unwrap();
        assert_eq!(c.daemon.max_age, Duration::from_secs(87_600 * 3600));
        assert_eq!(
            c.notify.webhook.unwrap().backoff,
            Duration::from_millis(500)
        );
        assert_eq!(c.retention.days, 1_000_000);
        assert!(
            matches!(c.store.backend, StorageConfig::S3 { region, .. } if region == "eu-west-3")
        );
    }

    #[test]
    fn short_options_are_cut_at_characters() {
        assert_eq!(short_flag("-é"), Some("-é"));
        assert_eq!(short_flag("-Fd"), Some("-F"));
        assert_eq!(short_flag("-tpeças"), Some("-t"));
        assert_eq!(short_flag("--file"), None);
        assert_eq!(short_flag("-"), None);
        let ok = |o: &str| check_pg_dump_options(&[o.to_string()]).is_ok();
        assert!(ok("-tpeças") && ok("--exclude-table=peças") && ok("--no-owner") && ok("--"));
        assert!(!ok("-é") && !ok("-jx") && !ok("--jobs=2") && !ok("-Fc") && !ok("-Z9"));
    }

    #[test]
    fn commands_that_read_backups_need_no_database() {
        let store = StoreConfig::from_vars(vars(&[BUCKET])).unwrap();
        assert_eq!(store.prefix, "backup_");
        assert!(matches!(store.backend, StorageConfig::S3 { .. }));
        let r = RetentionSettings::from_vars(vars(&[("BACKUP_KEEP_DAILY", "7")])).unwrap();
        assert_eq!((r.days, r.min_count, r.keep_daily), (30, 3, Some(7)));
        let local = [
            ("BACKUP_LOCAL_DIR", "/b"),
            ("PG_BIN_DIR", "/usr/lib/postgresql/15/bin"),
        ];
        let v = Vars::new(vars(&local)).unwrap();
        assert_eq!(
            DumpConfig::read_pg_bin_dir(&v).unwrap(),
            Some(PathBuf::from("/usr/lib/postgresql/15/bin"))
        );
        assert!(DumpConfig::read_database(&v).unwrap().is_none());
        // ...and what they do not read, they do not validate.
        StoreConfig::from_vars(vars(&[BUCKET, ("BACKUP_OPTIONS", "-Fd")])).unwrap();
        // Backing up does need it.
        let e = DumpConfig::from_vars(vars(&local)).unwrap_err();
        one_line_naming(&e, "BACKUP_DATABASE_URL");
    }

    #[test]
    fn a_drill_needs_a_scratch_database_that_is_not_the_source() {
        let verify = |u: &'static str| ("BACKUP_VERIFY_DATABASE_URL", u);
        // The same database, however the URL spells it: a configuration error.
        for same in [
            "postgres://app:s%40cret@db:5432/shop",
            "postgres://other@db/shop",
            "postgresql://app@db:5432/shop?sslmode=require",
        ] {
            let e = cfg(&[URL, BUCKET, verify(same)]).unwrap_err();
            one_line_naming(&e, "BACKUP_VERIFY_DATABASE_URL");
            assert!(e.message.contains("database being backed up"), "{e}");
            assert!(!e.to_string().contains("s@cret"), "{e}");
            let e = DrillConfig::from_vars(vars(&[URL, BUCKET, verify(same)])).unwrap_err();
            one_line_naming(&e, "BACKUP_VERIFY_DATABASE_URL");
        }
        for other in [
            "postgres://app@db:5432/scratch",
            "postgres://app@db:5433/shop",
            "postgres://app@db2/shop",
        ] {
            let c = cfg(&[URL, BUCKET, verify(other)]).unwrap();
            assert_eq!(c.drill().source.unwrap().name(), "shop");
        }
        // Without BACKUP_DATABASE_URL, only a given scratch database will do.
        let d = DrillConfig::from_vars(vars(&[BUCKET, verify("postgres://a@h/scratch")])).unwrap();
        assert!(d.source.is_none());
        let e = DrillConfig::from_vars(vars(&[BUCKET])).unwrap_err();
        one_line_naming(&e, "BACKUP_DATABASE_URL");
    }

    #[test]
    fn cron_expressions_are_parsed_once_and_kept_as_written() {
        let c = cfg(&[
            URL,
            BUCKET,
            ("BACKUP_CRON_SCHEDULE", " 30 2 * * 1-5 "),
            ("BACKUP_VERIFY_CRON_SCHEDULE", "0 4 * * 0"),
        ])
        .unwrap();
        assert_eq!(c.schedule.cron.to_string(), "30 2 * * 1-5");
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-24T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let next = crate::schedule::next_after(c.schedule.cron.schedule(), t).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-26T02:30:00+00:00");
        assert_eq!(c.schedule.verify_cron.unwrap().as_str(), "0 4 * * 0");
        let e = cfg(&[URL, BUCKET, ("BACKUP_VERIFY_CRON_SCHEDULE", "daily")]).unwrap_err();
        one_line_naming(&e, "BACKUP_VERIFY_CRON_SCHEDULE");
    }

    #[test]
    fn names_match_whatever_their_case_and_non_unicode_is_an_error() {
        let c = cfg(&[
            ("backup_database_url", "postgres://a@h/lower"),
            ("Backup_Local_Dir", "/b"),
        ])
        .unwrap();
        assert_eq!(c.dump.database.name(), "lower");
        let v = Vars::build(vars(&[BUCKET]), ["backup_options".to_string()].into()).unwrap();
        StoreConfig::read(&v).unwrap();
        one_line_naming(
            &DumpConfig::read(
                &Vars::build(vars(&[URL]), ["backup_options".to_string()].into()).unwrap(),
            )
            .unwrap_err(),
            "BACKUP_OPTIONS",
        );
    }

    #[test]
    fn every_default_is_a_variable_and_means_what_unset_means() {
        for (var, _) in DEFAULTS {
            assert!(VARIABLES.contains(var), "{var}");
        }
        let mut all = vec![URL, BUCKET];
        all.extend(DEFAULTS.iter().copied());
        let explicit = cfg(&all).unwrap();
        let unset = cfg(&[URL, BUCKET]).unwrap();
        assert_eq!(format!("{explicit:?}"), format!("{unset:?}"));
        let gzip = cfg(&[URL, BUCKET, ("BACKUP_COMPRESSION", "gzip")]).unwrap();
        assert_eq!(
            gzip.dump.compression,
            Compression::Gzip {
                level: GZIP_DEFAULT_LEVEL
            }
        );
    }

    /// The rows of docs/configuration.md's `| variable | default | ... |`
    /// table: the variables named in the first cell, and the default cell.
    fn documented_rows() -> Vec<(Vec<String>, String)> {
        let doc = include_str!("../docs/configuration.md");
        let mut rows = Vec::new();
        let mut in_table = false;
        for line in doc.lines().map(str::trim) {
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() < 2 || cells[0].starts_with("---") {
                continue;
            }
            if cells[0] == "variable" && cells[1] == "default" {
                in_table = true;
                continue;
            }
            if in_table {
                let names = cells[0]
                    .split(',')
                    .map(|n| n.trim().trim_matches('`').to_string())
                    .collect();
                rows.push((names, cells[1].to_string()));
            }
        }
        rows
    }

    /// docs/configuration.md has a row for every variable pgbackup reads,
    /// and its defaults are the code's: they cannot drift apart.
    #[test]
    fn defaults_match_the_docs() {
        let rows = documented_rows();
        assert!(
            rows.len() > 20,
            "docs/configuration.md's variable table not found"
        );
        let named = |var: &str| rows.iter().any(|(names, _)| names.iter().any(|n| n == var));
        for var in VARIABLES.iter().chain(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "BACKUP_LOG_FORMAT",
        ]) {
            assert!(named(var), "docs/configuration.md has no row for {var}");
        }
        for (var, value) in DEFAULTS {
            let documented: Vec<_> = rows
                .iter()
                .filter(|(names, _)| names.iter().any(|n| n == var))
                .collect();
            for (names, cell) in documented {
                if names.len() == 1 {
                    assert_eq!(
                        cell,
                        &format!("`{value}`"),
                        "docs/configuration.md's default for {var}"
                    );
                } else {
                    assert!(
                        cell.contains(value),
                        "docs/configuration.md's default for {var}: {cell}"
                    );
                }
            }
        }
        // A literal default in the docs is one the code has.
        for (names, cell) in &rows {
            if let [name] = names.as_slice() {
                let literal = cell.len() > 2 && cell.starts_with('`') && cell.ends_with('`');
                if literal && VARIABLES.contains(&name.as_str()) {
                    assert_eq!(
                        default_of(name).map(|d| format!("`{d}`")).as_deref(),
                        Some(cell.as_str()),
                        "docs/configuration.md gives {name} a default the code does not have"
                    );
                }
            }
        }
        let level = rows
            .iter()
            .find(|(n, _)| n == &["BACKUP_COMPRESSION_LEVEL"])
            .expect("BACKUP_COMPRESSION_LEVEL in docs/configuration.md");
        assert_eq!(
            level.1,
            format!("zstd {ZSTD_DEFAULT_LEVEL}, gzip {GZIP_DEFAULT_LEVEL}")
        );
    }

    /// Any value of any one variable, on top of an otherwise valid
    /// environment, is accepted or refused with a one-line error naming
    /// that variable: never a panic.
    mod any_value {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "\\PC{0,40}",
                "[\\x00-\\x1f\\x7f\u{80}-\u{9f} a-z]{1,12}",
                "[+-]?[0-9]{1,40}(\\.[0-9]{0,8})?([eE][+-]?[0-9]{1,4})?",
                "-[^-]{1,4}(=.{0,4})?",
                "[0-9*/,A-Za-z-]{1,6}( [0-9*/,A-Za-z-]{1,6}){4,5}",
                "(postgres|postgresql|http|https)://[ -~\u{e9}]{0,30}",
                prop::sample::select(vec![
                    "NaN",
                    "inf",
                    "-0",
                    "1e300",
                    "-1",
                    "0",
                    "0.0",
                    "4294967296",
                    "18446744073709551616",
                    "65536",
                    "[::1]:9854",
                    "0 0 31 2 *",
                    "* * * * * * *",
                    "0 3 * * 8",
                    "postgres://",
                    "http://",
                    "/",
                    "..",
                    "../x",
                    "%zz",
                    "\u{feff}",
                    "\0",
                ])
                .prop_map(String::from),
            ]
        }

        const BASES: [&[(&str, &str)]; 2] = [
            &[
                ("BACKUP_DATABASE_URL", "postgres://app:pw@db:5432/shop"),
                ("AWS_S3_BUCKET", "backups"),
                ("BACKUP_WEBHOOK_URL", "https://hooks.example/x"),
            ],
            &[("POSTGRES_HOST", "db"), ("BACKUP_LOCAL_DIR", "/backups")],
        ];

        fn check(var: &'static str, value: &str) -> Result<(), TestCaseError> {
            for base in BASES {
                let mut env: Vec<(String, String)> = base
                    .iter()
                    .filter(|(k, _)| *k != var)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                env.push((var.to_string(), value.to_string()));
                let errors = [
                    Config::from_vars(env.clone()).err(),
                    StoreConfig::from_vars(env.clone()).err(),
                    DumpConfig::from_vars(env.clone()).err(),
                    ScheduleConfig::from_vars(env.clone()).err(),
                    RetentionSettings::from_vars(env.clone()).err(),
                    NotifyConfig::from_vars(env.clone()).err(),
                    DaemonConfig::from_vars(env.clone()).err(),
                    HealthcheckConfig::from_vars(env.clone()).err(),
                    VerifyConfig::from_vars(env.clone()).err(),
                    DrillConfig::from_vars(env.clone()).err(),
                ];
                for e in errors.iter().flatten() {
                    let line = e.to_string();
                    prop_assert!(!line.contains(['\n', '\r']), "{var}: {line:?}");
                    // A blank value is unset: the error may name another variable.
                    if !value.trim().is_empty() {
                        prop_assert_eq!(e.var, var, "{}", line);
                    }
                }
            }
            Ok(())
        }

        #[test]
        fn no_value_of_any_variable_panics() {
            for var in VARIABLES {
                let mut runner = TestRunner::new(RunnerConfig {
                    cases: 64,
                    failure_persistence: None,
                    ..RunnerConfig::default()
                });
                if let Err(e) = runner.run(&value(), |v| check(var, &v)) {
                    panic!("{var}: {e}");
                }
            }
        }
    }

    fn secret_file(content: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("pgbackup-secret-{:016x}", rand::random::<u64>()));
        std::fs::write(&p, content).unwrap();
        p
    }

    fn with(pairs: &[(&str, &str)]) -> Result<Vars, ConfigError> {
        Vars::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_secret_comes_from_its_file_with_one_newline_trimmed() {
        for (var, file_var) in SECRETS {
            let f = secret_file("s3cr3t value\n\n");
            let v = with(&[(file_var, f.to_str().unwrap())]).unwrap();
            assert_eq!(v.get(var).unwrap(), Some("s3cr3t value\n"), "{var}");
            let f2 = secret_file("tok\r\n");
            let v = with(&[(file_var, f2.to_str().unwrap())]).unwrap();
            assert_eq!(v.get(var).unwrap(), Some("tok"), "{var}");
            let _ = std::fs::remove_file(f);
            let _ = std::fs::remove_file(f2);
        }
    }

    #[test]
    fn secret_file_errors_name_the_variable_and_never_the_content() {
        let f = secret_file("postgres://u:hunter2@db/app");
        let path = f.to_str().unwrap();
        let e = with(&[
            ("BACKUP_DATABASE_URL_FILE", path),
            ("BACKUP_DATABASE_URL", "postgres://u:other@db/app"),
        ])
        .err()
        .expect("both set is an error");
        assert_eq!(e.var, "BACKUP_DATABASE_URL_FILE");
        assert!(e.message.contains("BACKUP_DATABASE_URL is set too"), "{e}");
        assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("other"));

        let e = with(&[("AWS_SECRET_ACCESS_KEY_FILE", "/nonexistent/secret")])
            .err()
            .expect("a missing file is an error");
        assert_eq!(e.var, "AWS_SECRET_ACCESS_KEY_FILE");
        assert!(e.message.contains("/nonexistent/secret"), "{e}");

        let empty = secret_file("\n");
        let e = with(&[("POSTGRES_PASSWORD_FILE", empty.to_str().unwrap())])
            .err()
            .expect("an empty file is an error");
        assert!(e.message.contains("empty"), "{e}");
        let _ = std::fs::remove_file(f);
        let _ = std::fs::remove_file(empty);
    }

    #[test]
    fn s3_credentials_come_together_from_variables_or_files() {
        let id = secret_file("GKid\n");
        let secret = secret_file("verysecret\n");
        let store = StoreConfig::read(
            &with(&[
                ("AWS_S3_BUCKET", "b"),
                ("AWS_ACCESS_KEY_ID_FILE", id.to_str().unwrap()),
                ("AWS_SECRET_ACCESS_KEY_FILE", secret.to_str().unwrap()),
            ])
            .unwrap(),
        )
        .unwrap();
        match store.backend {
            StorageConfig::S3 {
                credentials: Some((i, s, None)),
                ..
            } => assert_eq!((i.expose(), s.expose()), ("GKid", "verysecret")),
            other => panic!("{other:?}"),
        }
        assert!(!format!(
            "{:?}",
            StoreConfig::read(
                &with(&[
                    ("AWS_S3_BUCKET", "b"),
                    ("AWS_ACCESS_KEY_ID", "a"),
                    ("AWS_SECRET_ACCESS_KEY", "verysecret")
                ])
                .unwrap()
            )
            .unwrap()
        )
        .contains("verysecret"));
        let e = StoreConfig::read(
            &with(&[("AWS_S3_BUCKET", "b"), ("AWS_ACCESS_KEY_ID", "a")]).unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.var, "AWS_SECRET_ACCESS_KEY");
        let _ = std::fs::remove_file(id);
        let _ = std::fs::remove_file(secret);
    }

    #[test]
    fn the_health_check_takes_credentials_in_pairs_and_when_the_server_asks() {
        let hc = |pairs: &[(&str, &str)]| HealthcheckConfig::read(&with(pairs).unwrap());
        assert!(hc(&[]).unwrap().credentials.is_none());
        let c = hc(&[
            ("BACKUP_HEALTHCHECK_USER", "probe"),
            ("BACKUP_HEALTHCHECK_PASSWORD", "pr0be-secret"),
        ])
        .unwrap();
        assert_eq!(c.credentials.as_ref().unwrap().0, "probe");
        assert!(!format!("{c:?}").contains("pr0be-secret"));
        for (pairs, var) in [
            (
                &[("BACKUP_HEALTHCHECK_USER", "probe")][..],
                "BACKUP_HEALTHCHECK_USER",
            ),
            (
                &[("BACKUP_HEALTHCHECK_PASSWORD", "pr0be-secret")],
                "BACKUP_HEALTHCHECK_PASSWORD",
            ),
            (
                &[
                    ("BACKUP_HEALTHCHECK_USER", "a:b"),
                    ("BACKUP_HEALTHCHECK_PASSWORD", "pr0be-secret"),
                ],
                "BACKUP_HEALTHCHECK_USER",
            ),
            (
                &[("BACKUP_HEALTHCHECK_CERT_FILE", "/x.crt")],
                "BACKUP_HEALTHCHECK_CERT_FILE",
            ),
            (
                &[
                    ("BACKUP_HEALTHCHECK_CERT_FILE", "/nonexistent/x.crt"),
                    ("BACKUP_HEALTHCHECK_KEY_FILE", "/nonexistent/x.key"),
                ],
                "BACKUP_HEALTHCHECK_CERT_FILE",
            ),
        ] {
            let e = hc(pairs).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(!e.to_string().contains("pr0be-secret"), "{e}");
        }
        // A server with basic auth needs the check's credentials.
        let f = secret_file("basic_auth_users:\n  probe: $2y$04$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n");
        let web = f.to_str().unwrap();
        let e = hc(&[("BACKUP_WEB_CONFIG_FILE", web)]).unwrap_err();
        assert_eq!(e.var, "BACKUP_HEALTHCHECK_USER", "{e}");
        assert!(e.message.contains("basic_auth_users"), "{e}");
        assert!(hc(&[
            ("BACKUP_WEB_CONFIG_FILE", web),
            ("BACKUP_HEALTHCHECK_USER", "probe"),
            ("BACKUP_HEALTHCHECK_PASSWORD", "pr0be-secret"),
        ])
        .is_ok());
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn the_templates_subfolder_and_object_lock_are_honoured() {
        let store = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("AWS_S3_BUCKET", "b")];
            pairs.extend_from_slice(extra);
            StoreConfig::read(&with(&pairs).unwrap())
        };
        assert_eq!(store(&[]).unwrap().prefix, "backup_");
        assert_eq!(
            store(&[
                ("BUCKET_SUBFOLDER", "/pg/prod/"),
                ("BACKUP_FILE_PREFIX", "db_")
            ])
            .unwrap()
            .prefix,
            "pg/prod/db_"
        );
        for bad in ["..", "a//b", "a/../b"] {
            let e = store(&[("BUCKET_SUBFOLDER", bad)]).unwrap_err();
            assert_eq!(e.var, "BUCKET_SUBFOLDER", "{bad}");
        }
        let lock = |v| match store(&[("SUPPORT_OBJECT_LOCK", v)]).unwrap().backend {
            StorageConfig::S3 { object_lock, .. } => object_lock,
            other => panic!("{other:?}"),
        };
        assert!(!lock("false") && lock("true"));
        let e = store(&[("SUPPORT_OBJECT_LOCK", "yes please")]).unwrap_err();
        assert_eq!(e.var, "SUPPORT_OBJECT_LOCK");
        let e = StoreConfig::read(
            &with(&[
                ("BACKUP_LOCAL_DIR", "/tmp/x"),
                ("SUPPORT_OBJECT_LOCK", "true"),
            ])
            .unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.var, "SUPPORT_OBJECT_LOCK");
    }
}

//! Configuration from the environment (envy + serde), validated once into
//! [`Config`]. Everything below the commands takes only the validated type.
//!
//! Names are the Railway `postgres-s3-backups` template's (so switching is a
//! change of image), plus the docker-compose `POSTGRES_*` names as a fallback.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::ConfigError;

/// Default HTTP port of `pgbackup run`: not claimed by any well-known exporter.
pub const DEFAULT_PORT: u16 = 9854;

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

/// The raw environment. Every field is a string so that a bad value is
/// reported with its variable's name and our own wording.
#[derive(Deserialize, Default)]
struct RawEnv {
    backup_database_url: Option<String>,
    postgres_host: Option<String>,
    postgres_port: Option<String>,
    postgres_db: Option<String>,
    postgres_user: Option<String>,
    postgres_password: Option<String>,
    backup_cron_schedule: Option<String>,
    run_on_startup: Option<String>,
    single_shot_mode: Option<String>,
    backup_file_prefix: Option<String>,
    backup_options: Option<String>,
    aws_s3_bucket: Option<String>,
    aws_s3_endpoint: Option<String>,
    aws_s3_region: Option<String>,
    aws_s3_force_path_style: Option<String>,
    backup_local_dir: Option<String>,
    backup_format: Option<String>,
    backup_compression: Option<String>,
    backup_compression_level: Option<String>,
    backup_retention_days: Option<String>,
    backup_retention_min_count: Option<String>,
    backup_keep_daily: Option<String>,
    backup_keep_weekly: Option<String>,
    backup_keep_monthly: Option<String>,
    backup_webhook_url: Option<String>,
    backup_webhook_retries: Option<String>,
    backup_webhook_backoff_seconds: Option<String>,
    backup_webhook_format: Option<String>,
    backup_notify_on: Option<String>,
    backup_heartbeat_url: Option<String>,
    backup_listen_address: Option<String>,
    backup_max_age_hours: Option<String>,
    backup_verify_database_url: Option<String>,
    backup_verify_sql: Option<String>,
    backup_verify_cron_schedule: Option<String>,
    pg_bin_dir: Option<String>,
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
}

impl Format {
    pub fn ext(self) -> &'static str {
        match self {
            Format::Custom => "dump",
            Format::Plain => "sql",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Custom => "custom",
            Format::Plain => "plain",
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
    pub const DEFAULT: Compression = Compression::Zstd { level: 1 };

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    pub cron_schedule: String,
    pub run_on_startup: bool,
    pub single_shot: bool,
    pub prefix: String,
    pub pg_dump_options: Vec<String>,
    pub storage: StorageConfig,
    pub format: Format,
    pub compression: Compression,
    pub retention: RetentionSettings,
    pub webhook: Option<Webhook>,
    pub notify_on: NotifyOn,
    pub heartbeat_url: Option<Secret>,
    pub listen: SocketAddr,
    pub max_age: Duration,
    pub pg_bin_dir: Option<PathBuf>,
    pub verify_database: Option<Database>,
    pub verify_sql: Option<String>,
    pub verify_cron_schedule: Option<String>,
}

impl Config {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Same, from any list of variables (tests).
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // Empty means unset: compose files and templates often write `VAR=`.
        let vars = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
        let raw: RawEnv =
            envy::from_iter(vars).map_err(|e| ConfigError::new("environment", e.to_string()))?;
        validate(raw)
    }
}

fn validate(raw: RawEnv) -> Result<Config, ConfigError> {
    let database = match raw.backup_database_url.as_deref() {
        Some(u) => Database::parse("BACKUP_DATABASE_URL", u)?,
        None => database_from_parts(&raw)?,
    };

    let cron_schedule = raw
        .backup_cron_schedule
        .clone()
        .unwrap_or_else(|| "0 3 * * *".to_string());
    crate::schedule::parse(&cron_schedule)
        .map_err(|e| ConfigError::new("BACKUP_CRON_SCHEDULE", e))?;

    let prefix = raw
        .backup_file_prefix
        .clone()
        .unwrap_or_else(|| "backup_".to_string());
    if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
        return Err(ConfigError::new(
            "BACKUP_FILE_PREFIX",
            "must be relative: no leading '/' and no '..'",
        ));
    }

    let pg_dump_options = match raw.backup_options.as_deref() {
        None => Vec::new(),
        Some(s) => {
            let opts = shell_words::split(s).map_err(|e| {
                ConfigError::new(
                    "BACKUP_OPTIONS",
                    format!("cannot split into arguments: {e}"),
                )
            })?;
            check_pg_dump_options(&opts)?;
            opts
        }
    };

    let storage =
        match (raw.aws_s3_bucket.clone(), raw.backup_local_dir.clone()) {
            (Some(bucket), _) => StorageConfig::S3 {
                bucket,
                endpoint: raw.aws_s3_endpoint.as_deref().map(normalize_endpoint),
                region: raw
                    .aws_s3_region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".to_string()),
                force_path_style: parse_bool(
                    "AWS_S3_FORCE_PATH_STYLE",
                    raw.aws_s3_force_path_style.as_deref(),
                    false,
                )?,
            },
            (None, Some(dir)) => StorageConfig::Local {
                dir: PathBuf::from(dir),
            },
            (None, None) => return Err(ConfigError::new(
                "AWS_S3_BUCKET",
                "not set, and neither is BACKUP_LOCAL_DIR: set one of them to say where backups go",
            )),
        };

    let format = match raw
        .backup_format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("custom") | Some("c") => Format::Custom,
        Some("plain") | Some("p") | Some("sql") => Format::Plain,
        Some(other) => {
            return Err(ConfigError::new(
                "BACKUP_FORMAT",
                format!("{other:?} is not a format; use custom or plain"),
            ))
        }
    };

    let level = raw.backup_compression_level.as_deref();
    let compression = match raw
        .backup_compression
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("zstd") => match level {
            None => Compression::DEFAULT,
            Some(l) => Compression::Zstd {
                level: parse_range("BACKUP_COMPRESSION_LEVEL", l, 1, 19)? as i32,
            },
        },
        Some("gzip") | Some("gz") => Compression::Gzip {
            level: match level {
                None => 6,
                Some(l) => parse_range("BACKUP_COMPRESSION_LEVEL", l, 1, 9)?,
            },
        },
        Some("none") => Compression::None,
        Some(other) => {
            return Err(ConfigError::new(
                "BACKUP_COMPRESSION",
                format!("{other:?} is not supported; use zstd, gzip or none"),
            ))
        }
    };

    let retention = RetentionSettings {
        days: parse_u32(
            "BACKUP_RETENTION_DAYS",
            raw.backup_retention_days.as_deref(),
            30,
        )?,
        min_count: parse_u32(
            "BACKUP_RETENTION_MIN_COUNT",
            raw.backup_retention_min_count.as_deref(),
            3,
        )?,
        keep_daily: opt_u32("BACKUP_KEEP_DAILY", raw.backup_keep_daily.as_deref())?,
        keep_weekly: opt_u32("BACKUP_KEEP_WEEKLY", raw.backup_keep_weekly.as_deref())?,
        keep_monthly: opt_u32("BACKUP_KEEP_MONTHLY", raw.backup_keep_monthly.as_deref())?,
    };

    let webhook = match raw.backup_webhook_url.as_deref() {
        None => None,
        Some(u) => {
            let parsed = Url::parse(u.trim())
                .map_err(|_| ConfigError::new("BACKUP_WEBHOOK_URL", "not a valid http(s) URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::new(
                    "BACKUP_WEBHOOK_URL",
                    "must start with http:// or https://",
                ));
            }
            Some(Webhook {
                url: Secret::new(u.trim()),
                retries: parse_u32(
                    "BACKUP_WEBHOOK_RETRIES",
                    raw.backup_webhook_retries.as_deref(),
                    3,
                )?,
                backoff: parse_seconds(
                    "BACKUP_WEBHOOK_BACKOFF_SECONDS",
                    raw.backup_webhook_backoff_seconds.as_deref(),
                    2.0,
                )?,
                format: match raw.backup_webhook_format.as_deref() {
                    None | Some("slack") => WebhookFormat::Slack,
                    Some("json") => WebhookFormat::Json,
                    Some(o) => {
                        return Err(ConfigError::new(
                            "BACKUP_WEBHOOK_FORMAT",
                            format!("{o:?} is not a format; use slack or json"),
                        ))
                    }
                },
            })
        }
    };

    let notify_on = match raw.backup_notify_on.as_deref() {
        None | Some("failure") => NotifyOn::Failure,
        Some("always") => NotifyOn::Always,
        Some(o) => {
            return Err(ConfigError::new(
                "BACKUP_NOTIFY_ON",
                format!("{o:?} is not valid; use failure or always"),
            ))
        }
    };

    let listen = match raw.backup_listen_address.as_deref() {
        None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        Some(a) => a.trim().parse().map_err(|_| {
            ConfigError::new(
                "BACKUP_LISTEN_ADDRESS",
                format!("{a:?} is not host:port, e.g. 0.0.0.0:{DEFAULT_PORT}"),
            )
        })?,
    };

    let max_age = parse_seconds(
        "BACKUP_MAX_AGE_HOURS",
        raw.backup_max_age_hours.as_deref(),
        25.0,
    )?
    .mul_f64(3600.0);

    let verify_database = match raw.backup_verify_database_url.as_deref() {
        None => None,
        Some(u) => Some(Database::parse("BACKUP_VERIFY_DATABASE_URL", u)?),
    };
    if let Some(s) = raw.backup_verify_cron_schedule.as_deref() {
        crate::schedule::parse(s)
            .map_err(|e| ConfigError::new("BACKUP_VERIFY_CRON_SCHEDULE", e))?;
    }

    // Checked like the webhook; the error never echoes the URL (it is a credential).
    let heartbeat_url = match raw.backup_heartbeat_url.as_deref().map(str::trim) {
        None => None,
        Some(u) => match Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => Some(Secret::new(u)),
            _ => {
                return Err(ConfigError::new(
                    "BACKUP_HEARTBEAT_URL",
                    "not a valid http(s) URL",
                ))
            }
        },
    };

    Ok(Config {
        database,
        cron_schedule,
        run_on_startup: parse_bool("RUN_ON_STARTUP", raw.run_on_startup.as_deref(), false)?,
        single_shot: parse_bool("SINGLE_SHOT_MODE", raw.single_shot_mode.as_deref(), false)?,
        prefix,
        pg_dump_options,
        storage,
        format,
        compression,
        retention,
        webhook,
        notify_on,
        heartbeat_url,
        listen,
        max_age,
        pg_bin_dir: raw.pg_bin_dir.map(PathBuf::from),
        verify_database,
        verify_sql: raw.backup_verify_sql,
        verify_cron_schedule: raw.backup_verify_cron_schedule,
    })
}

/// The docker-compose + MinIO setup's names, used when BACKUP_DATABASE_URL is unset.
fn database_from_parts(raw: &RawEnv) -> Result<Database, ConfigError> {
    let Some(host) = raw.postgres_host.as_deref() else {
        return Err(ConfigError::new(
            "BACKUP_DATABASE_URL",
            "not set (nor POSTGRES_HOST): set it to postgres://user:password@host:5432/dbname",
        ));
    };
    let port = match raw.postgres_port.as_deref() {
        None => 5432,
        Some(p) => p.trim().parse::<u16>().map_err(|_| {
            ConfigError::new("POSTGRES_PORT", format!("{p:?} is not a port number"))
        })?,
    };
    let user = raw.postgres_user.as_deref().unwrap_or("postgres");
    let db = raw.postgres_db.as_deref().unwrap_or(user);
    let mut url = Url::parse("postgres://localhost/").expect("static URL");
    url.set_host(Some(host))
        .map_err(|_| ConfigError::new("POSTGRES_HOST", format!("{host:?} is not a host name")))?;
    let _ = url.set_port(Some(port));
    let _ = url.set_username(&urlencode(user));
    url.set_path(&format!("/{}", urlencode(db)));
    let mut d = Database::parse("POSTGRES_HOST", url.as_str())?;
    d.password = raw.postgres_password.clone().map(Secret::new);
    Ok(d)
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
        let short = o.len() > 2 && o.starts_with('-') && !o.starts_with("--");
        let short_flag = if short { &o[..2] } else { flag };
        if OURS.contains(&flag) || OURS.contains(&short_flag) {
            return Err(ConfigError::new(
                "BACKUP_OPTIONS",
                format!(
                    "{flag} is set by pgbackup (use BACKUP_FORMAT, BACKUP_COMPRESSION or BACKUP_DATABASE_URL)"
                ),
            ));
        }
        if flag == "-j" || flag == "--jobs" || (short && &o[..2] == "-j") {
            return Err(ConfigError::new(
                "BACKUP_OPTIONS",
                "--jobs needs the directory format, which cannot be streamed",
            ));
        }
    }
    Ok(())
}

/// Accepts `https://host`, or a bare host as some templates document it.
fn normalize_endpoint(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    }
}

fn parse_bool(var: &'static str, v: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(o) => Err(ConfigError::new(var, format!("{o:?} is not true or false"))),
    }
}

fn parse_u32(var: &'static str, v: Option<&str>, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(var, format!("{s:?} is not a whole number >= 0"))),
    }
}

fn opt_u32(var: &'static str, v: Option<&str>) -> Result<Option<u32>, ConfigError> {
    v.map(|s| parse_u32(var, Some(s), 0)).transpose()
}

fn parse_range(var: &'static str, v: &str, lo: u32, hi: u32) -> Result<u32, ConfigError> {
    let n = parse_u32(var, Some(v), 0)?;
    if n < lo || n > hi {
        return Err(ConfigError::new(var, format!("{n} is outside {lo}..={hi}")));
    }
    Ok(n)
}

fn parse_seconds(
    var: &'static str,
    v: Option<&str>,
    default: f64,
) -> Result<Duration, ConfigError> {
    let n = match v {
        None => default,
        Some(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| ConfigError::new(var, format!("{s:?} is not a number >= 0")))?,
    };
    Ok(Duration::from_secs_f64(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
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
        assert_eq!(c.database.name(), "shop");
        assert_eq!(c.database.password().unwrap().expose(), "s@cret");
        assert_eq!(
            c.database.url_without_password().as_str(),
            "postgres://app@db:5432/shop"
        );
        assert!(c.single_shot && !c.run_on_startup);
        assert_eq!(c.prefix, "prod/backup_");
        assert_eq!(
            c.pg_dump_options,
            vec!["--exclude-table=audit_log", "--no-owner"]
        );
        assert_eq!(
            c.storage,
            StorageConfig::S3 {
                bucket: "backups".into(),
                endpoint: Some("https://acc.r2.cloudflarestorage.com".into()),
                region: "auto".into(),
                force_path_style: true
            }
        );
        assert_eq!(c.compression, Compression::DEFAULT);
        assert_eq!(c.retention.days, 30);
        assert_eq!(c.retention.min_count, 3);
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        assert_eq!(c.max_age, Duration::from_secs(25 * 3600));
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
        assert_eq!(c.database.name(), "app db");
        assert_eq!(c.database.password().unwrap().expose(), "pw:/@x");
        assert_eq!(
            c.database.url_without_password().as_str(),
            "postgres://me@postgres:5432/app%20db"
        );
        assert_eq!(
            c.storage,
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
            c.storage,
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
            c.heartbeat_url.unwrap().expose(),
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
}

//! Garage, a real S3-compatible store, and an S3 client of the tests' own.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::process::{run_ok, spawn_service, temp_dir, wait_until};
use super::{free_port, random_hex, rt, unique};

pub struct Garage {
    pub port: u16,
    pub config: PathBuf,
    pub key_id: String,
    pub secret: String,
    pub pid: u32,
}

pub fn garage() -> &'static Garage {
    static G: OnceLock<Garage> = OnceLock::new();
    G.get_or_init(Garage::start)
}

fn garage_bin() -> PathBuf {
    let candidates = [
        std::env::var_os("GARAGE_BIN").map(PathBuf::from),
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/garage")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage")),
        Some(PathBuf::from("/usr/local/bin/garage")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .expect(
            "garage not found: cargo install --locked garage --version 2.5.0 (or set GARAGE_BIN)",
        )
}

impl Garage {
    fn start() -> Garage {
        let bin = garage_bin();
        let dir = temp_dir("garage");
        let (s3, rpc) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
                d = dir.display(),
                secret = random_hex(32)
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("garage.log")).unwrap());
        let pid = spawn_service(cmd, libc::SIGTERM);
        let g = Garage {
            port: s3,
            config,
            key_id: format!("GK{}", random_hex(12)),
            secret: random_hex(32),
            pid,
        };
        let mut node = String::new();
        wait_until("garage to answer", Duration::from_secs(30), || {
            match g.cli_output(&["node", "id", "-q"]) {
                Some(out) => {
                    node = out.trim().split('@').next().unwrap_or("").to_string();
                    !node.is_empty()
                }
                None => false,
            }
        });
        // Right after start the node may not accept layout changes yet.
        for step in [
            vec!["layout", "assign", "-z", "dc1", "-c", "1G", &node],
            vec!["layout", "apply", "--version", "1"],
            vec![
                "key", "import", "--yes", "-n", "tests", &g.key_id, &g.secret,
            ],
        ] {
            let mut last = None;
            for _ in 0..50 {
                match g.cli_result(&step) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Some(e) = last {
                panic!("garage {step:?} failed: {e}");
            }
        }
        wait_until("garage S3 port", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok()
        });
        g
    }

    fn cli_output(&self, args: &[&str]) -> Option<String> {
        let out: Output = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli_result(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "warn"),
        )
    }

    /// A fresh bucket the test key owns.
    pub fn bucket(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.cli(&["bucket", "create", &name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            &self.key_id,
        ]);
        name
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables pgbackup needs to use `bucket`.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("AWS_S3_BUCKET", bucket.to_string()),
            ("AWS_S3_ENDPOINT", self.endpoint()),
            ("AWS_S3_REGION", "garage".to_string()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// An S3 client of the test's own: an independent reader of what pgbackup wrote.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(&self.key_id, &self.secret, None, None, "tests");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(creds)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        rt().block_on(async {
            let out = self
                .client()
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect()
        })
    }

    /// The backups in the bucket, without their `.manifest.json` companions;
    /// asserts that every backup has its manifest.
    pub fn backup_keys(&self, bucket: &str) -> Vec<String> {
        let all = self.keys(bucket);
        let backups: Vec<String> = all
            .iter()
            .filter(|k| !k.ends_with(".manifest.json"))
            .cloned()
            .collect();
        for b in &backups {
            let m = format!("{b}.manifest.json");
            assert!(all.contains(&m), "{b} has no manifest: {all:?}");
        }
        backups
    }

    /// Writes an object through the SDK, with `meta` as its user metadata
    /// (e.g. `sha256`): objects pgbackup did not write, or replaced ones.
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        meta: std::collections::HashMap<String, String>,
    ) {
        rt().block_on(async {
            self.client()
                .put_object()
                .bucket(bucket)
                .key(key)
                .set_metadata(Some(meta))
                .body(body.into())
                .send()
                .await
                .unwrap();
        });
    }

    /// Multipart uploads still open in the bucket.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        rt().block_on(async {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            out.uploads().len()
        })
    }

    pub fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> (Vec<u8>, std::collections::HashMap<String, String>) {
        rt().block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            let meta = out.metadata().cloned().unwrap_or_default();
            let body = out.body.collect().await.unwrap().into_bytes().to_vec();
            (body, meta)
        })
    }
}

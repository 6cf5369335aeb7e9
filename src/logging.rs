//! Logs go to stderr: human-readable, or JSON with BACKUP_LOG_FORMAT=json.
//! Verbosity with RUST_LOG (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn"));
    let json = std::env::var("BACKUP_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: docker logs and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

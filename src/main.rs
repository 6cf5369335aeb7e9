use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_allocator();
    let cli = pgbackup::commands::Cli::parse();
    pgbackup::logging::init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(pgbackup::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", pgbackup::commands::report_line(&e));
            ExitCode::from(pgbackup::commands::exit_code(&e))
        }
    }
}

/// Upload parts are 8 MiB buffers freed as soon as they are sent. glibc would
/// keep them in its arenas (peak RSS 62-70 MiB uncompressed, bench/README.md);
/// served by mmap instead, they go back to the OS on free.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

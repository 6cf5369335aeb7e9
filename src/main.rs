use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
            eprintln!("error: {e:#}");
            ExitCode::from(pgbackup::commands::exit_code(&e))
        }
    }
}

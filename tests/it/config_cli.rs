//! Configuration errors from the command line: exit code 2 and one line
//! naming the variable, never a panic; and commands that only read backups
//! need no database URL. No services needed.

use crate::harness::*;

const DB: &str = "postgres://app:db-pass-5ecret@127.0.0.1:1/shop";

fn env(dir: &std::path::Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vars(&[("BACKUP_LOCAL_DIR", dir.to_str().unwrap())]);
    env.extend(vars(extra));
    env
}

/// Exit 2, and the last line is the error naming `var`.
fn expect_config_error(run: &Run, var: &str) {
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(!run.all().contains("panicked"), "{}", run.all());
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("error: invalid {var}: ")),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_values_exit_2_naming_the_variable_instead_of_panicking() {
    let dir = temp_dir("cfg-bad");
    for (var, value) in [
        ("BACKUP_OPTIONS", "-é"),
        ("AWS_S3_REGION", "us-east-1\nx"),
        ("BACKUP_MAX_AGE_HOURS", "99999999999999999999"),
        ("BACKUP_WEBHOOK_BACKOFF_SECONDS", "1e300"),
    ] {
        let mut extra = vec![("BACKUP_DATABASE_URL", DB), (var, value)];
        if var == "AWS_S3_REGION" {
            extra.push(("AWS_S3_BUCKET", "backups"));
        }
        for cmd in ["check", "run", "backup"] {
            let run = pgbackup(&[cmd], &env(&dir, &extra));
            expect_config_error(&run, var);
            assert!(!run.all().contains("db-pass-5ecret"), "{}", run.all());
        }
    }
}

#[test]
fn verify_restore_refuses_the_backed_up_database_as_scratch() {
    let dir = temp_dir("cfg-scratch");
    let e = env(
        &dir,
        &[
            ("BACKUP_DATABASE_URL", DB),
            (
                "BACKUP_VERIFY_DATABASE_URL",
                "postgres://other@127.0.0.1:1/shop",
            ),
        ],
    );
    let run = pgbackup(&["verify", "latest", "--restore"], &e);
    expect_config_error(&run, "BACKUP_VERIFY_DATABASE_URL");
    assert!(!run.all().contains("db-pass-5ecret"), "{}", run.all());
    // The daemon and the other commands that read the full configuration too.
    expect_config_error(&pgbackup(&["check"], &e), "BACKUP_VERIFY_DATABASE_URL");
}

#[test]
fn commands_that_read_backups_need_no_database_url() {
    let dir = temp_dir("cfg-nodb");
    let e = env(&dir, &[]);
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["prune"],
        &["prune", "--dry-run"],
    ] {
        let run = pgbackup(args, &e);
        assert_eq!(run.code, 0, "{args:?}: {}", run.all());
    }
    let target = ["--target-url", "postgres://u@127.0.0.1:1/x"];
    for args in [
        &["verify", "latest"][..],
        &["presign", "latest"],
        &["restore", "latest", target[0], target[1]],
    ] {
        let run = pgbackup(args, &e);
        // No backups: the work fails (1), the configuration is fine.
        assert_eq!(run.code, 1, "{args:?}: {}", run.all());
        assert!(!run.all().contains("BACKUP_DATABASE_URL"), "{}", run.all());
        assert!(!run.all().contains("unset.invalid"), "{}", run.all());
    }
    // A drill restores somewhere: on BACKUP_DATABASE_URL's server, or into
    // BACKUP_VERIFY_DATABASE_URL.
    let run = pgbackup(&["verify", "latest", "--restore"], &e);
    expect_config_error(&run, "BACKUP_DATABASE_URL");
    // Backing up needs the database.
    expect_config_error(&pgbackup(&["backup"], &e), "BACKUP_DATABASE_URL");
}

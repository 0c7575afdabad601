//! The binary refuses to start without what it must have, and says which
//! setting, never its value: no operator token (the API never runs open),
//! a short one, no DATABASE_URL, a batch out of range.

use std::process::Command;

const DB: &str = "postgres://ledger:db-password-never-shown@127.0.0.1:9/ledger";

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    cmd.env_clear()
        .env("LOG_FORMAT", "pretty")
        // Nothing listens on port 9: a start that went past the checks
        // would hang on NATS, not pass.
        .env("NATS_URL", "nats://127.0.0.1:9")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the ledger binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_an_operator_token_it_fails_closed() {
    let (code, err) = run(&[("DATABASE_URL", DB)], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("OPERATOR_TOKEN (or OPERATOR_TOKEN_FILE) is required"),
        "{err}"
    );
    let (code, err) = run(&[("DATABASE_URL", DB), ("OPERATOR_TOKEN", "short")], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("OPERATOR_TOKEN: at least 16 characters"),
        "{err}"
    );
    // The queries need it too.
    let (code, err) = run(&[], &["stats", "careem"]);
    assert_eq!(code, 2);
    assert!(err.contains("OPERATOR_TOKEN"), "{err}");
}

#[test]
fn settings_are_checked_before_anything_starts_and_secrets_stay_out() {
    let token = "operator-token-never-shown-1234";
    let (code, err) = run(&[("OPERATOR_TOKEN", token)], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL is required to serve"), "{err}");
    let (code, err) = run(
        &[
            ("OPERATOR_TOKEN", token),
            ("DATABASE_URL", DB),
            ("LEDGER_BATCH", "5000"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "error: LEDGER_BATCH: 5000 is not within 1..=2000"
    );
    let (code, err) = run(
        &[
            ("OPERATOR_TOKEN", token),
            ("DATABASE_URL", DB),
            ("LEDGER_WRITERS", "0"),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(err.trim(), "error: LEDGER_WRITERS: 0 is not within 1..=16");
    let (code, err) = run(
        &[("OPERATOR_TOKEN", token), ("DATABASE_URL", "mysql://x")],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL: not a PostgreSQL URL"), "{err}");
    // A token file works like the variable (its trailing newline dropped).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let (code, err) = run(&[("OPERATOR_TOKEN_FILE", file.to_str().unwrap())], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL is required to serve"), "{err}");
    let (code, err) = run(
        &[
            ("OPERATOR_TOKEN_FILE", file.to_str().unwrap()),
            ("OPERATOR_TOKEN", token),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("not both"), "{err}");
    let (_, help) = {
        let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--help")
            .env("OPERATOR_TOKEN", token)
            .env("DATABASE_URL", DB)
            .output()
            .unwrap();
        (0, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert!(
        help.contains("127.0.0.1:9097"),
        "the ledger's own ops port: {help}"
    );
    for secret in [token, "db-password-never-shown"] {
        assert!(!help.contains(secret), "--help shows a secret");
        assert!(!err.contains(secret));
    }
}

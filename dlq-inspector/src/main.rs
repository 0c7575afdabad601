//! `dlq-inspector`: see the crate docs (`lib.rs`) for the contract.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut ask = |question: &str| -> std::io::Result<bool> {
        let mut err = std::io::stderr();
        write!(err, "{question} [y/N] ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let console = dlq_inspector::Console {
        progress: err.is_terminal(),
        confirm: if std::io::stdin().is_terminal() {
            Some(&mut ask)
        } else {
            None
        },
        out: &mut out,
        err: &mut err,
    };
    ExitCode::from(dlq_inspector::run(std::env::args_os(), console).await)
}

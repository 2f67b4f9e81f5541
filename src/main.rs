//! `vmrepo`: parses the command line, calls the library crates, prints.

mod args;
mod cli;
mod outfile;
mod output;
mod ui;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use vmrepo_repo::ErrorKind;

/// A command's outcome: success, or problems were found and reported.
pub enum Outcome {
    Clean,
    Problems,
    /// What was asked for is gone (an image whose file is missing): exit 4,
    /// the message already printed.
    Missing,
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let serving = matches!(cli.command, args::Command::Serve(_) | args::Command::Demo { serve: true, .. });
    ui::init_logging(cli.verbose, cli.quiet, serving);
    let cancel = ui::install_signal_handlers();
    let json = cli.json;
    // What a command printed is buffered (src/output.rs): written out here,
    // where a closed pipe is reported like any other write.
    let result = cli::run(cli, &cancel).and_then(|outcome| {
        output::flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Ok(Outcome::Missing) => ExitCode::from(4),
        Err(err) => report(&err, json),
    }
}

/// Prints the error in one line (and as JSON on stdout with --json) and picks the exit code.
fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    // A closed pipe (vmrepo list | head, vmrepo cat | head) is not a failure.
    let pipe = |e: &io::Error| e.kind() == io::ErrorKind::BrokenPipe;
    if err.downcast_ref::<io::Error>().is_some_and(pipe)
        || err
            .downcast_ref::<vmrepo_format::Error>()
            .and_then(vmrepo_format::Error::io_error)
            .is_some_and(pipe)
    {
        return ExitCode::SUCCESS;
    }
    let (code, kind) = if let Some(e) = err.downcast_ref::<vmrepo_repo::Error>() {
        exit_code(e.kind())
    } else if let Some(e) = err.downcast_ref::<vmrepo_format::Error>() {
        // A write that fails for room is a full disk, whichever layer wrote.
        let full = e
            .io_error()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT || c == libc::EFBIG);
        if full { (8, "no-space") } else { format_exit_code(e.kind()) }
    } else if err.downcast_ref::<vmrepo_name::NameError>().is_some() {
        (6, "invalid-input")
    } else if err
        .downcast_ref::<io::Error>()
        .and_then(io::Error::raw_os_error)
        .is_some_and(|c| c == libc::ENOSPC || c == libc::EDQUOT || c == libc::EFBIG)
    {
        (8, "no-space")
    } else {
        (7, "io")
    };
    let message = format!("{err:#}").replace('\n', " ");
    // Lines printed before the failure come out first; if they cannot, the
    // error below is still the one to report.
    let _ = output::flush();
    if json {
        let v = serde_json::json!({ "error": { "kind": kind, "exit_code": code, "message": message } });
        let _ = writeln!(io::stdout(), "{v}");
    }
    let _ = writeln!(io::stderr(), "vmrepo: error: {message}");
    ExitCode::from(code)
}

fn format_exit_code(kind: vmrepo_format::ErrorKind) -> (u8, &'static str) {
    use vmrepo_format::ErrorKind as F;
    match kind {
        F::Io => (7, "io"),
        F::NeedsReferenced => (12, "needs-referenced-file"),
        // A FIFO, a socket, a character device or a folder named as an image:
        // not an image file at all, so the argument is wrong, not an image.
        F::NotAFile => (6, "invalid-input"),
        _ => (11, "bad-image"),
    }
}

fn exit_code(kind: ErrorKind) -> (u8, &'static str) {
    kind.code_and_name()
}

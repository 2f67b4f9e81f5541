//! `vmrepo`: parses the command line, calls the library crates, prints.

mod args;
mod commands;
mod image;
mod output;
mod ui;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use vmrepo_repo::ErrorKind;

/// Listing thousands of catalog records is allocation-bound; mimalloc halves that cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A command's outcome: success, or problems were found and reported.
pub enum Outcome {
    Clean,
    Problems,
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    ui::init_logging(cli.verbose, cli.quiet);
    let cancel = ui::install_signal_handlers();
    let json = cli.json;
    match commands::run(cli, &cancel) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(err) => report(&err, json),
    }
}

/// Prints the error in one line (and as JSON on stdout with --json) and picks the exit code.
fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    // A closed pipe (vmrepo list | head) is not a failure.
    if let Some(io) = err.downcast_ref::<io::Error>()
        && io.kind() == io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let (code, kind) = match err.downcast_ref::<vmrepo_repo::Error>() {
        Some(e) => exit_code(e.kind()),
        None => match err.downcast_ref::<vmrepo_name::NameError>() {
            Some(_) => (6, "invalid-input"),
            None => (7, "io"),
        },
    };
    let message = format!("{err:#}").replace('\n', " ");
    if json {
        let v = serde_json::json!({ "error": { "kind": kind, "exit_code": code, "message": message } });
        let _ = writeln!(io::stdout(), "{v}");
    }
    let _ = writeln!(io::stderr(), "vmrepo: error: {message}");
    ExitCode::from(code)
}

fn exit_code(kind: ErrorKind) -> (u8, &'static str) {
    match kind {
        ErrorKind::NotARepository => (3, "not-a-repository"),
        ErrorKind::NotFound => (4, "not-found"),
        ErrorKind::AlreadyExists => (5, "already-exists"),
        ErrorKind::InvalidInput | ErrorKind::Ambiguous | ErrorKind::BadSidecar => (6, "invalid-input"),
        ErrorKind::NoSpace => (8, "no-space"),
        ErrorKind::Locked => (9, "locked"),
        ErrorKind::Index => (10, "index"),
        ErrorKind::Interrupted => (130, "interrupted"),
        _ => (7, "io"),
    }
}

//! Terminal matters: logging, progress bars, signals.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn init_logging(verbose: u8, quiet: bool, serving: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    // A server logs each request (the access log) unless told to be quiet.
    let access = if serving && !quiet { "info" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMREPO_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "vmrepo={level},vmrepo_repo={level},vmrepo_serve={level},vmrepo_serve::access={access}"
        ))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    // A server's log lines need their time; a command's do not.
    let _ = if serving { fmt.try_init() } else { fmt.without_time().try_init() };
}

/// The flag set by SIGINT, SIGTERM and SIGHUP: long work checks it, undoes
/// what it started and exits with 130. A second Ctrl-C exits at once; the
/// next command cleans up what that leaves.
pub fn install_signal_handlers() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    }
    // Past a file size limit, a write should fail with EFBIG (reported like a
    // full disk) rather than kill the process half-way.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false)));
    flag
}

/// A progress bar on standard error, drawn only on a terminal.
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    pub fn new(quiet: bool) -> Bar {
        let target = if !quiet && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar { bar, quiet }
    }
}

impl vmrepo_repo::Progress for Bar {
    fn start(&self, total: u64, what: &str) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(what.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(250));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn note(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("vmrepo: {message}"));
        }
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

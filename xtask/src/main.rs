//! Developer tasks of npshmex-rs, run as `cargo xtask <command>`.
//!
//! A plain binary behind a cargo alias (see `.cargo/config.toml`), one module
//! per subcommand, as rust-analyzer's xtask does: nothing to install but cargo.

mod flags;
mod python;
mod test;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = match flags::Command::parse(std::env::args().skip(1)) {
        Ok(cmd) => cmd,
        Err(msg) => {
            eprintln!("{msg}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    let outcome = match cmd {
        flags::Command::Help => {
            println!("{}", flags::USAGE);
            Ok(())
        }
        flags::Command::Test(t) => test::run(&t),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

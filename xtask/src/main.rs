//! Developer tasks of npshmex-rs, run as `cargo xtask <command>`.
//!
//! A plain binary behind a cargo alias (see `.cargo/config.toml`), one module
//! per subcommand, as rust-analyzer's xtask does: nothing to install but cargo.

mod arrow_interop;
mod bench;
mod chaos;
mod flags;
mod ndarray_interop;
mod npy_interop;
mod python;
mod roundtrip;
mod test;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Worker processes re-execute this binary: the peers' inits must come
    // first (each checks its own environment variable and returns at once
    // in an ordinary run; in a worker it serves tasks and never returns).
    procspawn::init();
    npshmex_pool::init();
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
        flags::Command::Bench(b) => bench::run(&b),
        flags::Command::Roundtrip(r) => roundtrip::run(&r.input, &r.output),
        flags::Command::NdarrayInterop => ndarray_interop::run().map(|r| match r {
            ndarray_interop::Interop::Checked { put, popped } => {
                println!("ndarray-interop: numpy checked {put} keys, Rust popped {popped} files");
            }
            ndarray_interop::Interop::Skipped(why) => println!("ndarray-interop: SKIPPED: {why}"),
        }),
        flags::Command::ArrowInterop => arrow_interop::run().map(|r| match r {
            arrow_interop::Interop::Checked {
                put,
                popped,
                roundtrip,
            } => println!(
                "arrow-interop: pyarrow checked {put} files, Rust read {popped}, roundtrip {roundtrip}"
            ),
            arrow_interop::Interop::Skipped(why) => println!("arrow-interop: SKIPPED: {why}"),
        }),
        flags::Command::Chaos(c) => chaos::run(&c),
        flags::Command::ChaosChild(args) => chaos::run_child(&args),
        flags::Command::BenchCase(c) => bench::run_case(&c),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

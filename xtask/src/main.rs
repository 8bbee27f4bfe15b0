//! Developer tasks of npshmex-rs, run as `cargo xtask <command>`.
//!
//! A plain binary behind a cargo alias (see `.cargo/config.toml`), one module
//! per subcommand, as rust-analyzer's xtask does: nothing to install but cargo.

mod arrow_interop;
mod bench;
mod chaos;
mod flags;
mod mpi;
mod ndarray_interop;
mod npy_interop;
mod package;
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.is_empty() {
        println!("{}", flags::Xtask::HELP);
        return ExitCode::SUCCESS;
    }
    let cmd = match flags::Xtask::from_vec(args) {
        Ok(x) => x.subcommand,
        Err(e) if e.is_help() => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("xtask: {e}\n(`cargo xtask help` lists the commands and their flags)");
            return ExitCode::from(2);
        }
    };
    let outcome = match cmd {
        flags::XtaskCmd::Help(_) => {
            println!("{}", flags::Xtask::HELP);
            Ok(())
        }
        flags::XtaskCmd::Test(t) => test::run(&t),
        flags::XtaskCmd::Bench(b) => bench::run(&b),
        flags::XtaskCmd::Roundtrip(r) => roundtrip::run(&r.input, &r.output),
        flags::XtaskCmd::NdarrayInterop(_) => ndarray_interop::run().map(|r| match r {
            ndarray_interop::Interop::Checked { put, popped } => {
                println!("ndarray-interop: numpy checked {put} keys, Rust popped {popped} files");
            }
            ndarray_interop::Interop::Skipped(why) => println!("ndarray-interop: SKIPPED: {why}"),
        }),
        flags::XtaskCmd::ArrowInterop(_) => arrow_interop::run().map(|r| match r {
            arrow_interop::Interop::Checked {
                put,
                popped,
                roundtrip,
            } => println!(
                "arrow-interop: pyarrow checked {put} files, Rust read {popped}, roundtrip {roundtrip}"
            ),
            arrow_interop::Interop::Skipped(why) => println!("arrow-interop: SKIPPED: {why}"),
        }),
        flags::XtaskCmd::Chaos(c) => chaos::run(&c),
        flags::XtaskCmd::ChaosChild(c) => chaos::run_child(&c.role),
        flags::XtaskCmd::BenchCase(c) => bench::run_case(&c),
        flags::XtaskCmd::Mpi(m) => mpi::run(&m),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! Naming a function across `exec`: the offset of its address from a fixed
//! anchor function of this crate, and the monomorphised trampolines the
//! worker calls through such offsets.
//!
//! Workers run the same executable (checked by the handshake before any
//! offset is used), and position-independent code moves every function by
//! the same amount, so `anchor + offset` in the worker is the function the
//! parent named. What travels for a task is the offset of `call::<A, R>`
//! (which knows how to decode `A` and encode `R`) and of the user's
//! `fn(A) -> R`. Registration tables were the alternative; they need a
//! macro at every function and a global constructor per entry.
//!
//! # Provenance
//! An offset means something in the worker only for code of the executable
//! itself: a function in a shared library or a `dlopen`ed plugin may be
//! loaded at another distance from the anchor (or not at all). So a
//! function is accepted only if its address lies in an executable mapping
//! of the main executable file (read once from `/proc/self/maps`);
//! anything else is [`PoolError::ForeignFunction`], never a wild jump.
//!
//! This module, `wire::decode` and `sys` are the only ones with `unsafe` code.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{PanicInfo, PoolError};
use crate::remote_error::RemoteCause;
use crate::wire::{decode, encode as encode_value, Encoded, Failure, Incoming};

/// The signature every trampoline has: user function address, argument
/// bytes, argument's out-of-band items; returns the encoded result.
pub(crate) type Trampoline = fn(usize, &[u8], Incoming) -> Result<Encoded, Failure>;

/// The fixed point offsets are measured from. Never inlined, so it has an
/// address of its own.
#[inline(never)]
fn anchor() -> u32 {
    std::hint::black_box(0x6e70_7368)
}

/// A second fixed function: the handshake compares its offset as seen by
/// both sides, a cheap check that the layout really agrees.
#[inline(never)]
fn probe() -> u32 {
    std::hint::black_box(0x6d65_7821)
}

fn anchor_addr() -> usize {
    anchor as fn() -> u32 as usize
}

fn offset_of(addr: usize) -> i64 {
    (addr as i64).wrapping_sub(anchor_addr() as i64)
}

pub(crate) fn addr_of_offset(offset: i64) -> usize {
    (anchor_addr() as i64).wrapping_add(offset) as usize
}

/// The executable mappings of the main executable file, `[start, end)`,
/// read once from `/proc/self/maps` (mappings of code do not move).
fn exe_text() -> &'static [(usize, usize)] {
    static TEXT: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    TEXT.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let (Ok(meta), Ok(maps)) = (
            std::fs::metadata("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return Vec::new();
        };
        parse_text_ranges(&maps, meta.ino())
    })
}

/// Executable ranges of the file with inode `ino` in a `/proc/<pid>/maps`
/// text: `start-end perms offset dev inode path`.
fn parse_text_ranges(maps: &str, ino: u64) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let _offset = f.next()?;
            let _dev = f.next()?;
            let inode: u64 = f.next()?.parse().ok()?;
            if inode != ino || !perms.contains('x') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// Whether `addr` is code of the main executable.
fn in_exe_text(addr: usize) -> bool {
    exe_text().iter().any(|&(a, b)| a <= addr && addr < b)
}

/// The offset of a function the caller named, after checking where it is.
fn checked_offset(addr: usize) -> Result<i64, PoolError> {
    if in_exe_text(addr) {
        Ok(offset_of(addr))
    } else {
        Err(PoolError::ForeignFunction { address: addr })
    }
}

/// Offset of the probe function (compared in the handshake).
pub(crate) fn probe_offset() -> i64 {
    offset_of(probe as fn() -> u32 as usize)
}

/// Offset of a user function.
///
/// # Errors
/// [`PoolError::ForeignFunction`] for a function outside the executable.
pub(crate) fn fn_offset<A, R>(f: fn(A) -> R) -> Result<i64, PoolError> {
    checked_offset(f as usize)
}

/// Offset of an initializer.
///
/// # Errors
/// [`PoolError::ForeignFunction`] for a function outside the executable.
pub(crate) fn initializer_offset(f: fn()) -> Result<i64, PoolError> {
    checked_offset(f as usize)
}

/// Offset of the trampoline for one task `fn(A) -> R`.
pub(crate) fn call_offset<A, R>() -> Result<i64, PoolError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    checked_offset(call::<A, R> as Trampoline as usize)
}

/// Offset of the trampoline for a chunk of `fn(A) -> R` calls (`map`).
pub(crate) fn call_chunk_offset<A, R>() -> Result<i64, PoolError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    checked_offset(call_chunk::<A, R> as Trampoline as usize)
}

/// Runs one task in the worker: the trampoline at `tramp` on the function
/// at `func`.
///
/// The offsets come from the frames of the worker's socket, whose only
/// other end is held by the parent that started this process and checked,
/// in the handshake, that we run its executable; the parent produced them
/// with [`call_offset`] / [`call_chunk_offset`] and [`fn_offset`] for one
/// `fn(A) -> R`, after checking both lie in the executable's code. That
/// trust in the peer is the safety argument for the unsafe calls below
/// (the same one procspawn makes). Offsets that do not land in our own code
/// are refused all the same, so a corrupted frame cannot make us jump.
pub(crate) fn invoke(
    tramp: i64,
    func: i64,
    bytes: &[u8],
    fds: Incoming,
) -> Result<Encoded, Failure> {
    let (t_addr, f_addr) = (addr_of_offset(tramp), addr_of_offset(func));
    if !in_exe_text(t_addr) || !in_exe_text(f_addr) {
        return Err(Failure::ArgumentDecode(RemoteCause::new(format!(
            "function offsets {tramp:#x}/{func:#x} do not land in this executable's code"
        ))));
    }
    // SAFETY: see the function doc: `tramp` was produced by call_offset or
    // call_chunk_offset in a process running this executable, and lands in
    // its code.
    let t = unsafe { trampoline_at(t_addr) };
    t(f_addr, bytes, fds)
}

/// Runs the initializer at `offset` (sent by the parent, see [`invoke`]);
/// `Err` with the panic message if it panics.
pub(crate) fn run_initializer(offset: i64) -> Result<(), String> {
    let addr = addr_of_offset(offset);
    if !in_exe_text(addr) {
        return Err(format!(
            "initializer offset {offset:#x} does not land in this executable's code"
        ));
    }
    // SAFETY: as in `invoke`: the parent produced `offset` with
    // initializer_offset from a `fn()` of this executable.
    let f = unsafe { initializer_at(addr) };
    catch_unwind(f).map_err(|p| panic_message(&*p))
}

/// The trampoline at `addr`.
///
/// # Safety
/// - `addr` must be the address of [`call`] or [`call_chunk`] for some
///   `A, R` in this executable (the parent named it with [`call_offset`]
///   or [`call_chunk_offset`]).
unsafe fn trampoline_at(addr: usize) -> Trampoline {
    // SAFETY: per the caller's contract `addr` is the address of a function
    // with exactly the `Trampoline` signature in this very executable.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr) }
}

/// The initializer at `addr`.
///
/// # Safety
/// - `addr` must be the address of a `fn()` of this executable (the parent
///   named it with [`initializer_offset`]).
unsafe fn initializer_at(addr: usize) -> fn() {
    // SAFETY: per the caller's contract `addr` is the address of a `fn()`.
    unsafe { std::mem::transmute::<usize, fn()>(addr) }
}

/// The user function at `addr`.
///
/// # Safety
/// - `addr` must be `anchor + fn_offset(f)` for an `f: fn(A) -> R` of this
///   exact monomorphisation in the same executable.
unsafe fn user_fn<A, R>(addr: usize) -> fn(A) -> R {
    // SAFETY: per the caller's contract.
    unsafe { std::mem::transmute::<usize, fn(A) -> R>(addr) }
}

/// The message of a caught panic; for a payload that is not a string, what
/// can be told of it (common scalar types are shown with their value).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    macro_rules! scalar {
        ($($t:ty),*) => {
            $(if let Some(v) = payload.downcast_ref::<$t>() {
                return format!("panic_any with a {} payload: {v:?}", stringify!($t));
            })*
        };
    }
    if let Some(s) = payload.downcast_ref::<&str>() {
        return (*s).to_string();
    }
    if let Some(s) = payload.downcast_ref::<String>() {
        return s.clone();
    }
    scalar!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, bool, char);
    "panic_any with a payload that is not a string (its type is unknown here)".to_string()
}

/// The location of the last panic on this thread, recorded by the worker's
/// panic hook.
pub(crate) mod panic_hook {
    use std::cell::RefCell;
    use std::sync::Once;

    thread_local! {
        static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Installs the worker's panic hook (once): it records where a task
    /// panicked, for [`super::PanicInfo`], and prints the panic on stderr
    /// as coming from this worker (the default hook's `thread 'main'
    /// panicked` reads as if the caller had panicked).
    pub(crate) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let message = super::panic_message(info.payload());
                // Not eprintln!: it panics when stderr is closed, and a
                // panic inside the hook aborts the worker.
                use std::io::Write as _;
                let mut err = std::io::stderr().lock();
                let _ = writeln!(
                    err,
                    "npshmex worker {}: a task panicked at {}:\n{message}",
                    std::process::id(),
                    location.as_deref().unwrap_or("<unknown>")
                );
                if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                    let _ = writeln!(err, "{}", std::backtrace::Backtrace::force_capture());
                }
                let _ = LAST.try_with(|l| *l.borrow_mut() = location);
            }));
        });
    }

    /// Takes the location the hook recorded on this thread.
    pub(crate) fn take_location() -> Option<String> {
        LAST.try_with(|l| l.borrow_mut().take()).ok().flatten()
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> PanicInfo {
    PanicInfo::new(
        panic_message(payload),
        panic_hook::take_location(),
        std::process::id(),
    )
}

fn decode_arg<A: DeserializeOwned>(bytes: &[u8], fds: Incoming) -> Result<A, Failure> {
    decode(bytes, fds).map_err(|e| Failure::ArgumentDecode(RemoteCause::from_error(&*e)))
}

// User `Serialize` impls run here too: a panic in one fails the task with a
// typed error instead of killing the worker (and, with it, the unrelated
// tasks pipelined behind).
fn encode<R: Serialize>(value: R) -> Result<Encoded, Failure> {
    catch_unwind(AssertUnwindSafe(|| encode_value(value)))
        .map_err(|p| {
            Failure::ResultEncode(RemoteCause::new(format!(
                "encoding panicked: {}",
                panic_message(&*p)
            )))
        })?
        .map_err(|e| Failure::ResultEncode(e.to_cause()))
}

/// Decodes `A`, calls the function at `f_addr`, encodes `R`.
fn call<A, R>(f_addr: usize, bytes: &[u8], fds: Incoming) -> Result<Encoded, Failure>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let arg: A = decode_arg(bytes, fds)?;
    // SAFETY: this trampoline's offset and `f_addr` were produced together
    // by `submit::<A, R>` from an `f: fn(A) -> R` in the same executable
    // (handshake), so the monomorphisations agree.
    let f = unsafe { user_fn::<A, R>(f_addr) };
    let out =
        catch_unwind(AssertUnwindSafe(|| f(arg))).map_err(|p| Failure::Panicked(panicked(&*p)))?;
    encode(out)
}

/// `call` over a chunk: decodes `Vec<A>`, calls the function on each
/// element (a panic fails only its element), encodes `Vec<Result<R, PanicInfo>>`.
fn call_chunk<A, R>(f_addr: usize, bytes: &[u8], fds: Incoming) -> Result<Encoded, Failure>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let args: Vec<A> = decode_arg(bytes, fds)?;
    // SAFETY: as in `call`: `map::<A, R>` produced both offsets.
    let f = unsafe { user_fn::<A, R>(f_addr) };
    let out: Vec<Result<R, PanicInfo>> = args
        .into_iter()
        .map(|a| catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| panicked(&*p)))
        .collect();
    encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(x: u64) -> u64 {
        x + 1
    }

    #[test]
    fn functions_of_the_executable_are_accepted() {
        assert!(fn_offset(ours as fn(u64) -> u64).is_ok());
        assert!(call_offset::<u64, u64>().is_ok());
        assert!(call_chunk_offset::<u64, u64>().is_ok());
        assert!(in_exe_text(anchor_addr()));
    }

    #[test]
    fn code_outside_the_executable_is_refused() {
        // A function of a shared library (libc's, mapped from libc.so).
        let in_libc = libc::getpid as *const () as usize;
        assert!(!in_exe_text(in_libc));
        assert!(matches!(
            checked_offset(in_libc),
            Err(PoolError::ForeignFunction { address }) if address == in_libc
        ));
        // Data, not code.
        let on_heap = Box::new(0u64);
        assert!(!in_exe_text(&*on_heap as *const u64 as usize));
        // Offsets that do not land in the executable are never called.
        let far = offset_of(in_libc);
        assert!(matches!(
            invoke(far, far, &[], Incoming::new(Vec::new(), &[])),
            Err(Failure::ArgumentDecode(_))
        ));
        assert!(run_initializer(far).is_err());
    }

    #[test]
    fn maps_lines_parse() {
        let maps = "5600-5700 r--p 00000000 fd:01 42 /bin/x\n\
                    5700-5800 r-xp 00001000 fd:01 42 /bin/x\n\
                    7f00-7f10 r-xp 00000000 fd:01 43 /lib/libc.so\n\
                    garbage\n";
        assert_eq!(parse_text_ranges(maps, 42), vec![(0x5700, 0x5800)]);
    }

    #[test]
    fn panic_payloads_say_what_they_are() {
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("b")), "b");
        assert_eq!(panic_message(&7u32), "panic_any with a u32 payload: 7");
        assert!(panic_message(&vec![1u8]).contains("not a string"));
    }
}

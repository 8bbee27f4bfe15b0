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
//! This module and `sys` are the only ones with `unsafe` code.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use npshmex_shm::oob;
use serde::{de::DeserializeOwned, Serialize};

use crate::wire::{pack, Failure, Packet};

/// The signature every trampoline has: user function address, argument
/// bytes, argument fds, inline limit for the result.
pub(crate) type Trampoline = fn(usize, &[u8], Vec<OwnedFd>, usize) -> Result<Packet, Failure>;

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

/// Offset of the probe function (compared in the handshake).
pub(crate) fn probe_offset() -> i64 {
    offset_of(probe as fn() -> u32 as usize)
}

/// Offset of a user function.
pub(crate) fn fn_offset<A, R>(f: fn(A) -> R) -> i64 {
    offset_of(f as usize)
}

/// Offset of an initializer.
pub(crate) fn initializer_offset(f: fn()) -> i64 {
    offset_of(f as usize)
}

/// Offset of the trampoline for one task `fn(A) -> R`.
pub(crate) fn call_offset<A, R>() -> i64
where
    A: DeserializeOwned,
    R: Serialize,
{
    offset_of(call::<A, R> as Trampoline as usize)
}

/// Offset of the trampoline for a chunk of `fn(A) -> R` calls (`map`).
pub(crate) fn call_chunk_offset<A, R>() -> i64
where
    A: DeserializeOwned,
    R: Serialize,
{
    offset_of(call_chunk::<A, R> as Trampoline as usize)
}

/// Runs one task in the worker: the trampoline at `tramp` on the function
/// at `func`.
///
/// The offsets come from the frames of the worker's socket, whose only
/// other end is held by the parent that started this process and checked,
/// in the handshake, that we run its executable; the parent produced them
/// with [`call_offset`] / [`call_chunk_offset`] and [`fn_offset`] for one
/// `fn(A) -> R`. That trust in the peer is the safety argument for the
/// unsafe calls below (the same one procspawn makes).
pub(crate) fn invoke(
    tramp: i64,
    func: i64,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    inline_max: usize,
) -> Result<Packet, Failure> {
    // SAFETY: see the function doc: `tramp` was produced by call_offset or
    // call_chunk_offset in a process running this executable.
    let t = unsafe { trampoline_at(tramp) };
    t(addr_of_offset(func), bytes, fds, inline_max)
}

/// Runs the initializer at `offset` (sent by the parent, see [`invoke`]);
/// `Err` with the panic message if it panics.
pub(crate) fn run_initializer(offset: i64) -> Result<(), String> {
    // SAFETY: as in `invoke`: the parent produced `offset` with
    // initializer_offset from a `fn()` of this executable.
    let f = unsafe { initializer_at(offset) };
    catch_unwind(f).map_err(|p| panic_message(&*p))
}

/// The trampoline at `offset`.
///
/// # Safety
/// - `offset` must come from [`call_offset`] or [`call_chunk_offset`] in a
///   process running the same executable (the handshake checked it).
unsafe fn trampoline_at(offset: i64) -> Trampoline {
    let addr = addr_of_offset(offset);
    // SAFETY: per the caller's contract `addr` is the address of a function
    // with exactly the `Trampoline` signature in this very executable.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr) }
}

/// The initializer at `offset`.
///
/// # Safety
/// - `offset` must come from [`initializer_offset`] in a process running the
///   same executable.
unsafe fn initializer_at(offset: i64) -> fn() {
    let addr = addr_of_offset(offset);
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

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

// User `Serialize`/`Deserialize` impls run here too: a panic in one fails
// the task with a typed error instead of killing the worker (and, with it,
// the unrelated tasks pipelined behind).
fn decode<A: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<A, Failure> {
    oob::with_received(fds, || {
        catch_unwind(AssertUnwindSafe(|| postcard::from_bytes(bytes)))
    })
    .map_err(|p| Failure::ArgumentDecode(format!("decoding panicked: {}", panic_message(&*p))))?
    .map_err(|e| Failure::ArgumentDecode(e.to_string()))
}

fn encode<R: Serialize>(value: &R, inline_max: usize) -> Result<Packet, Failure> {
    catch_unwind(AssertUnwindSafe(|| pack(value, inline_max)))
        .map_err(|p| Failure::ResultEncode(format!("encoding panicked: {}", panic_message(&*p))))?
        .map_err(|e| Failure::ResultEncode(e.to_string()))
}

/// Decodes `A`, calls the function at `f_addr`, encodes `R`.
fn call<A, R>(
    f_addr: usize,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    inline_max: usize,
) -> Result<Packet, Failure>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let arg: A = decode(bytes, fds)?;
    // SAFETY: this trampoline's offset and `f_addr` were produced together
    // by `submit::<A, R>` from an `f: fn(A) -> R` in the same executable
    // (handshake), so the monomorphisations agree.
    let f = unsafe { user_fn::<A, R>(f_addr) };
    let out = catch_unwind(AssertUnwindSafe(|| f(arg)))
        .map_err(|p| Failure::Panicked(panic_message(&*p)))?;
    encode(&out, inline_max)
}

/// `call` over a chunk: decodes `Vec<A>`, calls the function on each
/// element (a panic fails only its element), encodes `Vec<Result<R, String>>`.
fn call_chunk<A, R>(
    f_addr: usize,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    inline_max: usize,
) -> Result<Packet, Failure>
where
    A: DeserializeOwned,
    R: Serialize,
{
    let args: Vec<A> = decode(bytes, fds)?;
    // SAFETY: as in `call`: `map::<A, R>` produced both offsets.
    let f = unsafe { user_fn::<A, R>(f_addr) };
    let out: Vec<Result<R, String>> = args
        .into_iter()
        .map(|a| catch_unwind(AssertUnwindSafe(|| f(a))).map_err(|p| panic_message(&*p)))
        .collect();
    encode(&out, inline_max)
}

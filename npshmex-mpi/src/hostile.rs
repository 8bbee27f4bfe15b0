//! A worker rank that misbehaves, for this crate's tests of rank 0 (feature
//! `hostile-peer`, which only the crate's own dev-dependency turns on).
//!
//! It runs the real handshake (the same build, so rank 0 takes it for a
//! worker), keeps the heartbeats going both ways as a real watchdog does,
//! and answers every task with a frame an honest worker never sends (see
//! [`Misbehaviour`]). It leaves when rank 0 sends `Shutdown`.

use std::time::{Duration, Instant};

use npshmex_pool::backend::BuildId;
use npshmex_pool::RemoteCause;

use crate::error::MpiError;
use crate::frame::{self, Body, Failure, Payload, ToCaller, ToWorker};
use crate::inflight::{Buf, InFlight, Incoming};
use crate::raw::{self, Comm, Tag};
use crate::session;

/// What the hostile worker answers a task with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A result for a task id rank 0 never sent.
    WrongId,
    /// The right id, announcing this many raw bytes that never follow.
    MissingBytes(u64),
    /// A second result for the same task while the first one's (never
    /// sent) bytes are awaited.
    Twice,
}

/// Serves as a hostile worker rank until rank 0 sends `Shutdown`, then
/// exits the process.
///
/// # Panics
/// When MPI fails: this is test code, and a panic there fails the test.
pub fn serve(how: Misbehaviour) -> ! {
    match run(how) {
        // `run` finalized when rank 0 asked for it.
        Ok(()) => raw::exit_now(0),
        Err(e) => panic!("hostile worker: {e}"),
    }
}

fn run(how: Misbehaviour) -> Result<(), MpiError> {
    let universe = raw::initialize()?;
    let comm = Comm::world()?.duplicate()?;
    let build = BuildId::current().map_err(MpiError::BuildId)?;
    let wait = Duration::from_secs(60);
    let deadline = Instant::now() + wait;
    let me = comm.rank()?;
    let hello = ToCaller::Hello {
        build,
        pid: std::process::id(),
        host: raw::host_name(),
    };
    session::send_frame(&comm, 0, frame::encode(me, &hello, &[])?, deadline, wait)?;
    session::receive_frame(&comm, 0, deadline, wait)?;
    let mut beats: Vec<InFlight> = Vec::new();
    let mut last_beat = Instant::now();
    loop {
        if last_beat.elapsed() > Duration::from_millis(200) {
            last_beat = Instant::now();
            let mut f = InFlight::new(0);
            f.send(&comm, Tag::Beat, Buf::Bytes(vec![0]))?;
            beats.push(f);
        }
        while let Some(m) = comm.probe(0, Tag::Beat)? {
            let mut f = InFlight::new(0);
            f.receive_matched(m, vec![0; 1])?;
            beats.push(f);
        }
        beats.retain_mut(|f| !f.poll().unwrap_or(true));
        if let Some(m) = comm.probe(0, Tag::Frame)? {
            let mut f = InFlight::new(0);
            f.receive_matched(m, Vec::new())?;
            while !f.poll()? {
                std::thread::yield_now();
            }
            let bytes = f.into_frame().unwrap_or_default();
            match frame::decode::<ToWorker>(0, &bytes)? {
                (ToWorker::Task(t), inline) => {
                    let mut arg = Incoming::post(&comm, 0, &t.arg, inline)?;
                    while !arg.poll()? {
                        std::thread::yield_now();
                    }
                    let _ = arg.finish();
                    let missing = |n| ToCaller::Done {
                        id: t.id,
                        outcome: Ok(Payload {
                            body: Body::Raw(n),
                            items: vec![],
                        }),
                    };
                    let answers = match how {
                        Misbehaviour::WrongId => vec![ToCaller::Done {
                            id: t.id.wrapping_add(1000),
                            outcome: Err(Failure::ArgumentDecode(RemoteCause::new("forged"))),
                        }],
                        Misbehaviour::MissingBytes(n) => vec![missing(n)],
                        Misbehaviour::Twice => vec![missing(1 << 20), missing(1 << 20)],
                    };
                    for head in answers {
                        let mut f = InFlight::new(0);
                        f.send(
                            &comm,
                            Tag::Frame,
                            Buf::Bytes(frame::encode(me, &head, &[])?),
                        )?;
                        while !f.poll()? {
                            std::thread::yield_now();
                        }
                    }
                }
                (ToWorker::Shutdown { finalize }, _) => {
                    // Beats still under way are buried until finalize.
                    drop(beats);
                    if finalize {
                        drop(universe);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

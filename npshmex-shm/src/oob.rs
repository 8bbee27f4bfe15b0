//! Out-of-band fds for serde: a thread-local collector stack.
//!
//! A `Serialize` impl of a segment-bearing type calls [`push_fd`] and writes only
//! the returned index; the code that sends the bytes wraps encoding in
//! [`collect`] and sends the collected fds alongside. On the other side decoding
//! runs inside [`with_received`], and `Deserialize` calls [`take_fd`] with the
//! index. This is pickle protocol 5's out-of-band buffers, done with fds.
//!
//! Both stacks nest: an inner [`collect`] or [`with_received`] shadows the outer
//! one until it returns. Panics inside the closures unwind cleanly (the entry is
//! popped and its fds closed).
//!
//! ```
//! use npshmex_shm::{oob, Segment};
//! let seg = Segment::anonymous(4096)?;
//! let (index, fds) = oob::collect(|| oob::push_fd(seg.try_clone_fd()?));
//! assert_eq!(index?, 0);
//! let fd = oob::with_received(fds, || oob::take_fd(0))?;
//! let again = Segment::from_fd(fd, npshmex_shm::Access::ReadOnly)?;
//! assert_eq!(again.len(), 4096);
//! # Ok::<(), npshmex_shm::ShmError>(())
//! ```

use std::cell::RefCell;
use std::os::fd::OwnedFd;

use crate::error::{Result, ShmError};

thread_local! {
    static COLLECTORS: RefCell<Vec<Vec<OwnedFd>>> = const { RefCell::new(Vec::new()) };
    static RECEIVERS: RefCell<Vec<Vec<Option<OwnedFd>>>> = const { RefCell::new(Vec::new()) };
}

/// Pops the top collector when dropped (also on unwind).
struct CollectGuard;

impl CollectGuard {
    fn finish(self) -> Vec<OwnedFd> {
        std::mem::forget(self);
        COLLECTORS
            .with(|c| c.borrow_mut().pop())
            .unwrap_or_default()
    }
}

impl Drop for CollectGuard {
    fn drop(&mut self) {
        // During thread teardown the thread-local may be gone; nothing to pop then.
        let _ = COLLECTORS.try_with(|c| c.borrow_mut().pop());
    }
}

/// Pops the top receiver (closing every fd not taken) when dropped.
struct ReceiveGuard;

impl Drop for ReceiveGuard {
    fn drop(&mut self) {
        // Take the fds out first and drop them after the borrow ends.
        let rest = RECEIVERS.try_with(|r| r.borrow_mut().pop());
        drop(rest);
    }
}

/// Runs `f` with a fresh fd collector installed on this thread and returns what
/// it returned together with the fds [`push_fd`] received, in push order.
pub fn collect<T>(f: impl FnOnce() -> T) -> (T, Vec<OwnedFd>) {
    COLLECTORS.with(|c| c.borrow_mut().push(Vec::new()));
    let guard = CollectGuard;
    let value = f();
    (value, guard.finish())
}

/// Hands `fd` to the innermost collector and returns its index there.
///
/// # Errors
/// [`ShmError::NoCollector`] outside [`collect`] (the fd is closed);
/// [`ShmError::Frame`] past `u32::MAX` fds.
pub fn push_fd(fd: OwnedFd) -> Result<u32> {
    COLLECTORS.with(|c| {
        let mut stack = c.borrow_mut();
        let top = stack.last_mut().ok_or(ShmError::NoCollector)?;
        let index = u32::try_from(top.len())
            .map_err(|_| ShmError::frame("more than u32::MAX out-of-band fds"))?;
        top.push(fd);
        Ok(index)
    })
}

/// Whether a collector is installed on this thread.
pub fn is_collecting() -> bool {
    COLLECTORS.with(|c| !c.borrow().is_empty())
}

/// Runs `f` with `fds` claimable by [`take_fd`]; every fd not taken is closed when
/// `f` returns.
pub fn with_received<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> T {
    RECEIVERS.with(|r| r.borrow_mut().push(fds.into_iter().map(Some).collect()));
    let _guard = ReceiveGuard;
    f()
}

/// Takes the fd at `index` of the innermost [`with_received`].
///
/// # Errors
/// [`ShmError::MissingFd`] when `index` is out of range or already taken,
/// [`ShmError::NoCollector`] outside [`with_received`].
pub fn take_fd(index: u32) -> Result<OwnedFd> {
    RECEIVERS.with(|r| {
        let mut stack = r.borrow_mut();
        let top = stack.last_mut().ok_or(ShmError::NoCollector)?;
        let available = u32::try_from(top.len()).unwrap_or(u32::MAX);
        top.get_mut(index as usize)
            .and_then(Option::take)
            .ok_or(ShmError::MissingFd { index, available })
    })
}

/// Whether [`with_received`] is active on this thread.
pub fn is_receiving() -> bool {
    RECEIVERS.with(|r| !r.borrow().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    fn fd() -> Result<OwnedFd> {
        Segment::anonymous(0)?.try_clone_fd()
    }

    #[test]
    fn outside_any_collector() -> Result<()> {
        assert!(!is_collecting());
        assert!(!is_receiving());
        assert!(matches!(push_fd(fd()?), Err(ShmError::NoCollector)));
        assert!(matches!(take_fd(0), Err(ShmError::NoCollector)));
        Ok(())
    }

    #[test]
    fn nesting_shadows_and_restores() -> Result<()> {
        let (inner, outer_fds) = collect(|| -> Result<_> {
            assert_eq!(push_fd(fd()?)?, 0);
            let (i, inner_fds) = collect(|| push_fd(fd()?));
            assert_eq!(i?, 0);
            assert_eq!(inner_fds.len(), 1);
            assert_eq!(push_fd(fd()?)?, 1);
            Ok(is_collecting())
        });
        assert!(inner?);
        assert_eq!(outer_fds.len(), 2);
        assert!(!is_collecting());
        Ok(())
    }

    #[test]
    fn take_twice_or_out_of_range() -> Result<()> {
        let fds = vec![fd()?, fd()?];
        with_received(fds, || -> Result<()> {
            assert!(is_receiving());
            take_fd(1)?;
            assert!(matches!(
                take_fd(1),
                Err(ShmError::MissingFd {
                    index: 1,
                    available: 2
                })
            ));
            assert!(matches!(
                take_fd(5),
                Err(ShmError::MissingFd {
                    index: 5,
                    available: 2
                })
            ));
            let inner = with_received(Vec::new(), || take_fd(0));
            assert!(matches!(
                inner,
                Err(ShmError::MissingFd {
                    index: 0,
                    available: 0
                })
            ));
            take_fd(0)?;
            Ok(())
        })?;
        assert!(!is_receiving());
        Ok(())
    }

    #[test]
    fn panics_pop_the_stack() {
        let result = std::panic::catch_unwind(|| collect(|| panic!("boom")));
        assert!(result.is_err());
        assert!(!is_collecting());
        let result = std::panic::catch_unwind(|| with_received(Vec::new(), || panic!("boom")));
        assert!(result.is_err());
        assert!(!is_receiving());
    }
}

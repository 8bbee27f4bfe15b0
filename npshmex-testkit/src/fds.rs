//! Counting this process's open file descriptors.

/// Number of open fds of this process (entries of `/proc/self/fd`; 0 when
/// it cannot be read).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_open_file_counts() -> std::io::Result<()> {
        let _serial = crate::leak::serial();
        let before = super::open_fds();
        let f = std::fs::File::open("/proc/self/stat")?;
        assert_eq!(super::open_fds(), before + 1);
        drop(f);
        assert_eq!(super::open_fds(), before);
        Ok(())
    }
}

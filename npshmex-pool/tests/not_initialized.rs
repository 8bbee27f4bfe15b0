//! A binary that never calls `init`: building a pool is a clear error, and
//! no process is started.

use npshmex_pool::{PoolError, ProcessPoolExecutor};

#[test]
fn build_without_init_is_an_error() {
    let err = ProcessPoolExecutor::new(1).expect_err("must refuse");
    assert!(matches!(err, PoolError::NotInitialized));
    let msg = err.to_string();
    assert!(
        msg.contains("init()") && msg.contains("test_support"),
        "{msg}"
    );
}

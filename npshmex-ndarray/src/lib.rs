//! ndarray arrays (dense and structured) through worker processes via
//! shared memory.

//! The numpy dtype model, numpy `descr` strings and `.npy` headers.

//! A process pool with the surface of Python's
//! `concurrent.futures.ProcessPoolExecutor`.

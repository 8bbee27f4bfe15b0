//! Arrow arrays and record batches through shared memory in the Arrow IPC
//! file format.

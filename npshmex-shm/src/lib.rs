//! Shared-memory segments for npshmex: anonymous (`memfd_create`) and named
//! (`/dev/shm`) segments, mapping, sealing, reservation of space, and passing
//! segments between processes over unix sockets.

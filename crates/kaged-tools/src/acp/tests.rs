//! The shim end to end on data: a real fake agent (python3) on its pipes, the daemon side
//! on in-memory pipes.

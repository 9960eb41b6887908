//! pot-memory-governor

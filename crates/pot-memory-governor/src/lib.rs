//! pot-memory-governor: keeps a verification safe on models larger than memory. It plans from a
//! model's description (bytes per layer, embedding and output head, per compute dtype) before
//! anything is loaded: resident, streamed layer by layer, int8 weights, or refused with the
//! numbers and the flags that would make it fit; it watches this process's own RSS and the
//! system's available memory on a sampling thread and stops pot's own work cleanly at the kill
//! threshold, never touching another process. Not implemented yet (see the open issue).

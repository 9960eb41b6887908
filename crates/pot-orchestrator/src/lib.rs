//! pot-orchestrator

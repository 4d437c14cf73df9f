//! Simulation suites live in tests/.

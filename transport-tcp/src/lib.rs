//! herald-tcp (under construction)

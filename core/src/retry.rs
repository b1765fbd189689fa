//! Retry policy: how many tries, and how long to wait before each.
//! (interface; implementation in progress)

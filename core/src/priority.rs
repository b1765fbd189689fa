//! Priority weights: absolute, downstream and upstream weight rules.
//! (interface; implementation in progress)

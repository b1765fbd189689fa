//! Trigger rules: may a task run, given the states of its direct upstream tasks?
//! (interface; implementation in progress)

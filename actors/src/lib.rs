//! weft-actors: the ractor actors that drive the core state machines and perform their
//! effects, the executors that run attempts, and the embedding API.

pub mod executor;

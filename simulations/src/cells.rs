//! Regional cells that own DAGs through shard leases: what a simulation of them records
//! ([`history`]) and the checkers that judge it ([`checkers`]).

pub mod checkers;
pub mod history;

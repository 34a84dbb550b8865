//! The one integration-test binary: every test here runs our binary against the real test bed
//! (scripts/test-bed) and checks the outcome with an independent client where it can.

mod audit;
mod drop_in;
mod fixture;
mod mongo;
mod rotation;
mod transactions;

//! The scenario suite of `tests/common` (formation, every collective on 4 ranks,
//! send/recv, a rank that stops answering) on the simulator and on both drivers over real
//! UDP on loopback: one test per scenario and backend.

use nexar_tests::common::{every_collective, formation, send_recv, silent_rank, Sim, Smol, Tokio};

#[test]
fn formation_sim() {
    formation::<Sim>();
}

#[test]
fn formation_tokio() {
    formation::<Tokio>();
}

#[test]
fn formation_smol() {
    formation::<Smol>();
}

#[test]
fn every_collective_sim() {
    every_collective::<Sim>();
}

#[test]
fn every_collective_tokio() {
    every_collective::<Tokio>();
}

#[test]
fn every_collective_smol() {
    every_collective::<Smol>();
}

#[test]
fn send_recv_sim() {
    send_recv::<Sim>();
}

#[test]
fn send_recv_tokio() {
    send_recv::<Tokio>();
}

#[test]
fn send_recv_smol() {
    send_recv::<Smol>();
}

#[test]
fn silent_rank_sim() {
    silent_rank::<Sim>();
}

#[test]
fn silent_rank_tokio() {
    silent_rank::<Tokio>();
}

#[test]
fn silent_rank_smol() {
    silent_rank::<Smol>();
}

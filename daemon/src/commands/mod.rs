//! Every subcommand's body: `main` parses the command line ([`cli`]) and hands each command to
//! its module here.

pub mod bridge;
pub mod cli;
pub mod demo;
pub mod incidents;
pub mod installer;
pub mod probe;
pub mod replay;
pub mod rules;
pub mod selftest;

//! Operations commands that run beside a live cluster, straight on MySQL: exporting one app's
//! data and purging messages past a retention period. `gim-logic` exposes them as subcommands;
//! both work in bounded memory and short transactions, so they are safe to run while serving.

pub mod export;
pub mod purge;

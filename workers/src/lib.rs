//! Pipeline handlers over core's ports: process (stateless rules), schedule (windows),
//! deliver (webhooks) and the metering that goes with acknowledgement. Each is a function of
//! a batch of work and the services, so the local loops and the Lambda entry points share them.

pub mod compute;
pub mod deliver;
pub mod handlers;
pub mod ingest;
pub mod lanes;
pub mod poll;
pub mod process;
pub mod publish;
pub mod retention;
pub mod schedule;
pub mod supervisor;
pub mod wake;

//! The KPI cluster: Apache DataFusion Ballista (the release built on the workspace's
//! DataFusion) running the plans this library makes.
//!
//! - [`scheduler`]: `eventctl cluster scheduler`, the process that takes jobs, splits them into
//!   stages and tasks, hands tasks to executors and retries them elsewhere when an executor is
//!   lost;
//! - [`executor`]: `eventctl cluster executor`, the processes that run tasks, reading the
//!   lake with their own credentials (the AWS environment for `s3://`, the file system for
//!   a local lake every machine sees at the same path) and serving shuffle data to each other;
//! - [`client`]: submits a physical plan made by a [`crate::LakeSession`] and collects its rows
//!   and what its scans read.
//!
//! The client plans: the tables' files come from the Delta logs read by the client, pruned by
//! the query's predicates, so executors never list the lake and read exactly the files and
//! columns a local run reads. Plans travel as DataFusion's protobuf (`datafusion-proto`); the
//! scans in them name their files by full URL (`s3://bucket/prefix/events/...`).

pub mod client;
pub mod executor;
pub mod scheduler;
mod stores;

pub use client::{Job, connect, run_plan};
pub use executor::{ExecutorOptions, run_executor};
pub use scheduler::{SchedulerOptions, run_scheduler};

use crate::QueryError;

/// Splits `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`).
pub fn host_port(s: &str) -> Result<(String, u16), QueryError> {
    let bad = || QueryError::Invalid(format!("{s:?}: expected HOST:PORT, e.g. 192.168.1.20:50050"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn cluster_err(what: &str, e: impl std::fmt::Display) -> QueryError {
    QueryError::Cluster(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(host_port("10.0.0.2:50050").expect("ok"), ("10.0.0.2".to_owned(), 50050));
        assert_eq!(host_port("[::1]:7").expect("ok"), ("::1".to_owned(), 7));
        for bad in ["10.0.0.2", ":50050", "h:0", "h:x", "h:70000"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}

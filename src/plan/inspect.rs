//! `inspect`'s flags -> [`InspectSpec`]: certificate files when `--certificate` is given,
//! else the Workload API (`--workload-api-socket`, filled from `SPIFFE_ENDPOINT_SOCKET`).

use std::time::Duration;

use super::{Location, PlanError, Problem};
use crate::cli::InspectArgs;
use crate::identity::workload_api::normalize_address;
use crate::inspect::{InspectSource, InspectSpec};

/// Checks `inspect`'s flags before any I/O.
pub fn inspect(args: &InspectArgs) -> Result<InspectSpec, PlanError> {
    let source = match (&args.certificate, args.workload_api_socket.as_deref()) {
        (Some(certificate), _) => InspectSource::Files {
            certificate: certificate.clone(),
            private_key: args.private_key.clone(),
            intermediates: args.intermediates.clone(),
        },
        (None, Some(address)) if !address.is_empty() => InspectSource::WorkloadApi {
            address: normalize_address(address),
            spiffe_id: args.spiffe_id.clone(),
            timeout: Duration::from_secs(args.workload_api_timeout),
        },
        (None, _) => return Err(PlanError::new(Location::Flags, Problem::NoInspectSource)),
    };
    Ok(InspectSpec {
        source,
        trust_anchor_cert: args.trust_anchor_cert.clone(),
    })
}

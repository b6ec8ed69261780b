//! Generates the Workload API double's gRPC server (and a test-only client) from
//! `proto/workload.proto`, and the Delegated Identity double's server from
//! `proto/spire/delegatedidentity.proto` (the agent's client of that API is the `spire-api`
//! crate, so the double and the agent do not share one reading of the protocol).
//!
//! protox compiles the schema in pure Rust, so building the crate never needs `protoc` on the
//! host. The proto has no package, so the generated code lands in `$OUT_DIR/_.rs`.

use std::path::Path;

const PROTO: &str = "proto/workload.proto";
const DELEGATED_PROTOS: [&str; 2] = [
    "proto/spire/delegatedidentity.proto",
    "proto/spire/types.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Re-run only when the schema (or this script) changes, not on every source edit.
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    for proto in DELEGATED_PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let descriptors = protox::compile([PROTO], [Path::new("proto")])?;
    tonic_prost_build::configure()
        .build_server(true)
        // The client exists only so the double's own tests can send calls the `spiffe`
        // crate never would (for example, without the security header).
        .build_client(true)
        .client_mod_attribute(".", "#[cfg(test)]")
        // X509SVID carries a private key; its Debug is written by hand and redacts it.
        .skip_debug([".X509SVID"])
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;

    let descriptors = protox::compile([DELEGATED_PROTOS[0]], [Path::new("proto")])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        // X509SVIDWithKey carries a private key; its Debug is written by hand and redacts it.
        .skip_debug([".spire.api.agent.delegatedidentity.v1.X509SVIDWithKey"])
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}

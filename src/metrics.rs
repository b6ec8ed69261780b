//! The agent's counters, histograms and gauges, in one registry encoded in the Prometheus
//! (OpenMetrics) text format by the admin listener.
//!
//! The flow is one-way: refreshers and endpoints *record* into a shared [`Metrics`] handle;
//! only the admin listener reads it ([`Metrics::encode`]). Recording on a hot path is one
//! relaxed atomic add: an endpoint resolves its labelled counters once, when it starts
//! ([`Metrics::endpoint`]), so a request never hashes a label set or takes a lock.
//! Labels carry configured names only (role names, endpoint names, status codes, error
//! classes): never anything a client sent, so a client cannot grow the registry.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::rolesanywhere::ErrorClass;

/// Every metric name starts with this.
const PREFIX: &str = "spiffe_aws_agent";

/// The HTTP statuses the endpoints answer with; any other is counted as `other`.
const STATUSES: [(u16, &str); 11] = [
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (411, "411"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (503, "503"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    role: String,
    /// `success` or `error`.
    outcome: &'static str,
    /// `none` on success, else the [`ErrorClass`].
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// See the [module docs](self).
pub struct Metrics {
    registry: Registry,
    create_session: Family<CallLabels, Counter>,
    create_session_seconds: Family<RoleLabels, Histogram>,
    rotations: Family<RoleLabels, Counter>,
    withdrawals: Family<RoleLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    shed: Family<EndpointLabels, Counter>,
    expiry: Family<RoleLabels, Gauge<f64, AtomicU64>>,
    workload_api: Family<AddressLabels, Gauge>,
    spire_admin: Family<AddressLabels, Gauge>,
}

/// The socket a connection gauge is about (configured, never client input).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    address: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn create_session_histogram() -> Histogram {
    // 10 ms .. ~20 s: a healthy call takes tens of milliseconds; the client's timeout is 30 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix(PREFIX);
        let create_session = Family::<CallLabels, Counter>::default();
        registry.register(
            "create_session",
            "Roles Anywhere CreateSession calls, by role, outcome and error class",
            create_session.clone(),
        );
        let create_session_seconds = Family::<RoleLabels, Histogram>::new_with_constructor(
            create_session_histogram as fn() -> Histogram,
        );
        registry.register(
            "create_session_duration_seconds",
            "How long CreateSession calls took, by role",
            create_session_seconds.clone(),
        );
        let rotations = Family::<RoleLabels, Counter>::default();
        registry.register(
            "svid_rotations",
            "SVID rotations that led a role to exchange the new SVID",
            rotations.clone(),
        );
        let withdrawals = Family::<RoleLabels, Counter>::default();
        registry.register(
            "identity_withdrawals",
            "Times a role's credentials were dropped because the Workload API withdrew its identity",
            withdrawals.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered by each endpoint, by HTTP status",
            requests.clone(),
        );
        let shed = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "connections_shed",
            "Connections closed to make room at the connection limit, or refused while accepting failed, by endpoint",
            shed.clone(),
        );
        let expiry = Family::<RoleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credentials_expiry_seconds",
            "Seconds until the role's current credentials expire (0 when it holds none)",
            expiry.clone(),
        );
        let workload_api = Family::<AddressLabels, Gauge>::default();
        registry.register(
            "workload_api_connected",
            "1 while the SPIFFE Workload API stream is up, 0 while it is not (absent with certificate files)",
            workload_api.clone(),
        );
        let spire_admin = Family::<AddressLabels, Gauge>::default();
        registry.register(
            "spire_admin_api_ready",
            "Per-caller mode: 1 when the last probe of the SPIRE agent's Delegated Identity API succeeded",
            spire_admin.clone(),
        );
        Arc::new(Metrics {
            registry,
            create_session,
            create_session_seconds,
            rotations,
            withdrawals,
            requests,
            shed,
            expiry,
            workload_api,
            spire_admin,
        })
    }

    /// A process-wide handle nobody reads, for stores and servers started without one (tests,
    /// tools): recording into it costs the same and goes nowhere.
    pub fn detached() -> Arc<Metrics> {
        static DETACHED: OnceLock<Arc<Metrics>> = OnceLock::new();
        Arc::clone(DETACHED.get_or_init(Metrics::new))
    }

    /// Records one CreateSession call of `role`: `Ok(())` or the failure's class.
    pub fn create_session(&self, role: &str, result: Result<(), ErrorClass>, took: Duration) {
        let (outcome, class) = match result {
            Ok(()) => ("success", "none"),
            Err(class) => ("error", class_label(class)),
        };
        self.create_session
            .get_or_create(&CallLabels {
                role: role.to_owned(),
                outcome,
                class,
            })
            .inc();
        self.create_session_seconds
            .get_or_create(&RoleLabels {
                role: role.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// `role` exchanged a rotated SVID.
    pub fn svid_rotated(&self, role: &str) {
        self.rotations
            .get_or_create(&RoleLabels {
                role: role.to_owned(),
            })
            .inc();
    }

    /// `role`'s credentials were dropped because its identity was withdrawn.
    pub fn identity_withdrawn(&self, role: &str) {
        self.withdrawals
            .get_or_create(&RoleLabels {
                role: role.to_owned(),
            })
            .inc();
    }

    /// Sets how long `role`'s credentials have left (the admin listener, at scrape time).
    pub fn set_expiry(&self, role: &str, left: Option<Duration>) {
        self.expiry
            .get_or_create(&RoleLabels {
                role: role.to_owned(),
            })
            .set(left.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Sets the state of the Workload API connection to `address` (the admin listener, at
    /// scrape time).
    pub fn set_workload_api_connected(&self, address: &str, up: bool) {
        self.workload_api
            .get_or_create(&AddressLabels {
                address: address.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Sets the result of the last probe of the Delegated Identity API at `address` (the
    /// admin listener's probe).
    pub fn set_spire_admin_ready(&self, address: &str, ready: bool) {
        self.spire_admin
            .get_or_create(&AddressLabels {
                address: address.to_owned(),
            })
            .set(i64::from(ready));
    }

    /// The counters of endpoint `name`, resolved once so that counting a request is one
    /// atomic add.
    pub fn endpoint(&self, name: &'static str) -> EndpointCounters {
        let counter = |status| {
            self.requests
                .get_or_create(&RequestLabels {
                    endpoint: name,
                    status,
                })
                .clone()
        };
        EndpointCounters(Arc::new(EndpointCountersInner {
            name,
            by_status: STATUSES.map(|(code, label)| (code, counter(label))),
            other: counter("other"),
            shed: self
                .shed
                .get_or_create(&EndpointLabels { endpoint: name })
                .clone(),
        }))
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Throttled => "throttled",
        ErrorClass::Transient => "transient",
        ErrorClass::Configuration => "configuration",
        ErrorClass::Identity => "identity",
    }
}

/// One endpoint's request and connection counters. A clone is one reference count: each
/// request's future holds one.
#[derive(Clone, Debug)]
pub struct EndpointCounters(Arc<EndpointCountersInner>);

#[derive(Debug)]
struct EndpointCountersInner {
    name: &'static str,
    by_status: [(u16, Counter); STATUSES.len()],
    other: Counter,
    shed: Counter,
}

impl EndpointCounters {
    /// The endpoint's name (also its log name).
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// Counts one answered request.
    pub fn request(&self, status: u16) {
        match self.0.by_status.iter().find(|(code, _)| *code == status) {
            Some((_, counter)) => counter.inc(),
            None => self.0.other.inc(),
        };
    }

    /// Counts one connection closed or refused by load shedding.
    pub fn shed(&self) {
        self.0.shed.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_with_their_labels() {
        let m = Metrics::new();
        m.create_session("orders", Ok(()), Duration::from_millis(30));
        m.create_session(
            "orders",
            Err(ErrorClass::Transient),
            Duration::from_millis(5),
        );
        let imds = m.endpoint("imds");
        imds.request(200);
        imds.request(200);
        imds.request(418);
        imds.shed();
        m.set_expiry("orders", Some(Duration::from_secs(90)));
        let text = m.encode().unwrap();
        for line in [
            "spiffe_aws_agent_create_session_total{role=\"orders\",outcome=\"success\",class=\"none\"} 1",
            "spiffe_aws_agent_create_session_total{role=\"orders\",outcome=\"error\",class=\"transient\"} 1",
            "spiffe_aws_agent_create_session_duration_seconds_count{role=\"orders\"} 2",
            "spiffe_aws_agent_http_requests_total{endpoint=\"imds\",status=\"200\"} 2",
            "spiffe_aws_agent_http_requests_total{endpoint=\"imds\",status=\"other\"} 1",
            "spiffe_aws_agent_connections_shed_total{endpoint=\"imds\"} 1",
            "spiffe_aws_agent_credentials_expiry_seconds{role=\"orders\"} 90.0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! JWT-SVIDs from the SPIFFE Workload API (`FetchJWTSVID`), through the `spiffe` crate, for
//! the web-identity exchange (STS `AssumeRoleWithWebIdentity`).
//!
//! A JWT-SVID is a bearer token of a few minutes, minted for one audience: it is fetched
//! fresh for every exchange and never stored. The Workload API is asked once per fetch; a
//! failure reports its cause at once (no socket, no identity, no SVID with that ID or hint)
//! instead of retrying, as [`super::workload_api::fetch_once`] does for X.509-SVIDs.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use spiffe::{JwtSvid, SpiffeId, WorkloadApiClient};

use super::workload_api::{classify, WorkloadApiError};

/// Which of the workload's JWT-SVIDs to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvidSelector {
    /// The Workload API's default (the first SVID).
    Default,
    /// The SVID of this SPIFFE ID: asked for by ID, so SPIRE mints only that one.
    SpiffeId(String),
    /// The SVID whose Workload API hint is this.
    Hint(String),
}

impl SvidSelector {
    /// `--spiffe-id`'s meaning everywhere in this agent: a SPIFFE ID when the value is one,
    /// else a hint.
    pub fn id_or_hint(value: &str) -> Self {
        if SpiffeId::from_str(value).is_ok() {
            SvidSelector::SpiffeId(value.to_owned())
        } else {
            SvidSelector::Hint(value.to_owned())
        }
    }
}

/// Why no usable JWT-SVID came from the Workload API.
#[derive(Debug, thiserror::Error)]
pub enum JwtSvidError {
    #[error(transparent)]
    WorkloadApi(#[from] WorkloadApiError),
    #[error("the SPIFFE Workload API at {address} sent a JWT-SVID that is not usable: {reason}")]
    BadSvid { address: String, reason: String },
    #[error("the SPIFFE Workload API at {address} sent a JWT-SVID that expired at {expiry} (now {now}): check the clocks of this host and of the SPIRE agent")]
    Expired {
        address: String,
        expiry: String,
        now: String,
    },
}

/// Fetches JWT-SVIDs for `audience` once and returns the one `selector` picks.
pub async fn fetch(
    address: &str,
    audience: &str,
    selector: &SvidSelector,
    timeout: Duration,
    now: SystemTime,
) -> Result<JwtSvid, JwtSvidError> {
    let wanted_id = match selector {
        SvidSelector::SpiffeId(id) => Some(SpiffeId::from_str(id).map_err(|e| {
            JwtSvidError::WorkloadApi(WorkloadApiError::NoMatchingSvid {
                address: address.to_owned(),
                wanted: format!("{id} ({e})"),
                available: "nothing".into(),
            })
        })?),
        _ => None,
    };
    let fetch = async {
        let client = WorkloadApiClient::connect_to(address)
            .await
            .map_err(|e| classify(address, e))?;
        client
            .fetch_all_jwt_svids([audience], wanted_id.as_ref())
            .await
            .map_err(|e| match e {
                spiffe::WorkloadApiError::JwtSvid(e) => JwtSvidError::BadSvid {
                    address: address.to_owned(),
                    reason: e.to_string(),
                },
                other => JwtSvidError::WorkloadApi(classify(address, other)),
            })
    };
    let timed_out = || WorkloadApiError::Timeout {
        address: address.to_owned(),
        seconds: timeout.as_secs(),
    };
    let svids = match tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| timed_out())?
    {
        // SPIRE answers "no identity issued" also when only the ID asked for is missing:
        // say which IDs the workload does have.
        Err(JwtSvidError::WorkloadApi(WorkloadApiError::NoIdentity { .. }))
            if wanted_id.is_some() =>
        {
            let others = tokio::time::timeout(timeout, async {
                let client = WorkloadApiClient::connect_to(address).await.ok()?;
                client.fetch_all_jwt_svids([audience], None).await.ok()
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            return Err(select(address, others, selector).err().unwrap_or_else(|| {
                JwtSvidError::BadSvid {
                    address: address.to_owned(),
                    reason: "it refused the SPIFFE ID it then offered".into(),
                }
            }));
        }
        other => other?,
    };
    let svid = select(address, svids, selector)?;
    check(address, &svid, audience, now)?;
    Ok(svid)
}

/// Picks the SVID `selector` names from what the Workload API sent.
fn select(
    address: &str,
    svids: Vec<JwtSvid>,
    selector: &SvidSelector,
) -> Result<JwtSvid, JwtSvidError> {
    let available = || {
        let list: Vec<String> = svids
            .iter()
            .map(|s| match s.hint() {
                Some(h) if !h.is_empty() => format!("{} (hint {h:?})", s.spiffe_id()),
                _ => s.spiffe_id().to_string(),
            })
            .collect();
        if list.is_empty() {
            "nothing".to_owned()
        } else {
            list.join(", ")
        }
    };
    let found = match selector {
        SvidSelector::Default => svids.first(),
        SvidSelector::SpiffeId(id) => svids.iter().find(|s| s.spiffe_id().to_string() == *id),
        SvidSelector::Hint(hint) => svids.iter().find(|s| s.hint() == Some(hint.as_str())),
    };
    match found {
        Some(svid) => Ok(svid.clone()),
        None => Err(JwtSvidError::WorkloadApi(
            WorkloadApiError::NoMatchingSvid {
                address: address.to_owned(),
                wanted: match selector {
                    SvidSelector::Default => "(the default)".into(),
                    SvidSelector::SpiffeId(v) | SvidSelector::Hint(v) => v.clone(),
                },
                available: available(),
            },
        )),
    }
}

/// What the exchange relies on: the audience asked for, and time left.
fn check(
    address: &str,
    svid: &JwtSvid,
    audience: &str,
    now: SystemTime,
) -> Result<(), JwtSvidError> {
    if !svid.audience().iter().any(|a| a == audience) {
        return Err(JwtSvidError::BadSvid {
            address: address.to_owned(),
            reason: format!(
                "its audience {:?} does not include the one asked for, {audience:?}",
                svid.audience()
            ),
        });
    }
    let expiry = SystemTime::from(svid.expiry());
    if expiry <= now {
        return Err(JwtSvidError::Expired {
            address: address.to_owned(),
            expiry: crate::display::aws_time(expiry),
            now: crate::display::aws_time(now),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_or_hint() {
        assert_eq!(
            SvidSelector::id_or_hint("spiffe://example.org/a"),
            SvidSelector::SpiffeId("spiffe://example.org/a".into())
        );
        assert_eq!(
            SvidSelector::id_or_hint("internal"),
            SvidSelector::Hint("internal".into())
        );
    }
}

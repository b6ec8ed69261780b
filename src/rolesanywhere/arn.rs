//! ARN syntax checks, done before any network call so a typo costs no round trip and gets a
//! message that says which ARN is wrong and what it should look like.

/// The three ARNs a CreateSession call names, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionArns {
    pub trust_anchor: String,
    pub profile: String,
    pub role: String,
    /// The region in the trust anchor ARN: CreateSession's default region.
    pub trust_anchor_region: String,
    /// The partition (`aws`, `aws-cn`, `aws-us-gov`), which decides the endpoint's domain.
    pub partition: String,
}

/// Which of the three ARNs an [`ArnError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArnField {
    TrustAnchor,
    Profile,
    Role,
}

/// A malformed ARN. The message names the value, not where it came from: the caller adds
/// the flag or the config key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a valid {kind} ARN: {reason} (expected {example})")]
pub struct ArnError {
    pub field: ArnField,
    pub value: String,
    pub kind: &'static str,
    pub reason: String,
    pub example: &'static str,
}

const TA_EXAMPLE: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/<uuid>";
const PROFILE_EXAMPLE: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/<uuid>";
const ROLE_EXAMPLE: &str = "arn:aws:iam::123456789012:role/<name>";

impl SessionArns {
    /// Validates the trust anchor, profile and role ARNs, and that they agree on partition
    /// and (for the two Roles Anywhere ARNs) region and account.
    pub(super) fn parse(trust_anchor: &str, profile: &str, role: &str) -> Result<Self, ArnError> {
        let ta = parse_rolesanywhere(
            trust_anchor,
            ArnField::TrustAnchor,
            "trust anchor",
            "trust-anchor",
            TA_EXAMPLE,
        )?;
        let pr = parse_rolesanywhere(
            profile,
            ArnField::Profile,
            "profile",
            "profile",
            PROFILE_EXAMPLE,
        )?;
        let role_partition = parse_role(role)?;
        let mismatch = |field, value: &str, reason: String, kind, example| ArnError {
            field,
            value: value.to_owned(),
            kind,
            reason,
            example,
        };
        if pr.region != ta.region {
            return Err(mismatch(
                ArnField::Profile,
                profile,
                format!(
                    "its region {} differs from the trust anchor's {}",
                    pr.region, ta.region
                ),
                "profile",
                PROFILE_EXAMPLE,
            ));
        }
        if pr.account != ta.account {
            return Err(mismatch(
                ArnField::Profile,
                profile,
                format!(
                    "its account {} differs from the trust anchor's {}",
                    pr.account, ta.account
                ),
                "profile",
                PROFILE_EXAMPLE,
            ));
        }
        if pr.partition != ta.partition || role_partition != ta.partition {
            return Err(mismatch(
                ArnField::Role,
                role,
                format!(
                    "the ARNs are in different partitions ({}, {}, {})",
                    ta.partition, pr.partition, role_partition
                ),
                "role",
                ROLE_EXAMPLE,
            ));
        }
        Ok(SessionArns {
            trust_anchor: trust_anchor.to_owned(),
            profile: profile.to_owned(),
            role: role.to_owned(),
            trust_anchor_region: ta.region,
            partition: ta.partition,
        })
    }
}

struct Parsed {
    partition: String,
    region: String,
    account: String,
}

fn parse_rolesanywhere(
    value: &str,
    field: ArnField,
    kind: &'static str,
    resource_type: &str,
    example: &'static str,
) -> Result<Parsed, ArnError> {
    let err = |reason: String| ArnError {
        field,
        value: value.to_owned(),
        kind,
        reason,
        example,
    };
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(err(
            "it does not have the form arn:partition:service:region:account:resource".into(),
        ));
    }
    check_partition(parts[1]).map_err(&err)?;
    if parts[2] != "rolesanywhere" {
        return Err(err(format!(
            "the service is {:?}, not rolesanywhere",
            parts[2]
        )));
    }
    check_region(parts[3]).map_err(&err)?;
    check_account(parts[4]).map_err(&err)?;
    let Some(id) = parts[5].strip_prefix(&format!("{resource_type}/")) else {
        return Err(err(format!(
            "the resource must start with {resource_type}/"
        )));
    };
    if !is_uuid(id) {
        return Err(err(format!("{id:?} is not a UUID")));
    }
    Ok(Parsed {
        partition: parts[1].to_owned(),
        region: parts[3].to_owned(),
        account: parts[4].to_owned(),
    })
}

/// Checks an IAM role ARN; returns its partition. Also used by the web-identity exchange.
pub(crate) fn parse_role(value: &str) -> Result<String, ArnError> {
    let err = |reason: String| ArnError {
        field: ArnField::Role,
        value: value.to_owned(),
        kind: "IAM role",
        reason,
        example: ROLE_EXAMPLE,
    };
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(err(
            "it does not have the form arn:partition:iam::account:role/name".into(),
        ));
    }
    check_partition(parts[1]).map_err(&err)?;
    if parts[2] != "iam" {
        return Err(err(format!("the service is {:?}, not iam", parts[2])));
    }
    if !parts[3].is_empty() {
        return Err(err("IAM ARNs have no region".into()));
    }
    check_account(parts[4]).map_err(&err)?;
    let Some(name) = parts[5].strip_prefix("role/") else {
        return Err(err("the resource must start with role/".into()));
    };
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
    if name.is_empty() || name.ends_with('/') || !name.chars().all(valid_char) {
        return Err(err(format!("{name:?} is not a valid role name")));
    }
    Ok(parts[1].to_owned())
}

fn check_partition(p: &str) -> Result<(), String> {
    match p {
        "aws" | "aws-cn" | "aws-us-gov" => Ok(()),
        other => Err(format!("unknown partition {other:?}")),
    }
}

fn check_region(r: &str) -> Result<(), String> {
    // e.g. us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-5
    let parts: Vec<&str> = r.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!("{r:?} is not a region"))
    }
}

fn check_account(a: &str) -> Result<(), String> {
    if a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("{a:?} is not a 12-digit account ID"))
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A signing region that is not one (`us-east-1` is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid region: expected lowercase words and a number, like us-east-1")]
pub struct RegionError(pub String);

/// Checks a signing region's syntax (`us-east-1`).
pub(crate) fn validate_region(region: &str) -> Result<(), RegionError> {
    check_region(region).map_err(|_| RegionError(region.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001";
    const PR: &str =
        "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002";
    const ROLE: &str = "arn:aws:iam::123456789012:role/path/orders";

    #[test]
    fn accepts_well_formed_arns_and_takes_the_region_from_the_trust_anchor() {
        let arns = SessionArns::parse(TA, PR, ROLE).unwrap();
        assert_eq!(arns.trust_anchor_region, "us-east-1");
        assert_eq!(arns.partition, "aws");
    }

    #[test]
    fn names_the_field_of_the_bad_arn() {
        let e = SessionArns::parse(PR, PR, ROLE).unwrap_err();
        assert_eq!(e.field, ArnField::TrustAnchor);
        let e = SessionArns::parse(TA, TA, ROLE).unwrap_err();
        assert_eq!(e.field, ArnField::Profile);
        let e = SessionArns::parse(TA, PR, "arn:aws:iam::123456789012:user/bob").unwrap_err();
        assert_eq!(e.field, ArnField::Role);
        let e = SessionArns::parse(TA, PR, "orders").unwrap_err();
        assert!(
            e.to_string()
                .contains("arn:aws:iam::123456789012:role/<name>"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_accounts_regions_ids_and_mixed_regions() {
        for bad in [
            "arn:aws:rolesanywhere:us-east-1:12345:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001",
            "arn:aws:rolesanywhere:useast1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001",
            "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/not-a-uuid",
            "arn:aws:s3:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001",
            "arn:aws:rolesanywhere:us-east-1:123456789012",
        ] {
            assert!(SessionArns::parse(bad, PR, ROLE).is_err(), "{bad}");
        }
        let other_region = PR.replace("us-east-1", "eu-west-1");
        assert!(SessionArns::parse(TA, &other_region, ROLE).is_err());
    }
}

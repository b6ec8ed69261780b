//! What the client tests check after each `GetCallerIdentity`: the STS double accepted exactly
//! one call, signed with a key Roles Anywhere issued for the orders SVID and role, and the
//! client was told the assumed-role ARN of that session.

use spiffe_aws_agent::dev::aws_services::{AwsServicesDouble, ServiceKind};
use spiffe_aws_agent::dev::rolesanywhere::{
    IssuedSession, RolesAnywhereDouble, DEV_ROLE_ARN_ORDERS,
};

use super::agent_stack::{AgentStack, ORDERS};

/// Asserts that the calls the AWS double answered after the first `before` are one accepted
/// STS `GetCallerIdentity` by the orders session, whose ARN is `returned_arn` (what the client
/// printed). Returns that session. `what` names the client and channel in messages.
pub fn assert_orders_call(
    stack: &AgentStack,
    before: usize,
    returned_arn: &str,
    what: &str,
) -> IssuedSession {
    assert_orders_call_on(
        &stack.aws,
        &stack.stack.rolesanywhere,
        before,
        returned_arn,
        what,
    )
}

/// [`assert_orders_call`] for any pair of AWS and Roles Anywhere doubles.
pub fn assert_orders_call_on(
    aws: &AwsServicesDouble,
    rolesanywhere: &RolesAnywhereDouble,
    before: usize,
    returned_arn: &str,
    what: &str,
) -> IssuedSession {
    let calls = aws.calls();
    let new = &calls[before..];
    assert_eq!(new.len(), 1, "{what}: one call to the AWS double: {new:?}");
    let call = &new[0];
    assert_eq!(call.service, ServiceKind::Sts, "{what}: {call:?}");
    assert_eq!(
        call.operation.as_deref(),
        Some("GetCallerIdentity"),
        "{what}: {call:?}"
    );
    assert_eq!(call.status, 200, "{what}: accepted: {call:?}");
    let key = call
        .access_key_id
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: the call was signed: {call:?}"));
    let session = rolesanywhere
        .session_for_access_key(key)
        .unwrap_or_else(|| {
            panic!(
                "{what}: {key} was not issued by Roles Anywhere: {:?}",
                rolesanywhere.issued()
            )
        });
    assert_eq!(
        session.spiffe_id.as_deref(),
        Some(ORDERS),
        "{what}: {session:?}"
    );
    assert_eq!(session.role_arn, DEV_ROLE_ARN_ORDERS, "{what}: {session:?}");
    assert_eq!(
        returned_arn, session.assumed_role_arn,
        "{what}: the client got the orders session's ARN"
    );
    assert_eq!(call.caller_arn.as_deref(), Some(returned_arn), "{what}");
    assert_eq!(call.spiffe_id.as_deref(), Some(ORDERS), "{what}");
    session
}

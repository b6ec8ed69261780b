//! A sink's memo of the document it last rendered for a role's credentials.
//!
//! The hot IMDS path must not format JSON and timestamps per request (measured: rendering
//! once per credential set took IMDS from 60k to 89k requests/s). The cache knows nothing of
//! documents, so each sink keeps its own memo, keyed by the credential set's generation: a
//! request for the same set copies a reference count; a new set is rendered once.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::credentials::RoleCredentials;

/// The last document rendered for one role in one format.
#[derive(Default)]
pub(crate) struct RenderMemo {
    last: ArcSwapOption<(u64, Bytes)>,
}

impl RenderMemo {
    /// The document for `creds`: the memo when it was rendered for this very set, else
    /// `render(creds)`, remembered for the next request.
    pub(crate) fn get(
        &self,
        creds: &RoleCredentials,
        render: impl FnOnce(&RoleCredentials) -> String,
    ) -> Bytes {
        if let Some(last) = &*self.last.load() {
            if last.0 == creds.generation() {
                return last.1.clone();
            }
        }
        let bytes = Bytes::from(render(creds));
        self.last
            .store(Some(Arc::new((creds.generation(), bytes.clone()))));
        bytes
    }
}

/// One [`RenderMemo`] per role name, fixed when the sink starts (the roles are).
#[derive(Default)]
pub(crate) struct RoleMemos(HashMap<String, RenderMemo>);

impl RoleMemos {
    pub(crate) fn new<'a>(roles: impl IntoIterator<Item = &'a str>) -> Self {
        RoleMemos(
            roles
                .into_iter()
                .map(|r| (r.to_owned(), RenderMemo::default()))
                .collect(),
        )
    }

    /// The document for `role`'s `creds`; rendered without a memo for a role the sink was
    /// not started with (the store refuses those first, so this does not happen).
    pub(crate) fn get(
        &self,
        role: &str,
        creds: &RoleCredentials,
        render: impl FnOnce(&RoleCredentials) -> String,
    ) -> Bytes {
        match self.0.get(role) {
            Some(memo) => memo.get(creds, render),
            None => Bytes::from(render(creds)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::http::testing::{creds, store};
    use std::time::Duration;

    #[tokio::test]
    async fn renders_once_per_published_set() {
        let s = store(&["app"]);
        let memos = RoleMemos::new(["app"]);
        s.publish("app", creds(&s, "app", "AK1", Duration::from_secs(3600)));
        let first = s.get("app").unwrap();
        let mut renders = 0;
        for _ in 0..3 {
            let doc = memos.get("app", &first, |c| {
                renders += 1;
                c.credentials.access_key_id.clone()
            });
            assert_eq!(doc, "AK1");
        }
        assert_eq!(renders, 1);
        s.publish("app", creds(&s, "app", "AK2", Duration::from_secs(3600)));
        let second = s.get("app").unwrap();
        let doc = memos.get("app", &second, |c| c.credentials.access_key_id.clone());
        assert_eq!(doc, "AK2", "a new set is rendered anew");
    }
}

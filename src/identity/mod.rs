//! X.509 identity sources. (being written)

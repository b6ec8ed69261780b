//! The Workload API double. (being written)

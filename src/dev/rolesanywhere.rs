//! The Roles Anywhere double. (being written)

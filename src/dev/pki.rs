//! The test PKI. (being written)

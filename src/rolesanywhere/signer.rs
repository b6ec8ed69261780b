//! SigV4-X509 signer. (being written)

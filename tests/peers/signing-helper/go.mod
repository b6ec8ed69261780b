// The real aws_signing_helper (tests/peer_signing_helper.rs, scripts/bench-peers.sh), built by
// scripts/build-peers.sh. To move to another release, in this directory:
//   go get -tool github.com/aws/rolesanywhere-credential-helper@vX.Y.Z
// and update HELPER_VERSION in scripts/build-peers.sh.
module spiffe-aws-agent/tests/peers/signing-helper

go 1.24

tool github.com/aws/rolesanywhere-credential-helper

require (
	github.com/aws/aws-sdk-go v1.55.5 // indirect
	github.com/aws/rolesanywhere-credential-helper v1.4.0 // indirect
	github.com/google/go-tpm v0.3.3 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/jmespath/go-jmespath v0.4.0 // indirect
	github.com/miekg/pkcs11 v1.1.1 // indirect
	github.com/spf13/cobra v1.8.1 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	github.com/stefanberger/go-pkcs11uri v0.0.0-20230803200340-78284954bff6 // indirect
	golang.org/x/crypto v0.28.0 // indirect
	golang.org/x/net v0.30.0 // indirect
	golang.org/x/sys v0.26.0 // indirect
	golang.org/x/term v0.25.0 // indirect
)
